/**
 * Calls an mTLS server with the current X.509-SVID. The server's chain must verify against our trust bundle
 * and its SPIFFE ID must be authorized; its DNS name is not checked (SVIDs carry SPIFFE IDs, not host names).
 * Each request opens a new connection with the SVID current at that moment, so rotation needs no extra step.
 */
import { X509Certificate } from 'node:crypto';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { spiffeIdOf, svidTlsOptions, type Authorizer } from './spiffe-tls.js';
import type { SvidSource } from './svid-source.js';

export interface MtlsResponse {
  readonly status: number;
  readonly body: string;
  readonly serverId: string;
  readonly serverCert: X509Certificate;
}

export interface MtlsRequestOptions {
  /** Anything holding the current SVID; normally the SvidSource. */
  readonly source: Pick<SvidSource, 'current'>;
  readonly authorizeServer: Authorizer;
  readonly method?: string;
  readonly body?: string;
}

export function mtlsRequest(url: string | URL, options: MtlsRequestOptions): Promise<MtlsResponse> {
  const svid = options.source.current;
  if (!svid) return Promise.reject(new Error('no SVID yet: await source.ready() first'));
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: options.method ?? 'GET',
        ...svidTlsOptions(svid),
        agent: false,
        checkServerIdentity: (_host, peer) => {
          try {
            const id = spiffeIdOf(new X509Certificate(peer.raw));
            return options.authorizeServer(id) ? undefined : new Error(`server SPIFFE ID ${id} is not allowed`);
          } catch (err) {
            return err as Error;
          }
        },
      },
      (res) => {
        const serverCert = (res.socket as TLSSocket).getPeerX509Certificate();
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          if (!serverCert) {
            reject(new Error('server presented no certificate'));
            return;
          }
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), serverId: spiffeIdOf(serverCert), serverCert });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}
