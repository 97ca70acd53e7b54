/**
 * Security property: every quote refusal is PERMISSION_DENIED, carries the failed check as its audit `rule`, and its
 * message says what was wrong and with which values, so an operator can tell a forged quote from a misconfiguration.
 * Also: only a verifyQuote result is ever taken for quoted PCRs, and asking about anything else answers false
 * instead of throwing (a predicate that throws on odd input would turn a type check into a crash).
 */
import { describe, expect, it } from 'vitest';
import { AttestationRefused, GrpcCode } from '../../src/errors.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { TPM_ST } from '../../src/tpm/constants.js';
import { PcrSelection } from '../../src/tpm/pcrs.js';
import { QuotedPcrs, verifyQuote, type VerifyQuoteInput } from '../../src/tpm/quote.js';
import { expectError } from './expect-error.js';
import { signTpm, softKey, softQuote } from './soft-tpm.js';

const NONCE = new Uint8Array(32).fill(3);
const SEL = PcrSelection.parse('sha256:0,7');
const VALUES = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)];

function quote(over: Partial<VerifyQuoteInput> = {}, spec: Partial<Parameters<typeof softQuote>[1]> = {}): VerifyQuoteInput {
  const ak = softKey('rsa');
  return { akPublic: ak.pub, ...softQuote(ak, { selection: SEL, values: VALUES, nonce: NONCE, ...spec }), expectedSelection: SEL, nonce: NONCE, ...over };
}

/** Asserts the refusal and returns its message for the caller's checks on what it says. */
function refusal(input: VerifyQuoteInput, code: string): string {
  const err = expectError(() => verifyQuote(input), AttestationRefused, code, GrpcCode.PERMISSION_DENIED);
  expect(err.fields, 'the audit line names the failed check').toEqual({ rule: code });
  expect(err.message).toMatch(/^quote: \S/);
  return err.message;
}

describe('a refused quote says which check failed and why', () => {
  it('a SHA-1 signature when only SHA-256 is allowed names the hash', () => {
    const ak = softKey('rsa');
    const q = quote();
    const signatureBytes = signTpm(ak, q.attestBytes, HashAlg.SHA1);
    expect(refusal({ ...q, signatureBytes, allowedHashAlgs: [HashAlg.SHA256] }, 'ERR_QUOTE_HASH_NOT_ALLOWED')).toBe('quote: signature hash sha1 is not allowed');
  });
  it('a quote signed by another key says the signature does not verify with the AK', () => {
    expect(refusal(quote({ akPublic: softKey('rsa', { slot: 1 }).pub }), 'ERR_QUOTE_SIGNATURE')).toMatch(/signature does not verify with the AK/);
  });
  it('a structure the TPM did not generate says so', () => {
    expect(refusal(quote({}, { magic: 0x41414141 }), 'ERR_QUOTE_MAGIC')).toMatch(/magic is not TPM_GENERATED_VALUE/);
  });
  it('another attestation type names the type it was', () => {
    expect(refusal(quote({}, { type: TPM_ST.ATTEST_CERTIFY }), 'ERR_QUOTE_TYPE')).toBe(
      `quote: TPMS_ATTEST type 0x${TPM_ST.ATTEST_CERTIFY.toString(16)} is not TPM_ST_ATTEST_QUOTE`,
    );
  });
  it('a replayed quote (another nonce) says the nonce does not match', () => {
    expect(refusal(quote({ nonce: new Uint8Array(32) }), 'ERR_QUOTE_NONCE')).toMatch(/extraData does not equal the nonce/);
  });
  it('a quote whose qualified signer names another key says it is not the expected AK', () => {
    expect(refusal(quote({ expectedQualifiedSigner: new Uint8Array(34).fill(9) }), 'ERR_QUOTE_SIGNER')).toMatch(/qualifiedSigner is not the expected AK/);
  });
  it('a quote over other PCRs names both selections', () => {
    expect(refusal(quote({ expectedSelection: PcrSelection.parse('sha256:0,7,9') }), 'ERR_QUOTE_SELECTION')).toBe(
      'quote: quote selects "sha256:0,7", expected "sha256:0,7,9"',
    );
  });
  it('a values file of the wrong size names both sizes', () => {
    const q = quote();
    expect(refusal({ ...q, pcrValues: q.pcrValues.subarray(0, 40) }, 'ERR_QUOTE_PCR_VALUES')).toBe('quote: 40 bytes of PCR values for a selection of 64');
  });
  it('PCR values the TPM did not sign say they do not match pcrDigest', () => {
    const q = quote();
    const pcrValues = Uint8Array.from(q.pcrValues);
    pcrValues[0]! ^= 1;
    expect(refusal({ ...q, pcrValues }, 'ERR_QUOTE_PCR_DIGEST')).toMatch(/PCR values do not match the quoted pcrDigest/);
  });
});

describe('only verifyQuote output is quoted PCRs', () => {
  it('constructing one outside verifyQuote fails and says who may', () => {
    expect(() => new QuotedPcrs(Symbol('QuotedPcrs.create'), {} as never)).toThrow(/only be created by verifyQuote/);
  });
  it.each([null, undefined, 0, 'quoted', true, Symbol('x'), () => undefined, {}, Object.create(null)])('%s is not quoted PCRs, and asking does not throw', (value) => {
    expect(QuotedPcrs.isQuotedPcrs(value)).toBe(false);
  });
});
