/**
 * @module tpm/pcrs
 * `PcrSelection` (which PCRs of which banks), TPML_PCR_SELECTION (TPM 2.0 Part 2, 10.9.7) and the tpm2-tools
 * `--pcrs_format values` file. PCR values read here are *claims*: only `verifyQuote` (quote.ts) turns them into
 * `QuotedPcrs`.
 */
import { MalformedInput } from '../errors.js';
import { HashAlg } from './alg.js';
import { BytesReader, BytesWriter } from './bytes.js';
import { PCR_COUNT, PCR_SELECT_SIZE } from './constants.js';

export const ERR_PCR_SELECTION = 'ERR_TPM_PCR_SELECTION';
/** Largest sizeofSelect accepted in a TPMS_PCR_SELECTION; bits beyond PCR 23 must be clear anyway. */
export const MAX_SIZEOF_SELECT = 4;
/** A TPML_PCR_SELECTION with more banks than we know is hostile (HashAlg.ALL has 4). */
export const MAX_PCR_BANKS = 16;

export interface PcrBank {
  readonly hash: HashAlg;
  /** Ascending, unique, each 0..23. */
  readonly indices: readonly number[];
}

function selectionError(message: string): MalformedInput {
  return new MalformedInput(ERR_PCR_SELECTION, `PCR selection: ${message}`);
}

/**
 * An immutable PCR selection. Banks keep the order given (it is the order of the values file and of the
 * quote's digest); indices are sorted ascending. Banks that select nothing are dropped.
 */
/**
 * The server's default `pcr_selection`: firmware and boot loader (0-7), GRUB or systemd-boot command lines and
 * files (8, 9). The CLI defaults to it too, so a policy it makes or passes is one the default server accepts.
 */
export const DEFAULT_PCR_SELECTION = 'sha256:0,1,2,3,4,5,6,7,8,9';

export class PcrSelection {
  readonly #banks: readonly PcrBank[];
  /** What decoding a TPML_PCR_SELECTION that selects nothing yields; `parse`/`fromBanks` never return it. */
  static readonly #EMPTY = new PcrSelection([]);

  private constructor(banks: readonly PcrBank[]) {
    this.#banks = Object.freeze(banks.map((b) => Object.freeze({ hash: b.hash, indices: Object.freeze([...b.indices]) })));
  }

  /**
   * tpm2-tools syntax: `sha256:0,1,7` or several banks joined by `+` (`sha1:0+sha256:0,7`).
   * Rejects unknown banks, indices outside 0..23, duplicate indices and duplicate banks.
   */
  static parse(text: string): PcrSelection {
    if (text.length === 0 || text.length > 512) throw selectionError('empty or too long');
    const banks: PcrBank[] = [];
    for (const part of text.split('+')) {
      const colon = part.indexOf(':');
      if (colon <= 0) throw selectionError(`"${part.slice(0, 32)}" is not <bank>:<indices>`);
      const hash = HashAlg.parse(part.slice(0, colon), 'PCR bank');
      const list = part.slice(colon + 1);
      if (list.length === 0) throw selectionError(`bank ${hash.name} has no indices`);
      const indices = list.split(',').map((s) => {
        if (!/^(0|[1-9][0-9]?)$/.test(s)) throw selectionError(`"${s.slice(0, 8)}" is not a PCR index`);
        return Number(s);
      });
      banks.push({ hash, indices });
    }
    return PcrSelection.fromBanks(banks);
  }

  /** Builds a selection from banks, with the same rules as `parse`. */
  static fromBanks(banks: readonly { readonly hash: HashAlg; readonly indices: readonly number[] }[]): PcrSelection {
    const seenBanks = new Set<number>();
    const out: PcrBank[] = [];
    for (const bank of banks) {
      if (!HashAlg.isHashAlg(bank.hash)) throw selectionError('bank is not a HashAlg');
      if (seenBanks.has(bank.hash.id)) throw selectionError(`bank ${bank.hash.name} appears twice`);
      seenBanks.add(bank.hash.id);
      const seen = new Set<number>();
      for (const i of bank.indices) {
        if (!Number.isInteger(i) || i < 0 || i >= PCR_COUNT) throw selectionError(`index ${i} outside 0..${PCR_COUNT - 1}`);
        if (seen.has(i)) throw selectionError(`index ${i} repeated in bank ${bank.hash.name}`);
        seen.add(i);
      }
      if (seen.size > 0) out.push({ hash: bank.hash, indices: [...seen].sort((a, b) => a - b) });
    }
    if (out.length === 0) throw selectionError('selects no PCR');
    return new PcrSelection(out);
  }

  get banks(): readonly PcrBank[] {
    return this.#banks;
  }

  /** Number of PCR values the selection covers (all banks). */
  get count(): number {
    return this.#banks.reduce((n, b) => n + b.indices.length, 0);
  }

  /** Bytes of the values file for this selection. */
  get valuesSize(): number {
    return this.#banks.reduce((n, b) => n + b.indices.length * b.hash.size, 0);
  }

  has(hash: HashAlg, index: number): boolean {
    return this.#banks.some((b) => b.hash.id === hash.id && b.indices.includes(index));
  }

  /** Exact equality: same banks in the same order, same indices. */
  equals(other: PcrSelection): boolean {
    if (!(other instanceof PcrSelection) || other.#banks.length !== this.#banks.length) return false;
    return this.#banks.every((b, i) => {
      const o = other.#banks[i]!;
      return b.hash.id === o.hash.id && b.indices.length === o.indices.length && b.indices.every((x, j) => x === o.indices[j]);
    });
  }

  toString(): string {
    return this.#banks.map((b) => `${b.hash.name}:${b.indices.join(',')}`).join('+');
  }

  /** TPML_PCR_SELECTION: u32 count ‖ count × (u16 hash ‖ u8 sizeofSelect(3) ‖ bitmap, PCR n = bit n%8 of byte n/8). */
  encode(): Uint8Array {
    const w = new BytesWriter().u32be(this.#banks.length);
    for (const b of this.#banks) {
      const bitmap = new Uint8Array(PCR_SELECT_SIZE);
      for (const i of b.indices) bitmap[i >> 3]! |= 1 << (i & 7);
      w.u16be(b.hash.id).u8(PCR_SELECT_SIZE).bytes(bitmap);
    }
    return w.finish();
  }

  /** Reads a TPML_PCR_SELECTION from `r`. Unknown banks, duplicate banks and PCRs above 23 are MalformedInput. */
  static decode(r: BytesReader): PcrSelection {
    const count = r.u32be('TPML_PCR_SELECTION.count');
    if (count > MAX_PCR_BANKS) r.fail(`TPML_PCR_SELECTION.count ${count} exceeds ${MAX_PCR_BANKS}`, ERR_PCR_SELECTION);
    const banks: PcrBank[] = [];
    const seenBanks = new Set<number>();
    for (let n = 0; n < count; n++) {
      const id = r.u16be('TPMS_PCR_SELECTION.hash');
      const hash = HashAlg.tryFromId(id) ?? r.fail(`TPMS_PCR_SELECTION.hash: unsupported bank 0x${id.toString(16)}`, ERR_PCR_SELECTION);
      if (seenBanks.has(id)) r.fail(`bank ${hash.name} appears twice`, ERR_PCR_SELECTION);
      seenBanks.add(id);
      const size = r.u8('TPMS_PCR_SELECTION.sizeofSelect');
      if (size > MAX_SIZEOF_SELECT) r.fail(`sizeofSelect ${size} exceeds ${MAX_SIZEOF_SELECT}`, ERR_PCR_SELECTION);
      const bitmap = r.take(size, 'TPMS_PCR_SELECTION.pcrSelect');
      const indices: number[] = [];
      for (let i = 0; i < size * 8; i++) {
        if ((bitmap[i >> 3]! & (1 << (i & 7))) === 0) continue;
        if (i >= PCR_COUNT) r.fail(`PCR ${i} selected; only 0..${PCR_COUNT - 1} exist`, ERR_PCR_SELECTION);
        indices.push(i);
      }
      if (indices.length > 0) banks.push({ hash, indices });
    }
    if (banks.length === 0) return PcrSelection.#EMPTY;
    return new PcrSelection(banks);
  }

  /** True for a TPML_PCR_SELECTION that selects nothing (only `decode` can produce one). */
  get isEmpty(): boolean {
    return this.#banks.length === 0;
  }
}

/** One PCR value as claimed by the agent. */
export interface PcrValue {
  readonly hash: HashAlg;
  readonly index: number;
  readonly value: Uint8Array;
}

/**
 * Splits a tpm2-tools `--pcrs_format values` file (also `tpm2_pcrread -o`): the selected values concatenated in
 * selection order (bank order, then ascending index). The size must match the selection exactly.
 */
export function parsePcrValues(bytes: Uint8Array, selection: PcrSelection): PcrValue[] {
  const r = new BytesReader(bytes, 'PCR values file');
  if (bytes.length !== selection.valuesSize) {
    r.fail(`${bytes.length} bytes, selection ${selection.toString()} needs ${selection.valuesSize}`);
  }
  const out: PcrValue[] = [];
  for (const bank of selection.banks) {
    for (const index of bank.indices) {
      out.push({ hash: bank.hash, index, value: Uint8Array.from(r.take(bank.hash.size, `${bank.hash.name}:${index}`)) });
    }
  }
  r.end();
  return out;
}

/** Inverse of `parsePcrValues`. */
export function encodePcrValues(values: readonly PcrValue[]): Uint8Array {
  const w = new BytesWriter();
  for (const v of values) w.bytes(v.value);
  return w.finish();
}
