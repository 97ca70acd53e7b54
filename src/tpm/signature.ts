/**
 * @module tpm/signature
 * TPMT_SIGNATURE (TPM 2.0 Part 2, 11.3.4) for RSASSA, RSAPSS and ECDSA, and its verification with node crypto.
 */
import { constants, verify as cryptoVerify } from 'node:crypto';
import { HashAlg } from './alg.js';
import { ERR_UNSUPPORTED_ALG } from './alg.js';
import { BytesReader, concatBytes } from './bytes.js';
import { TPM_ALG } from './constants.js';
import { MAX_RSA_MODULUS_BYTES, publicToKeyObject, type TpmPublic } from './public.js';

/** Largest ECDSA coordinate we accept (P-521 would be 66; we support up to P-384). */
const MAX_ECC_PARAM_BYTES = 66;

export type TpmSignature =
  | { readonly scheme: 'rsassa' | 'rsapss'; readonly hashAlg: HashAlg; readonly signature: Uint8Array }
  | { readonly scheme: 'ecdsa'; readonly hashAlg: HashAlg; readonly r: Uint8Array; readonly s: Uint8Array };

/** Parses a TPMT_SIGNATURE (tpm2-tools `-f tss`), consumed exactly. Unknown schemes or hashes are refused. */
export function parseSignature(bytes: Uint8Array): TpmSignature {
  const r = new BytesReader(bytes, 'TPMT_SIGNATURE');
  const sigAlg = r.u16be('sigAlg');
  if (sigAlg !== TPM_ALG.RSASSA && sigAlg !== TPM_ALG.RSAPSS && sigAlg !== TPM_ALG.ECDSA) {
    r.fail(`unsupported sigAlg 0x${sigAlg.toString(16).padStart(4, '0')}`, ERR_UNSUPPORTED_ALG);
  }
  const hashId = r.u16be('hash');
  const hashAlg = HashAlg.tryFromId(hashId) ?? r.fail(`unsupported hash 0x${hashId.toString(16)}`, ERR_UNSUPPORTED_ALG);
  if (sigAlg === TPM_ALG.ECDSA) {
    const sigR = r.tpm2b('signatureR', MAX_ECC_PARAM_BYTES);
    const sigS = r.tpm2b('signatureS', MAX_ECC_PARAM_BYTES);
    r.end();
    return { scheme: 'ecdsa', hashAlg, r: Uint8Array.from(sigR), s: Uint8Array.from(sigS) };
  }
  const signature = r.tpm2b('sig', MAX_RSA_MODULUS_BYTES);
  r.end();
  return { scheme: sigAlg === TPM_ALG.RSASSA ? 'rsassa' : 'rsapss', hashAlg, signature: Uint8Array.from(signature) };
}

/** Strip leading zeros, then left-pad to `size`; undefined when the integer does not fit. */
function fixedWidth(int: Uint8Array, size: number): Uint8Array | undefined {
  let start = 0;
  while (start < int.length && int[start] === 0) start++;
  const trimmed = int.subarray(start);
  if (trimmed.length > size) return undefined;
  const out = new Uint8Array(size);
  out.set(trimmed, size - trimmed.length);
  return out;
}

/**
 * True when `sig` is a valid signature by `key` over `message` (hash from the signature). A scheme that does
 * not fit the key type (ECDSA with an RSA key...) is simply invalid. Does not check which hashes are allowed:
 * callers decide that (quote.ts).
 */
export function verifySignature(key: TpmPublic, sig: TpmSignature, message: Uint8Array): boolean {
  const keyObject = publicToKeyObject(key);
  if (sig.scheme === 'ecdsa') {
    if (key.type !== 'ecc') return false;
    const r = fixedWidth(sig.r, key.curve.size);
    const s = fixedWidth(sig.s, key.curve.size);
    if (r === undefined || s === undefined) return false;
    return cryptoVerify(sig.hashAlg.name, message, { key: keyObject, dsaEncoding: 'ieee-p1363' }, concatBytes(r, s));
  }
  if (key.type !== 'rsa' || sig.signature.length !== key.modulus.length) return false;
  if (sig.scheme === 'rsassa') {
    return cryptoVerify(sig.hashAlg.name, message, { key: keyObject, padding: constants.RSA_PKCS1_PADDING }, sig.signature);
  }
  return cryptoVerify(
    sig.hashAlg.name,
    message,
    { key: keyObject, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO },
    sig.signature,
  );
}
