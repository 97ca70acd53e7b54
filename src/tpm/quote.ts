/**
 * @module tpm/quote
 * `verifyQuote`: the only way to obtain `QuotedPcrs`, i.e. PCR values that an AK signed over.
 */
import { timingSafeEqual } from 'node:crypto';
import { AttestationRefused } from '../errors.js';
import { HashAlg } from './alg.js';
import { parseAttest, type ClockInfo } from './attest.js';
import { concatBytes } from './bytes.js';
import { TPM_GENERATED_VALUE, TPM_ST } from './constants.js';
import { parsePcrValues, type PcrSelection } from './pcrs.js';
import type { TpmPublic } from './public.js';
import { parseSignature, verifySignature } from './signature.js';

export const ERR_QUOTE_SIGNATURE = 'ERR_QUOTE_SIGNATURE';
export const ERR_QUOTE_HASH_NOT_ALLOWED = 'ERR_QUOTE_HASH_NOT_ALLOWED';
export const ERR_QUOTE_MAGIC = 'ERR_QUOTE_MAGIC';
export const ERR_QUOTE_TYPE = 'ERR_QUOTE_TYPE';
export const ERR_QUOTE_NONCE = 'ERR_QUOTE_NONCE';
export const ERR_QUOTE_SIGNER = 'ERR_QUOTE_SIGNER';
export const ERR_QUOTE_SELECTION = 'ERR_QUOTE_SELECTION';
export const ERR_QUOTE_PCR_VALUES = 'ERR_QUOTE_PCR_VALUES';
export const ERR_QUOTE_PCR_DIGEST = 'ERR_QUOTE_PCR_DIGEST';

/** Signature hashes accepted unless the caller says otherwise: SHA-1 quotes are refused by default. */
export const DEFAULT_QUOTE_HASH_ALGS: readonly HashAlg[] = [HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512];

const QUOTED_PCRS_TOKEN = Symbol('QuotedPcrs.create');

/** PCR values covered by a verified quote. Only `verifyQuote` can construct one. */
export class QuotedPcrs {
  readonly #values: ReadonlyMap<string, ReadonlyMap<number, Uint8Array>>;
  readonly selection: PcrSelection;
  /** Hash of the quote signature (which is also the hash of pcrDigest). */
  readonly signatureHash: HashAlg;
  readonly clockInfo: ClockInfo;
  readonly firmwareVersion: bigint;
  readonly qualifiedSigner: Uint8Array;

  /** @internal The token is module-private: any other caller gets a TypeError. */
  constructor(
    token: symbol,
    init: {
      selection: PcrSelection;
      values: ReadonlyMap<string, ReadonlyMap<number, Uint8Array>>;
      signatureHash: HashAlg;
      clockInfo: ClockInfo;
      firmwareVersion: bigint;
      qualifiedSigner: Uint8Array;
    },
  ) {
    if (token !== QUOTED_PCRS_TOKEN) throw new TypeError('QuotedPcrs can only be created by verifyQuote');
    this.#values = init.values;
    this.selection = init.selection;
    this.signatureHash = init.signatureHash;
    this.clockInfo = init.clockInfo;
    this.firmwareVersion = init.firmwareVersion;
    this.qualifiedSigner = init.qualifiedSigner;
    Object.freeze(this);
  }

  /** The quoted value of PCR `index` in `bank` (a copy), or undefined if the quote did not cover it. */
  get(bank: HashAlg | string, index: number): Uint8Array | undefined {
    const name = typeof bank === 'string' ? bank : bank.name;
    const v = this.#values.get(name)?.get(index);
    return v === undefined ? undefined : Uint8Array.from(v);
  }

  /** Quoted values of one bank, ascending index. */
  bank(bank: HashAlg | string): ReadonlyMap<number, Uint8Array> {
    const name = typeof bank === 'string' ? bank : bank.name;
    return new Map([...(this.#values.get(name) ?? new Map<number, Uint8Array>())].map(([i, v]) => [i, Uint8Array.from(v)]));
  }

  static isQuotedPcrs(value: unknown): value is QuotedPcrs {
    return typeof value === 'object' && value !== null && #values in value;
  }
}

export interface VerifyQuoteInput {
  /** The AK public area; its attributes must already have passed `checkAkAttributes`. */
  readonly akPublic: TpmPublic;
  /** TPMS_ATTEST exactly as signed (`tpm2_quote -m`). */
  readonly attestBytes: Uint8Array;
  /** TPMT_SIGNATURE (`tpm2_quote -s`, tss format). */
  readonly signatureBytes: Uint8Array;
  /** The `--pcrs_format values` file the agent sent. */
  readonly pcrValues: Uint8Array;
  /** The selection the server asked for; the quote must select exactly this. */
  readonly expectedSelection: PcrSelection;
  /** The nonce the server sent for this attestation. */
  readonly nonce: Uint8Array;
  /** Signature hashes allowed; defaults to DEFAULT_QUOTE_HASH_ALGS. */
  readonly allowedHashAlgs?: readonly HashAlg[];
  /** If given, TPMS_ATTEST.qualifiedSigner must equal it (QN of the AK under the EK, see public.qualifiedName). */
  readonly expectedQualifiedSigner?: Uint8Array;
}

function refuse(code: string, message: string): AttestationRefused {
  return new AttestationRefused(code, `quote: ${message}`, { fields: { rule: code } });
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Verifies a TPM2_Quote and returns the PCR values it covers. Checks, in this order:
 * 1. the TPMT_SIGNATURE hash is allowed and the signature over the raw TPMS_ATTEST verifies with the AK;
 * 2. magic is TPM_GENERATED_VALUE (the TPM itself produced the structure);
 * 3. type is TPM_ST_ATTEST_QUOTE;
 * 4. extraData equals the nonce (constant time), so the quote is fresh for this attestation;
 * 5. qualifiedSigner equals `expectedQualifiedSigner`, when given;
 * 6. the quoted TPML_PCR_SELECTION equals `expectedSelection` exactly;
 * 7. the values file has exactly one value per selected PCR and H_sig(values) equals pcrDigest.
 *
 * It does NOT prove: that the AK lives in a genuine TPM (that is credential activation against a trusted EK),
 * that the AK is restricted (`checkAkAttributes`), that the PCR values are good (policy), or anything about
 * the event log (replay must use the returned QuotedPcrs). A nonce the caller reuses is the caller's problem.
 * Malformed bytes throw MalformedInput; a failed check throws AttestationRefused with a distinct code.
 */
export function verifyQuote(input: VerifyQuoteInput): QuotedPcrs {
  const allowed = input.allowedHashAlgs ?? DEFAULT_QUOTE_HASH_ALGS;
  // Snapshot inputs so a caller mutating its buffers cannot change what was verified.
  const attestBytes = Uint8Array.from(input.attestBytes);
  const nonce = Uint8Array.from(input.nonce);

  const signature = parseSignature(input.signatureBytes);
  if (!allowed.some((h) => h.id === signature.hashAlg.id)) {
    throw refuse(ERR_QUOTE_HASH_NOT_ALLOWED, `signature hash ${signature.hashAlg.name} is not allowed`);
  }
  if (!verifySignature(input.akPublic, signature, attestBytes)) {
    throw refuse(ERR_QUOTE_SIGNATURE, 'signature does not verify with the AK');
  }

  const attest = parseAttest(attestBytes);
  if (attest.magic !== TPM_GENERATED_VALUE) {
    throw refuse(ERR_QUOTE_MAGIC, 'TPMS_ATTEST magic is not TPM_GENERATED_VALUE');
  }
  if (attest.type !== TPM_ST.ATTEST_QUOTE || attest.attested.kind !== 'quote') {
    throw refuse(ERR_QUOTE_TYPE, `TPMS_ATTEST type 0x${attest.type.toString(16)} is not TPM_ST_ATTEST_QUOTE`);
  }
  if (!equalBytes(attest.extraData, nonce)) {
    throw refuse(ERR_QUOTE_NONCE, 'extraData does not equal the nonce');
  }
  if (input.expectedQualifiedSigner !== undefined && !equalBytes(attest.qualifiedSigner, input.expectedQualifiedSigner)) {
    throw refuse(ERR_QUOTE_SIGNER, 'qualifiedSigner is not the expected AK');
  }
  const quoted = attest.attested;
  if (!quoted.pcrSelect.equals(input.expectedSelection)) {
    throw refuse(ERR_QUOTE_SELECTION, `quote selects "${quoted.pcrSelect.toString()}", expected "${input.expectedSelection.toString()}"`);
  }
  if (input.pcrValues.length !== quoted.pcrSelect.valuesSize) {
    throw refuse(ERR_QUOTE_PCR_VALUES, `${input.pcrValues.length} bytes of PCR values for a selection of ${quoted.pcrSelect.valuesSize}`);
  }
  const values = parsePcrValues(input.pcrValues, quoted.pcrSelect);
  const digest = signature.hashAlg.digest(concatBytes(...values.map((v) => v.value)));
  if (!equalBytes(digest, quoted.pcrDigest)) {
    throw refuse(ERR_QUOTE_PCR_DIGEST, 'PCR values do not match the quoted pcrDigest');
  }

  const byBank = new Map<string, Map<number, Uint8Array>>();
  for (const v of values) {
    let bank = byBank.get(v.hash.name);
    if (bank === undefined) byBank.set(v.hash.name, (bank = new Map()));
    bank.set(v.index, v.value);
  }
  return new QuotedPcrs(QUOTED_PCRS_TOKEN, {
    selection: quoted.pcrSelect,
    values: byBank,
    signatureHash: signature.hashAlg,
    clockInfo: attest.clockInfo,
    firmwareVersion: attest.firmwareVersion,
    qualifiedSigner: Uint8Array.from(attest.qualifiedSigner),
  });
}
