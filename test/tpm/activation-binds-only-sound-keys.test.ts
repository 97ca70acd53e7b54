/**
 * Security properties of credential activation beyond the happy path (activation.test.ts):
 * - an AK refusal names its rule and the offending value, for the audit line;
 * - a credential is made only for an EK that is a restricted AES-CFB decryption key, each condition on its own;
 * - the secret, the KDF sizes and the injected randomness are bounded, and the ECC ephemeral key is drawn uniformly
 *   from [1, n-1] (a zero or out-of-range scalar would leak or break the seed);
 * - a short ECC coordinate (a leading zero byte the TPM did not send) still gives a credential the EK opens;
 * - malformed names and credential files are MalformedInput naming what was wrong.
 */
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AttestationRefused, GrpcCode, MalformedInput } from '../../src/errors.js';
import { checkAkAttributes, encodeCredentialFile, kdfa, kdfe, makeCredential, oaepEncode, parseCredentialFile } from '../../src/tpm/activation.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { BytesWriter, toHex } from '../../src/tpm/bytes.js';
import { TPMA_OBJECT, TPM_ALG } from '../../src/tpm/constants.js';
import { ECC_CURVES, encodeTpmtPublic, parseTpmtPublic, publicName, type TpmPublic } from '../../src/tpm/public.js';
import { expectError } from './expect-error.js';
import { AK_ATTRIBUTES, EK_ATTRIBUTES, softActivateCredential, softEk, softKey, type SoftKey } from './soft-tpm.js';

const AK_NAME = publicName(softKey('rsa').pub);
const SECRET = new Uint8Array(32).fill(0x5a);
const fixed = (byte: number) => (n: number) => new Uint8Array(n).fill(byte);

function akRefusal(pub: TpmPublic, code: string): string {
  const err = expectError(() => checkAkAttributes(pub), AttestationRefused, code, GrpcCode.PERMISSION_DENIED);
  expect(err.fields).toEqual({ rule: code });
  return err.message;
}

describe('an AK refusal names the rule and the value that broke it', () => {
  it.each([
    ['not a signing key', AK_ATTRIBUTES & ~TPMA_OBJECT.SIGN_ENCRYPT, 'ERR_AK_NOT_SIGNING', 'AK: not a signing key'],
    ['not restricted', AK_ATTRIBUTES & ~TPMA_OBJECT.RESTRICTED, 'ERR_AK_NOT_RESTRICTED', 'AK: not restricted'],
    ['fixedTPM', AK_ATTRIBUTES & ~TPMA_OBJECT.FIXED_TPM, 'ERR_AK_NOT_FIXEDTPM', 'AK: fixedTPM is clear'],
    ['fixedParent', AK_ATTRIBUTES & ~TPMA_OBJECT.FIXED_PARENT, 'ERR_AK_NOT_FIXEDPARENT', 'AK: fixedParent is clear'],
    ['sensitiveDataOrigin', AK_ATTRIBUTES & ~TPMA_OBJECT.SENSITIVE_DATA_ORIGIN, 'ERR_AK_NOT_SENSITIVEDATAORIGIN', 'AK: sensitiveDataOrigin is clear'],
    ['decrypt', AK_ATTRIBUTES | TPMA_OBJECT.DECRYPT, 'ERR_AK_DECRYPT', 'AK: decrypt is set'],
  ])('%s', (_name, attributes, code, message) => {
    expect(akRefusal(softKey('rsa', { attributes }).pub, code)).toBe(message);
  });
  it('a SHA-1 name algorithm is named', () => {
    expect(akRefusal(softKey('rsa', { nameAlg: HashAlg.SHA1 }).pub, 'ERR_AK_NAME_ALG')).toBe('AK: nameAlg sha1 is not allowed');
  });
  it('an RSA key just under 2048 bits is refused, naming its size', () => {
    expect(akRefusal(softKey('rsa', { rsaBits: 2040 }).pub, 'ERR_AK_KEY_TOO_SMALL')).toBe('AK: RSA key of 2040 bits is below 2048');
  });
  it('an ECC key on a curve outside the allowlist is refused even if a parser let it through', () => {
    const p256 = softKey('p256').pub;
    if (p256.type !== 'ecc') throw new Error('unreachable');
    const odd: TpmPublic = { ...p256, curve: { ...p256.curve, jwkName: 'P-521' as 'P-256' } };
    expect(akRefusal(odd, 'ERR_AK_KEY_TOO_SMALL')).toBe('AK: curve P-521 is not allowed');
  });
  it('a scheme the AK type cannot sign with names the scheme', () => {
    expect(akRefusal(softKey('rsa', { scheme: { alg: TPM_ALG.ECDSA, hashAlg: HashAlg.SHA256 } }).pub, 'ERR_AK_SCHEME')).toBe(
      `AK: signing scheme 0x${TPM_ALG.ECDSA.toString(16)} is not supported`,
    );
  });
  it('a scheme without a hash is refused even if a parser let it through', () => {
    expect(akRefusal({ ...softKey('p256').pub, scheme: { alg: TPM_ALG.ECDSA, hashAlg: null } }, 'ERR_AK_SCHEME')).toMatch(/signing scheme/);
  });
  it.each([
    ['RSASSA-SHA384', 'rsa', { alg: TPM_ALG.RSASSA, hashAlg: HashAlg.SHA384 }, HashAlg.SHA256],
    ['RSAPSS-SHA256', 'rsa', { alg: TPM_ALG.RSAPSS, hashAlg: HashAlg.SHA256 }, HashAlg.SHA256],
    ['ECDSA-SHA512 with a SHA-512 name', 'p256', { alg: TPM_ALG.ECDSA, hashAlg: HashAlg.SHA512 }, HashAlg.SHA512],
    ['ECDSA-SHA384 on P-384 with a SHA-384 name', 'p384', { alg: TPM_ALG.ECDSA, hashAlg: HashAlg.SHA384 }, HashAlg.SHA384],
  ] as const)('the allowed %s AK passes', (_name, kind, scheme, nameAlg) => {
    expect(() => checkAkAttributes(softKey(kind, { scheme, nameAlg }).pub)).not.toThrow();
  });
});

describe('a credential is made only for an EK that can keep it', () => {
  const ekWith = (over: { attributes?: number; symmetric?: { alg: number; keyBits: number; mode: number } | null }) =>
    softKey('rsa', {
      slot: 100,
      attributes: over.attributes ?? EK_ATTRIBUTES,
      scheme: { alg: TPM_ALG.NULL, hashAlg: null },
      symmetric: over.symmetric === undefined ? { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } : over.symmetric,
    }).pub;
  const refused = (ekPublic: TpmPublic, message: string) => {
    const err = expectError(() => makeCredential({ ekPublic, akName: AK_NAME, secret: SECRET, randomBytes: fixed(1) }), AttestationRefused, 'ERR_EK_NOT_STORAGE_KEY', GrpcCode.PERMISSION_DENIED);
    expect(err.fields).toEqual({ rule: 'ERR_EK_NOT_STORAGE_KEY' });
    expect(err.message).toBe(`EK: ${message}`);
  };
  it.each([
    ['not restricted', EK_ATTRIBUTES & ~TPMA_OBJECT.RESTRICTED],
    ['not a decryption key', EK_ATTRIBUTES & ~TPMA_OBJECT.DECRYPT],
    ['also a signing key', EK_ATTRIBUTES | TPMA_OBJECT.SIGN_ENCRYPT],
  ])('an EK that is %s', (_name, attributes) => refused(ekWith({ attributes }), 'not a restricted decryption key'));
  it.each([
    ['no symmetric definition', null],
    ['AES in a mode other than CFB', { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB + 1 }],
    ['AES-192', { alg: TPM_ALG.AES, keyBits: 192, mode: TPM_ALG.CFB }],
  ])('an EK with %s', (_name, symmetric) => refused(ekWith({ symmetric }), 'symmetric definition is not AES-128/256-CFB'));
  it('an EK with a symmetric algorithm other than AES (even if a parser let it through)', () => {
    refused({ ...ekWith({}), symmetric: { alg: TPM_ALG.SYMCIPHER, keyBits: 128, mode: TPM_ALG.CFB } }, 'symmetric definition is not AES-128/256-CFB');
  });
  it('an AES-256-CFB RSA EK is fine: the secret comes back out', () => {
    const ek: SoftKey = softKey('rsa', { slot: 100, attributes: EK_ATTRIBUTES, scheme: { alg: TPM_ALG.NULL, hashAlg: null }, symmetric: { alg: TPM_ALG.AES, keyBits: 256, mode: TPM_ALG.CFB } });
    const cred = makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: SECRET, randomBytes: fixed(7) });
    expect(toHex(softActivateCredential(ek, AK_NAME, cred))).toBe(toHex(SECRET));
  });
});

describe('sizes and randomness are bounded', () => {
  const ek = softEk('rsa');
  it('the secret is 1..nameAlg-size bytes: empty is refused, exactly 32 for a SHA-256 EK is fine', () => {
    expectError(() => makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: new Uint8Array(0), randomBytes: fixed(1) }), MalformedInput, 'ERR_CREDENTIAL_SECRET', GrpcCode.INVALID_ARGUMENT);
    const err = expectError(() => makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: new Uint8Array(33), randomBytes: fixed(1) }), MalformedInput, 'ERR_CREDENTIAL_SECRET', GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toBe('credential secret must be 1..32 bytes');
    const one = Uint8Array.of(9);
    expect(toHex(softActivateCredential(ek, AK_NAME, makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: one, randomBytes: fixed(1) })))).toBe('09');
  });
  it('a random source that returns the wrong size, or not bytes, is refused rather than used', () => {
    for (const randomBytes of [(n: number) => new Uint8Array(n - 1), (n: number) => Array.from({ length: n }, () => 1) as unknown as Uint8Array]) {
      expect(() => makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: SECRET, randomBytes })).toThrow(RangeError);
      expect(() => makeCredential({ ekPublic: softEk('p256').pub, akName: AK_NAME, secret: SECRET, randomBytes })).toThrow(/randomBytes\(32\) returned a wrong size/);
    }
  });
  it('KDF output sizes must be whole, positive and at most 8 Kibit', () => {
    const key = new Uint8Array(32);
    for (const bits of [0, -8, 8.5, 8 * 1024 + 1, Number.NaN]) {
      expect(() => kdfa(HashAlg.SHA256, key, 'STORAGE', key, key, bits)).toThrow(`invalid KDF output size ${bits}`);
      expect(() => kdfe(HashAlg.SHA256, key, 'IDENTITY', key, key, bits)).toThrow(RangeError);
    }
    expect(kdfa(HashAlg.SHA256, key, 'STORAGE', key, key, 8 * 1024)).toHaveLength(1024);
    expect(kdfe(HashAlg.SHA256, key, 'IDENTITY', key, key, 8 * 1024)).toHaveLength(1024);
    expect(kdfe(HashAlg.SHA256, key, 'IDENTITY', key, key, 12)[0]! & 0xf0).toBe(0);
  });
  it('an odd-sized KDFa output is the first bits of the counter block with only the excess high bits cleared', () => {
    const key = new Uint8Array(32).fill(9);
    const u = Uint8Array.of(1, 2);
    const block = createHmac('sha256', key).update(Uint8Array.of(0, 0, 0, 1)).update(new TextEncoder().encode('X\0')).update(u).update(u).update(Uint8Array.of(0, 0, 0, 12)).digest();
    expect(toHex(kdfa(HashAlg.SHA256, key, 'X', u, u, 12))).toBe(toHex(Uint8Array.of(block[0]! & 0x0f, block[1]!)));
    const block9 = createHmac('sha256', key).update(Uint8Array.of(0, 0, 0, 1)).update(new TextEncoder().encode('X\0')).update(u).update(u).update(Uint8Array.of(0, 0, 0, 9)).digest();
    expect(toHex(kdfa(HashAlg.SHA256, key, 'X', u, u, 9))).toBe(toHex(Uint8Array.of(block9[0]! & 0x01, block9[1]!)));
  });
  it('KDFa and KDFe outputs longer than one block are the concatenation of counter blocks', () => {
    const key = new Uint8Array(32).fill(1);
    const long = kdfe(HashAlg.SHA256, key, 'IDENTITY', key, key, 512);
    expect(toHex(long.subarray(32))).toBe(toHex(HashAlg.SHA256.digest(Uint8Array.of(0, 0, 0, 2), key, new TextEncoder().encode('IDENTITY\0'), key, key)));
    const a = kdfa(HashAlg.SHA256, key, 'X', key, key, 520);
    expect(a).toHaveLength(65);
    expect(a[64]).not.toBe(undefined);
  });
  it('OAEP refuses a message longer than k - 2·hLen - 2 and accepts exactly that', () => {
    const h = HashAlg.SHA256;
    const k = 256;
    expect(oaepEncode(h, new Uint8Array(k - 2 * 32 - 2), new Uint8Array(0), k, new Uint8Array(32))).toHaveLength(k);
    expect(() => oaepEncode(h, new Uint8Array(k - 2 * 32 - 1), new Uint8Array(0), k, new Uint8Array(32))).toThrow('OAEP message too long');
  });
});

describe('ECC: the ephemeral key is a uniform scalar in [1, n-1]', () => {
  const ek = softEk('p256');
  const order = ECC_CURVES.find((c) => c.jwkName === 'P-256')!.order;
  const orderBytes = new Uint8Array(Buffer.from(order.toString(16).padStart(64, '0'), 'hex'));
  /** Hands out `candidates` for the 32-byte draws, then a valid scalar. */
  function sequence(candidates: Uint8Array[]) {
    const calls: number[] = [];
    const randomBytes = (n: number) => {
      calls.push(n);
      return Uint8Array.from(candidates.shift() ?? new Uint8Array(n).fill(0x11));
    };
    return { randomBytes, calls };
  }
  it('zero and n itself are rejected and redrawn; the credential equals one made with the first valid draw', () => {
    const s = sequence([new Uint8Array(32), orderBytes]);
    const cred = makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: SECRET, randomBytes: s.randomBytes });
    expect(s.calls).toEqual([32, 32, 32]);
    const direct = makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: SECRET, randomBytes: fixed(0x11) });
    expect(toHex(encodeCredentialFile(cred))).toBe(toHex(encodeCredentialFile(direct)));
    expect(toHex(softActivateCredential(ek, AK_NAME, cred))).toBe(toHex(SECRET));
  });
  it('n - 1 is a valid scalar', () => {
    const nMinus1 = new Uint8Array(Buffer.from((order - 1n).toString(16).padStart(64, '0'), 'hex'));
    const s = sequence([nMinus1]);
    const cred = makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: SECRET, randomBytes: s.randomBytes });
    expect(s.calls).toEqual([32]);
    expect(toHex(softActivateCredential(ek, AK_NAME, cred))).toBe(toHex(SECRET));
  });
  it('a source that never yields a valid scalar is refused after 64 draws, not looped on forever', () => {
    let draws = 0;
    const randomBytes = (n: number) => {
      draws++;
      return new Uint8Array(n).fill(0xff);
    };
    expect(() => makeCredential({ ekPublic: ek.pub, akName: AK_NAME, secret: SECRET, randomBytes })).toThrow('randomBytes produced no valid ECC scalar in 64 attempts');
    expect(draws).toBe(64);
  });
  it('an EK point that is not on its curve is MalformedInput, not a crash', () => {
    if (ek.pub.type !== 'ecc') throw new Error('unreachable');
    const bad: TpmPublic = { ...ek.pub, y: Uint8Array.from(ek.pub.y, (b, i) => (i === 31 ? b ^ 1 : b)) };
    const err = expectError(() => makeCredential({ ekPublic: bad, akName: AK_NAME, secret: SECRET, randomBytes: fixed(3) }), MalformedInput, 'ERR_TPM_BAD_PUBLIC_KEY', GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toBe('EK: ECC point is not on its curve');
    expect(err.cause, 'the crypto library\'s reason is kept for the operator').toBeInstanceOf(Error);
  });
  it('an EK whose x coordinate has a leading zero byte (sent short) still gets a credential it can open', () => {
    let pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    for (let i = 0; i < 20_000 && Buffer.from(pair.publicKey.export({ format: 'jwk' }).x!, 'base64url')[0] !== 0; i++) {
      pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    }
    const jwk = pair.publicKey.export({ format: 'jwk' });
    const x = new Uint8Array(Buffer.from(jwk.x!, 'base64url'));
    expect(x[0]).toBe(0);
    const pub = parseTpmtPublic(
      encodeTpmtPublic({
        type: 'ecc', nameAlg: HashAlg.SHA256, attributes: EK_ATTRIBUTES, authPolicy: new Uint8Array(0),
        symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB }, scheme: { alg: TPM_ALG.NULL, hashAlg: null },
        curve: ECC_CURVES[0]!, kdf: { alg: TPM_ALG.NULL, hashAlg: null },
        x: x.subarray(1), y: new Uint8Array(Buffer.from(jwk.y!, 'base64url')),
      }),
    );
    const shortEk: SoftKey = { ...pair, pub };
    const cred = makeCredential({ ekPublic: pub, akName: AK_NAME, secret: SECRET, randomBytes: fixed(5) });
    expect(toHex(softActivateCredential(shortEk, AK_NAME, cred))).toBe(toHex(SECRET));
  });
});

describe('malformed names and credential files are MalformedInput naming what was wrong', () => {
  const ek = softEk('rsa').pub;
  it('an AK name with trailing bytes or an unknown hash is refused before anything is encrypted to it', () => {
    for (const akName of [Uint8Array.from([...AK_NAME, 0]), new BytesWriter().u16be(0x0099).bytes(new Uint8Array(32)).finish()]) {
      expect(() => makeCredential({ ekPublic: ek, akName, secret: SECRET, randomBytes: fixed(1) })).toThrow(MalformedInput);
    }
  });
  it('a malformed AK name says which part of TPM2B_NAME is wrong', () => {
    const make = (akName: Uint8Array) => () => makeCredential({ ekPublic: ek, akName, secret: SECRET, randomBytes: fixed(1) });
    expect(make(Uint8Array.of(0))).toThrow(/^TPM2B_NAME: nameAlg: needs 2 bytes, 1 remain at offset 0$/);
    expect(make(Uint8Array.of(0, 0x99))).toThrow(/^AK name: unsupported TPM_ALG_ID 0x0099$/);
    expect(make(AK_NAME.subarray(0, 20))).toThrow(/^TPM2B_NAME: digest: needs 32 bytes, 18 remain at offset 2$/);
  });
  it('a truncated credential file names the field it ran out in', () => {
    const file = encodeCredentialFile({ idObject: new Uint8Array(4), encryptedSecret: new Uint8Array(2) });
    const at = (n: number) => () => parseCredentialFile(file.subarray(0, n));
    expect(at(2)).toThrow(/^tpm2-tools makecredential file: magic: needs 4 bytes/);
    expect(at(6)).toThrow(/^tpm2-tools makecredential file: version: needs 4 bytes/);
    expect(at(12)).toThrow(/^tpm2-tools makecredential file: TPM2B_ID_OBJECT\.buffer: needs 4 bytes/);
    expect(at(15)).toThrow(/^tpm2-tools makecredential file: TPM2B_ENCRYPTED_SECRET\.size: needs 2 bytes/);
    expect(at(17)).toThrow(/^tpm2-tools makecredential file: TPM2B_ENCRYPTED_SECRET\.buffer: needs 2 bytes/);
  });
  it('a credential file with another magic or version says which', () => {
    const file = encodeCredentialFile({ idObject: new Uint8Array(4), encryptedSecret: new Uint8Array(2) });
    expect(() => parseCredentialFile(Uint8Array.from([0, ...file.subarray(1)]))).toThrow(/magic is not 0xBADCC0DE/);
    expect(() => parseCredentialFile(Uint8Array.from([...file.subarray(0, 7), 2, ...file.subarray(8)]))).toThrow(/version 2 is not 1/);
  });
  it('the parsed credential is a copy: changing the file afterwards changes nothing', () => {
    const file = encodeCredentialFile({ idObject: new Uint8Array(4).fill(1), encryptedSecret: new Uint8Array(2).fill(2) });
    const parsed = parseCredentialFile(file);
    file.fill(0);
    expect(toHex(parsed.idObject)).toBe('01010101');
    expect(toHex(parsed.encryptedSecret)).toBe('0202');
  });
});
