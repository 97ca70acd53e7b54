/**
 * @module tpm/ima/hash
 * The hash algorithms IMA uses, by the names the kernel prints: file digests in `d-ng` fields ("sha256:…") and
 * the per-bank template hashes (the TPM PCR banks). SM3 is `sm3_256` in IMA (the TPM bank is `sm3_256` too).
 */
import { createHash, getHashes } from 'node:crypto';
import { MalformedInput } from '../../errors.js';
import { sm3 } from './sm3.js';

export type ImaHashName = 'sha1' | 'sha256' | 'sha384' | 'sha512' | 'sm3_256';

export const ERR_IMA_UNSUPPORTED_ALG = 'ERR_IMA_UNSUPPORTED_ALG';

export const IMA_HASH_SIZES: Readonly<Record<ImaHashName, number>> = Object.freeze({
  sha1: 20,
  sha256: 32,
  sha384: 48,
  sha512: 64,
  sm3_256: 32,
});

export const IMA_HASH_NAMES: readonly ImaHashName[] = Object.freeze(Object.keys(IMA_HASH_SIZES) as ImaHashName[]);

const nodeHasSm3 = getHashes().includes('sm3');

export function isImaHashName(name: string): name is ImaHashName {
  return Object.prototype.hasOwnProperty.call(IMA_HASH_SIZES, name);
}

/** The algorithm for a name as IMA prints it ("sm3" is accepted for "sm3_256"), or MalformedInput. */
export function parseImaHashName(name: string, context: string): ImaHashName {
  const lower = name.toLowerCase();
  const normalized = lower === 'sm3' ? 'sm3_256' : lower;
  if (!isImaHashName(normalized)) {
    throw new MalformedInput(ERR_IMA_UNSUPPORTED_ALG, `${context}: unsupported hash algorithm "${name.slice(0, 32)}"`);
  }
  return normalized;
}

/** H(parts...) with an IMA algorithm. */
export function imaDigest(alg: ImaHashName, ...parts: readonly Uint8Array[]): Uint8Array {
  if (alg === 'sm3_256' && !nodeHasSm3) return sm3(...parts);
  const h = createHash(alg === 'sm3_256' ? 'sm3' : alg);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}
