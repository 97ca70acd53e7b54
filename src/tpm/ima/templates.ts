/**
 * @module tpm/ima/templates
 * IMA template descriptors and their template data: the bytes the kernel hashes into the template hash.
 *
 * Kernel encoding (security/integrity/ima/ima_template_lib.c): every field of a template other than `ima` is a
 * u32 length (host byte order, little-endian unless `ima_canonical_fmt`) followed by the field bytes:
 *  - `d-ng`: "<alg>:\0" || digest;  `n-ng`, `dep`, `cgn`, `cg-path`: string || "\0";  `sig`, `buf`: raw bytes.
 * The legacy `ima` template has no length fields: a 20-byte digest || the name NUL-padded to 256 bytes.
 * `ima-cgpath` (dep|cg-path|d-ng|n-ng) and `ima-dep-cgn` (dep|cgn|d-ng|n-ng) come from the torsec RFC patch; their
 * string fields are encoded like `n-ng`.
 */
import { MalformedInput } from '../../errors.js';
import { concatBytes } from '../bytes.js';
import { IMA_HASH_SIZES, parseImaHashName, type ImaHashName } from './hash.js';

export const ERR_IMA_MALFORMED = 'ERR_IMA_MALFORMED';
export const ERR_IMA_UNKNOWN_TEMPLATE = 'ERR_IMA_UNKNOWN_TEMPLATE';

export type ImaTemplateName = 'ima' | 'ima-ng' | 'ima-sig' | 'ima-buf' | 'ima-cgpath' | 'ima-dep-cgn';
export type ImaFieldId = 'd' | 'n' | 'd-ng' | 'n-ng' | 'sig' | 'buf' | 'dep' | 'cgn' | 'cg-path';

export const IMA_TEMPLATES: Readonly<Record<ImaTemplateName, readonly ImaFieldId[]>> = Object.freeze({
  ima: ['d', 'n'],
  'ima-ng': ['d-ng', 'n-ng'],
  'ima-sig': ['d-ng', 'n-ng', 'sig'],
  'ima-buf': ['d-ng', 'n-ng', 'buf'],
  'ima-cgpath': ['dep', 'cg-path', 'd-ng', 'n-ng'],
  'ima-dep-cgn': ['dep', 'cgn', 'd-ng', 'n-ng'],
});

/** Kernel IMA_EVENT_NAME_LEN_MAX: the legacy `ima` template's name field is NUL-padded to this + 1. */
export const IMA_LEGACY_NAME_FIELD = 256;
/** Bounds on untrusted sizes: a path (PATH_MAX plus slack), one field, one entry's template data. */
export const MAX_IMA_STRING_FIELD = 8192;
export const MAX_IMA_FIELD = 64 * 1024;
export const MAX_IMA_TEMPLATE_DATA = 128 * 1024;

/** The decoded fields of one entry. */
export interface ImaEventFields {
  /** File digest algorithm: from the `d-ng` prefix; `sha1` for the legacy `ima` template. */
  readonly digestAlg: ImaHashName;
  readonly digest: Uint8Array;
  /** File path (`n`/`n-ng`); for `ima-buf` the buffer's name (e.g. a keyring such as ".ima"). */
  readonly path: string;
  /** `ima-sig`: the signature (empty when the file had none). */
  readonly signature?: Uint8Array;
  /** `ima-buf`: the measured buffer. */
  readonly buffer?: Uint8Array;
  /** `ima-cgpath` / `ima-dep-cgn`: colon-separated executable paths of the ancestors. */
  readonly dependencies?: string;
  /** `ima-cgpath`: the full cgroup path; `ima-dep-cgn`: the cgroup name. */
  readonly cgroup?: string;
}

export function isImaTemplateName(name: string): name is ImaTemplateName {
  return Object.prototype.hasOwnProperty.call(IMA_TEMPLATES, name);
}

export function requireTemplate(name: string, where: string): ImaTemplateName {
  if (!isImaTemplateName(name)) {
    throw new MalformedInput(ERR_IMA_UNKNOWN_TEMPLATE, `${where}: unrecognized template "${name.slice(0, 32)}"`, {
      fields: { template: name.slice(0, 32) },
    });
  }
  return name;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}
const withLength = (data: Uint8Array): Uint8Array => concatBytes(u32le(data.length), data);
const cString = (s: string): Uint8Array => concatBytes(utf8.encode(s), new Uint8Array([0]));

function checkDigest(alg: ImaHashName, digest: Uint8Array, where: string): void {
  if (digest.length !== IMA_HASH_SIZES[alg]) {
    throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: ${alg} digest has ${digest.length} bytes, expected ${IMA_HASH_SIZES[alg]}`);
  }
}

/** The kernel template data of an entry (what its template hash is computed over). */
export function encodeTemplateData(template: ImaTemplateName, fields: ImaEventFields, where = 'IMA entry'): Uint8Array {
  if (template === 'ima') {
    checkDigest('sha1', fields.digest, where);
    // The kernel truncates the legacy name to IMA_EVENT_NAME_LEN_MAX (255) bytes before padding.
    const name = utf8.encode(fields.path).subarray(0, IMA_LEGACY_NAME_FIELD - 1);
    const padded = new Uint8Array(IMA_LEGACY_NAME_FIELD);
    padded.set(name);
    return concatBytes(fields.digest, padded);
  }
  checkDigest(fields.digestAlg, fields.digest, where);
  const parts = IMA_TEMPLATES[template].map((id): Uint8Array => {
    switch (id) {
      case 'd-ng':
        return withLength(concatBytes(utf8.encode(`${fields.digestAlg}:`), new Uint8Array([0]), fields.digest));
      case 'n-ng':
        return withLength(cString(fields.path));
      case 'sig':
        return withLength(fields.signature ?? new Uint8Array(0));
      case 'buf':
        return withLength(fields.buffer ?? new Uint8Array(0));
      case 'dep':
        return withLength(cString(fields.dependencies ?? ''));
      case 'cgn':
      case 'cg-path':
        return withLength(cString(fields.cgroup ?? ''));
      default:
        throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: field ${id} has no length-prefixed form`);
    }
  });
  return concatBytes(...parts);
}

function decodeString(data: Uint8Array, id: string, where: string): string {
  if (data.length > MAX_IMA_STRING_FIELD) throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: ${id} field of ${data.length} bytes exceeds ${MAX_IMA_STRING_FIELD}`);
  // Strings carry their terminating NUL; an empty field (length 0) is an empty string.
  const end = data.length > 0 && data[data.length - 1] === 0 ? data.length - 1 : data.length;
  return utf8Decoder.decode(data.subarray(0, end));
}

function decodeDigestNg(data: Uint8Array, where: string): { digestAlg: ImaHashName; digest: Uint8Array } {
  const colon = data.indexOf(0x3a);
  if (colon < 1 || colon > 16 || data[colon + 1] !== 0) throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: d-ng field has no "<alg>:\\0" prefix`);
  const digestAlg = parseImaHashName(utf8Decoder.decode(data.subarray(0, colon)), `${where}: d-ng`);
  const digest = data.subarray(colon + 2);
  checkDigest(digestAlg, digest, where);
  return { digestAlg, digest };
}

/** Decodes the length-prefixed template data of a non-legacy template (binary measurement list). */
export function decodeTemplateData(template: Exclude<ImaTemplateName, 'ima'>, data: Uint8Array, where: string): ImaEventFields {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  const out: { -readonly [K in keyof ImaEventFields]?: ImaEventFields[K] } = {};
  for (const id of IMA_TEMPLATES[template]) {
    if (data.length - pos < 4) throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: template data ends before field ${id}`);
    const len = view.getUint32(pos, true);
    pos += 4;
    if (len > MAX_IMA_FIELD || len > data.length - pos) throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: field ${id} length ${len} exceeds the template data`);
    const field = data.subarray(pos, pos + len);
    pos += len;
    switch (id) {
      case 'd-ng':
        Object.assign(out, decodeDigestNg(field, where));
        break;
      case 'n-ng':
        out.path = decodeString(field, id, where);
        break;
      case 'sig':
        out.signature = field;
        break;
      case 'buf':
        out.buffer = field;
        break;
      case 'dep':
        out.dependencies = decodeString(field, id, where);
        break;
      case 'cgn':
      case 'cg-path':
        out.cgroup = decodeString(field, id, where);
        break;
      default:
        break;
    }
  }
  if (pos !== data.length) throw new MalformedInput(ERR_IMA_MALFORMED, `${where}: ${data.length - pos} bytes after the last field of ${template}`);
  return out as ImaEventFields;
}
