import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { toHex } from '../../src/tpm/bytes.js';
import { TPM_ALG } from '../../src/tpm/constants.js';
import {
  ekPubHash, encodeTpm2bPublic, encodeTpmtPublic, hierarchyQualifiedName, parseTpm2bPublic, parseTpmtPublic,
  publicName, publicToKeyObject, publicToSpkiDer, qualifiedName,
} from '../../src/tpm/public.js';
import { expectError } from './expect-error.js';
import { EK_ATTRIBUTES, softEk, softKey } from './soft-tpm.js';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const WINDOWS = JSON.parse(readFileSync(new URL('../fixtures/quotes/windows_gcp_shielded_vm.json', import.meta.url), 'utf8'));

describe('parseTpmtPublic', () => {
  it('parses the real Windows GCE AK public area (go-attestation testdata)', () => {
    const pub = parseTpmtPublic(new Uint8Array(Buffer.from(WINDOWS.AK.Public, 'base64')));
    expect(pub.type).toBe('rsa');
    expect(pub.nameAlg).toBe(HashAlg.SHA256);
    expect(pub.attributes).toBe(0x00050472);
    expect(pub.scheme.alg).toBe(TPM_ALG.RSASSA);
    expect(pub.scheme.hashAlg).toBe(HashAlg.SHA1);
    expect(pub.type === 'rsa' && pub.keyBits).toBe(2048);
    expect(pub.authPolicy.length).toBe(32);
    expect(toHex(publicName(pub))).toBe('000b4ce9b151f75089d74c15dabe9d520cffafbcafd5d43be0aad2e2d88d54717e2e');
    // The key converts to a usable node KeyObject and PKIX DER.
    expect(publicToKeyObject(pub).asymmetricKeyType).toBe('rsa');
    expect(publicToSpkiDer(pub)[0]).toBe(0x30);
  });

  it('parses the RSA EK and P-384 EK header layouts from tpm-notes §6', () => {
    const rsa = softKey('rsa', {
      slot: 100,
      attributes: EK_ATTRIBUTES,
      authPolicy: hex('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa'),
      scheme: { alg: TPM_ALG.NULL, hashAlg: null },
      symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    });
    const bytes = encodeTpm2bPublic(rsa.pub);
    expect(toHex(bytes.subarray(0, 10))).toBe('013a0001000b000300b2');
    const parsed = parseTpm2bPublic(bytes);
    expect(parsed.symmetric).toEqual({ alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB });
    const p384 = softEk('p384');
    expect(p384.pub.type === 'ecc' && p384.pub.curve.jwkName).toBe('P-384');
    expect(p384.pub.symmetric?.keyBits).toBe(256);
  });

  it('round-trips encode → parse for RSA, P-256 and P-384 and matches node SPKI', () => {
    for (const kind of ['rsa', 'p256', 'p384'] as const) {
      const k = softKey(kind);
      const again = parseTpmtPublic(encodeTpmtPublic(k.pub));
      expect(toHex(again.tpmtBytes)).toBe(toHex(k.pub.tpmtBytes));
      const spki = publicToSpkiDer(k.pub);
      expect(toHex(spki)).toBe(toHex(new Uint8Array(k.publicKey.export({ type: 'spki', format: 'der' }))));
      expect(ekPubHash(spki)).toBe(createHash('sha256').update(spki).digest('hex'));
    }
  });

  it('computes Name = nameAlg ‖ H(TPMT_PUBLIC) with the object nameAlg (SHA-384 under the P-384 EK)', () => {
    const k = softKey('p256', { nameAlg: HashAlg.SHA384 });
    const name = publicName(k.pub);
    expect(toHex(name.subarray(0, 2))).toBe('000c');
    expect(toHex(name.subarray(2))).toBe(createHash('sha384').update(k.pub.tpmtBytes).digest('hex'));
  });

  it('computes the qualified name chain endorsement → EK → AK', () => {
    const ek = softEk('rsa');
    const ak = softKey('rsa');
    const qnEk = qualifiedName(hierarchyQualifiedName(), ek.pub);
    const expectedEk = createHash('sha256').update(hex('4000000b')).update(publicName(ek.pub)).digest('hex');
    expect(toHex(qnEk)).toBe(`000b${expectedEk}`);
    const qnAk = qualifiedName(qnEk, ak.pub);
    expect(toHex(qnAk)).toBe(`000b${createHash('sha256').update(qnEk).update(publicName(ak.pub)).digest('hex')}`);
  });

  it('truncated TPM2B_PUBLIC', () => {
    const bytes = encodeTpm2bPublic(softKey('rsa').pub);
    for (const cut of [0, 1, 2, 10, 100, bytes.length - 1]) {
      expectError(() => parseTpm2bPublic(bytes.subarray(0, cut)), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
    }
  });

  it('TPM2B_PUBLIC with trailing bytes', () => {
    const bytes = encodeTpm2bPublic(softKey('p256').pub);
    expectError(() => parseTpm2bPublic(Uint8Array.from([...bytes, 0])), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
  });

  it('refuses unknown type, nameAlg, curve and symmetric algorithms', () => {
    const good = softKey('p256').pub.tpmtBytes;
    const patch = (offset: number, v: number): Uint8Array => {
      const b = Uint8Array.from(good);
      b[offset] = v >> 8;
      b[offset + 1] = v & 0xff;
      return b;
    };
    expectError(() => parseTpmtPublic(patch(0, 0x0008)), MalformedInput, 'ERR_TPM_UNSUPPORTED_ALG', GrpcCode.INVALID_ARGUMENT); // keyedhash
    expectError(() => parseTpmtPublic(patch(2, 0x0012)), MalformedInput, 'ERR_TPM_UNSUPPORTED_ALG', GrpcCode.INVALID_ARGUMENT); // SM3 nameAlg
    expectError(() => parseTpmtPublic(patch(10, 0x0025)), MalformedInput, 'ERR_TPM_UNSUPPORTED_ALG', GrpcCode.INVALID_ARGUMENT); // symmetric
    // ECC: type(2) nameAlg(2) attributes(4) authPolicy(2) symmetric(2) scheme(2) hash(2), curveID at 16
    expectError(() => parseTpmtPublic(patch(14, 0x0005)), MalformedInput, 'ERR_TPM_UNSUPPORTED_ALG', GrpcCode.INVALID_ARGUMENT); // HMAC as scheme hash
    expectError(() => parseTpmtPublic(patch(16, 0x0005)), MalformedInput, 'ERR_TPM_UNSUPPORTED_ALG', GrpcCode.INVALID_ARGUMENT); // P-521
  });

  it('refuses an RSA modulus that does not match keyBits', () => {
    const k = softKey('rsa');
    if (k.pub.type !== 'rsa') throw new Error('unreachable');
    const bytes = encodeTpmtPublic({ ...k.pub, keyBits: 1024 });
    expectError(() => parseTpmtPublic(bytes), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
  });

  it('refuses an ECC point not on the curve when converting to a key', () => {
    const k = softKey('p256');
    if (k.pub.type !== 'ecc') throw new Error('unreachable');
    const y = Uint8Array.from(k.pub.y);
    y[31]! ^= 1;
    const bad = parseTpmtPublic(encodeTpmtPublic({ ...k.pub, y }));
    expectError(() => publicToKeyObject(bad), MalformedInput, 'ERR_TPM_BAD_PUBLIC_KEY', GrpcCode.INVALID_ARGUMENT);
  });
});
