/**
 * @module tpm/ima/sm3
 * SM3 (GB/T 32905-2016), written from the standard. Used only when Node's OpenSSL has no "sm3" digest (some
 * FIPS or trimmed builds), so IMA logs from SM3 banks (`sm3_256`) verify everywhere.
 */

const IV = [0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e];

const rotl = (x: number, n: number): number => ((x << (n & 31)) | (x >>> ((32 - (n & 31)) & 31))) >>> 0;
const p0 = (x: number): number => (x ^ rotl(x, 9) ^ rotl(x, 17)) >>> 0;
const p1 = (x: number): number => (x ^ rotl(x, 15) ^ rotl(x, 23)) >>> 0;

function compress(v: Uint32Array, block: DataView, at: number): void {
  const w = new Uint32Array(68);
  const w1 = new Uint32Array(64);
  for (let j = 0; j < 16; j++) w[j] = block.getUint32(at + 4 * j, false);
  for (let j = 16; j < 68; j++) w[j] = (p1(w[j - 16]! ^ w[j - 9]! ^ rotl(w[j - 3]!, 15)) ^ rotl(w[j - 13]!, 7) ^ w[j - 6]!) >>> 0;
  for (let j = 0; j < 64; j++) w1[j] = (w[j]! ^ w[j + 4]!) >>> 0;
  let [a, b, c, d, e, f, g, h] = [v[0]!, v[1]!, v[2]!, v[3]!, v[4]!, v[5]!, v[6]!, v[7]!];
  for (let j = 0; j < 64; j++) {
    const t = j < 16 ? 0x79cc4519 : 0x7a879d8a;
    const ss1 = rotl((rotl(a, 12) + e + rotl(t, j % 32)) >>> 0, 7);
    const ss2 = (ss1 ^ rotl(a, 12)) >>> 0;
    const ff = j < 16 ? a ^ b ^ c : (a & b) | (a & c) | (b & c);
    const gg = j < 16 ? e ^ f ^ g : (e & f) | (~e & g);
    const tt1 = ((ff >>> 0) + d + ss2 + w1[j]!) >>> 0;
    const tt2 = ((gg >>> 0) + h + ss1 + w[j]!) >>> 0;
    d = c;
    c = rotl(b, 9);
    b = a;
    a = tt1;
    h = g;
    g = rotl(f, 19);
    f = e;
    e = p0(tt2);
  }
  const out = [a, b, c, d, e, f, g, h];
  for (let i = 0; i < 8; i++) v[i] = (v[i]! ^ out[i]!) >>> 0;
}

/** SM3 digest (32 bytes) of the concatenation of `parts`. */
export function sm3(...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.length;
  // Message || 0x80 || zeros || 64-bit big-endian bit length, to a multiple of 64 bytes.
  const padded = new Uint8Array(Math.ceil((length + 9) / 64) * 64);
  let off = 0;
  for (const p of parts) {
    padded.set(p, off);
    off += p.length;
  }
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  const bits = BigInt(length) * 8n;
  view.setUint32(padded.length - 8, Number(bits >> 32n), false);
  view.setUint32(padded.length - 4, Number(bits & 0xffffffffn), false);
  const v = Uint32Array.from(IV);
  for (let at = 0; at < padded.length; at += 64) compress(v, view, at);
  const digest = new Uint8Array(32);
  const dv = new DataView(digest.buffer);
  for (let i = 0; i < 8; i++) dv.setUint32(4 * i, v[i]!, false);
  return digest;
}
