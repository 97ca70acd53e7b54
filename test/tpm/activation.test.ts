import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import { AttestationRefused, GrpcCode, MalformedInput } from '../../src/errors.js';
import {
  checkAkAttributes, encodeCredentialFile, kdfa, kdfe, makeCredential, parseCredentialFile, secretsEqual,
} from '../../src/tpm/activation.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { toHex } from '../../src/tpm/bytes.js';
import { TPMA_OBJECT, TPM_ALG } from '../../src/tpm/constants.js';
import { publicName, type TpmPublic } from '../../src/tpm/public.js';
import { expectError } from './expect-error.js';
import { AK_ATTRIBUTES, softActivateCredential as activate, softEk, softKey } from './soft-tpm.js';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const rng = (size: number): Uint8Array => new Uint8Array(randomBytes(size));

describe('checkAkAttributes', () => {
  it('accepts tpm2_createak-style RSA and ECC AKs', () => {
    for (const kind of ['rsa', 'p256', 'p384'] as const) expect(() => checkAkAttributes(softKey(kind).pub)).not.toThrow();
  });
  const without = (bit: number): TpmPublic => softKey('rsa', { attributes: AK_ATTRIBUTES & ~bit }).pub;
  const cases: [string, () => TpmPublic, string][] = [
    ['AK that is not a signing key', () => without(TPMA_OBJECT.SIGN_ENCRYPT), 'ERR_AK_NOT_SIGNING'],
    ['AK that is not restricted', () => without(TPMA_OBJECT.RESTRICTED), 'ERR_AK_NOT_RESTRICTED'],
    ['AK without fixedTPM', () => without(TPMA_OBJECT.FIXED_TPM), 'ERR_AK_NOT_FIXEDTPM'],
    ['AK without fixedParent', () => without(TPMA_OBJECT.FIXED_PARENT), 'ERR_AK_NOT_FIXEDPARENT'],
    ['AK imported (no sensitiveDataOrigin)', () => without(TPMA_OBJECT.SENSITIVE_DATA_ORIGIN), 'ERR_AK_NOT_SENSITIVEDATAORIGIN'],
    ['AK that can also decrypt', () => softKey('rsa', { attributes: AK_ATTRIBUTES | TPMA_OBJECT.DECRYPT }).pub, 'ERR_AK_DECRYPT'],
    ['AK with a SHA-1 nameAlg', () => softKey('rsa', { nameAlg: HashAlg.SHA1 }).pub, 'ERR_AK_NAME_ALG'],
    ['RSA-1024 AK', () => softKey('rsa', { rsaBits: 1024 }).pub, 'ERR_AK_KEY_TOO_SMALL'],
    ['AK with NULL scheme', () => softKey('rsa', { scheme: { alg: TPM_ALG.NULL, hashAlg: null } }).pub, 'ERR_AK_SCHEME'],
    ['AK with an OAEP scheme', () => softKey('rsa', { scheme: { alg: TPM_ALG.OAEP, hashAlg: HashAlg.SHA256 } }).pub, 'ERR_AK_SCHEME'],
    ['AK with a SHA-1 scheme', () => softKey('p256', { scheme: { alg: TPM_ALG.ECDSA, hashAlg: HashAlg.SHA1 } }).pub, 'ERR_AK_SCHEME'],
    ['ECC AK with an RSA scheme', () => softKey('p256', { scheme: { alg: TPM_ALG.RSASSA, hashAlg: HashAlg.SHA256 } }).pub, 'ERR_AK_SCHEME'],
  ];
  it.each(cases)('%s', (_name, make, code) => {
    expectError(() => checkAkAttributes(make()), AttestationRefused, code, GrpcCode.PERMISSION_DENIED);
  });
  it('checks in fixed order: a key failing several rules reports the first', () => {
    const pub = softKey('rsa', { attributes: TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.DECRYPT }).pub;
    expectError(() => checkAkAttributes(pub), AttestationRefused, 'ERR_AK_NOT_RESTRICTED', GrpcCode.PERMISSION_DENIED);
  });
});

describe('KDFs', () => {
  // TPM 2.0 reference implementation self-test vector (KdfTestData.h): key, "KDFSELFTESTLABEL", contextU/V, 160 bits.
  const key = hex('271FA08BBDC5060EC3DFA928FF9B73123A12DA0C');
  const u = hex('CE244F395DCA7391');
  const v = hex('DA504031DDF12E83');
  it.each([
    [HashAlg.SHA1, '55b5a7184aa07423c47dae766c26a2377d7cf851'],
    [HashAlg.SHA256, 'bb0259e1c8ba607e6a2cd704b69a902e9ade84c4'],
    [HashAlg.SHA384, '1dce70c9113eb2dba47bd9cfc72bf46f45b09312'],
    [HashAlg.SHA512, '8be2c1b85b78569b9fa759f5857c56d684810fd3'],
  ])('KDFa %s matches the TPM reference self-test vector', (hash, expected) => {
    expect(toHex(kdfa(hash, key, 'KDFSELFTESTLABEL', u, v, 160))).toBe(expected);
  });
  it('KDFa produces multi-block output whose prefix is independent of the requested length only through bits', () => {
    const a = kdfa(HashAlg.SHA256, key, 'STORAGE', u, v, 512);
    expect(a.length).toBe(64);
    // bits is part of the HMAC input, so a 256-bit request is not a prefix of a 512-bit one.
    expect(toHex(kdfa(HashAlg.SHA256, key, 'STORAGE', u, v, 256))).not.toBe(toHex(a.subarray(0, 32)));
  });
  it('KDFe follows SP800-56A: H(u32 1 ‖ Z ‖ label\\0 ‖ U ‖ V) for one block', () => {
    const z = hex('00112233');
    const expected = HashAlg.SHA256.digest(hex('00000001'), z, new TextEncoder().encode('IDENTITY\0'), u, v);
    expect(toHex(kdfe(HashAlg.SHA256, z, 'IDENTITY', u, v, 256))).toBe(toHex(expected));
    expect(kdfe(HashAlg.SHA384, z, 'IDENTITY', u, v, 384).length).toBe(48);
  });
  it('odd bit counts clear the excess high bits', () => {
    expect(kdfa(HashAlg.SHA256, key, 'X', u, v, 12)[0]! & 0xf0).toBe(0);
  });
});

describe('makeCredential', () => {
  const ak = softKey('rsa');
  const akName = publicName(ak.pub);
  const secret = new Uint8Array(32).fill(0x5a);

  it.each([
    ['rsa', 256, 68],
    ['p256', 68, 68],
    ['p384', 100, 84],
  ] as const)('%s EK: the emulated TPM recovers the secret; sizes match tpm-notes', (kind, secretSize, idSize) => {
    const ek = softEk(kind);
    const name = kind === 'p384' ? publicName(softKey('p256', { nameAlg: HashAlg.SHA384 }).pub) : akName;
    const cred = makeCredential({ ekPublic: ek.pub, akName: name, secret: kind === 'p384' ? secret : secret, randomBytes: rng });
    expect(cred.encryptedSecret.length).toBe(secretSize);
    expect(cred.idObject.length).toBe(idSize);
    expect(toHex(activate(ek, name, cred))).toBe(toHex(secret));
  });

  it('credential bound to another AK name fails the integrity check', () => {
    const ek = softEk('rsa');
    const cred = makeCredential({ ekPublic: ek.pub, akName, secret, randomBytes: rng });
    expect(() => activate(ek, publicName(softKey('rsa', { slot: 1 }).pub), cred)).toThrow('integrity check failed');
  });

  it('is deterministic under injected randomness', () => {
    for (const kind of ['rsa', 'p256'] as const) {
      const fixed = (n: number): Uint8Array => new Uint8Array(n).fill(0x42);
      const a = makeCredential({ ekPublic: softEk(kind).pub, akName, secret, randomBytes: fixed });
      const b = makeCredential({ ekPublic: softEk(kind).pub, akName, secret, randomBytes: fixed });
      expect(toHex(encodeCredentialFile(a))).toBe(toHex(encodeCredentialFile(b)));
    }
  });

  it('refuses an EK that is not a restricted decryption key, or lacks AES-CFB', () => {
    expectError(() => makeCredential({ ekPublic: ak.pub, akName, secret, randomBytes: rng }), AttestationRefused, 'ERR_EK_NOT_STORAGE_KEY', GrpcCode.PERMISSION_DENIED);
    const noSym = softKey('rsa', { slot: 100, attributes: TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT, scheme: { alg: TPM_ALG.NULL, hashAlg: null } });
    expectError(() => makeCredential({ ekPublic: noSym.pub, akName, secret, randomBytes: rng }), AttestationRefused, 'ERR_EK_NOT_STORAGE_KEY', GrpcCode.PERMISSION_DENIED);
  });

  it('refuses a malformed AK name and oversized secrets', () => {
    const ek = softEk('rsa').pub;
    expectError(() => makeCredential({ ekPublic: ek, akName: akName.subarray(0, 10), secret, randomBytes: rng }), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
    expectError(() => makeCredential({ ekPublic: ek, akName, secret: new Uint8Array(33), randomBytes: rng }), MalformedInput, 'ERR_CREDENTIAL_SECRET', GrpcCode.INVALID_ARGUMENT);
  });
});

describe('tpm2-tools makecredential file', () => {
  it('writes magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET (336 B for an RSA-2048 EK)', () => {
    const cred = makeCredential({ ekPublic: softEk('rsa').pub, akName: publicName(softKey('rsa').pub), secret: new Uint8Array(32), randomBytes: rng });
    const file = encodeCredentialFile(cred);
    expect(file.length).toBe(336);
    expect(toHex(file.subarray(0, 12))).toBe('badcc0de0000000100440020');
    expect(toHex(file.subarray(78, 80))).toBe('0100');
    const back = parseCredentialFile(file);
    expect(toHex(back.idObject)).toBe(toHex(cred.idObject));
    expect(toHex(back.encryptedSecret)).toBe(toHex(cred.encryptedSecret));
  });
  it('refuses a wrong magic, version or trailing bytes', () => {
    const file = encodeCredentialFile({ idObject: new Uint8Array(4), encryptedSecret: new Uint8Array(2) });
    for (const bad of [Uint8Array.from([0, ...file.subarray(1)]), Uint8Array.from([...file.subarray(0, 7), 2, ...file.subarray(8)]), Uint8Array.from([...file, 0])]) {
      expectError(() => parseCredentialFile(bad), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
    }
  });
  it('secretsEqual is a length-checked constant-time compare', () => {
    expect(secretsEqual(hex('0102'), hex('0102'))).toBe(true);
    expect(secretsEqual(hex('0102'), hex('01'))).toBe(false);
    expect(secretsEqual(hex('0102'), hex('0103'))).toBe(false);
  });
});
