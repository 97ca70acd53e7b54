import { describe, it, expect, expectTypeOf } from 'vitest';
import { readFileSync } from 'node:fs';
import { AttestationRefused, GrpcCode, MalformedInput } from '../../src/errors.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { parseAttest } from '../../src/tpm/attest.js';
import { BytesWriter, toHex } from '../../src/tpm/bytes.js';
import { TPM_ALG, TPM_ST } from '../../src/tpm/constants.js';
import { PcrSelection } from '../../src/tpm/pcrs.js';
import { hierarchyQualifiedName, parseTpmtPublic, qualifiedName } from '../../src/tpm/public.js';
import { QuotedPcrs, verifyQuote, type VerifyQuoteInput } from '../../src/tpm/quote.js';
import { parseSignature, verifySignature } from '../../src/tpm/signature.js';
import { expectError } from './expect-error.js';
import { buildAttest, signTpm, softEk, softKey, softQuote, type KeyKind } from './soft-tpm.js';

const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));
const WINDOWS = JSON.parse(readFileSync(new URL('../fixtures/quotes/windows_gcp_shielded_vm.json', import.meta.url), 'utf8'));
const WINDOWS_EXPECTED_PCRS: Record<string, string> = {
  0: '51c323de0c0c694f4601cdd02beb58ff13629f74', 4: '0ca4b4a4784bf4eed9c3556aba1dac5585a5951a',
  5: '2b022297d4f1e0101c8c986be229c8dd0350514d', 7: '859a5877266b5c909613468091a73380a5386786',
  11: 'ebb98df76613280f20dc38221143a9e727399486', 12: '75f3e16b6ef0b455282ed8fbbdfcc3da9abd241d',
  13: '383de79fbdde6296205e2afe44800e0c053fc82f', 14: '275a689f9d5f8244a4b999fabe600c5816be5511',
  21: 'ffffffffffffffffffffffffffffffffffffffff',
};

const NONCE = new Uint8Array(32).fill(7);
const SEL = PcrSelection.parse('sha256:0,1,7,10');
const VALUES = SEL.banks[0]!.indices.map((i) => new Uint8Array(32).fill(i + 1));

function input(kind: KeyKind = 'rsa', over: Partial<VerifyQuoteInput> = {}, spec: Partial<Parameters<typeof softQuote>[1]> = {}): VerifyQuoteInput {
  const ak = softKey(kind);
  const q = softQuote(ak, { selection: SEL, values: VALUES, nonce: NONCE, ...spec });
  return { akPublic: ak.pub, ...q, expectedSelection: SEL, nonce: NONCE, ...over };
}

const refused = (i: VerifyQuoteInput, code: string): void => {
  expectError(() => verifyQuote(i), AttestationRefused, code, GrpcCode.PERMISSION_DENIED);
};

describe('verifyQuote: the real Windows GCE quote (go-attestation testdata)', () => {
  const ak = parseTpmtPublic(b64(WINDOWS.AK.Public));
  const selection = PcrSelection.parse(`sha1:${Array.from({ length: 24 }, (_, i) => i).join(',')}`);
  const byIndex = new Map<number, Uint8Array>(WINDOWS.Log.PCRs.map((p: { Index: number; Digest: string }) => [p.Index, b64(p.Digest)]));
  const values = new BytesWriter();
  for (let i = 0; i < 24; i++) values.bytes(byIndex.get(i)!);
  const base: VerifyQuoteInput = {
    akPublic: ak,
    attestBytes: b64(WINDOWS.Quote.Quote),
    signatureBytes: b64(WINDOWS.Quote.Signature),
    pcrValues: values.finish(),
    expectedSelection: selection,
    nonce: new Uint8Array(0),
    allowedHashAlgs: [HashAlg.SHA1],
  };

  it('verifies over the 24 SHA-1 PCRs and returns the expected values', () => {
    const quoted = verifyQuote(base);
    expect(quoted.selection.equals(selection)).toBe(true);
    expect(quoted.signatureHash).toBe(HashAlg.SHA1);
    for (const [i, v] of Object.entries(WINDOWS_EXPECTED_PCRS)) expect(toHex(quoted.get('sha1', Number(i))!)).toBe(v);
    expect(quoted.get('sha256', 0)).toBeUndefined();
  });
  it('binds to the AK: qualifiedSigner check with the real value passes, another value fails', () => {
    const attest = parseAttest(base.attestBytes);
    expect(verifyQuote({ ...base, expectedQualifiedSigner: attest.qualifiedSigner })).toBeInstanceOf(QuotedPcrs);
    refused({ ...base, expectedQualifiedSigner: new Uint8Array(34) }, 'ERR_QUOTE_SIGNER');
  });
  it('SHA-1 quotes are refused by default', () => {
    refused({ ...base, allowedHashAlgs: undefined }, 'ERR_QUOTE_HASH_NOT_ALLOWED');
  });
  it('tampered PCR value', () => {
    const pcrValues = Uint8Array.from(base.pcrValues);
    pcrValues[7 * 20]! ^= 1;
    refused({ ...base, pcrValues }, 'ERR_QUOTE_PCR_DIGEST');
  });
  it('nonce mismatch', () => refused({ ...base, nonce: new Uint8Array(1) }, 'ERR_QUOTE_NONCE'));
});

describe('verifyQuote with software AKs', () => {
  it.each(['rsa', 'p256', 'p384'] as const)('accepts a good %s quote', (kind) => {
    const q = verifyQuote(input(kind));
    expect([...q.bank(HashAlg.SHA256).keys()]).toEqual([0, 1, 7, 10]);
    expect(q.get(HashAlg.SHA256, 7)![0]).toBe(8);
  });
  it('accepts RSA-PSS and SHA-384 signatures', () => {
    const ak = softKey('rsa');
    const attestBytes = buildAttest({ selection: SEL, values: VALUES, nonce: NONCE, hash: HashAlg.SHA384 });
    const signatureBytes = signTpm(ak, attestBytes, HashAlg.SHA384, 'rsapss');
    const pcrValues = new BytesWriter();
    VALUES.forEach((v) => pcrValues.bytes(v));
    expect(verifyQuote({ akPublic: ak.pub, attestBytes, signatureBytes, pcrValues: pcrValues.finish(), expectedSelection: SEL, nonce: NONCE })).toBeInstanceOf(QuotedPcrs);
  });
  it('signature from another key', () => {
    const other = softKey('rsa', { slot: 1 });
    refused(input('rsa', { akPublic: other.pub }), 'ERR_QUOTE_SIGNATURE');
    refused(input('p256', { akPublic: softKey('p256', { slot: 1 }).pub }), 'ERR_QUOTE_SIGNATURE');
  });
  it('ECDSA signature presented for an RSA AK', () => refused(input('p256', { akPublic: softKey('rsa').pub }), 'ERR_QUOTE_SIGNATURE'));
  it('attest bytes modified after signing', () => {
    const i = input();
    const attestBytes = Uint8Array.from(i.attestBytes);
    attestBytes[attestBytes.length - 1]! ^= 1;
    refused({ ...i, attestBytes }, 'ERR_QUOTE_SIGNATURE');
  });
  it('magic is not TPM_GENERATED (a non-restricted key signed an outside structure)', () =>
    refused(input('rsa', {}, { magic: 0xff544348 }), 'ERR_QUOTE_MAGIC'));
  it('attestation of another type (certify)', () => refused(input('rsa', {}, { type: TPM_ST.ATTEST_CERTIFY }), 'ERR_QUOTE_TYPE'));
  it('nonce reused / quote from an earlier attestation', () =>
    refused(input('rsa', { nonce: new Uint8Array(32).fill(8) }), 'ERR_QUOTE_NONCE'));
  it('nonce prefix only', () => refused(input('rsa', { nonce: NONCE.subarray(0, 16) }), 'ERR_QUOTE_NONCE'));
  it('quote selection differs from requested', () => {
    refused(input('rsa', { expectedSelection: PcrSelection.parse('sha256:0,1,7') }), 'ERR_QUOTE_SELECTION');
    refused(input('rsa', { expectedSelection: PcrSelection.parse('sha1:0,1,7,10') }), 'ERR_QUOTE_SELECTION');
  });
  it('PCR supplied but not quoted: server asked for PCR 11 too, quote lacks it', () =>
    refused(input('rsa', { expectedSelection: PcrSelection.parse('sha256:0,1,7,10,11') }), 'ERR_QUOTE_SELECTION'));
  it('PCR supplied but not quoted: values file carries an extra PCR', () => {
    const i = input();
    refused({ ...i, pcrValues: Uint8Array.from([...i.pcrValues, ...new Uint8Array(32)]) }, 'ERR_QUOTE_PCR_VALUES');
  });
  it('PCR value tampered', () => {
    const i = input();
    const pcrValues = Uint8Array.from(i.pcrValues);
    pcrValues[40]! ^= 0x80;
    refused({ ...i, pcrValues }, 'ERR_QUOTE_PCR_DIGEST');
  });
  it('qualifiedSigner of another EK', () => {
    const ak = softKey('rsa');
    const qn = qualifiedName(qualifiedName(hierarchyQualifiedName(), softEk('rsa').pub), ak.pub);
    const good = input('rsa', {}, { qualifiedSigner: qn });
    expect(verifyQuote({ ...good, expectedQualifiedSigner: qn })).toBeInstanceOf(QuotedPcrs);
    const otherQn = qualifiedName(qualifiedName(hierarchyQualifiedName(), softEk('p256').pub), ak.pub);
    refused({ ...good, expectedQualifiedSigner: otherQn }, 'ERR_QUOTE_SIGNER');
  });
  it('malformed signature bytes are MalformedInput', () => {
    const i = input();
    expectError(() => verifyQuote({ ...i, signatureBytes: i.signatureBytes.subarray(0, 10) }), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
    const hmacSig = new BytesWriter().u16be(TPM_ALG.HMAC).u16be(TPM_ALG.SHA256).finish();
    expectError(() => verifyQuote({ ...i, signatureBytes: hmacSig }), MalformedInput, 'ERR_TPM_UNSUPPORTED_ALG', GrpcCode.INVALID_ARGUMENT);
  });
  it('signed but malformed TPMS_ATTEST is MalformedInput', () => {
    const ak = softKey('rsa');
    const attestBytes = buildAttest({ selection: SEL, values: VALUES, nonce: NONCE }).subarray(0, 40);
    const signatureBytes = signTpm(ak, attestBytes);
    expectError(
      () => verifyQuote({ akPublic: ak.pub, attestBytes, signatureBytes, pcrValues: new Uint8Array(128), expectedSelection: SEL, nonce: NONCE }),
      MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT,
    );
  });
  it('the result is a snapshot: mutating inputs or outputs changes nothing', () => {
    const i = input();
    const q = verifyQuote(i);
    (i.pcrValues as Uint8Array).fill(0);
    q.get('sha256', 0)!.fill(0xee);
    expect(q.get('sha256', 0)![0]).toBe(1);
  });
  it('only verifyQuote creates QuotedPcrs', () => {
    expect(() => new QuotedPcrs(Symbol('QuotedPcrs.create'), {} as never)).toThrow(TypeError);
    expect(QuotedPcrs.isQuotedPcrs({ selection: SEL, get: () => undefined })).toBe(false);
    expect(QuotedPcrs.isQuotedPcrs(verifyQuote(input()))).toBe(true);
    // A structurally similar literal is not assignable: the #private field makes the type nominal.
    expectTypeOf<{ selection: PcrSelection; get(): undefined }>().not.toMatchTypeOf<QuotedPcrs>();
  });
});

describe('TPMT_SIGNATURE', () => {
  it('ECDSA r and s shorter than the curve are left-padded; longer are invalid', () => {
    const ak = softKey('p256');
    const msg = new TextEncoder().encode('m');
    let sig = parseSignature(signTpm(ak, msg));
    for (let tries = 0; sig.scheme === 'ecdsa' && sig.r[0] !== 0 && tries < 200; tries++) sig = parseSignature(signTpm(ak, msg));
    if (sig.scheme !== 'ecdsa') throw new Error('unreachable');
    const trimmed = { ...sig, r: sig.r[0] === 0 ? sig.r.subarray(1) : sig.r };
    expect(verifySignature(ak.pub, trimmed, msg)).toBe(true);
    expect(verifySignature(ak.pub, { ...sig, r: Uint8Array.from([1, ...sig.r]) }, msg)).toBe(false);
  });
  it('RSA signature of the wrong length is invalid', () => {
    const ak = softKey('rsa');
    const sig = parseSignature(signTpm(ak, new Uint8Array(1)));
    if (sig.scheme === 'ecdsa') throw new Error('unreachable');
    expect(verifySignature(ak.pub, { ...sig, signature: sig.signature.subarray(1) }, new Uint8Array(1))).toBe(false);
  });
});
