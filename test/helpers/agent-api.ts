/**
 * spire-agent's side of SPIRE's Agent API `AttestAgent`, so a test can attest a node through an unmodified
 * spire-server with evidence it builds itself (a legacy spire-tpm-plugin client, a software TPM): attestation data
 * and a CSR, then one answer per challenge, then the agent SVID.
 */
import 'reflect-metadata';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as x509 from '@peculiar/x509';
import { webcrypto, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { repoRoot } from './binaries.js';
import type { SpireServer } from './spire.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const AgentClient = grpc.loadPackageDefinition(
  protoLoader.loadSync(join(repoRoot, 'test/fixtures/proto/attest_agent.proto'), { keepCase: true, longs: String, defaults: true, oneofs: true }),
) as unknown as { spire: { api: { server: { agent: { v1: { Agent: grpc.ServiceClientConstructor } } } } } };

async function csrDer(): Promise<Buffer> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=test-agent', keys, signingAlgorithm: alg });
  return Buffer.from(csr.rawData);
}

/** Attests through `server`'s Agent API with attestation type `type` (default tpm); resolves to the agent SVID's ID. */
export async function attestAgent(server: SpireServer, payload: Buffer, answer: (c: Buffer) => Promise<Buffer>, type = 'tpm'): Promise<{ spiffeId: string; reattestable: boolean }> {
  const creds = grpc.credentials.createSsl(Buffer.from(await server.bundlePem()), null, null, {
    // The server's SVID names spiffe://<td>/spire/server, not a host name; the chain to the bundle is still checked.
    checkServerIdentity: () => undefined,
  });
  const client = new AgentClient.spire.api.server.agent.v1.Agent(`127.0.0.1:${server.port}`, creds);
  const csr = await csrDer();
  try {
    return await new Promise((resolve, reject) => {
      const call = client['AttestAgent']!() as grpc.ClientDuplexStream<any, any>;
      call.on('data', async (msg: any) => {
        if (msg.step === 'challenge') {
          try {
            call.write({ challenge_response: await answer(msg.challenge) });
          } catch (err) {
            call.cancel();
            reject(err);
          }
        } else if (msg.step === 'result') {
          const leaf = new X509Certificate(msg.result.svid.cert_chain[0]);
          resolve({ spiffeId: (leaf.subjectAltName ?? '').replace(/^URI:/, ''), reattestable: msg.result.reattestable });
          call.end();
        }
      });
      call.on('error', reject);
      call.write({ params: { data: { type, payload }, params: { csr } } });
    });
  } finally {
    client.close();
  }
}

