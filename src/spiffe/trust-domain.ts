/**
 * SPIFFE trust domain and ID value types, valid from construction
 * (SPIFFE-ID spec §2: trust domain chars [a-z0-9.-_], path segments [a-zA-Z0-9.-_], no "." or ".." segments).
 */
import { MalformedInput } from '../errors.js';

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;
const MAX_ID_LENGTH = 2048;

export class TrustDomain {
  readonly #name: string;

  private constructor(name: string) {
    this.#name = name;
  }

  /** Accepts a bare name ("example.org") or "spiffe://example.org". */
  static parse(value: string): TrustDomain {
    const name = value.startsWith('spiffe://') ? value.slice('spiffe://'.length) : value;
    if (name === '') throw new MalformedInput('ERR_TRUST_DOMAIN', 'trust domain is empty');
    if (!TRUST_DOMAIN_CHARS.test(name)) {
      throw new MalformedInput(
        'ERR_TRUST_DOMAIN',
        `trust domain "${name}" has characters outside [a-z0-9._-] (upper case is not allowed)`,
      );
    }
    return new TrustDomain(name);
  }

  get name(): string {
    return this.#name;
  }

  equals(other: TrustDomain): boolean {
    return this.#name === other.#name;
  }

  toString(): string {
    return this.#name;
  }
}

export class SpiffeId {
  readonly #trustDomain: TrustDomain;
  readonly #path: string;

  private constructor(trustDomain: TrustDomain, path: string) {
    this.#trustDomain = trustDomain;
    this.#path = path;
  }

  static fromSegments(trustDomain: TrustDomain, ...segments: string[]): SpiffeId {
    for (const segment of segments) {
      if (segment === '' || segment === '.' || segment === '..' || !SEGMENT_CHARS.test(segment)) {
        throw new MalformedInput('ERR_SPIFFE_ID', `path segment "${segment}" is not a valid SPIFFE ID segment`);
      }
    }
    const id = new SpiffeId(trustDomain, segments.length ? '/' + segments.join('/') : '');
    if (id.toString().length > MAX_ID_LENGTH) throw new MalformedInput('ERR_SPIFFE_ID', 'SPIFFE ID is too long');
    return id;
  }

  static parse(value: string): SpiffeId {
    if (!value.startsWith('spiffe://')) throw new MalformedInput('ERR_SPIFFE_ID', `"${value}" does not start with spiffe://`);
    const rest = value.slice('spiffe://'.length);
    const slash = rest.indexOf('/');
    const td = TrustDomain.parse(slash === -1 ? rest : rest.slice(0, slash));
    if (slash === -1) return new SpiffeId(td, '');
    return SpiffeId.fromSegments(td, ...rest.slice(slash + 1).split('/'));
  }

  get trustDomain(): TrustDomain {
    return this.#trustDomain;
  }

  get path(): string {
    return this.#path;
  }

  equals(other: SpiffeId): boolean {
    return this.toString() === other.toString();
  }

  toString(): string {
    return `spiffe://${this.#trustDomain.name}${this.#path}`;
  }
}
