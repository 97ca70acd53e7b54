/**
 * @module tpm/alg
 * `HashAlg`: the TPM hash algorithms this project accepts, mapping TPM_ALG_ID ↔ node name ↔ digest size.
 * Anything else (SM3, SHA3, unknown ids) is refused: we never guess a digest size.
 */
import { createHash } from 'node:crypto';
import { MalformedInput } from '../errors.js';
import { TPM_ALG } from './constants.js';

export type HashName = 'sha1' | 'sha256' | 'sha384' | 'sha512';

/** Error code when an algorithm id or name is not one we support. */
export const ERR_UNSUPPORTED_ALG = 'ERR_TPM_UNSUPPORTED_ALG';

export class HashAlg {
  static readonly SHA1 = new HashAlg(TPM_ALG.SHA1, 'sha1', 20);
  static readonly SHA256 = new HashAlg(TPM_ALG.SHA256, 'sha256', 32);
  static readonly SHA384 = new HashAlg(TPM_ALG.SHA384, 'sha384', 48);
  static readonly SHA512 = new HashAlg(TPM_ALG.SHA512, 'sha512', 64);

  /** All supported algorithms, in TPM_ALG_ID order (which is also the conventional bank order). */
  static readonly ALL: readonly HashAlg[] = [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512];

  /** Brand: with a `#private` field an object literal cannot pass for a HashAlg. */
  readonly #brand = true;

  private constructor(
    /** TPM_ALG_ID */
    readonly id: number,
    /** Node crypto / tpm2-tools bank name. */
    readonly name: HashName,
    /** Digest size in bytes. */
    readonly size: number,
  ) {}

  /** The algorithm for a TPM_ALG_ID, or MalformedInput(ERR_TPM_UNSUPPORTED_ALG). */
  static fromId(id: number, context = 'hash algorithm'): HashAlg {
    const alg = HashAlg.tryFromId(id);
    if (alg === undefined) {
      throw new MalformedInput(ERR_UNSUPPORTED_ALG, `${context}: unsupported TPM_ALG_ID 0x${hex4(id)}`, {
        fields: { algId: id },
      });
    }
    return alg;
  }

  static tryFromId(id: number): HashAlg | undefined {
    return HashAlg.ALL.find((a) => a.id === id);
  }

  /** The algorithm for a name such as "sha256" (case-insensitive), or MalformedInput. */
  static parse(name: string, context = 'hash algorithm'): HashAlg {
    const lower = name.toLowerCase();
    const alg = HashAlg.ALL.find((a) => a.name === lower);
    if (alg === undefined) {
      throw new MalformedInput(ERR_UNSUPPORTED_ALG, `${context}: unsupported hash algorithm "${name.slice(0, 32)}"`);
    }
    return alg;
  }

  static isHashAlg(value: unknown): value is HashAlg {
    return typeof value === 'object' && value !== null && #brand in value;
  }

  /** H(data...) */
  digest(...parts: readonly Uint8Array[]): Uint8Array {
    const h = createHash(this.name);
    for (const p of parts) h.update(p);
    return new Uint8Array(h.digest());
  }

  /** An all-zero digest of this size (the initial value of a PCR). */
  zero(): Uint8Array {
    return new Uint8Array(this.size);
  }

  equals(other: HashAlg): boolean {
    return this.id === other.id;
  }

  toString(): string {
    return this.name;
  }
}

function hex4(n: number): string {
  return (n >>> 0).toString(16).padStart(4, '0');
}
