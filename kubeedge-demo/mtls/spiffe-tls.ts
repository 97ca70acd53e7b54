/**
 * SPIFFE X.509-SVID checks on top of Node's TLS: the peer's SPIFFE ID is its one URI SAN, and authorization
 * is a decision about that ID. Chain verification itself is OpenSSL's, against the trust bundle only.
 */
import { X509Certificate } from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';
import { SpiffeId } from '../../src/spiffe/trust-domain.js';

/** An X.509-SVID as the Workload API hands it out, in the PEM form Node's TLS wants. */
export interface X509Svid {
  readonly spiffeId: string;
  /** Leaf first, then any intermediates (nested SPIRE servers, upstream authorities). */
  readonly certChainPem: string;
  /** PKCS#8 private key of the leaf. */
  readonly keyPem: string;
  /** Trust bundle of our own trust domain: the only roots a peer may chain to. */
  readonly bundlePem: string;
  readonly leaf: X509Certificate;
}

/** Decides whether a peer with this SPIFFE ID may talk to us. */
export type Authorizer = (spiffeId: string) => boolean;

/** Authorizes exactly the given SPIFFE IDs. */
export function allowIds(...ids: string[]): Authorizer {
  const allowed = new Set(ids.map((id) => SpiffeId.parse(id).toString()));
  return (id) => allowed.has(id);
}

/**
 * The SPIFFE ID of an X.509-SVID: exactly one URI SAN, a valid `spiffe://` ID, on a certificate that is not a CA
 * (X.509-SVID spec §4). Node renders SANs as `URI:spiffe://…, DNS:…`; a value Node had to quote (it contains a
 * comma or quote) can never be a valid SPIFFE ID and fails the parse.
 */
export function spiffeIdOf(cert: X509Certificate): string {
  if (cert.ca) throw new Error('peer certificate is a CA certificate, not an X.509-SVID');
  const uris = (cert.subjectAltName ?? '')
    .split(', ')
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice('URI:'.length));
  if (uris.length !== 1) throw new Error(`an X.509-SVID has exactly one URI SAN, this certificate has ${uris.length}`);
  return SpiffeId.parse(uris[0]!).toString();
}

/** Certificate, key and roots for tls.createSecureContext / https options. `ca` replaces Node's public roots. */
export function svidTlsOptions(svid: X509Svid): SecureContextOptions {
  return { cert: svid.certChainPem, key: svid.keyPem, ca: svid.bundlePem, minVersion: 'TLSv1.2' };
}
