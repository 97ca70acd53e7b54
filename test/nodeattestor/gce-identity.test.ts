/**
 * GCE Shielded VM EK certificates carry the instance identity (OID 1.3.6.1.4.1.11129.2.1.21). It becomes
 * gce_* selectors only when the EK chain verified to one of Google's EK roots: real GCE certificates and CAs from
 * google/go-tpm-tools (test/fixtures/ekcerts, see the .source.json files), and a certificate carrying the very
 * same extension under another trusted CA, which must get none.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto, X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EkTrust } from '../../src/nodeattestor/ek-trust.js';
import { ekSelectors } from '../../src/nodeattestor/selectors.js';
import { GOOGLE_EK_ROOT_SHA256, OID_GCE_INSTANCE_INFO } from '../../src/tpm/ek.js';
import { defaultEkPublicFromSpki } from '../../src/tpm/ek-template.js';
import { repoRoot } from '../helpers/binaries.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const FIX = `${repoRoot}test/fixtures/ekcerts/`;
const NOW = new Date('2025-06-01T00:00:00Z');
const GCE_CA = ['tpm_ek_root_1.cer.der', 'tpm_ek_intermediate_2.crt.der', 'tpm_ek_intermediate_3.crt.der', 'gcp_ek_ak_ca_root.crt.der', 'gcp_ek_ak_ca_intermediate_v3.crt.der'];
let work: string;
let googleTrust: EkTrust;

function der(rel: string): Uint8Array {
  const bytes = readFileSync(join(FIX, rel));
  return new Uint8Array(rel.endsWith('.pem') ? new X509Certificate(bytes).raw : bytes);
}

async function trusted(trust: EkTrust, certDer: Uint8Array) {
  const spki = new Uint8Array(new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' }));
  return trust.verify({ ekPublic: defaultEkPublicFromSpki(spki), certificate: certDer, intermediates: [], now: NOW });
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'gce-identity-'));
  mkdirSync(join(work, 'google'));
  for (const f of GCE_CA) copyFileSync(join(FIX, 'ca/gce', f), join(work, 'google', f));
  googleTrust = await EkTrust.load({ caPaths: [join(work, 'google')], hashAllowlist: [], warn: () => undefined });
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('GCE instance identity selectors', () => {
  it('the pinned roots are the fixture files from go-tpm-tools (sha256 of their DER)', () => {
    const sums = ['ca/gce/tpm_ek_root_1.cer.der', 'ca/gce/gcp_ek_ak_ca_root.crt.der'].map(
      (rel) => JSON.parse(readFileSync(join(FIX, `${rel}.source.json`), 'utf8')).sha256 as string,
    );
    expect([...GOOGLE_EK_ROOT_SHA256].sort()).toEqual(sums.sort());
  });

  it.each([
    ['certs/gce-uca_tpm_rsa_enc_cert.pem', 'tpm_ek_v1_cloud_host root'],
    ['certs/gce-pca_tpm_rsa_enc_cert.pem', 'EK/AK CA Root'],
  ])('%s verified to Google (%s): project, zone and instance selectors', async (rel) => {
    const ek = await trusted(googleTrust, der(rel));
    const s = ekSelectors(ek);
    // The values TestGetGCEInstanceInfo in go-tpm-tools states for these certificates.
    expect(s).toEqual(
      expect.arrayContaining(['gce_project_id:google.com:wuale-gcp-testing', 'gce_project_number:117478743145', 'gce_zone:us-central1-a']),
    );
    const id = s.find((v) => v.startsWith('gce_instance_id:'));
    expect(id).toMatch(/^gce_instance_id:[1-9][0-9]*$/);
    expect(s.some((v) => /^gce_instance_name:./.test(v))).toBe(true);
  });

  it('an EK admitted by hash, without a verified certificate, gets none', async () => {
    const allowlisted = await EkTrust.load({
      caPaths: [],
      hashAllowlist: [(await trusted(googleTrust, der('certs/gce-uca_tpm_rsa_enc_cert.pem'))).pubHash],
      warn: () => undefined,
    });
    // Allowlisted by hash without a certificate: nothing verified the extension, so no GCE selectors.
    const spki = new Uint8Array(new X509Certificate(der('certs/gce-uca_tpm_rsa_enc_cert.pem')).publicKey.export({ type: 'spki', format: 'der' }));
    const byHash = await allowlisted.verify({ ekPublic: defaultEkPublicFromSpki(spki), certificate: undefined, intermediates: [], now: NOW });
    expect(ekSelectors(byHash).filter((v) => v.startsWith('gce_'))).toEqual([]);
  });

  it('the same extension under another trusted CA is not believed', async () => {
    const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
    const caKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'CN=Not Google EK Root',
      notBefore: new Date('2024-01-01'),
      notAfter: new Date('2030-01-01'),
      signingAlgorithm: alg,
      keys: caKeys,
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    });
    const google = new x509.X509Certificate(der('certs/gce-uca_tpm_rsa_enc_cert.pem'));
    const gceExtension = google.extensions.find((e) => e.type === OID_GCE_INSTANCE_INFO)!;
    const leafKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: '02',
      subject: 'CN=forged-gce-ek',
      issuer: ca.subject,
      notBefore: new Date('2024-01-01'),
      notAfter: new Date('2030-01-01'),
      signingAlgorithm: alg,
      publicKey: leafKeys.publicKey,
      signingKey: caKeys.privateKey,
      extensions: [new x509.BasicConstraintsExtension(false), new x509.Extension(OID_GCE_INSTANCE_INFO, false, gceExtension.value)],
    });
    writeFileSync(join(work, 'other-root.pem'), ca.toString('pem'));
    const trust = await EkTrust.load({ caPaths: [join(work, 'other-root.pem')], hashAllowlist: [], warn: () => undefined });
    const ek = await trusted(trust, new Uint8Array(leaf.rawData));
    const s = ekSelectors(ek);
    expect(s).toContain('ek_ca:Not Google EK Root'); // the chain did verify...
    expect(s.filter((v) => v.startsWith('gce_'))).toEqual([]); // ...but only Google speaks for a GCE instance
  });
});
