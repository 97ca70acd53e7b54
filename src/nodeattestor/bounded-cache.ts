/**
 * A small least-recently-used map. The server re-verifies the same nodes at every SVID rotation, and the
 * expensive, deterministic parts (EK chain building, boot-fact derivation) depend only on bytes it has
 * already seen; caching them keyed by a digest of those bytes keeps re-attestation cheap without trusting
 * anything new.
 */
export class BoundedCache<K, V> {
  readonly #entries = new Map<K, V>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  get(key: K): V | undefined {
    const value = this.#entries.get(key);
    if (value !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, value); // most recently used last
    }
    return value;
  }

  set(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, value);
    if (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value as K);
  }

  get size(): number {
    return this.#entries.size;
  }
}
