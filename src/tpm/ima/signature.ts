/**
 * @module tpm/ima/signature
 * IMA file signatures (the `sig` field of `ima-sig`, the security.ima xattr): signature format v2
 * (type 3 EVM_IMA_XATTR_DIGSIG or 5 EVM_XATTR_PORTABLE_DIGSIG, version 2, hash algorithm, 4-byte key id,
 * u16 big-endian length, then the RSA PKCS#1 v1.5 or DER ECDSA signature over the file digest itself).
 *
 * Key ids (keyidv2) are the last 4 bytes of SHA-1 over the RSA public key in PKCS#1 DER or the uncompressed EC
 * point, or the last 4 bytes of an X.509 certificate's Subject Key Identifier.
 */
import { Buffer } from 'node:buffer';
import { X509Certificate, createHash, createPublicKey, constants, publicDecrypt, type KeyObject } from 'node:crypto';
import { InvalidConfig } from '../../errors.js';
import { verifyEcdsaDigest } from './ecdsa.js';
import { IMA_HASH_SIZES, type ImaHashName } from './hash.js';

/** Kernel enum hash_algo values used in signature headers. */
const HASH_ALGO_IDS: Readonly<Record<number, ImaHashName>> = { 2: 'sha1', 4: 'sha256', 5: 'sha384', 6: 'sha512', 17: 'sm3_256' };
/** DER DigestInfo prefixes (RFC 8017 §9.2 note 1) for RSA PKCS#1 v1.5. */
const DIGEST_INFO: Partial<Record<ImaHashName, string>> = {
  sha1: '3021300906052b0e03021a05000414',
  sha256: '3031300d060960864801650304020105000420',
  sha384: '3041300d060960864801650304020205000430',
  sha512: '3051300d060960864801650304020305000440',
};
export const MAX_IMA_KEYS = 1024;

export interface ImaSignatureHeader {
  readonly type: number;
  readonly version: number;
  readonly hashAlgo: number;
  readonly keyId: number;
  readonly signature: Uint8Array;
}

/** The v2 header, or a reason it is malformed (a length that does not match is malformed whatever the path). */
export function parseImaSignature(sig: Uint8Array): ImaSignatureHeader | string {
  if (sig.length < 9) return 'header too short';
  const view = new DataView(sig.buffer, sig.byteOffset, sig.byteLength);
  const size = view.getUint16(7, false);
  if (9 + size !== sig.length) return `malformed header (9 + ${size} != ${sig.length})`;
  return { type: sig[0]!, version: sig[1]!, hashAlgo: sig[2]!, keyId: view.getUint32(3, false), signature: sig.subarray(9) };
}

export interface ImaKey {
  readonly keyId: number;
  readonly key: KeyObject;
  readonly source: string;
}

/** keyidv2 of a public key (RSA or EC). */
export function keyIdV2(key: KeyObject): number {
  let bytes: Uint8Array;
  if (key.asymmetricKeyType === 'rsa') bytes = key.export({ type: 'pkcs1', format: 'der' });
  else if (key.asymmetricKeyType === 'ec') {
    const jwk = key.export({ format: 'jwk' });
    bytes = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  } else throw new InvalidConfig('ERR_IMA_KEY', `IMA key: unsupported key type ${key.asymmetricKeyType}`);
  return createHash('sha1').update(bytes).digest().readUInt32BE(16);
}

/** Keys IMA signatures are checked against, by keyidv2 (the kernel's .ima keyring, or configured key files). */
export class ImaKeyring {
  readonly #keys = new Map<number, ImaKey>();

  get size(): number {
    return this.#keys.size;
  }

  add(key: KeyObject, source: string, keyId = keyIdV2(key)): ImaKey {
    if (this.#keys.size >= MAX_IMA_KEYS && !this.#keys.has(keyId)) throw new InvalidConfig('ERR_IMA_KEY', `IMA keyring is full (${MAX_IMA_KEYS} keys)`);
    const entry = { keyId, key, source };
    this.#keys.set(keyId, entry);
    return entry;
  }

  /** Adds a PEM/DER public key or X.509 certificate; returns undefined when the bytes are none of these. */
  addEncoded(data: Uint8Array, source: string): ImaKey | undefined {
    try {
      const cert = new X509Certificate(Buffer.from(data));
      const skiHex = subjectKeyIdentifier(cert);
      return this.add(cert.publicKey, source, skiHex === undefined ? undefined : Number.parseInt(skiHex.slice(-8), 16));
    } catch {
      // not a certificate: try a public key
    }
    try {
      const text = Buffer.from(data).toString('latin1');
      const key = text.includes('-----BEGIN') ? createPublicKey(text) : createPublicKey({ key: Buffer.from(data), format: 'der', type: 'spki' });
      return this.add(key, source);
    } catch {
      return undefined;
    }
  }

  get(keyId: number): ImaKey | undefined {
    return this.#keys.get(keyId);
  }

  /** A copy, so keys learnt from one log (ima-buf .ima entries) do not leak into another node's check. */
  clone(): ImaKeyring {
    const out = new ImaKeyring();
    for (const k of this.#keys.values()) out.add(k.key, k.source, k.keyId);
    return out;
  }
}

function subjectKeyIdentifier(cert: X509Certificate): string | undefined {
  // Node exposes no SKI accessor; find the extension (OID 2.5.29.14) in the DER: 06 03 55 1d 0e [01 01 ff] 04 len 04 len <ski>
  const der = cert.raw;
  const oid = Buffer.from('0603551d0e', 'hex');
  const at = der.indexOf(oid);
  if (at < 0) return undefined;
  let pos = at + oid.length;
  if (der[pos] === 0x01) pos += 3; // critical BOOLEAN
  if (der[pos] !== 0x04) return undefined;
  pos += 2;
  if (der[pos] !== 0x04) return undefined;
  const len = der[pos + 1]!;
  return der.subarray(pos + 2, pos + 2 + len).toString('hex');
}

export type SignatureCheck = { ok: true; keyId: number } | { ok: false; reason: string };

/** Verifies an IMA v2 signature over `digest` (algorithm `digestAlg`) with the key its header names. */
export function verifyImaSignature(sig: Uint8Array, digest: Uint8Array, digestAlg: ImaHashName, keyring: ImaKeyring): SignatureCheck {
  const header = parseImaSignature(sig);
  if (typeof header === 'string') return { ok: false, reason: header };
  if (header.type !== 3 && header.type !== 5) return { ok: false, reason: `signature type ${header.type} is not a digital signature` };
  if (header.version !== 2) return { ok: false, reason: `signature version ${header.version} is not supported` };
  const alg = HASH_ALGO_IDS[header.hashAlgo];
  if (alg === undefined || alg !== digestAlg || digest.length !== IMA_HASH_SIZES[alg]) {
    return { ok: false, reason: `signature hash algorithm ${header.hashAlgo} does not match the ${digestAlg} file digest` };
  }
  const keyHex = header.keyId.toString(16).padStart(8, '0');
  const entry = keyring.get(header.keyId);
  if (entry === undefined) return { ok: false, reason: `no key with id ${keyHex}` };
  if (entry.key.asymmetricKeyType === 'rsa') {
    const prefix = DIGEST_INFO[alg];
    if (prefix === undefined) return { ok: false, reason: `RSA signatures over ${alg} are not supported` };
    let decoded: Buffer;
    try {
      decoded = publicDecrypt({ key: entry.key, padding: constants.RSA_PKCS1_PADDING }, header.signature);
    } catch {
      return { ok: false, reason: `RSA signature does not verify with key ${keyHex}` };
    }
    const expected = Buffer.concat([Buffer.from(prefix, 'hex'), digest]);
    return decoded.equals(expected) ? { ok: true, keyId: header.keyId } : { ok: false, reason: `RSA signature does not verify with key ${keyHex}` };
  }
  if (entry.key.asymmetricKeyType === 'ec') {
    const jwk = entry.key.export({ format: 'jwk' });
    const ok = verifyEcdsaDigest(jwk.crv!, Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url'), digest, header.signature);
    return ok ? { ok: true, keyId: header.keyId } : { ok: false, reason: `ECDSA signature does not verify with key ${keyHex}` };
  }
  return { ok: false, reason: `key ${keyHex} has unsupported type ${entry.key.asymmetricKeyType}` };
}
