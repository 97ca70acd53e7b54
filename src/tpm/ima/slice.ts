/**
 * @module tpm/ima/slice
 * Finds where entry `n` of an IMA measurement list starts without decoding the entries, so the agent can send only
 * the entries the server has not verified yet (incremental re-attestation). Pure. It applies the same framing rules
 * as the parser (log.ts): binary entries by their length fields (SHA-1 template hashes, the
 * `binary_runtime_measurements` form the agent reads), ASCII entries as `\n`-terminated non-blank lines; a partial
 * tail is not an entry. It checks only the framing: the server parses and verifies whatever is sent.
 */
import { Buffer } from 'node:buffer';
import { IMA_LEGACY_NAME_FIELD, MAX_IMA_TEMPLATE_DATA } from './templates.js';
import { MAX_IMA_ENTRIES } from './log.js';

export interface ImaEntryBoundary {
  /** Complete entries in the list. */
  readonly total: number;
  /** Byte offset where entry `n` starts (= the end of the complete entries when n === total); undefined when n > total. */
  readonly start: number | undefined;
}

const SHA1_SIZE = 20;
const MAX_PCR = 23;
const MAX_TEMPLATE_NAME = 15;

/** Framing of `data` as a list, or undefined when it is not one the walker understands (the caller sends it all). */
export function locateImaEntry(data: Uint8Array, n: number): ImaEntryBoundary | undefined {
  if (!Number.isInteger(n) || n < 0) return undefined;
  const looksAscii = data.length > 0 && data[0]! >= 0x30 && data[0]! <= 0x39;
  return looksAscii ? locateAscii(data, n) : locateBinary(data, n);
}

function locateBinary(data: Uint8Array, n: number): ImaEntryBoundary | undefined {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const littleEndian = data.length < 4 || view.getUint32(0, true) <= MAX_PCR || view.getUint32(0, false) > MAX_PCR;
  let pos = 0;
  let total = 0;
  let start: number | undefined = n === 0 ? 0 : undefined;
  const u32 = (at: number): number | undefined => (at + 4 <= data.length ? view.getUint32(at, littleEndian) : undefined);
  while (pos < data.length) {
    if (total >= MAX_IMA_ENTRIES) return undefined;
    let p = pos;
    const pcr = u32(p);
    if (pcr === undefined) break;
    if (pcr > MAX_PCR) return undefined;
    p += 4 + SHA1_SIZE;
    const nameLen = u32(p);
    if (nameLen === undefined) break;
    if (nameLen === 0 || nameLen > MAX_TEMPLATE_NAME) return undefined;
    p += 4;
    if (p + nameLen > data.length) break;
    const legacy = nameLen === 3 && data[p] === 0x69 && data[p + 1] === 0x6d && data[p + 2] === 0x61; // "ima"
    p += nameLen;
    if (legacy) p += SHA1_SIZE;
    const len = u32(p);
    if (len === undefined) break;
    if (len > (legacy ? IMA_LEGACY_NAME_FIELD - 1 : MAX_IMA_TEMPLATE_DATA)) return undefined;
    p += 4 + len;
    if (p > data.length) break; // a partial tail
    pos = p;
    total++;
    if (total === n) start = pos;
  }
  return { total, start };
}

function locateAscii(data: Uint8Array, n: number): ImaEntryBoundary | undefined {
  const text = new TextDecoder('utf-8').decode(data);
  let pos = 0;
  let byteOffset = 0;
  let total = 0;
  let start: number | undefined;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    if (nl < 0) break; // unterminated last line: a partial read
    const line = text.slice(pos, nl);
    const lineStart = byteOffset;
    byteOffset += Buffer.byteLength(line, 'utf8') + 1;
    pos = nl + 1;
    if (line.trim() === '') continue;
    // The slice starts at the entry's own line, never at a blank one (the parser tells the forms by the first byte).
    if (total === n && start === undefined) start = lineStart;
    if (++total > MAX_IMA_ENTRIES) return undefined;
  }
  if (total === n && start === undefined) start = byteOffset;
  return { total, start };
}
