/**
 * @module tpm/public
 * TPM2B_PUBLIC / TPMT_PUBLIC (TPM 2.0 Part 2, 12.2.4 and 12.2.5) for RSA and ECC keys, the object Name and
 * Qualified Name (TPM 2.0 Part 1, 16 "Names"), and conversion to node `KeyObject` / PKIX SPKI DER.
 *
 * Parsing grants no trust: a parsed public area says what the sender claims. `checkAkAttributes`
 * (activation.ts) and credential activation are what bind it to a TPM.
 */
import { Buffer } from 'node:buffer';
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { MalformedInput } from '../errors.js';
import { HashAlg } from './alg.js';
import { BytesReader, BytesWriter, concatBytes } from './bytes.js';
import { TPM_ALG, TPM_ECC_CURVE, TPM_RH_ENDORSEMENT } from './constants.js';
import { ERR_UNSUPPORTED_ALG } from './alg.js';

/** Largest TPMT_PUBLIC we accept: an RSA-4096 key with a SHA-512 policy is well under 1 KiB. */
export const MAX_PUBLIC_AREA_SIZE = 1024;
/** Largest RSA modulus we accept (bytes), checked before allocation. */
export const MAX_RSA_MODULUS_BYTES = 512;

export interface EccCurve {
  readonly id: number;
  /** JWK `crv` */
  readonly jwkName: 'P-256' | 'P-384';
  /** node `createECDH` name */
  readonly nodeName: 'prime256v1' | 'secp384r1';
  /** Coordinate size in bytes. */
  readonly size: number;
  /** Group order, big-endian, for ephemeral scalar generation. */
  readonly order: bigint;
}

export const ECC_CURVES: readonly EccCurve[] = [
  {
    id: TPM_ECC_CURVE.NIST_P256,
    jwkName: 'P-256',
    nodeName: 'prime256v1',
    size: 32,
    order: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  },
  {
    id: TPM_ECC_CURVE.NIST_P384,
    jwkName: 'P-384',
    nodeName: 'secp384r1',
    size: 48,
    order:
      0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  },
];

/** A TPMT_*_SCHEME: `alg` is a TPM_ALG_ID (TPM_ALG.NULL when none); `hashAlg` is set when the scheme has one. */
export interface TpmScheme {
  readonly alg: number;
  readonly hashAlg: HashAlg | null;
  /** ECDAA only. */
  readonly count?: number;
}

/** TPMT_SYM_DEF_OBJECT; null when the algorithm is TPM_ALG_NULL. */
export interface SymmetricDef {
  readonly alg: number;
  readonly keyBits: number;
  readonly mode: number;
}

interface PublicCommon {
  readonly nameAlg: HashAlg;
  /** TPMA_OBJECT bits, see constants.TPMA_OBJECT. */
  readonly attributes: number;
  readonly authPolicy: Uint8Array;
  readonly symmetric: SymmetricDef | null;
  readonly scheme: TpmScheme;
  /** The exact TPMT_PUBLIC bytes the Name is computed over. */
  readonly tpmtBytes: Uint8Array;
}

export interface RsaPublic extends PublicCommon {
  readonly type: 'rsa';
  readonly keyBits: number;
  /** Public exponent (TPM encodes 65537 as 0). */
  readonly exponent: number;
  readonly modulus: Uint8Array;
}

export interface EccPublic extends PublicCommon {
  readonly type: 'ecc';
  readonly curve: EccCurve;
  /** TPMT_KDF_SCHEME */
  readonly kdf: TpmScheme;
  readonly x: Uint8Array;
  readonly y: Uint8Array;
}

export type TpmPublic = RsaPublic | EccPublic;

const STRUCT = 'TPMT_PUBLIC';

function unsupported(r: BytesReader, what: string, value: number): never {
  return r.fail(`${what}: unsupported value 0x${value.toString(16).padStart(4, '0')}`, ERR_UNSUPPORTED_ALG);
}

function readHashAlg(r: BytesReader, field: string): HashAlg {
  const id = r.u16be(field);
  const alg = HashAlg.tryFromId(id);
  return alg ?? unsupported(r, field, id);
}

/** TPM2B_PUBLIC: u16 size ‖ TPMT_PUBLIC, consumed exactly. */
export function parseTpm2bPublic(bytes: Uint8Array): TpmPublic {
  const r = new BytesReader(bytes, 'TPM2B_PUBLIC');
  const inner = r.tpm2b('TPM2B_PUBLIC', MAX_PUBLIC_AREA_SIZE);
  r.end();
  return parseTpmtPublic(inner);
}

/** TPMT_PUBLIC (tpm2-tools `-f tpmt`), consumed exactly. */
export function parseTpmtPublic(bytes: Uint8Array): TpmPublic {
  if (bytes.length > MAX_PUBLIC_AREA_SIZE) {
    throw new MalformedInput('ERR_TPM_MALFORMED', `${STRUCT}: ${bytes.length} bytes exceeds ${MAX_PUBLIC_AREA_SIZE}`);
  }
  const tpmtBytes = Uint8Array.from(bytes); // snapshot: later mutation by the caller cannot change the Name
  const r = new BytesReader(tpmtBytes, STRUCT);
  const type = r.u16be('type');
  if (type !== TPM_ALG.RSA && type !== TPM_ALG.ECC) unsupported(r, 'type', type);
  const nameAlg = readHashAlg(r, 'nameAlg');
  const attributes = r.u32be('objectAttributes');
  const authPolicy = r.tpm2b('authPolicy', HashAlg.SHA512.size);
  const symmetric = readSymDefObject(r);

  if (type === TPM_ALG.RSA) {
    const scheme = readScheme(r, 'TPMT_RSA_SCHEME');
    const keyBits = r.u16be('keyBits');
    const rawExponent = r.u32be('exponent');
    const modulus = r.tpm2b('unique.rsa', MAX_RSA_MODULUS_BYTES);
    r.end();
    if (keyBits === 0 || keyBits % 8 !== 0 || modulus.length !== keyBits / 8) {
      r.fail(`modulus of ${modulus.length} bytes does not match keyBits ${keyBits}`);
    }
    return { type: 'rsa', nameAlg, attributes, authPolicy, symmetric, scheme, keyBits, exponent: rawExponent === 0 ? 65537 : rawExponent, modulus, tpmtBytes };
  }

  const scheme = readScheme(r, 'TPMT_ECC_SCHEME');
  const curveId = r.u16be('curveID');
  const curve = ECC_CURVES.find((c) => c.id === curveId) ?? unsupported(r, 'curveID', curveId);
  const kdf = readScheme(r, 'TPMT_KDF_SCHEME');
  const x = r.tpm2b('unique.ecc.x', curve.size);
  const y = r.tpm2b('unique.ecc.y', curve.size);
  r.end();
  return { type: 'ecc', nameAlg, attributes, authPolicy, symmetric, scheme, curve, kdf, x, y, tpmtBytes };
}

/** TPMT_SYM_DEF_OBJECT: alg, then keyBits and mode unless alg is NULL. Only AES is supported. */
function readSymDefObject(r: BytesReader): SymmetricDef | null {
  const alg = r.u16be('symmetric.algorithm');
  if (alg === TPM_ALG.NULL) return null;
  if (alg !== TPM_ALG.AES) unsupported(r, 'symmetric.algorithm', alg);
  const keyBits = r.u16be('symmetric.keyBits');
  const mode = r.u16be('symmetric.mode');
  return { alg, keyBits, mode };
}

/**
 * TPMT_RSA_SCHEME / TPMT_ECC_SCHEME / TPMT_KDF_SCHEME: scheme id, then its details. Every scheme we accept
 * carries a hash algorithm, except NULL and RSAES (TPMS_ENC_SCHEME_RSAES is empty); ECDAA adds a u16 count.
 */
function readScheme(r: BytesReader, field: string): TpmScheme {
  const alg = r.u16be(`${field}.scheme`);
  if (alg === TPM_ALG.NULL || alg === TPM_ALG.RSAES) return { alg, hashAlg: null };
  const known: readonly number[] = [
    TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.OAEP, TPM_ALG.ECDSA, TPM_ALG.ECDH, TPM_ALG.ECDAA, TPM_ALG.ECSCHNORR,
    TPM_ALG.KDF1_SP800_56A, TPM_ALG.KDF1_SP800_108,
  ];
  if (!known.includes(alg)) unsupported(r, `${field}.scheme`, alg);
  const hashAlg = readHashAlg(r, `${field}.hashAlg`);
  if (alg === TPM_ALG.ECDAA) return { alg, hashAlg, count: r.u16be(`${field}.count`) };
  return { alg, hashAlg };
}

/** Fields for building a TPMT_PUBLIC (tests and tools that synthesise keys). */
export type PublicTemplate =
  | {
      readonly type: 'rsa';
      readonly nameAlg: HashAlg;
      readonly attributes: number;
      readonly authPolicy?: Uint8Array;
      readonly symmetric?: SymmetricDef | null;
      readonly scheme?: TpmScheme;
      readonly keyBits: number;
      readonly exponent?: number;
      readonly modulus: Uint8Array;
    }
  | {
      readonly type: 'ecc';
      readonly nameAlg: HashAlg;
      readonly attributes: number;
      readonly authPolicy?: Uint8Array;
      readonly symmetric?: SymmetricDef | null;
      readonly scheme?: TpmScheme;
      readonly curve: EccCurve;
      readonly kdf?: TpmScheme;
      readonly x: Uint8Array;
      readonly y: Uint8Array;
    };

/** Serialises a TPMT_PUBLIC (no size prefix). Inverse of `parseTpmtPublic`. */
export function encodeTpmtPublic(t: PublicTemplate): Uint8Array {
  const w = new BytesWriter()
    .u16be(t.type === 'rsa' ? TPM_ALG.RSA : TPM_ALG.ECC)
    .u16be(t.nameAlg.id)
    .u32be(t.attributes >>> 0)
    .tpm2b(t.authPolicy ?? new Uint8Array(0));
  const sym = t.symmetric ?? null;
  if (sym === null) w.u16be(TPM_ALG.NULL);
  else w.u16be(sym.alg).u16be(sym.keyBits).u16be(sym.mode);
  const writeScheme = (s: TpmScheme | undefined): void => {
    const scheme = s ?? { alg: TPM_ALG.NULL, hashAlg: null };
    w.u16be(scheme.alg);
    if (scheme.hashAlg !== null) w.u16be(scheme.hashAlg.id);
    if (scheme.alg === TPM_ALG.ECDAA) w.u16be(scheme.count ?? 0);
  };
  writeScheme(t.scheme);
  if (t.type === 'rsa') {
    w.u16be(t.keyBits).u32be(t.exponent === undefined || t.exponent === 65537 ? 0 : t.exponent).tpm2b(t.modulus);
  } else {
    w.u16be(t.curve.id);
    writeScheme(t.kdf);
    w.tpm2b(t.x).tpm2b(t.y);
  }
  return w.finish();
}

/** TPM2B_PUBLIC bytes for a template. */
export function encodeTpm2bPublic(t: PublicTemplate): Uint8Array {
  return new BytesWriter().tpm2b(encodeTpmtPublic(t)).finish();
}

/** Name = u16 nameAlg ‖ H_nameAlg(TPMT_PUBLIC) (TPM 2.0 Part 1, 16 "Names"). */
export function publicName(pub: TpmPublic): Uint8Array {
  return new BytesWriter().u16be(pub.nameAlg.id).bytes(pub.nameAlg.digest(pub.tpmtBytes)).finish();
}

/** Qualified name of a hierarchy handle: the handle itself, big-endian. */
export function hierarchyQualifiedName(handle: number = TPM_RH_ENDORSEMENT): Uint8Array {
  return new BytesWriter().u32be(handle).finish();
}

/** QN(obj) = u16 nameAlg ‖ H_nameAlg(QN(parent) ‖ Name(obj)). */
export function qualifiedName(parentQualifiedName: Uint8Array, pub: TpmPublic): Uint8Array {
  const name = publicName(pub);
  return new BytesWriter()
    .u16be(pub.nameAlg.id)
    .bytes(pub.nameAlg.digest(concatBytes(parentQualifiedName, name)))
    .finish();
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

function leftPad(bytes: Uint8Array, size: number): Uint8Array {
  if (bytes.length >= size) return bytes;
  const out = new Uint8Array(size);
  out.set(bytes, size - bytes.length);
  return out;
}

/** A node public `KeyObject` (via JWK). An ECC point not on its curve, or a bad RSA key, is MalformedInput. */
export function publicToKeyObject(pub: TpmPublic): KeyObject {
  try {
    if (pub.type === 'rsa') {
      const e = new BytesWriter().u32be(pub.exponent).finish();
      let start = 0;
      while (start < e.length - 1 && e[start] === 0) start++;
      return createPublicKey({ key: { kty: 'RSA', n: b64url(pub.modulus), e: b64url(e.subarray(start)) }, format: 'jwk' });
    }
    return createPublicKey({
      key: { kty: 'EC', crv: pub.curve.jwkName, x: b64url(leftPad(pub.x, pub.curve.size)), y: b64url(leftPad(pub.y, pub.curve.size)) },
      format: 'jwk',
    });
  } catch (cause) {
    throw new MalformedInput('ERR_TPM_BAD_PUBLIC_KEY', `${STRUCT}: key material is not a valid ${pub.type} public key`, { cause });
  }
}

/** PKIX SubjectPublicKeyInfo DER (what `tpm2_readpublic -f der` writes). */
export function publicToSpkiDer(pub: TpmPublic): Uint8Array {
  return new Uint8Array(publicToKeyObject(pub).export({ type: 'spki', format: 'der' }));
}

/** Hex SHA-256 of the PKIX SPKI DER: spire-tpm-plugin's `pub_hash` and our agent-ID suffix. */
export function ekPubHash(spkiDer: Uint8Array): string {
  return createHash('sha256').update(spkiDer).digest('hex');
}
