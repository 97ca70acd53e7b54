/**
 * Server-issued nonces: fresh, single-use and short-lived. A nonce is consumed by the first
 * response that presents it, whatever the verdict, so a replayed response can never be judged twice.
 */
import { createHash } from 'node:crypto';
import { AttestationRefused } from '../errors.js';

export const DEFAULT_NONCE_TTL_MS = 60_000;
/** Bounds memory if many attestations are abandoned mid-challenge. */
const MAX_OUTSTANDING = 10_000;

export class NonceStore {
  readonly #issuedAt = new Map<string, number>();
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(options: { ttlMs?: number; now?: () => number } = {}) {
    this.#ttlMs = options.ttlMs ?? DEFAULT_NONCE_TTL_MS;
    this.#now = options.now ?? Date.now;
  }

  /** Records a freshly generated nonce. */
  issue(nonce: Uint8Array): void {
    this.#sweep();
    if (this.#issuedAt.size >= MAX_OUTSTANDING) {
      // Oldest first: Map preserves insertion order.
      const oldest = this.#issuedAt.keys().next().value;
      if (oldest !== undefined) this.#issuedAt.delete(oldest);
    }
    this.#issuedAt.set(key(nonce), this.#now());
  }

  /** Consumes the nonce; throws AttestationRefused if it is unknown, already used or expired. */
  consume(nonce: Uint8Array, node: string): void {
    const k = key(nonce);
    const issued = this.#issuedAt.get(k);
    this.#issuedAt.delete(k);
    if (issued === undefined) {
      throw new AttestationRefused('ERR_NONCE_UNKNOWN', `node ${node}: nonce was not issued by this server or was already used`, {
        fields: { rule: 'nonce single use' },
      });
    }
    const age = this.#now() - issued;
    if (age > this.#ttlMs) {
      throw new AttestationRefused('ERR_NONCE_EXPIRED', `node ${node}: nonce expired ${age - this.#ttlMs} ms ago (lifetime ${this.#ttlMs} ms)`, {
        fields: { rule: 'nonce freshness', age_ms: age },
      });
    }
  }

  get outstanding(): number {
    return this.#issuedAt.size;
  }

  #sweep(): void {
    const cutoff = this.#now() - this.#ttlMs;
    for (const [k, issued] of this.#issuedAt) {
      if (issued >= cutoff) break; // insertion order = issue order
      this.#issuedAt.delete(k);
    }
  }
}

/** Keys by digest so the map never holds nonces themselves. */
function key(nonce: Uint8Array): string {
  return createHash('sha256').update(nonce).digest('hex');
}
