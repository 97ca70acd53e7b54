/**
 * @module tpm/bytes
 * Bounds-checked reading and writing of TPM and TCG byte structures.
 *
 * TPM 2.0 structures (TPM 2.0 Part 2) are big-endian; TCG PC Client event logs are little-endian, so every
 * multi-byte read names its byte order. Every read checks its length against what remains *before* touching or
 * allocating anything, and reads return subarrays (views), not copies. Every failure is a `MalformedInput`
 * naming the structure being parsed and the offset where it failed.
 */
import { Buffer } from 'node:buffer';
import { MalformedInput } from '../errors.js';

/** Error code of every reader failure. */
export const ERR_MALFORMED_BYTES = 'ERR_TPM_MALFORMED';

/** A cursor over untrusted bytes. `structure` names what is being parsed, for error messages. */
export class BytesReader {
  readonly #data: Uint8Array;
  readonly #view: DataView;
  #pos = 0;
  readonly structure: string;

  constructor(data: Uint8Array, structure: string) {
    this.#data = data;
    this.#view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.structure = structure;
  }

  /** Current offset from the start of the buffer. */
  get offset(): number {
    return this.#pos;
  }

  /** Bytes not yet consumed. */
  get remaining(): number {
    return this.#data.length - this.#pos;
  }

  /** Throws MalformedInput naming this structure, the field and the current offset. */
  fail(what: string, code: string = ERR_MALFORMED_BYTES): never {
    throw new MalformedInput(code, `${this.structure}: ${what} at offset ${this.#pos}`, {
      fields: { structure: this.structure, offset: this.#pos },
    });
  }

  #need(n: number, field: string): void {
    if (!Number.isSafeInteger(n) || n < 0) this.fail(`${field}: invalid length ${n}`);
    if (n > this.remaining) this.fail(`${field}: needs ${n} bytes, ${this.remaining} remain`);
  }

  u8(field = 'u8'): number {
    this.#need(1, field);
    return this.#view.getUint8(this.#pos++);
  }

  u16be(field = 'u16'): number {
    this.#need(2, field);
    const v = this.#view.getUint16(this.#pos, false);
    this.#pos += 2;
    return v;
  }

  u32be(field = 'u32'): number {
    this.#need(4, field);
    const v = this.#view.getUint32(this.#pos, false);
    this.#pos += 4;
    return v;
  }

  u64be(field = 'u64'): bigint {
    this.#need(8, field);
    const v = this.#view.getBigUint64(this.#pos, false);
    this.#pos += 8;
    return v;
  }

  u16le(field = 'u16'): number {
    this.#need(2, field);
    const v = this.#view.getUint16(this.#pos, true);
    this.#pos += 2;
    return v;
  }

  u32le(field = 'u32'): number {
    this.#need(4, field);
    const v = this.#view.getUint32(this.#pos, true);
    this.#pos += 4;
    return v;
  }

  u64le(field = 'u64'): bigint {
    this.#need(8, field);
    const v = this.#view.getBigUint64(this.#pos, true);
    this.#pos += 8;
    return v;
  }

  /** The next `n` bytes as a subarray (no copy), after checking `n` against what remains. */
  take(n: number, field = 'bytes'): Uint8Array {
    this.#need(n, field);
    const out = this.#data.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** TPM2B_*: big-endian u16 size followed by that many bytes. `max` caps the size (e.g. a digest size). */
  tpm2b(field = 'TPM2B', max?: number): Uint8Array {
    const size = this.u16be(`${field}.size`);
    if (max !== undefined && size > max) this.fail(`${field}: size ${size} exceeds maximum ${max}`);
    return this.take(size, `${field}.buffer`);
  }

  /** Skip `n` bytes (bounds-checked). */
  skip(n: number, field = 'bytes'): void {
    this.take(n, field);
  }

  /** Everything not yet consumed, as a subarray. */
  rest(): Uint8Array {
    return this.take(this.remaining, 'rest');
  }

  /** Refuses trailing bytes: a structure must be consumed exactly. */
  end(): void {
    if (this.remaining !== 0) this.fail(`${this.remaining} trailing bytes`);
  }
}

/** A growable big-endian writer for building TPM structures. Integer writers are range-checked. */
export class BytesWriter {
  #chunks: Uint8Array[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  #int(value: number, bytes: 1 | 2 | 4, littleEndian: boolean): this {
    const max = 2 ** (8 * bytes) - 1;
    if (!Number.isInteger(value) || value < 0 || value > max) {
      throw new RangeError(`value ${value} does not fit in ${bytes} bytes`);
    }
    const b = new Uint8Array(bytes);
    const v = new DataView(b.buffer);
    if (bytes === 1) v.setUint8(0, value);
    else if (bytes === 2) v.setUint16(0, value, littleEndian);
    else v.setUint32(0, value, littleEndian);
    return this.bytes(b);
  }

  u8(value: number): this {
    return this.#int(value, 1, false);
  }
  u16be(value: number): this {
    return this.#int(value, 2, false);
  }
  u32be(value: number): this {
    return this.#int(value, 4, false);
  }
  u16le(value: number): this {
    return this.#int(value, 2, true);
  }
  u32le(value: number): this {
    return this.#int(value, 4, true);
  }
  u64be(value: bigint): this {
    if (value < 0n || value > 0xffff_ffff_ffff_ffffn) throw new RangeError(`value ${value} does not fit in 8 bytes`);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, value, false);
    return this.bytes(b);
  }

  /** Raw bytes (copied, so later mutation of the argument cannot change the output). */
  bytes(data: Uint8Array): this {
    const copy = Uint8Array.from(data);
    this.#chunks.push(copy);
    this.#length += copy.length;
    return this;
  }

  /** TPM2B_*: u16 size then bytes. */
  tpm2b(data: Uint8Array): this {
    if (data.length > 0xffff) throw new RangeError(`TPM2B of ${data.length} bytes is too large`);
    return this.u16be(data.length).bytes(data);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.#length);
    let off = 0;
    for (const c of this.#chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}

/** Lower-case hex of bytes. */
export function toHex(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');
}

/** Concatenate byte arrays. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
