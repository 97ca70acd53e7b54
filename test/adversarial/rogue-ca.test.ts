/**
 * Attack class: rogue CA. The attacker builds its own CA hierarchy with exactly the subject names of the trusted
 * one (root, intermediate, even the authority key identifier) and issues a certificate for a real TPM's EK, so that
 * anything that matches CAs by name, or trusts a root the agent sends along, would admit it. The TPM behind it is
 * genuine and answers every challenge. The shipped tpm-server trusts only the CA keys in `ek_ca_path`: each variant is
 * PERMISSION_DENIED naming the EK certificate.
 */
import * as grpc from '@grpc/grpc-js';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, encodePayload } from '../../src/nodeattestor/wire.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { AttackLab, expectRefused, genuineAttestation, goldenEvents, writeLog } from './kit.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
const ALG = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 } as const;

const lab = new AttackLab();
let node: SwtpmHandle;
let otherNode: SwtpmHandle;
let server: PluginHarness;
let agent: PluginHarness;
let rogue: { root: x509.X509Certificate; intermediate: x509.X509Certificate; ekCert: x509.X509Certificate; ekCertByRogueRootOnly: x509.X509Certificate };
let trusted: { root: x509.X509Certificate; intermediate: x509.X509Certificate; ekCert: x509.X509Certificate };

const der = (c: x509.X509Certificate): Uint8Array => new Uint8Array(c.rawData);

/** A CA certificate with `subject` (copied from the trusted one), signed by `issuer` or self-signed. */
async function rogueCa(like: x509.X509Certificate, issuer?: { cert: x509.X509Certificate; key: CryptoKey }) {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: like.serialNumber,
    subject: like.subject,
    issuer: issuer ? issuer.cert.subject : like.subject,
    notBefore: like.notBefore,
    notAfter: like.notAfter,
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: issuer ? issuer.key : keys.privateKey,
    extensions: like.extensions.filter((e) => e.type !== '2.5.29.14' && e.type !== '2.5.29.35'), // fresh key ids below
  });
  return { cert, key: keys.privateKey };
}

/** The trusted EK certificate re-issued by `issuer`: same subject, SAN, policies, AKI and serial; same EK key. */
function reissue(ekCert: x509.X509Certificate, issuer: { cert: x509.X509Certificate; key: CryptoKey }) {
  return x509.X509CertificateGenerator.create({
    serialNumber: ekCert.serialNumber,
    subject: ekCert.subject,
    issuer: issuer.cert.subject,
    notBefore: ekCert.notBefore,
    notAfter: ekCert.notAfter,
    signingAlgorithm: ALG,
    publicKey: ekCert.publicKey,
    signingKey: issuer.key,
    extensions: ekCert.extensions, // the authority key identifier still names the trusted intermediate
  });
}

beforeAll(async () => {
  const events = goldenEvents();
  [node, otherNode] = await Promise.all([lab.bootNode(events), lab.bootNode(events)]);
  const logPath = lab.file('eventlog.bin', writeLog(events));
  server = await lab.server(undefined);
  agent = await lab.agent(node, logPath);
  trusted = {
    root: new x509.X509Certificate(node.rootCaPem),
    intermediate: new x509.X509Certificate(node.intermediateCaPem),
    ekCert: new x509.X509Certificate(node.ekCertRsaDer),
  };
  const root = await rogueCa(trusted.root);
  const intermediate = await rogueCa(trusted.intermediate, root);
  rogue = {
    root: root.cert,
    intermediate: intermediate.cert,
    ekCert: await reissue(trusted.ekCert, intermediate),
    ekCertByRogueRootOnly: await reissue(trusted.ekCert, { cert: trusted.intermediate, key: root.key }),
  };
  // The rogue certificates really carry the trusted names and really differ in key.
  expect(rogue.root.subject).toBe(trusted.root.subject);
  expect(rogue.intermediate.subject).toBe(trusted.intermediate.subject);
  expect(rogue.ekCert.issuer).toBe(trusted.ekCert.issuer);
  expect(Buffer.from(rogue.root.publicKey.rawData).equals(Buffer.from(trusted.root.publicKey.rawData))).toBe(false);
}, 120_000);

afterAll(() => lab.cleanup());

const withCerts = (cert: () => Uint8Array, intermediates: () => Uint8Array[]) => (p: Buffer) =>
  Buffer.from(encodePayload({ ...decodePayload(p), ek_cert: cert(), ek_intermediates: intermediates() }));

describe('rogue CA: names are not trust, only the configured CA keys are', () => {
  it.each([
    ['the rogue intermediate sent along', () => [der(rogue.intermediate)]],
    ['the rogue intermediate and the rogue root sent along (a root from the agent is no anchor)', () => [der(rogue.intermediate), der(rogue.root)]],
    ['nothing sent along (the trusted intermediate has the issuer\'s name)', () => []],
  ])('an EK certificate from a rogue intermediate named like the trusted one, %s: PERMISSION_DENIED', async (_name, intermediates) => {
    const err = await expectRefused(
      genuineAttestation(agent, server, { payload: withCerts(() => der(rogue.ekCert), intermediates) }),
      grpc.status.PERMISSION_DENIED,
      /EK certificate: no path from "CN=swtpm-localca" to a trusted root/,
    );
    expect(err.details).toMatch(/^node [0-9a-f]{16}: /);
  });

  it('an EK certificate signed by a rogue root but naming the trusted intermediate as issuer: PERMISSION_DENIED', async () => {
    await expectRefused(
      genuineAttestation(agent, server, { payload: withCerts(() => der(rogue.ekCertByRogueRootOnly), () => [der(rogue.root)]) }),
      grpc.status.PERMISSION_DENIED,
      /EK certificate: no path from "CN=swtpm-localca" to a trusted root/,
    );
  });

  it("the trusted certificate of another node's EK presented with this node's EK: PERMISSION_DENIED, key mismatch", async () => {
    await expectRefused(
      genuineAttestation(agent, server, { payload: withCerts(() => otherNode.ekCertRsaDer, () => []) }),
      grpc.status.PERMISSION_DENIED,
      /EK certificate: certificate key is not the EK public key/,
    );
  });

  it('control: the same TPM with its real certificate attests, to the trusted root', async () => {
    const ok = await genuineAttestation(agent, server);
    expect(ok.attributes.selector_values).toContain('ek_ca:swtpm-localca-rootca');
  });
});
