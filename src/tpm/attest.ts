/**
 * @module tpm/attest
 * TPMS_ATTEST (TPM 2.0 Part 2, 10.12.12): the structure a TPM signs for quotes, certifications and the like.
 * Parsing checks structure only; the magic, type, nonce and signature are judged by the verifier (quote.ts),
 * which must verify the signature over the *raw* bytes before trusting any parsed field.
 */
import { BytesReader } from './bytes.js';
import { TPM_ST } from './constants.js';
import { HashAlg } from './alg.js';
import { PcrSelection } from './pcrs.js';

/** TPM2B_NAME holds at most u16 alg ‖ 64-byte digest, or a 4-byte handle. */
export const MAX_NAME_SIZE = 2 + HashAlg.SHA512.size;
/** TPM2B_DATA extraData: tpm2-tools caps qualifying data at 64 bytes; the TPM at sizeof(TPMT_HA). */
export const MAX_EXTRA_DATA_SIZE = 2 + HashAlg.SHA512.size;

/** TPMS_CLOCK_INFO */
export interface ClockInfo {
  readonly clock: bigint;
  readonly resetCount: number;
  readonly restartCount: number;
  readonly safe: boolean;
}

/** TPMS_QUOTE_INFO */
export interface QuoteInfo {
  readonly kind: 'quote';
  readonly pcrSelect: PcrSelection;
  readonly pcrDigest: Uint8Array;
}

/** Any other TPMI_ST_ATTEST: the attested union is kept as raw bytes (never interpreted). */
export interface OtherAttestInfo {
  readonly kind: 'other';
  readonly raw: Uint8Array;
}

export interface TpmsAttest {
  /** Should be TPM_GENERATED_VALUE; not checked here. */
  readonly magic: number;
  /** TPMI_ST_ATTEST; not checked here. */
  readonly type: number;
  readonly qualifiedSigner: Uint8Array;
  /** The caller's qualifying data (our nonce). */
  readonly extraData: Uint8Array;
  readonly clockInfo: ClockInfo;
  readonly firmwareVersion: bigint;
  readonly attested: QuoteInfo | OtherAttestInfo;
}

/** Parses TPMS_ATTEST (`tpm2_quote -m`: no size prefix), consumed exactly. */
export function parseAttest(bytes: Uint8Array): TpmsAttest {
  const r = new BytesReader(Uint8Array.from(bytes), 'TPMS_ATTEST');
  const magic = r.u32be('magic');
  const type = r.u16be('type');
  const qualifiedSigner = r.tpm2b('qualifiedSigner', MAX_NAME_SIZE);
  const extraData = r.tpm2b('extraData', MAX_EXTRA_DATA_SIZE);
  const clock = r.u64be('clockInfo.clock');
  const resetCount = r.u32be('clockInfo.resetCount');
  const restartCount = r.u32be('clockInfo.restartCount');
  const safeByte = r.u8('clockInfo.safe');
  if (safeByte > 1) r.fail(`clockInfo.safe is ${safeByte}, not a TPMI_YES_NO`);
  const firmwareVersion = r.u64be('firmwareVersion');
  let attested: QuoteInfo | OtherAttestInfo;
  if (type === TPM_ST.ATTEST_QUOTE) {
    const pcrSelect = PcrSelection.decode(r);
    const pcrDigest = r.tpm2b('pcrDigest', HashAlg.SHA512.size);
    r.end();
    attested = { kind: 'quote', pcrSelect, pcrDigest };
  } else {
    attested = { kind: 'other', raw: r.rest() };
  }
  return {
    magic,
    type,
    qualifiedSigner,
    extraData,
    clockInfo: { clock, resetCount, restartCount, safe: safeByte === 1 },
    firmwareVersion,
    attested,
  };
}
