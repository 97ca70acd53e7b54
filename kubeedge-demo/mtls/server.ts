/**
 * An HTTPS server that only talks to workloads with an X.509-SVID from our trust domain whose SPIFFE ID is
 * authorized. TLS (OpenSSL) verifies the client's chain against the trust bundle and refuses anything else during
 * the handshake; the SPIFFE ID check happens before any request reaches the handler (403 otherwise).
 * On every rotation the new SVID and bundle become the secure context of new connections.
 */
import type { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { spiffeIdOf, svidTlsOptions, type Authorizer, type X509Svid } from './spiffe-tls.js';
import type { SvidSource } from './svid-source.js';

export interface Peer {
  readonly spiffeId: string;
  readonly cert: X509Certificate;
}

export type MtlsHandler = (req: IncomingMessage, res: ServerResponse, peer: Peer) => void;

export interface MtlsServerOptions {
  readonly source: SvidSource;
  readonly authorizeClient: Authorizer;
  readonly handler: MtlsHandler;
  readonly log?: (message: string, fields?: Record<string, unknown>) => void;
}

/** Creates (does not listen) the server; the source must already hold an SVID (`await source.ready()`). */
export function createMtlsServer(options: MtlsServerOptions): https.Server {
  const log = options.log ?? (() => undefined);
  const svid = options.source.current;
  if (!svid) throw new Error('no SVID yet: await source.ready() before creating the server');

  const server = https.createServer({ ...svidTlsOptions(svid), requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const cert = (req.socket as TLSSocket).getPeerX509Certificate();
    let spiffeId: string;
    try {
      if (!cert) throw new Error('no client certificate');
      spiffeId = spiffeIdOf(cert);
    } catch (err) {
      deny(res, (err as Error).message);
      return;
    }
    if (!options.authorizeClient(spiffeId)) {
      log('client refused', { spiffe_id: spiffeId });
      deny(res, `SPIFFE ID ${spiffeId} is not allowed`);
      return;
    }
    options.handler(req, res, { spiffeId, cert });
  });
  // A client certificate that does not chain to our bundle: Node drops the connection without a TLS alert, so
  // the client only sees a reset; the reason is on the TLS socket.
  server.on('tlsClientError', (err, socket) => log('TLS handshake refused', { error: err.message, reason: socket.authorizationError }));

  const rotate = (next: X509Svid): void => {
    server.setSecureContext(svidTlsOptions(next));
    log('serving with rotated SVID', { serial: next.leaf.serialNumber });
  };
  options.source.on('update', rotate);
  server.on('close', () => options.source.off('update', rotate));
  return server;
}

function deny(res: ServerResponse, reason: string): void {
  res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
  res.end(`forbidden: ${reason}\n`);
}

/** The demo's handler: says hello to the caller and reports which certificates were used. */
export function greeter(source: SvidSource): MtlsHandler {
  return (_req, res, peer) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        hello: peer.spiffeId,
        clientSerial: peer.cert.serialNumber,
        server: source.current?.spiffeId,
        serverSerial: source.current?.leaf.serialNumber,
      }),
    );
  };
}
