/**
 * Security property: with `ek_ca_path`, an EK is trusted only through a certificate chain that ends at a configured
 * root and whose leaf carries exactly the EK the agent proved; intermediates may come from the agent (as TPM vendors
 * ship them) but never stand in for a root. In-process against the attestor class with a software TPM whose EK
 * certificate is issued here by our own root and intermediate (@peculiar/x509), so every mutant of the trust path
 * is visible to `npm run mutate`; the swtpm and binary counterparts are server.test.ts and test/adversarial/rogue-ca.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import { SoftAgent } from './soft-agent.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const core = { trustDomain: 'example.org' };
const ALG = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
const NOT_BEFORE = new Date('2024-01-01T00:00:00Z');
const NOT_AFTER = new Date('2040-01-01T00:00:00Z');

interface Ca {
  readonly cert: x509.X509Certificate;
  readonly keys: CryptoKeyPair;
}

async function rootCa(cn: string): Promise<Ca> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${cn}`,
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    signingAlgorithm: ALG,
    keys,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  return { cert, keys };
}

async function intermediateCa(cn: string, issuer: Ca): Promise<Ca> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: `CN=${cn}`,
    issuer: issuer.cert.subject,
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  return { cert, keys };
}

/** An EK certificate for the soft agent's EK public key, issued by `issuer`. */
async function ekCertificate(agent: SoftAgent, issuer: Ca, serial: string): Promise<Uint8Array> {
  const spki = agent.ek.publicKey.export({ type: 'spki', format: 'der' });
  const publicKey = await webcrypto.subtle.importKey('spki', spki, ALG, true, ['verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: 'CN=soft tpm ek',
    issuer: issuer.cert.subject,
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    signingAlgorithm: ALG,
    publicKey,
    signingKey: issuer.keys.privateKey,
    extensions: [new x509.BasicConstraintsExtension(false)],
  });
  return new Uint8Array(cert.rawData);
}

const der = (ca: Ca): Uint8Array => new Uint8Array(ca.cert.rawData);

let work: string;
let rootFile: string;
let rootAndIntermediateDir: string;
let root: Ca;
let intermediate: Ca;
let agent: SoftAgent;
let ekCert: Uint8Array;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'server-ek-chain-'));
  root = await rootCa('Soft EK Root');
  intermediate = await intermediateCa('Soft EK Intermediate', root);
  agent = SoftAgent.of('rsa', 'rsa', 7);
  ekCert = await ekCertificate(agent, intermediate, '10');
  rootFile = join(work, 'root.pem');
  writeFileSync(rootFile, root.cert.toString('pem'));
  rootAndIntermediateDir = join(work, 'bundle');
  mkdirSync(rootAndIntermediateDir);
  writeFileSync(join(rootAndIntermediateDir, 'root.pem'), root.cert.toString('pem'));
  writeFileSync(join(rootAndIntermediateDir, 'intermediate.pem'), intermediate.cert.toString('pem'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function server(config: Record<string, unknown>): Promise<TpmServerAttestor> {
  const s = new TpmServerAttestor(createLogger({ module: 'test', level: 'error', sink: () => undefined }));
  await s.configure({ require_event_log: false, ...config }, core);
  return s;
}

describe('an EK chained to a configured root is trusted, by its certificate', () => {
  it.each([
    ['a file (string)', () => rootFile],
    ['a list of files', () => [rootFile]],
  ])('ek_ca_path as %s, intermediate sent by the agent: admitted with the root as ek_ca', async (_what, caPath) => {
    const s = await server({ ek_ca_path: caPath() });
    const attrs = await s.attest(agent.payload({ ek_cert: ekCert, ek_intermediates: [der(intermediate)] }), agent.io());
    expect(attrs.spiffeId).toBe(`spiffe://example.org/spire/agent/tpm/${agent.ekHash}`);
    expect(attrs.selectorValues).toContain('ek_ca:Soft EK Root');
    expect(attrs.selectorValues).toContain(`pub_hash:${agent.ekHash}`);
  });
  it('ek_ca_path as a directory holding the root and the intermediate: no intermediate needed from the agent', async () => {
    const s = await server({ ek_ca_path: rootAndIntermediateDir });
    const attrs = await s.attest(agent.payload({ ek_cert: ekCert }), agent.io());
    expect(attrs.selectorValues).toContain('ek_ca:Soft EK Root');
  });
  it('ek_ca_path and an allowlist together: the allowlist does not hide the chain (ek_ca selector still there)', async () => {
    const s = await server({ ek_ca_path: rootFile, ek_hash_allowlist: [SoftAgent.of('p256', 'rsa', 8).ekHash] });
    const attrs = await s.attest(agent.payload({ ek_cert: ekCert, ek_intermediates: [der(intermediate)] }), agent.io());
    expect(attrs.selectorValues).toContain('ek_ca:Soft EK Root');
  });
});

describe('an EK whose chain does not end at a configured root is refused before any challenge', () => {
  const noChallenge = {
    signal: new AbortController().signal,
    challenge: () => Promise.reject(new Error('the server challenged an EK it should have refused first')),
  };
  it('the intermediate is neither configured nor sent: PERMISSION_DENIED naming the node', async () => {
    const s = await server({ ek_ca_path: rootFile });
    const err = await s.attest(agent.payload({ ek_cert: ekCert }), noChallenge).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
    expect(err.message).toContain(`node ${agent.ekHash.slice(0, 16)}`);
  });
  it('no certificate at all and no allowlist entry: PERMISSION_DENIED', async () => {
    const s = await server({ ek_ca_path: rootFile });
    const err = await s.attest(agent.payload(), noChallenge).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED, code: 'ERR_EK_UNTRUSTED' });
  });
  it('an intermediate the agent sends as its own root: a self-issued "intermediate" under a rogue root is not trusted', async () => {
    const rogue = await rootCa('Soft EK Root'); // same name, other key
    const rogueIntermediate = await intermediateCa('Soft EK Intermediate', rogue);
    const forgedCert = await ekCertificate(agent, rogueIntermediate, '11');
    const s = await server({ ek_ca_path: rootFile });
    const err = await s
      .attest(agent.payload({ ek_cert: forgedCert, ek_intermediates: [der(rogueIntermediate), der(rogue)] }), noChallenge)
      .catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
  });
  it("another node's genuine certificate with this EK: the certificate key is not the EK (PERMISSION_DENIED)", async () => {
    const other = SoftAgent.of('rsa', 'rsa', 9);
    const otherCert = await ekCertificate(other, intermediate, '12');
    const s = await server({ ek_ca_path: rootFile });
    const err = await s.attest(agent.payload({ ek_cert: otherCert, ek_intermediates: [der(intermediate)] }), noChallenge).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED, code: 'ERR_EK_KEY_MISMATCH' });
  });
});
