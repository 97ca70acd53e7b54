import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AttestationRefused, GrpcCode, InvalidConfig, MalformedInput } from '../../src/errors.js';
import {
  checkEkCertMatchesPublic, derSequenceLength, EkTrustStore, gceInstanceInfo, parseCertificates, parseEkCertificate,
  tpmDeviceAttributes, tpmVendorName, verifyEkCertificate,
} from '../../src/tpm/ek.js';
import { loadEkTrustStore } from '../../src/tpm/ek-store-loader.js';
import { softKey } from './soft-tpm.js';
import { publicToSpkiDer } from '../../src/tpm/public.js';

const FIX = new URL('../fixtures/ekcerts/', import.meta.url).pathname;
const read = (rel: string): Uint8Array => new Uint8Array(readFileSync(join(FIX, rel)));
const certsIn = (dir: string): string[] => readdirSync(join(FIX, dir)).filter((n) => !n.endsWith('.source.json') && !n.endsWith('.json')).sort();
const store = (...rels: string[]): EkTrustStore => EkTrustStore.fromCertificates(rels.flatMap((r) => parseCertificates(read(r))));
const NOW = new Date('2025-06-01T00:00:00Z');

async function refused(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(AttestationRefused);
  expect((err as AttestationRefused).code).toBe(code);
  expect((err as AttestationRefused).grpcCode).toBe(GrpcCode.PERMISSION_DENIED);
}

const GCE_ROOT = 'ca/gce/tpm_ek_root_1.cer.der';
const GCE_I2 = 'ca/gce/tpm_ek_intermediate_2.crt.der';
const GCE_I3 = 'ca/gce/tpm_ek_intermediate_3.crt.der';
const KEYLIME = certsIn('ca/keylime-tpm_cert_store').map((n) => `ca/keylime-tpm_cert_store/${n}`);

describe('STMicro EK with trailing bytes (keylime test_verify_ek)', () => {
  const blob = read('certs/stm-st33htph-rsa-ek.der');
  it('parses: the DER is 1169 of the 1600 bytes', () => {
    expect(blob.length).toBe(1600);
    expect(derSequenceLength(blob)).toBe(1169);
    const cert = parseEkCertificate(blob);
    expect(tpmDeviceAttributes(cert)).toEqual({ manufacturer: 'id:53544D20', model: 'ST33HTPHAHB4', version: 'id:00490004' });
    expect(tpmVendorName('id:53544D20')).toBe('STMicroelectronics');
  });
  it('verifies against the keylime store, signed by STM_RSA_05I', async () => {
    const result = await verifyEkCertificate(parseEkCertificate(blob), store(...KEYLIME), { now: NOW });
    expect(result.chain.map((c) => c.subjectName.getField('CN')[0])).toEqual([
      undefined, 'STM TPM EK Intermediate CA 05', 'STM TPM EK Root CA', 'GlobalSign Trusted Platform Module Root CA',
    ]);
    expect(result.chain[1]!.equal(parseEkCertificate(read('ca/keylime-tpm_cert_store/STM_RSA_05I.pem')))).toBe(true);
    expect(result.rootSubjectCn).toBe('GlobalSign Trusted Platform Module Root CA');
    expect(result.manufacturer).toBe('id:53544D20');
  });
  it('EK cert chain from untrusted CA: refused against the GCE store', async () => {
    await refused(verifyEkCertificate(parseEkCertificate(blob), store(GCE_ROOT, GCE_I2, GCE_I3), { now: NOW }), 'ERR_EK_CHAIN_UNTRUSTED');
  });
  it('expired at the injected time', async () => {
    await refused(verifyEkCertificate(parseEkCertificate(blob), store(...KEYLIME), { now: new Date('2030-01-01T00:00:00Z') }), 'ERR_EK_CERT_VALIDITY');
  });
  it('cert key != EK public', () => {
    const cert = parseEkCertificate(blob);
    let err: unknown;
    try {
      checkEkCertMatchesPublic(cert, publicToSpkiDer(softKey('rsa').pub));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AttestationRefused);
    expect((err as AttestationRefused).code).toBe('ERR_EK_KEY_MISMATCH');
    expect(() => checkEkCertMatchesPublic(cert, new Uint8Array(cert.publicKey.rawData))).not.toThrow();
  });
  it('truncated DER is MalformedInput', () => {
    for (const cut of [0, 1, 3, 100, 1168]) {
      let err: unknown;
      try {
        parseEkCertificate(blob.subarray(0, cut));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MalformedInput);
      expect((err as MalformedInput).code).toBe('ERR_EK_CERT_MALFORMED');
    }
  });
});

describe('GCE vTPM certificates (go-tpm-tools)', () => {
  const ak = parseEkCertificate(read('certs/gce-cos85-akcert.der'));
  it('cos85 AK cert verifies with root 1 + intermediate 2', async () => {
    const r = await verifyEkCertificate(ak, store(GCE_ROOT, GCE_I2), { now: NOW });
    expect(r.chain).toHaveLength(3);
    expect(r.rootSubjectCn).toMatch(/^tpm_ek_v1_cloud_host_root-signer/);
    expect(r.manufacturer).toBe('id:474F4F47');
    expect(tpmVendorName(r.manufacturer!)).toBe('Google');
  });
  it('cos85 fails with no roots and no intermediates', async () => {
    await refused(verifyEkCertificate(ak, store(), { now: NOW }), 'ERR_EK_CHAIN_UNTRUSTED');
  });
  it('cos85 fails with roots missing (intermediate only)', async () => {
    await refused(verifyEkCertificate(ak, store(GCE_I2), { now: NOW }), 'ERR_EK_CHAIN_UNTRUSTED');
    expect(() => EkTrustStore.fromEntries([{ source: GCE_I2, bytes: read(GCE_I2) }])).toThrow(InvalidConfig);
  });
  it('cos85 fails with intermediates missing (root only), and with intermediate 3 instead of 2', async () => {
    await refused(verifyEkCertificate(ak, store(GCE_ROOT), { now: NOW }), 'ERR_EK_CHAIN_UNTRUSTED');
    await refused(verifyEkCertificate(ak, store(GCE_ROOT, GCE_I3), { now: NOW }), 'ERR_EK_CHAIN_UNTRUSTED');
  });
  it('agent-supplied intermediates can complete the path', async () => {
    const r = await verifyEkCertificate(ak, store(GCE_ROOT), { now: NOW, intermediates: [parseEkCertificate(read(GCE_I2))] });
    expect(r.chain).toHaveLength(3);
  });
  it.each(['certs/gce-uca_tpm_rsa_enc_cert.pem', 'certs/gce-uca_tpm_rsa_sign_cert.pem'])('%s chains through intermediate 3, not 2', async (rel) => {
    const cert = parseEkCertificate(read(rel));
    const r = await verifyEkCertificate(cert, store(GCE_ROOT, GCE_I3), { now: NOW });
    expect(r.chain[1]!.equal(parseEkCertificate(read(GCE_I3)))).toBe(true);
    await refused(verifyEkCertificate(cert, store(GCE_ROOT, GCE_I2), { now: NOW }), 'ERR_EK_CHAIN_UNTRUSTED');
  });
  it.each(['certs/gce-pca_tpm_rsa_enc_cert.pem', 'certs/gce-pca_tpm_rsa_sign_cert.pem'])('%s (no EKU, no TPM SAN) chains through the CAS CA', async (rel) => {
    const cert = parseEkCertificate(read(rel));
    const r = await verifyEkCertificate(cert, store('ca/gce/gcp_ek_ak_ca_root.crt.der', 'ca/gce/gcp_ek_ak_ca_intermediate_v3.crt.der'), { now: NOW });
    expect(r.rootSubjectCn).toBe('EK/AK CA Root');
    expect(r.manufacturer).toBeUndefined();
  });
  it.each([
    'certs/gce-pca_tpm_rsa_enc_cert.pem', 'certs/gce-pca_tpm_rsa_sign_cert.pem',
    'certs/gce-uca_tpm_rsa_enc_cert.pem', 'certs/gce-uca_tpm_rsa_sign_cert.pem',
  ])('%s carries the GCE instance info stated by TestGetGCEInstanceInfo', (rel) => {
    const info = gceInstanceInfo(parseEkCertificate(read(rel)))!;
    expect(info.zone).toBe('us-central1-a');
    expect(info.projectId).toBe('google.com:wuale-gcp-testing');
    expect(info.projectNumber).toBe(117478743145n);
    expect(info.instanceId).not.toBe(0n);
  });
  it('GCE instance info with invalid UTF-8 is MalformedInput, never a bare TypeError', () => {
    const der = Buffer.from(parseEkCertificate(read('certs/gce-pca_tpm_rsa_enc_cert.pem')).rawData); // @peculiar/x509
    const at = der.indexOf(Buffer.from('us-central1-a'), der.indexOf(Buffer.from('2b06010401d679020115', 'hex'))); // inside the extension
    expect(at).toBeGreaterThan(0);
    der[at + 2] = 0xff; // same length, no longer UTF-8
    const err = (() => {
      try {
        gceInstanceInfo(parseEkCertificate(der));
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(MalformedInput);
    expect(err).toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT, message: expect.stringMatching(/GCE instance info: field 0 is not valid UTF-8/) });
  });
  it('go-tpm-tools GCE roots/intermediates load; root 1 is a root, intermediate 2 is not', () => {
    const s = store(GCE_ROOT, GCE_I2);
    expect(s.roots).toHaveLength(1);
    expect(s.intermediates).toHaveLength(1);
  });
});

describe('CA stores', () => {
  it('keylime tpm_cert_store: every file loads as X.509 and the store is non-empty', () => {
    expect(KEYLIME).toHaveLength(51);
    const entries = KEYLIME.map((rel) => ({ source: rel, bytes: read(rel) }));
    for (const e of entries) expect(parseCertificates(e.bytes).length).toBeGreaterThan(0);
    const s = EkTrustStore.fromEntries(entries);
    expect(s.roots.length).toBeGreaterThan(0);
    expect(s.roots.length + s.intermediates.length).toBeGreaterThanOrEqual(51);
  });
  it('tpm-ca-certificates: bundles parse and every manifest fingerprint is a bundle certificate', () => {
    const expected = JSON.parse(readFileSync(join(FIX, 'ca/tpm-ca-certificates/fingerprints.expected.json'), 'utf8'));
    const fingerprint = (der: ArrayBuffer): string => createHash('sha256').update(new Uint8Array(der)).digest('hex').toUpperCase().match(/../g)!.join(':');
    for (const [bundle, key, count] of [
      ['ca/tpm-ca-certificates/MIRROR.tpm-ca-certificates.pem', 'roots', 26],
      ['ca/tpm-ca-certificates/MIRROR.tpm-intermediate-ca-certificates.pem', 'intermediates', 143],
    ] as const) {
      const certs = parseCertificates(read(bundle));
      expect(certs).toHaveLength(count);
      const have = new Set(certs.map((c) => fingerprint(c.rawData)));
      const listed = Object.values(expected[key] as Record<string, { sha256_fingerprint?: string }>)
        .map((e) => e.sha256_fingerprint)
        .filter((f): f is string => typeof f === 'string');
      expect(listed.length).toBeGreaterThan(0);
      for (const f of listed) expect(have.has(f)).toBe(true);
    }
  });
  it('STM EK also verifies against the tpm-ca-certificates root bundle plus STM intermediates', async () => {
    const s = store('ca/tpm-ca-certificates/MIRROR.tpm-ca-certificates.pem', 'ca/keylime-tpm_cert_store/STM_RSA_05I.pem', 'ca/keylime-tpm_cert_store/STM_RSA_RT.pem');
    const r = await verifyEkCertificate(parseEkCertificate(read('certs/stm-st33htph-rsa-ek.der')), s, { now: NOW });
    expect(r.chain.length).toBeGreaterThanOrEqual(3);
  });
  it('vendor CA files from tpm-ca-certificates/src parse', () => {
    for (const vendor of ['AMD', 'INTC', 'MSFT']) {
      for (const n of certsIn(`ca/tpm-ca-certificates/src/${vendor}`)) {
        expect(parseCertificates(read(`ca/tpm-ca-certificates/src/${vendor}/${n}`)).length).toBe(1);
      }
    }
  });
});

describe('loadEkTrustStore fails closed', () => {
  const tmp = (): string => mkdtempSync(join(tmpdir(), 'ekca-'));
  const expectConfig = async (p: Promise<unknown>): Promise<void> => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidConfig);
    expect((err as InvalidConfig).code).toBe('ERR_EK_CA_CONFIG');
    expect((err as InvalidConfig).grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
  };
  it('loads a directory of roots and intermediates and a single file', async () => {
    const dir = tmp();
    try {
      for (const rel of [GCE_ROOT, GCE_I2]) copyFileSync(join(FIX, rel), join(dir, rel.split('/').pop()!));
      const s = await loadEkTrustStore([dir]);
      expect(s.roots).toHaveLength(1);
      expect((await loadEkTrustStore([join(dir, 'tpm_ek_root_1.cer.der')])).roots).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('missing path, file where dir expected, empty dir, empty bundle, garbage, no root, subdirectory', async () => {
    const dir = tmp();
    try {
      await expectConfig(loadEkTrustStore([join(dir, 'nope')]));
      await expectConfig(loadEkTrustStore([]));
      copyFileSync(join(FIX, GCE_ROOT), join(dir, 'root.der'));
      await expectConfig(loadEkTrustStore([`${join(dir, 'root.der')}/`]));
      mkdirSync(join(dir, 'empty'));
      await expectConfig(loadEkTrustStore([join(dir, 'empty')]));
      writeFileSync(join(dir, 'empty.pem'), '');
      await expectConfig(loadEkTrustStore([join(dir, 'empty.pem')]));
      writeFileSync(join(dir, 'text.pem'), '-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n');
      await expectConfig(loadEkTrustStore([join(dir, 'text.pem')]));
      writeFileSync(join(dir, 'junk.der'), Uint8Array.from([0x30, 0x03, 1, 2, 3]));
      await expectConfig(loadEkTrustStore([join(dir, 'junk.der')]));
      await expectConfig(loadEkTrustStore([join(FIX, GCE_I2)])); // intermediate only: no root
      // A directory with only non-certificates (a README) is no CA directory.
      mkdirSync(join(dir, 'readme-only'));
      writeFileSync(join(dir, 'readme-only', 'README.md'), '# Vendor EK CAs\n');
      await expectConfig(loadEkTrustStore([join(dir, 'readme-only')]));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a directory skips files that are not certificates (README, junk, subdirectories) with a warning', async () => {
    const dir = tmp();
    try {
      copyFileSync(join(FIX, GCE_ROOT), join(dir, 'root.der'));
      writeFileSync(join(dir, 'README.md'), '# Vendor EK CAs\nFetched from the vendor site.\n');
      writeFileSync(join(dir, 'junk.der'), Uint8Array.from([0x30, 0x03, 1, 2, 3]));
      mkdirSync(join(dir, 'old'));
      const warnings: Record<string, string>[] = [];
      const store = await loadEkTrustStore([dir], (_message, fields) => warnings.push({ ...fields }));
      expect(store.roots).toHaveLength(1);
      expect(warnings.map((w) => w['path'])).toEqual([join(dir, 'README.md'), join(dir, 'junk.der')]);
      expect(warnings[0]!['reason']).toMatch(/holds no certificate/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('certificates whose lazily decoded parts are broken (npm run fuzz)', () => {
  it('a certificate with an RSA key that is not an RSAPublicKey is refused at parse time, typed', () => {
    const bytes = new Uint8Array(readFileSync(new URL('../fuzz/crashes/tpm-ek-certificate/c14594e33e22b803.bin', import.meta.url)));
    let thrown: unknown;
    try {
      parseEkCertificate(bytes);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(MalformedInput);
    expect((thrown as MalformedInput).code).toBe('ERR_EK_CERT_MALFORMED');
    expect((thrown as MalformedInput).grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
  });
});
