/**
 * @module tpm/ima/log
 * Parses IMA measurement lists: the binary `binary_runtime_measurements` and the ASCII
 * `ascii_runtime_measurements` (either the SHA-1 list or a per-bank `…_<alg>` list). Pure: bytes in, entries out.
 *
 * A list read while the kernel appends (or cut by a size limit) can end in a partial entry; that tail is not an
 * entry: it is reported as `truncated` (offset and length) and left for the next read. Anything else that does not
 * parse is MalformedInput naming the entry and offset. Every size is bounded before anything is allocated.
 */
import { Buffer } from 'node:buffer';
import { MalformedInput } from '../../errors.js';
import { IMA_HASH_SIZES, imaDigest, parseImaHashName, type ImaHashName } from './hash.js';
import {
  ERR_IMA_MALFORMED,
  IMA_LEGACY_NAME_FIELD,
  MAX_IMA_TEMPLATE_DATA,
  decodeTemplateData,
  encodeTemplateData,
  requireTemplate,
  type ImaEventFields,
  type ImaTemplateName,
} from './templates.js';

/** Bounds: a whole list, its entry count, one ASCII line, a template name (kernel IMA_TEMPLATE_NAME_LEN_MAX 15). */
export const MAX_IMA_LOG_BYTES = 64 * 1024 * 1024;
export const MAX_IMA_ENTRIES = 1_000_000;
export const MAX_IMA_ASCII_LINE = 2 * MAX_IMA_TEMPLATE_DATA + 1024;
const MAX_TEMPLATE_NAME = 15;
/** PCR indexes a TPM has; IMA's default is 10. */
const MAX_PCR = 23;

export interface ImaEntry extends ImaEventFields {
  /** 0-based index in the list as given (add the incremental base to get the kernel's index). */
  readonly index: number;
  /** Byte offset of the entry (binary) or of its line (ASCII) in the input. */
  readonly offset: number;
  readonly pcr: number;
  readonly template: ImaTemplateName;
  /** The template hash as logged, in the bank `templateHashAlg`. */
  readonly templateHash: Uint8Array;
  readonly templateHashAlg: ImaHashName;
  /** The kernel template data, re-encoded from the fields for ASCII lists. */
  readonly templateData: Uint8Array;
  /** All-zero template hash: the kernel invalidated the entry (a file changed while measured, a violation). */
  readonly invalidated: boolean;
}

export interface ImaLog {
  readonly format: 'binary' | 'ascii';
  readonly entries: readonly ImaEntry[];
  /** Bytes consumed by complete entries (the offset to resume from). */
  readonly consumed: number;
  /** A partial entry at the end, not parsed. */
  readonly truncated?: { readonly offset: number; readonly bytes: number };
}

export interface ImaParseOptions {
  /**
   * Bank of the logged template hashes. Binary lists: `sha1` for `binary_runtime_measurements` (the default), the
   * bank for `binary_runtime_measurements_<alg>`. ASCII lists: inferred from the hash length; 32 bytes is
   * sha256 or sm3_256, told apart by recomputing the first entry that is not invalidated.
   */
  readonly templateHashAlg?: ImaHashName;
  readonly maxEntries?: number;
}

const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

function malformed(where: string, what: string): never {
  throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: ${what}`, { fields: { where } });
}

function checkBounds(data: Uint8Array, options: ImaParseOptions): number {
  if (data.length > MAX_IMA_LOG_BYTES) malformed('IMA log', `${data.length} bytes exceeds the ${MAX_IMA_LOG_BYTES}-byte limit`);
  return Math.min(options.maxEntries ?? MAX_IMA_ENTRIES, MAX_IMA_ENTRIES);
}

/** Thrown inside the binary parser when the input ends inside an entry. */
class EndOfInput extends Error {}

/** Parses `binary_runtime_measurements` (host byte order; big-endian lists are recognised by their PCR field). */
export function parseImaBinaryLog(data: Uint8Array, options: ImaParseOptions = {}): ImaLog {
  const maxEntries = checkBounds(data, options);
  const hashAlg = options.templateHashAlg ?? 'sha1';
  const hashSize = IMA_HASH_SIZES[hashAlg];
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  // ima_canonical_fmt or a big-endian host: the PCR number reads as > 0xffffff little-endian.
  const littleEndian = data.length < 4 || view.getUint32(0, true) <= MAX_PCR || view.getUint32(0, false) > MAX_PCR;
  const entries: ImaEntry[] = [];
  let pos = 0;
  const take = (n: number): Uint8Array => {
    if (n > data.length - pos) throw new EndOfInput();
    const out = data.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const u32 = (): number => {
    if (4 > data.length - pos) throw new EndOfInput();
    const v = view.getUint32(pos, littleEndian);
    pos += 4;
    return v;
  };
  while (pos < data.length) {
    const start = pos;
    const where = `IMA entry ${entries.length} at offset ${start}`;
    try {
      if (entries.length >= maxEntries) malformed('IMA log', `more than ${maxEntries} entries`);
      const pcr = u32();
      if (pcr > MAX_PCR) malformed(where, `PCR index ${pcr} out of range`);
      const templateHash = take(hashSize);
      const nameLen = u32();
      if (nameLen === 0 || nameLen > MAX_TEMPLATE_NAME) malformed(where, `template name length ${nameLen} out of range 1..${MAX_TEMPLATE_NAME}`);
      const template = requireTemplate(new TextDecoder().decode(take(nameLen)), where);
      let fields: ImaEventFields;
      let templateData: Uint8Array;
      if (template === 'ima') {
        // Legacy list form: 20-byte digest, then u32 length + name without its padding.
        const digest = take(20);
        const len = u32();
        if (len >= IMA_LEGACY_NAME_FIELD) malformed(where, `legacy name length ${len} exceeds ${IMA_LEGACY_NAME_FIELD - 1}`);
        fields = { digestAlg: 'sha1', digest, path: new TextDecoder().decode(take(len)) };
        templateData = encodeTemplateData('ima', fields, where);
      } else {
        const len = u32();
        if (len > MAX_IMA_TEMPLATE_DATA) malformed(where, `template data length ${len} exceeds ${MAX_IMA_TEMPLATE_DATA}`);
        templateData = take(len);
        fields = decodeTemplateData(template, templateData, where);
      }
      entries.push({ ...fields, index: entries.length, offset: start, pcr, template, templateHash, templateHashAlg: hashAlg, templateData, invalidated: isZero(templateHash) });
    } catch (err) {
      if (!(err instanceof EndOfInput)) throw err;
      return { format: 'binary', entries, consumed: start, truncated: { offset: start, bytes: data.length - start } };
    }
  }
  return { format: 'binary', entries, consumed: pos };
}

const HEX = /^(?:[0-9a-f]{2})*$/i;
function hexField(text: string, where: string, what: string): Uint8Array {
  if (!HEX.test(text)) malformed(where, `${what} is not hex`);
  return new Uint8Array(Buffer.from(text, 'hex'));
}

function digestNg(text: string, where: string): { digestAlg: ImaHashName; digest: Uint8Array } {
  const colon = text.indexOf(':');
  if (colon < 1) malformed(where, `file digest "${text.slice(0, 80)}" has no "<alg>:" prefix`);
  const digestAlg = parseImaHashName(text.slice(0, colon), where);
  const digest = hexField(text.slice(colon + 1), where, 'file digest');
  if (digest.length !== IMA_HASH_SIZES[digestAlg]) malformed(where, `${digestAlg} file digest has ${digest.length} bytes`);
  return { digestAlg, digest };
}

/** Splits "a b c" into the first `n` space-separated tokens and the rest (which may contain spaces). */
function splitHead(text: string, n: number, where: string): { head: string[]; rest: string } {
  const head: string[] = [];
  let rest = text;
  for (let i = 0; i < n; i++) {
    const sp = rest.indexOf(' ');
    if (sp < 0) malformed(where, `expected ${n + 1} fields`);
    head.push(rest.slice(0, sp));
    rest = rest.slice(sp + 1);
  }
  return { head, rest };
}

/** "path sig" / "name buf": the last field is hex and never contains spaces; the kernel prints the space even when it is empty. */
function splitLast(text: string): [string, string] {
  const sp = text.lastIndexOf(' ');
  return sp < 0 ? [text, ''] : [text.slice(0, sp), text.slice(sp + 1)];
}

function parseAsciiFields(template: ImaTemplateName, rest: string, where: string): ImaEventFields {
  switch (template) {
    case 'ima': {
      const { head, rest: path } = splitHead(rest, 1, where);
      const digest = hexField(head[0]!, where, 'file digest');
      if (digest.length !== 20) malformed(where, `ima template digest has ${digest.length} bytes, expected 20`);
      return { digestAlg: 'sha1', digest, path };
    }
    case 'ima-ng': {
      const { head, rest: path } = splitHead(rest, 1, where);
      return { ...digestNg(head[0]!, where), path };
    }
    case 'ima-sig': {
      const { head, rest: tail } = splitHead(rest, 1, where);
      const [path, sig] = splitLast(tail);
      return { ...digestNg(head[0]!, where), path, signature: hexField(sig, where, 'signature') };
    }
    case 'ima-buf': {
      const { head, rest: tail } = splitHead(rest, 1, where);
      const [path, buf] = splitLast(tail);
      return { ...digestNg(head[0]!, where), path, buffer: hexField(buf, where, 'buffer') };
    }
    case 'ima-cgpath':
    case 'ima-dep-cgn': {
      const { head, rest: path } = splitHead(rest, 3, where);
      return { dependencies: head[0]!, cgroup: head[1]!, ...digestNg(head[2]!, where), path };
    }
  }
}

const ASCII_HASH_ALG_BY_SIZE: Readonly<Record<number, ImaHashName>> = { 20: 'sha1', 48: 'sha384', 64: 'sha512' };

/** Parses `ascii_runtime_measurements[_<alg>]`. */
export function parseImaAsciiLog(data: Uint8Array | string, options: ImaParseOptions = {}): ImaLog {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  const maxEntries = checkBounds(bytes, options);
  const text = new TextDecoder('utf-8').decode(bytes);
  const entries: { -readonly [K in keyof ImaEntry]: ImaEntry[K] }[] = [];
  let hashAlg = options.templateHashAlg;
  let hashSize: number | undefined = hashAlg && IMA_HASH_SIZES[hashAlg];
  let pos = 0; // character offset; equal to the byte offset while lines are ASCII, which is all we report
  let byteOffset = 0;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    const terminated = nl >= 0;
    const line = text.slice(pos, terminated ? nl : text.length);
    const lineBytes = Buffer.byteLength(line, 'utf8') + (terminated ? 1 : 0);
    const where = `IMA line ${entries.length + 1} at offset ${byteOffset}`;
    if (line.length > MAX_IMA_ASCII_LINE) malformed(where, `line longer than ${MAX_IMA_ASCII_LINE} characters`);
    if (!terminated) {
      // The kernel ends every line with "\n": an unterminated last line is a partial read.
      return { format: 'ascii', entries, consumed: byteOffset, truncated: { offset: byteOffset, bytes: lineBytes } };
    }
    if (line.trim() !== '') {
      if (entries.length >= maxEntries) malformed('IMA log', `more than ${maxEntries} entries`);
      const { head, rest } = splitHead(line.replace(/\r$/, ''), 3, where);
      const [pcrText, hashText, templateName] = head as [string, string, string];
      if (!/^\d{1,2}$/.test(pcrText) || Number(pcrText) > MAX_PCR) malformed(where, `PCR index "${pcrText.slice(0, 8)}" out of range`);
      const template = requireTemplate(templateName, where);
      const templateHash = hexField(hashText, where, 'template hash');
      const fields = parseAsciiFields(template, rest, where);
      const templateData = encodeTemplateData(template, fields, where);
      const invalidated = isZero(templateHash);
      hashSize ??= templateHash.length;
      if (templateHash.length !== hashSize) malformed(where, `template hash has ${templateHash.length} bytes, the list's earlier entries ${hashSize}`);
      if (hashAlg === undefined) {
        hashAlg = inferAsciiHashAlg(templateHash, invalidated ? undefined : templateData, where);
        // Entries before the first decisive one (invalidated sha256/sm3_256 ones) take the bank found now.
        if (hashAlg !== undefined) for (const e of entries) e.templateHashAlg = hashAlg;
      }
      entries.push({ ...fields, index: entries.length, offset: byteOffset, pcr: Number(pcrText), template, templateHash, templateHashAlg: hashAlg ?? 'sha256', templateData, invalidated });
    }
    pos = nl + 1;
    byteOffset += lineBytes;
  }
  return { format: 'ascii', entries, consumed: byteOffset };
}

function inferAsciiHashAlg(hash: Uint8Array, templateData: Uint8Array | undefined, where: string): ImaHashName | undefined {
  const bySize = ASCII_HASH_ALG_BY_SIZE[hash.length];
  if (bySize) return bySize;
  if (hash.length !== 32) malformed(where, `template hash of ${hash.length} bytes matches no bank`);
  // 32 bytes: sha256 or sm3_256. An invalidated first entry cannot tell; decide on the next one.
  if (templateData === undefined) return undefined;
  const sm3 = imaDigest('sm3_256', templateData);
  return Buffer.compare(Buffer.from(sm3), Buffer.from(hash)) === 0 ? 'sm3_256' : 'sha256';
}

/** Parses either form: ASCII lists start with a decimal PCR index, binary lists with a u32. */
export function parseImaLog(data: Uint8Array, options: ImaParseOptions = {}): ImaLog {
  const looksAscii = data.length > 0 && data[0]! >= 0x30 && data[0]! <= 0x39;
  return looksAscii ? parseImaAsciiLog(data, options) : parseImaBinaryLog(data, options);
}

/** One entry as the kernel prints it in `ascii_runtime_measurements` (without the newline). */
export function formatImaAsciiLine(entry: ImaEntry): string {
  const h = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
  const dng = `${entry.digestAlg}:${h(entry.digest)}`;
  const fields = ((): string[] => {
    switch (entry.template) {
      case 'ima':
        return [h(entry.digest), entry.path];
      case 'ima-ng':
        return [dng, entry.path];
      case 'ima-sig':
        return [dng, entry.path, h(entry.signature ?? new Uint8Array(0))];
      case 'ima-buf':
        return [dng, entry.path, h(entry.buffer ?? new Uint8Array(0))];
      case 'ima-cgpath':
      case 'ima-dep-cgn':
        return [entry.dependencies ?? '', entry.cgroup ?? '', dng, entry.path];
    }
  })();
  return [String(entry.pcr), h(entry.templateHash), entry.template, ...fields].join(' ');
}
