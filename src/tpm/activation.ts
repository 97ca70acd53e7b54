/**
 * @module tpm/activation
 * Server side of credential activation: the AK attribute checklist, TPM2_MakeCredential done in software
 * (TPM 2.0 Part 1, 24 "Credential Protection"; Part 3, TPM2_MakeCredential) and the tpm2-tools
 * makecredential file the agent feeds to `tpm2_activatecredential`.
 *
 * Randomness comes from the caller (`randomBytes`), so this module is deterministic under test. The caller
 * must compare the secret the agent returns with the one it generated in constant time.
 */
import { Buffer } from 'node:buffer';
import { constants, createCipheriv, createECDH, createHmac, publicEncrypt, timingSafeEqual } from 'node:crypto';
import { AttestationRefused, MalformedInput } from '../errors.js';
import { HashAlg } from './alg.js';
import { BytesReader, BytesWriter, concatBytes } from './bytes.js';
import { TPM2_TOOLS_FILE_MAGIC, TPM2_TOOLS_FILE_VERSION, TPMA_OBJECT, TPM_ALG } from './constants.js';
import { publicToKeyObject, type EccCurve, type EccPublic, type RsaPublic, type TpmPublic } from './public.js';

// ---- AK checklist -------------------------------------------------------------------------------------------

/** Smallest RSA AK accepted (bits). */
export const MIN_RSA_AK_BITS = 2048;
/** ECC curves accepted for an AK, by TPM_ECC_CURVE id (P-256, P-384). */
export const ALLOWED_AK_CURVES: readonly string[] = ['P-256', 'P-384'];
/** Hashes accepted in an AK's signing scheme and name algorithm. */
export const ALLOWED_AK_HASHES: readonly HashAlg[] = [HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512];

export const ERR_AK_NOT_SIGNING = 'ERR_AK_NOT_SIGNING';
export const ERR_AK_NOT_RESTRICTED = 'ERR_AK_NOT_RESTRICTED';
export const ERR_AK_NOT_FIXEDTPM = 'ERR_AK_NOT_FIXEDTPM';
export const ERR_AK_NOT_FIXEDPARENT = 'ERR_AK_NOT_FIXEDPARENT';
export const ERR_AK_NOT_SENSITIVEDATAORIGIN = 'ERR_AK_NOT_SENSITIVEDATAORIGIN';
export const ERR_AK_DECRYPT = 'ERR_AK_DECRYPT';
export const ERR_AK_NAME_ALG = 'ERR_AK_NAME_ALG';
export const ERR_AK_KEY_TOO_SMALL = 'ERR_AK_KEY_TOO_SMALL';
export const ERR_AK_SCHEME = 'ERR_AK_SCHEME';

function akRefused(code: string, message: string): AttestationRefused {
  return new AttestationRefused(code, `AK: ${message}`, { fields: { rule: code } });
}

/**
 * The AK checklist, in fixed order. Each rule is why the TPM will only ever sign TPM-generated data with it:
 * 1. sign: it is a signing key;
 * 2. restricted: it signs only digests the TPM produced itself (quotes), never an outside TPM_GENERATED forgery;
 * 3. fixedTPM, 4. fixedParent: it cannot be duplicated out of this TPM or away from its parent (the EK);
 * 5. sensitiveDataOrigin: the TPM generated the private key (nobody imported a known one);
 * 6. not decrypt: a restricted decrypt+sign key would be a storage key;
 * 7. nameAlg is an allowed hash;
 * 8. key size: RSA ≥ MIN_RSA_AK_BITS, ECC on an allowed curve;
 * 9. scheme: RSASSA/RSAPSS (RSA) or ECDSA (ECC) with an allowed hash; a restricted signing key must fix one.
 * It does not prove the AK is in the same TPM as the EK: credential activation does.
 */
export function checkAkAttributes(pub: TpmPublic): void {
  const a = pub.attributes;
  if ((a & TPMA_OBJECT.SIGN_ENCRYPT) === 0) throw akRefused(ERR_AK_NOT_SIGNING, 'not a signing key');
  if ((a & TPMA_OBJECT.RESTRICTED) === 0) throw akRefused(ERR_AK_NOT_RESTRICTED, 'not restricted');
  if ((a & TPMA_OBJECT.FIXED_TPM) === 0) throw akRefused(ERR_AK_NOT_FIXEDTPM, 'fixedTPM is clear');
  if ((a & TPMA_OBJECT.FIXED_PARENT) === 0) throw akRefused(ERR_AK_NOT_FIXEDPARENT, 'fixedParent is clear');
  if ((a & TPMA_OBJECT.SENSITIVE_DATA_ORIGIN) === 0) {
    throw akRefused(ERR_AK_NOT_SENSITIVEDATAORIGIN, 'sensitiveDataOrigin is clear');
  }
  if ((a & TPMA_OBJECT.DECRYPT) !== 0) throw akRefused(ERR_AK_DECRYPT, 'decrypt is set');
  if (!ALLOWED_AK_HASHES.some((h) => h.equals(pub.nameAlg))) {
    throw akRefused(ERR_AK_NAME_ALG, `nameAlg ${pub.nameAlg.name} is not allowed`);
  }
  if (pub.type === 'rsa' && pub.keyBits < MIN_RSA_AK_BITS) {
    throw akRefused(ERR_AK_KEY_TOO_SMALL, `RSA key of ${pub.keyBits} bits is below ${MIN_RSA_AK_BITS}`);
  }
  if (pub.type === 'ecc' && !ALLOWED_AK_CURVES.includes(pub.curve.jwkName)) {
    throw akRefused(ERR_AK_KEY_TOO_SMALL, `curve ${pub.curve.jwkName} is not allowed`);
  }
  const schemes: readonly number[] = pub.type === 'rsa' ? [TPM_ALG.RSASSA, TPM_ALG.RSAPSS] : [TPM_ALG.ECDSA];
  const hash = pub.scheme.hashAlg;
  if (!schemes.includes(pub.scheme.alg) || hash === null || !ALLOWED_AK_HASHES.some((h) => h.equals(hash))) {
    throw akRefused(ERR_AK_SCHEME, `signing scheme 0x${pub.scheme.alg.toString(16)} is not supported`);
  }
}

// ---- KDFs (TPM 2.0 Part 1, 11.4.10) -------------------------------------------------------------------------

function labelBytes(label: string): Uint8Array {
  // The label is used with its terminating NUL (Part 1, 11.4.10.2); "IDENTITY" → "IDENTITY\0".
  return concatBytes(new TextEncoder().encode(label), Uint8Array.of(0));
}

function u32(n: number): Uint8Array {
  return new BytesWriter().u32be(n).finish();
}

function truncateBits(out: Uint8Array, bits: number): Uint8Array {
  const bytes = Math.ceil(bits / 8);
  const result = Uint8Array.from(out.subarray(0, bytes));
  // When bits is not a multiple of 8, the excess high-order bits of the first byte are cleared.
  if (bits % 8 !== 0) result[0]! &= (1 << (bits % 8)) - 1;
  return result;
}

/** KDF output sizes must be positive and bounded (we never need more than 8 Kibit). */
function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits <= 0 || bits > 8 * 1024) throw new RangeError(`invalid KDF output size ${bits}`);
}

/**
 * KDFa: SP800-108 counter mode with HMAC-H over `u32 i ‖ label‖0 ‖ contextU ‖ contextV ‖ u32 bits`.
 */
export function kdfa(hash: HashAlg, key: Uint8Array, label: string, contextU: Uint8Array, contextV: Uint8Array, bits: number): Uint8Array {
  checkBits(bits);
  const fixed = concatBytes(labelBytes(label), contextU, contextV, u32(bits));
  const blocks: Uint8Array[] = [];
  for (let i = 1, have = 0; have < bits; i++, have += hash.size * 8) {
    blocks.push(new Uint8Array(createHmac(hash.name, key).update(u32(i)).update(fixed).digest()));
  }
  return truncateBits(concatBytes(...blocks), bits);
}

/**
 * KDFe: SP800-56A concatenation KDF with H over `u32 i ‖ Z ‖ label‖0 ‖ partyUInfo ‖ partyVInfo`.
 */
export function kdfe(hash: HashAlg, z: Uint8Array, label: string, partyU: Uint8Array, partyV: Uint8Array, bits: number): Uint8Array {
  checkBits(bits);
  const other = concatBytes(labelBytes(label), partyU, partyV);
  const blocks: Uint8Array[] = [];
  for (let i = 1, have = 0; have < bits; i++, have += hash.size * 8) {
    blocks.push(hash.digest(u32(i), z, other));
  }
  return truncateBits(concatBytes(...blocks), bits);
}

// ---- MakeCredential -----------------------------------------------------------------------------------------

export type RandomBytes = (size: number) => Uint8Array;

export interface MakeCredentialInput {
  /** The EK public area: a restricted decryption key with an AES-CFB symmetric definition. */
  readonly ekPublic: TpmPublic;
  /** Name of the AK (u16 nameAlg ‖ digest), computed by the server from the AK public area. */
  readonly akName: Uint8Array;
  /** The challenge secret; at most the EK nameAlg digest size (it travels as a TPM2B_DIGEST). */
  readonly secret: Uint8Array;
  readonly randomBytes: RandomBytes;
}

export interface Credential {
  /** Contents of TPM2B_ID_OBJECT: TPM2B_DIGEST(outerHMAC) ‖ encIdentity. */
  readonly idObject: Uint8Array;
  /** Contents of TPM2B_ENCRYPTED_SECRET: RSA-OAEP ciphertext or TPMS_ECC_POINT of the ephemeral key. */
  readonly encryptedSecret: Uint8Array;
}

export const ERR_EK_NOT_STORAGE_KEY = 'ERR_EK_NOT_STORAGE_KEY';

function ekRefused(message: string): AttestationRefused {
  return new AttestationRefused(ERR_EK_NOT_STORAGE_KEY, `EK: ${message}`, { fields: { rule: ERR_EK_NOT_STORAGE_KEY } });
}

/**
 * TPM2_MakeCredential in software (tpm-notes §7, verified against swtpm for RSA-2048, P-256 and P-384 EKs):
 * seed protected to the EK, symKey = KDFa(seed, "STORAGE", akName), encIdentity = AES-CFB(u16 len ‖ secret),
 * hmacKey = KDFa(seed, "INTEGRITY"), outerHMAC = HMAC(hmacKey, encIdentity ‖ akName). The TPM only releases the
 * secret if it holds the EK private key AND an object with exactly this Name.
 */
export function makeCredential(input: MakeCredentialInput): Credential {
  const ek = input.ekPublic;
  const a = ek.attributes;
  if ((a & TPMA_OBJECT.RESTRICTED) === 0 || (a & TPMA_OBJECT.DECRYPT) === 0 || (a & TPMA_OBJECT.SIGN_ENCRYPT) !== 0) {
    throw ekRefused('not a restricted decryption key');
  }
  const sym = ek.symmetric;
  if (sym === null || sym.alg !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB || (sym.keyBits !== 128 && sym.keyBits !== 256)) {
    throw ekRefused('symmetric definition is not AES-128/256-CFB');
  }
  checkName(input.akName);
  const H = ek.nameAlg;
  if (input.secret.length === 0 || input.secret.length > H.size) {
    throw new MalformedInput('ERR_CREDENTIAL_SECRET', `credential secret must be 1..${H.size} bytes`);
  }

  const { seed, encryptedSecret } = ek.type === 'rsa' ? seedRsa(ek, input.randomBytes) : seedEcc(ek, input.randomBytes);

  const symKey = kdfa(H, seed, 'STORAGE', input.akName, new Uint8Array(0), sym.keyBits);
  const plain = new BytesWriter().tpm2b(input.secret).finish();
  const cipher = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, new Uint8Array(16));
  const encIdentity = concatBytes(new Uint8Array(cipher.update(plain)), new Uint8Array(cipher.final()));

  const hmacKey = kdfa(H, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), H.size * 8);
  const outerHmac = new Uint8Array(createHmac(H.name, hmacKey).update(encIdentity).update(input.akName).digest());
  const idObject = new BytesWriter().tpm2b(outerHmac).bytes(encIdentity).finish();
  return { idObject, encryptedSecret };
}

function checkName(name: Uint8Array): void {
  const r = new BytesReader(name, 'TPM2B_NAME');
  const alg = HashAlg.fromId(r.u16be('nameAlg'), 'AK name');
  r.take(alg.size, 'digest');
  r.end();
}

function seedRsa(ek: RsaPublic, randomBytes: RandomBytes): { seed: Uint8Array; encryptedSecret: Uint8Array } {
  const H = ek.nameAlg;
  const seed = exactRandom(randomBytes, H.size);
  const em = oaepEncode(H, seed, labelBytes('IDENTITY'), ek.modulus.length, exactRandom(randomBytes, H.size));
  // Raw RSA on our own OAEP encoding keeps all randomness injectable (node's OAEP draws its own seed).
  const encryptedSecret = new Uint8Array(publicEncrypt({ key: publicToKeyObject(ek), padding: constants.RSA_NO_PADDING }, em));
  return { seed, encryptedSecret };
}

function exactRandom(randomBytes: RandomBytes, size: number): Uint8Array {
  const out = randomBytes(size);
  if (!(out instanceof Uint8Array) || out.length !== size) throw new RangeError(`randomBytes(${size}) returned a wrong size`);
  return Uint8Array.from(out);
}

function mgf1(hash: HashAlg, seed: Uint8Array, length: number): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (let i = 0, have = 0; have < length; i++, have += hash.size) blocks.push(hash.digest(seed, u32(i)));
  return concatBytes(...blocks).subarray(0, length);
}

/** EME-OAEP encoding (RFC 8017, 7.1.1 step 2) with MGF1 over the same hash. */
export function oaepEncode(hash: HashAlg, message: Uint8Array, label: Uint8Array, k: number, oaepSeed: Uint8Array): Uint8Array {
  const hLen = hash.size;
  if (message.length > k - 2 * hLen - 2) throw new RangeError('OAEP message too long');
  const db = new Uint8Array(k - hLen - 1);
  db.set(hash.digest(label), 0);
  db[db.length - message.length - 1] = 0x01;
  db.set(message, db.length - message.length);
  const dbMask = mgf1(hash, oaepSeed, db.length);
  for (let i = 0; i < db.length; i++) db[i]! ^= dbMask[i]!;
  const seedMask = mgf1(hash, db, hLen);
  const maskedSeed = oaepSeed.map((b, i) => b ^ seedMask[i]!);
  return concatBytes(Uint8Array.of(0), maskedSeed, db);
}

function seedEcc(ek: EccPublic, randomBytes: RandomBytes): { seed: Uint8Array; encryptedSecret: Uint8Array } {
  const H = ek.nameAlg;
  const curve = ek.curve;
  const ecdh = createECDH(curve.nodeName);
  ecdh.setPrivateKey(ephemeralScalar(curve, randomBytes));
  const ephemeralPoint = new Uint8Array(ecdh.getPublicKey()); // 04 ‖ x ‖ y
  const ephX = ephemeralPoint.subarray(1, 1 + curve.size);
  const ephY = ephemeralPoint.subarray(1 + curve.size);
  const ekPoint = concatBytes(Uint8Array.of(4), leftPad(ek.x, curve.size), leftPad(ek.y, curve.size));
  let z: Uint8Array;
  try {
    z = new Uint8Array(ecdh.computeSecret(ekPoint)); // the x-coordinate of the shared point
  } catch (cause) {
    throw new MalformedInput('ERR_TPM_BAD_PUBLIC_KEY', 'EK: ECC point is not on its curve', { cause });
  }
  const seed = kdfe(H, z, 'IDENTITY', ephX, ek.x, H.size * 8);
  const encryptedSecret = new BytesWriter().tpm2b(ephX).tpm2b(ephY).finish();
  return { seed, encryptedSecret };
}

function leftPad(bytes: Uint8Array, size: number): Uint8Array {
  if (bytes.length >= size) return bytes;
  const out = new Uint8Array(size);
  out.set(bytes, size - bytes.length);
  return out;
}

/** A uniform scalar in [1, n-1] by rejection sampling over `randomBytes` (bounded retries). */
function ephemeralScalar(curve: EccCurve, randomBytes: RandomBytes): Uint8Array {
  for (let attempt = 0; attempt < 64; attempt++) {
    const candidate = exactRandom(randomBytes, curve.size);
    const value = BigInt(`0x${Buffer.from(candidate).toString('hex')}`);
    if (value > 0n && value < curve.order) return candidate;
  }
  throw new RangeError('randomBytes produced no valid ECC scalar in 64 attempts');
}

// ---- tpm2-tools makecredential file -------------------------------------------------------------------------

/**
 * The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads (tpm2-tools lib/files.c):
 * u32 0xBADCC0DE ‖ u32 version 1 ‖ TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET.
 */
export function encodeCredentialFile(credential: Credential): Uint8Array {
  return new BytesWriter()
    .u32be(TPM2_TOOLS_FILE_MAGIC)
    .u32be(TPM2_TOOLS_FILE_VERSION)
    .tpm2b(credential.idObject)
    .tpm2b(credential.encryptedSecret)
    .finish();
}

/** Inverse of `encodeCredentialFile`. */
export function parseCredentialFile(bytes: Uint8Array): Credential {
  const r = new BytesReader(bytes, 'tpm2-tools makecredential file');
  if (r.u32be('magic') !== TPM2_TOOLS_FILE_MAGIC) r.fail('magic is not 0xBADCC0DE');
  const version = r.u32be('version');
  if (version !== TPM2_TOOLS_FILE_VERSION) r.fail(`version ${version} is not ${TPM2_TOOLS_FILE_VERSION}`);
  const idObject = Uint8Array.from(r.tpm2b('TPM2B_ID_OBJECT'));
  const encryptedSecret = Uint8Array.from(r.tpm2b('TPM2B_ENCRYPTED_SECRET'));
  r.end();
  return { idObject, encryptedSecret };
}

/** Constant-time comparison of the secret the agent returned with the one the server generated. */
export function secretsEqual(expected: Uint8Array, returned: Uint8Array): boolean {
  return expected.length === returned.length && timingSafeEqual(expected, returned);
}
