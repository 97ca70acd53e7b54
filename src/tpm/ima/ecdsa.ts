/**
 * @module tpm/ima/ecdsa
 * ECDSA verification of a digest that is already computed. IMA signs the file digest itself, and Node's crypto can
 * only verify ECDSA over data it hashes, so this verifies (r, s) against e = digest per SEC 1 §4.1.4 with BigInt
 * arithmetic. Only public values are involved (no secret, so no constant-time requirement).
 * Curve constants are checked at load: G (from Node's own curve) lies on the curve and n·G is the point at infinity.
 */
import { createECDH } from 'node:crypto';
import { InternalError } from '../../errors.js';

interface Curve {
  readonly p: bigint;
  readonly a: bigint;
  readonly b: bigint;
  readonly n: bigint;
  readonly gx: bigint;
  readonly gy: bigint;
  readonly size: number;
}
type Point = { x: bigint; y: bigint } | null;

const big = (b: Uint8Array): bigint => (b.length === 0 ? 0n : BigInt('0x' + Buffer.from(b).toString('hex')));
const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;

function inverse(a: bigint, m: bigint): bigint {
  let [oldR, r] = [mod(a, m), m];
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const q = oldR / r;
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  return mod(oldS, m);
}

function add(c: Curve, P: Point, Q: Point): Point {
  if (P === null) return Q;
  if (Q === null) return P;
  if (P.x === Q.x && mod(P.y + Q.y, c.p) === 0n) return null;
  const l =
    P.x === Q.x && P.y === Q.y
      ? mod((3n * P.x * P.x + c.a) * inverse(2n * P.y, c.p), c.p)
      : mod((Q.y - P.y) * inverse(Q.x - P.x, c.p), c.p);
  const x = mod(l * l - P.x - Q.x, c.p);
  return { x, y: mod(l * (P.x - x) - P.y, c.p) };
}

function multiply(c: Curve, k: bigint, P: Point): Point {
  let result: Point = null;
  let addend = P;
  while (k > 0n) {
    if (k & 1n) result = add(c, result, addend);
    addend = add(c, addend, addend);
    k >>= 1n;
  }
  return result;
}

const onCurve = (c: Curve, P: { x: bigint; y: bigint }): boolean => mod(P.y * P.y - (P.x * P.x * P.x + c.a * P.x + c.b), c.p) === 0n;

function curve(nodeName: string, p: bigint, a: bigint, b: bigint, n: bigint, size: number): Curve {
  const ecdh = createECDH(nodeName);
  ecdh.setPrivateKey(Buffer.from([1])); // public key of private key 1 is the generator
  const g = ecdh.getPublicKey();
  const c: Curve = { p, a: mod(a, p), b, n, gx: big(g.subarray(1, 1 + size)), gy: big(g.subarray(1 + size)), size };
  if (!onCurve(c, { x: c.gx, y: c.gy }) || multiply(c, n, { x: c.gx, y: c.gy }) !== null) throw new InternalError('ERR_ECDSA_CURVE', `ECDSA: curve constants for ${nodeName} do not match Node's curve`);
  return c;
}

const CURVE_PARAMS: Record<string, () => Curve> = {
  'P-256': () =>
    curve('prime256v1', 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n, -3n,
      0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
      0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n, 32),
  'P-384': () =>
    curve('secp384r1', 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n, -3n,
      0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
      0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n, 48),
  secp256k1: () =>
    curve('secp256k1', 2n ** 256n - 2n ** 32n - 977n, 0n, 7n, 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n, 32),
};
const cache = new Map<string, Curve>();

/** The curves this module verifies on (JWK `crv` names). */
export const ECDSA_CURVES = Object.freeze(Object.keys(CURVE_PARAMS));

/** Decodes a DER ECDSA-Sig-Value (SEQUENCE { r INTEGER, s INTEGER }); undefined when it is not one. */
function decodeDerSignature(sig: Uint8Array): { r: bigint; s: bigint } | undefined {
  let pos = 0;
  const len = (): number | undefined => {
    const first = sig[pos++];
    if (first === undefined) return undefined;
    if (first < 0x80) return first;
    if (first !== 0x81) return undefined; // signatures up to P-521 fit in one length byte
    return sig[pos++];
  };
  if (sig[pos++] !== 0x30) return undefined;
  const seqLen = len();
  if (seqLen === undefined || pos + seqLen !== sig.length) return undefined;
  const ints: bigint[] = [];
  for (let i = 0; i < 2; i++) {
    if (sig[pos++] !== 0x02) return undefined;
    const l = len();
    if (l === undefined || l === 0 || l > 67 || pos + l > sig.length) return undefined;
    ints.push(big(sig.subarray(pos, pos + l)));
    pos += l;
  }
  return pos === sig.length ? { r: ints[0]!, s: ints[1]! } : undefined;
}

/** Verifies a DER ECDSA signature over `digest` (not re-hashed) with the public point (x, y) on `crv`. */
export function verifyEcdsaDigest(crv: string, x: Uint8Array, y: Uint8Array, digest: Uint8Array, derSignature: Uint8Array): boolean {
  const make = CURVE_PARAMS[crv];
  if (make === undefined) return false;
  let c = cache.get(crv);
  if (c === undefined) cache.set(crv, (c = make()));
  const rs = decodeDerSignature(derSignature);
  if (rs === undefined) return false;
  const { r, s } = rs;
  if (r <= 0n || r >= c.n || s <= 0n || s >= c.n) return false;
  const Q = { x: big(x), y: big(y) };
  if (Q.x >= c.p || Q.y >= c.p || !onCurve(c, Q)) return false;
  // e = leftmost bitlen(n) bits of the digest
  let e = big(digest);
  const excess = digest.length * 8 - c.n.toString(2).length;
  if (excess > 0) e >>= BigInt(excess);
  const w = inverse(s, c.n);
  const R = add(c, multiply(c, mod(e * w, c.n), { x: c.gx, y: c.gy }), multiply(c, mod(r * w, c.n), Q));
  return R !== null && mod(R.x, c.n) === r;
}
