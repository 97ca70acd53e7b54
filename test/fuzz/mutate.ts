/**
 * Byte-level mutations for the coverage-guided fuzzer (test/fuzz/engine.ts). The set follows what libFuzzer's
 * default mutators do: bit flips, random and "interesting" bytes and integers, inserts, deletes, duplicated
 * ranges, splices with another corpus entry, dictionary tokens, and small arithmetic on what looks like a
 * 16- or 32-bit length field (TPM structures are big-endian, event logs and IMA logs little-endian).
 */

/** A small, fast, seedable PRNG (xorshift32): a run is reproducible from its seed. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 0x9e3779b9;
  }
  u32(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
  /** Uniform in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }
  chance(oneIn: number): boolean {
    return this.below(oneIn) === 0;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0xfe];
const INTERESTING_16 = [0, 1, 0x7fff, 0x8000, 0xffff, 0x0100, 0x0400, 0x1000, 0x00ff, 0xfffe];
const INTERESTING_32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x00010000, 0x01000000, 0x00100000, 0xfffffffe, 0x40000000];

export interface MutationContext {
  readonly rng: Rng;
  readonly maxLen: number;
  /** Another corpus entry, for splices. */
  readonly other: () => Uint8Array;
  /** Tokens worth inserting (keywords, magic numbers, structural characters). */
  readonly dictionary: readonly Uint8Array[];
}

type Mutator = (b: Uint8Array, ctx: MutationContext) => Uint8Array;

function withByteAt(b: Uint8Array, ctx: MutationContext, f: (old: number) => number): Uint8Array {
  if (b.length === 0) return Uint8Array.of(ctx.rng.below(256));
  const out = Uint8Array.from(b);
  const i = ctx.rng.below(out.length);
  out[i] = f(out[i]!) & 0xff;
  return out;
}

function insertAt(b: Uint8Array, at: number, ins: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length + ins.length);
  out.set(b.subarray(0, at), 0);
  out.set(ins, at);
  out.set(b.subarray(at), at + ins.length);
  return out;
}

function writeInt(b: Uint8Array, ctx: MutationContext, value: number, width: 2 | 4): Uint8Array {
  if (b.length < width) return b;
  const out = Uint8Array.from(b);
  const at = ctx.rng.below(out.length - width + 1);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const le = ctx.rng.chance(2);
  if (width === 2) view.setUint16(at, value & 0xffff, le);
  else view.setUint32(at, value >>> 0, le);
  return out;
}

const MUTATORS: readonly Mutator[] = [
  // bit flip
  (b, ctx) => withByteAt(b, ctx, (v) => v ^ (1 << ctx.rng.below(8))),
  // random byte
  (b, ctx) => withByteAt(b, ctx, () => ctx.rng.below(256)),
  // interesting byte
  (b, ctx) => withByteAt(b, ctx, () => ctx.rng.pick(INTERESTING_8)),
  // byte arithmetic
  (b, ctx) => withByteAt(b, ctx, (v) => v + ctx.rng.below(35) - 17),
  // interesting 16/32-bit integer, either endianness
  (b, ctx) => writeInt(b, ctx, ctx.rng.pick(INTERESTING_16), 2),
  (b, ctx) => writeInt(b, ctx, ctx.rng.pick(INTERESTING_32), 4),
  // a length field: the remaining size from here, or one off it
  (b, ctx) => writeInt(b, ctx, Math.max(0, b.length - ctx.rng.below(b.length + 1) + ctx.rng.below(3) - 1), ctx.rng.chance(2) ? 2 : 4),
  // length-field tweak: read a u16/u32 somewhere and nudge it by a small delta
  (b, ctx) => {
    const width = ctx.rng.chance(2) ? 2 : 4;
    if (b.length < width) return b;
    const out = Uint8Array.from(b);
    const view = new DataView(out.buffer);
    const at = ctx.rng.below(out.length - width + 1);
    const le = ctx.rng.chance(2);
    const delta = ctx.rng.below(33) - 16 || 1;
    if (width === 2) view.setUint16(at, (view.getUint16(at, le) + delta) & 0xffff, le);
    else view.setUint32(at, (view.getUint32(at, le) + delta) >>> 0, le);
    return out;
  },
  // insert random bytes
  (b, ctx) => {
    const n = 1 + ctx.rng.below(8);
    const ins = new Uint8Array(n);
    const fill = ctx.rng.chance(2) ? ctx.rng.below(256) : -1;
    for (let i = 0; i < n; i++) ins[i] = fill >= 0 ? fill : ctx.rng.below(256);
    return insertAt(b, ctx.rng.below(b.length + 1), ins);
  },
  // delete a range
  (b, ctx) => {
    if (b.length === 0) return b;
    const at = ctx.rng.below(b.length);
    const n = 1 + ctx.rng.below(Math.min(b.length - at, ctx.rng.chance(4) ? 256 : 8));
    const out = new Uint8Array(b.length - n);
    out.set(b.subarray(0, at), 0);
    out.set(b.subarray(at + n), at);
    return out;
  },
  // duplicate a range
  (b, ctx) => {
    if (b.length === 0) return b;
    const at = ctx.rng.below(b.length);
    const n = 1 + ctx.rng.below(Math.min(b.length - at, 64));
    return insertAt(b, ctx.rng.below(b.length + 1), b.slice(at, at + n));
  },
  // copy a range over another place
  (b, ctx) => {
    if (b.length < 2) return b;
    const out = Uint8Array.from(b);
    const from = ctx.rng.below(b.length);
    const n = 1 + ctx.rng.below(Math.min(b.length - from, 32));
    const to = ctx.rng.below(b.length - n + 1);
    out.set(b.subarray(from, from + n), to);
    return out;
  },
  // truncate
  (b, ctx) => b.subarray(0, ctx.rng.below(b.length + 1)),
  // splice: our head with another entry's tail
  (b, ctx) => {
    const o = ctx.other();
    const head = b.subarray(0, ctx.rng.below(b.length + 1));
    const tail = o.subarray(ctx.rng.below(o.length + 1));
    const out = new Uint8Array(head.length + tail.length);
    out.set(head, 0);
    out.set(tail, head.length);
    return out;
  },
  // insert or overwrite with a dictionary token
  (b, ctx) => {
    if (ctx.dictionary.length === 0) return withByteAt(b, ctx, () => ctx.rng.below(256));
    const tok = ctx.rng.pick(ctx.dictionary);
    const at = ctx.rng.below(b.length + 1);
    if (ctx.rng.chance(2) || at + tok.length > b.length) return insertAt(b, at, tok);
    const out = Uint8Array.from(b);
    out.set(tok, at);
    return out;
  },
];

/** One to four stacked mutations of `input`, capped at `ctx.maxLen` bytes. */
export function mutate(input: Uint8Array, ctx: MutationContext): Uint8Array {
  let b = input;
  const rounds = 1 + ctx.rng.below(4);
  for (let i = 0; i < rounds; i++) b = ctx.rng.pick(MUTATORS)(b, ctx);
  return b.length > ctx.maxLen ? b.subarray(0, ctx.maxLen) : b;
}
