/**
 * @module tpm/ima/verify
 * Checks an IMA measurement list: every entry's template hash against its template data, and the replay of the
 * list into PCR 10 (per bank) against the quoted value.
 *
 * Replay rule (kernel ima_pcr_extend): PCR = H_bank(PCR || template digest in that bank), where the digest of an
 * invalidated entry (logged template hash all zeros) is all ones (0xff…) instead. The list may run past the quote
 * (the kernel appends after the quote is taken): the verified part is the longest prefix whose replay equals the
 * quoted value in every quoted bank; the rest is left for the next attestation.
 */
import { Buffer } from 'node:buffer';
import { AttestationRefused } from '../../errors.js';
import { timingSafeEqual } from 'node:crypto';
import { IMA_HASH_SIZES, imaDigest, type ImaHashName } from './hash.js';
import type { ImaEntry } from './log.js';

export const ERR_IMA_TEMPLATE_HASH = 'ERR_IMA_TEMPLATE_HASH';
export const ERR_IMA_PCR_MISMATCH = 'ERR_IMA_PCR_MISMATCH';
export const ERR_IMA_FOREIGN_PCR = 'ERR_IMA_FOREIGN_PCR';

/** The IMA PCR (CONFIG_IMA_MEASURE_PCR_IDX). */
export const IMA_PCR = 10;

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && timingSafeEqual(a, b);

/** Refuses the first entry whose logged template hash is not the hash of its template data. */
export function verifyTemplateHashes(entries: readonly ImaEntry[]): void {
  for (const e of entries) {
    if (e.invalidated) continue;
    const computed = imaDigest(e.templateHashAlg, e.templateData);
    if (!equal(computed, e.templateHash)) {
      throw new AttestationRefused(
        ERR_IMA_TEMPLATE_HASH,
        `IMA entry ${e.index} (${e.template} "${e.path.slice(0, 256)}"): logged ${e.templateHashAlg} template hash ${hex(e.templateHash)} is not the hash of its data (${hex(computed)})`,
        { fields: { entry: e.index, path: e.path.slice(0, 256), template: e.template } },
      );
    }
  }
}

/** The digest an entry extends into `bank`. */
export function templateDigestIn(entry: ImaEntry, bank: ImaHashName): Uint8Array {
  if (entry.invalidated) return new Uint8Array(IMA_HASH_SIZES[bank]).fill(0xff);
  return bank === entry.templateHashAlg ? entry.templateHash : imaDigest(bank, entry.templateData);
}

export type ImaBankValues = ReadonlyMap<ImaHashName, Uint8Array>;

/** PCR 10 after extending `entries` (those on `pcr`) into each bank, from `initial` (zeros by default). */
export function replayIma(entries: readonly ImaEntry[], banks: readonly ImaHashName[], initial?: ImaBankValues, pcr = IMA_PCR): Map<ImaHashName, Uint8Array> {
  const out = new Map<ImaHashName, Uint8Array>();
  for (const bank of banks) {
    let value = initial?.get(bank) ?? new Uint8Array(IMA_HASH_SIZES[bank]);
    for (const e of entries) if (e.pcr === pcr) value = imaDigest(bank, value, templateDigestIn(e, bank));
    out.set(bank, value);
  }
  return out;
}

export interface ImaVerification {
  /** Entries covered by the quote (a prefix of the input), template hashes checked. */
  readonly verified: readonly ImaEntry[];
  /** Entries after the quote, not verified. */
  readonly pending: readonly ImaEntry[];
  /** PCR 10 per quoted bank after the verified entries (= the quoted values): the base for the next increment. */
  readonly pcr: ImaBankValues;
}

export interface ImaVerifyOptions {
  /** PCR values before the first entry given (incremental verification); zeros when absent. */
  readonly initial?: ImaBankValues;
  readonly pcr?: number;
}

/**
 * Verifies `entries` against the quoted PCR 10 values (one or more banks). Refuses with the bank, the replayed and
 * the quoted value when no prefix of the list replays to the quote, or when an entry names another PCR (nothing
 * anchors it).
 */
export function verifyImaAgainstPcr(entries: readonly ImaEntry[], quoted: ImaBankValues, options: ImaVerifyOptions = {}): ImaVerification {
  const pcr = options.pcr ?? IMA_PCR;
  if (quoted.size === 0) throw new AttestationRefused(ERR_IMA_PCR_MISMATCH, `IMA log: no PCR ${pcr} value was quoted`);
  const banks = [...quoted.keys()];
  const running = new Map(banks.map((b) => [b, options.initial?.get(b) ?? new Uint8Array(IMA_HASH_SIZES[b])] as const));
  const matches = (): boolean => banks.every((b) => equal(running.get(b)!, quoted.get(b)!));
  let matched = matches() ? 0 : -1;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.pcr !== pcr) {
      throw new AttestationRefused(ERR_IMA_FOREIGN_PCR, `IMA entry ${e.index} ("${e.path.slice(0, 256)}") extends PCR ${e.pcr}, only PCR ${pcr} is verified`, {
        fields: { entry: e.index, pcr: e.pcr },
      });
    }
    for (const b of banks) running.set(b, imaDigest(b, running.get(b)!, templateDigestIn(e, b)));
    if (matches()) matched = i + 1;
  }
  if (matched < 0) {
    const b = banks[0]!;
    throw new AttestationRefused(
      ERR_IMA_PCR_MISMATCH,
      `IMA log (${entries.length} entries) does not replay to the quoted PCR ${pcr}: ${b} replays to ${hex(running.get(b)!)}, quoted ${hex(quoted.get(b)!)}`,
      { fields: { bank: b, entries: entries.length } },
    );
  }
  const verified = entries.slice(0, matched);
  verifyTemplateHashes(verified);
  return { verified, pending: entries.slice(matched), pcr: new Map(quoted) };
}
