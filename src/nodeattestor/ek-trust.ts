/**
 * Is this EK one we trust? Either its certificate chains to a configured manufacturer CA (and
 * certifies exactly the EK key the agent sent), or the hash of its public key is allowlisted.
 * Loading fails closed: a configured path that is missing, of the wrong kind or empty is a
 * configuration error, never "trust everyone".
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { AttestationRefused } from '../errors.js';
import { BoundedCache } from './bounded-cache.js';
import { ekPubHash, publicToSpkiDer, type TpmPublic } from '../tpm/public.js';
import { loadEkTrustStore } from '../tpm/ek-store-loader.js';
import {
  checkEkCertMatchesPublic,
  ERR_EK_KEY_MISMATCH,
  parseEkCertificate,
  verifiedGceInstanceInfo,
  verifyEkCertificate,
  type GceInstanceInfo,
  type EkTrustStore,
} from '../tpm/ek.js';

export interface TrustedEk {
  /** hex sha256 of the PKIX EK public key. */
  readonly pubHash: string;
  readonly spki: Uint8Array;
  readonly via: 'certificate' | 'allowlist';
  /** Present only when the certificate chain verified. */
  readonly certificate?: {
    readonly manufacturer?: string;
    readonly model?: string;
    readonly version?: string;
    readonly rootSubjectCn?: string;
    /** GCE instance identity: only when the chain ended at a Google EK root (ek.ts GOOGLE_EK_ROOT_SHA256). */
    readonly gce?: {
      readonly projectId: string;
      readonly projectNumber: string;
      readonly zone: string;
      readonly instanceId: string;
      readonly instanceName: string;
    };
  };
}

export interface EkEvidence {
  readonly ekPublic: TpmPublic;
  readonly certificate: Uint8Array | undefined;
  readonly intermediates: readonly Uint8Array[];
  readonly now: Date;
}

/** A chain that verified once: reusable while `now` is inside every certificate's validity. */
interface VerifiedChain {
  readonly leafSpki: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly certificate: NonNullable<TrustedEk['certificate']>;
}

const CHAIN_CACHE_ENTRIES = 4096;

export class EkTrust {
  readonly #store: EkTrustStore | undefined;
  readonly #allowlist: ReadonlySet<string>;
  /** Keyed by a digest of the exact certificate bytes; the store is fixed for this instance's lifetime. */
  readonly #chains = new BoundedCache<string, VerifiedChain>(CHAIN_CACHE_ENTRIES);

  private constructor(store: EkTrustStore | undefined, allowlist: ReadonlySet<string>) {
    this.#store = store;
    this.#allowlist = allowlist;
  }

  static async load(options: {
    caPaths: readonly string[];
    hashAllowlist: readonly string[];
    /** Files skipped in ek_ca_path directories (a README next to the CAs). */
    warn?: (message: string, fields: Readonly<Record<string, string>>) => void;
  }): Promise<EkTrust> {
    const store = options.caPaths.length ? await loadEkTrustStore(options.caPaths, options.warn) : undefined;
    return new EkTrust(store, new Set(options.hashAllowlist.map((h) => h.toLowerCase())));
  }

  async verify(evidence: EkEvidence): Promise<TrustedEk> {
    const spki = publicToSpkiDer(evidence.ekPublic);
    const pubHash = ekPubHash(spki);
    const node = pubHash.slice(0, 16);
    let certificateFailure: AttestationRefused | undefined;
    if (evidence.certificate && this.#store) {
      const key = chainKey(evidence.certificate, evidence.intermediates);
      const cached = this.#chains.get(key);
      if (cached && evidence.now >= cached.notBefore && evidence.now <= cached.notAfter) {
        if (!sameBytes(cached.leafSpki, spki)) {
          throw new AttestationRefused(ERR_EK_KEY_MISMATCH, `node ${node}: EK certificate: certificate key is not the EK public key`, {
            fields: { rule: ERR_EK_KEY_MISMATCH },
          });
        }
        return { pubHash, spki, via: 'certificate', certificate: cached.certificate };
      }
      // Malformed certificates are INVALID_ARGUMENT and propagate; refusals may still be rescued by the allowlist.
      const leaf = parseEkCertificate(evidence.certificate);
      const intermediates = evidence.intermediates.map((der) => parseEkCertificate(der));
      try {
        // A certificate for another key is never rescued: it is evidence of tampering.
        checkEkCertMatchesPublic(leaf, spki);
        const verified = await verifyEkCertificate(leaf, this.#store, { now: evidence.now, intermediates });
        const certificate = {
          ...(verified.manufacturer ? { manufacturer: verified.manufacturer } : {}),
          ...(verified.model ? { model: verified.model } : {}),
          ...(verified.version ? { version: verified.version } : {}),
          ...(verified.rootSubjectCn ? { rootSubjectCn: verified.rootSubjectCn } : {}),
          ...gceFields(verifiedGceInstanceInfo(verified.chain)),
        };
        this.#chains.set(key, {
          leafSpki: spki,
          notBefore: new Date(Math.max(...verified.chain.map((c) => c.notBefore.getTime()))),
          notAfter: new Date(Math.min(...verified.chain.map((c) => c.notAfter.getTime()))),
          certificate,
        });
        return { pubHash, spki, via: 'certificate', certificate };
      } catch (err) {
        if (!(err instanceof AttestationRefused) || err.code === ERR_EK_KEY_MISMATCH) throw withNode(err, node);
        certificateFailure = withNode(err, node) as AttestationRefused;
      }
    }
    if (this.#allowlist.has(pubHash)) return { pubHash, spki, via: 'allowlist' };
    if (certificateFailure) throw certificateFailure;
    throw new AttestationRefused(
      'ERR_EK_UNTRUSTED',
      evidence.certificate
        ? `node ${node}: EK ${pubHash} is not on the allowlist and no EK CA is configured`
        : `node ${node}: EK ${pubHash} sent no certificate and is not on the allowlist`,
      { fields: { rule: 'ek trust', ek_hash: pubHash } },
    );
  }
}

/** Prefixes the node to a refusal's message so the audit line says whose EK failed. */
function withNode(err: unknown, node: string): unknown {
  if (err instanceof AttestationRefused && !err.message.startsWith('node ')) {
    return new AttestationRefused(err.code, `node ${node}: ${err.message}`, { fields: err.fields, cause: err });
  }
  return err;
}

function chainKey(certificate: Uint8Array, intermediates: readonly Uint8Array[]): string {
  const h = createHash('sha256');
  for (const der of [certificate, ...intermediates]) h.update(String(der.length)).update(':').update(der);
  return h.digest('hex');
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function gceFields(info: GceInstanceInfo | undefined): { gce?: NonNullable<TrustedEk['certificate']>['gce'] } {
  if (!info) return {};
  return {
    gce: {
      projectId: info.projectId,
      projectNumber: info.projectNumber.toString(),
      zone: info.zone,
      instanceId: info.instanceId.toString(),
      instanceName: info.instanceName,
    },
  };
}
