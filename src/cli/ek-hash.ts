/**
 * `spire-edge-attest ek-hash`: the sha256 hex of the PKIX (SubjectPublicKeyInfo DER) EK public key. It equals
 * spire-tpm-plugin's `get_tpm_pubhash`, our server's `pub_hash` selector and the last segment of the agent ID
 * (`/spire/agent/tpm/<hash>`), so an operator can pre-register or allowlist (`ek_hash_allowlist`) a node before it
 * attests. Sources: an EK certificate file, a TPM2B_PUBLIC file, or the local TPM (through tpm2-tools, exactly as the
 * agent plugin reads it). JSON shape: docs/cli.md, "ek-hash".
 *
 * @module
 */
import { MalformedInput } from '../errors.js';
import { parseEkCertificate, tpmDeviceAttributes, tpmVendorName } from '../tpm/ek.js';
import { ekPubHash, parseTpm2bPublic, publicToSpkiDer } from '../tpm/public.js';
import { selectEk, type EkKind, type TpmDevice } from '../tpm/tools.js';

/** The agent plugin's preference for `ek_kind = "auto"` (src/nodeattestor/agent.ts): the first provisioned cert. */

export interface EkHashResult {
  /** Lower-case sha256 hex of the PKIX EK public key. */
  readonly pub_hash: string;
  /** Agent ID path for the plugin name "tpm" (prefix with spiffe://<trust domain>). */
  readonly agent_id_path: string;
  readonly source: 'certificate' | 'public' | 'tpm';
  /** TPM source only: the EK kind used and its persistent handle. */
  readonly ek_kind?: EkKind;
  readonly ek_handle?: string;
  /** TPM source only: whether an EK certificate is provisioned in NV for that kind. */
  readonly ek_certificate?: boolean;
  /** From the certificate's SAN directoryName (TCG EK Credential Profile), when a certificate was read. */
  readonly manufacturer?: string;
  /** Vendor name for `manufacturer` from the TCG vendor registry, when known. */
  readonly vendor?: string;
  readonly model?: string;
  readonly version?: string;
}

function withPath(pubHash: string): { pub_hash: string; agent_id_path: string } {
  return { pub_hash: pubHash, agent_id_path: `/spire/agent/tpm/${pubHash}` };
}

function certificateFields(certBytes: Uint8Array): Pick<EkHashResult, 'manufacturer' | 'vendor' | 'model' | 'version'> {
  const cert = parseEkCertificate(certBytes);
  const attrs = tpmDeviceAttributes(cert);
  const vendor = attrs.manufacturer === undefined ? undefined : tpmVendorName(attrs.manufacturer);
  return {
    ...(attrs.manufacturer !== undefined ? { manufacturer: attrs.manufacturer } : {}),
    ...(vendor !== undefined ? { vendor } : {}),
    ...(attrs.model !== undefined ? { model: attrs.model } : {}),
    ...(attrs.version !== undefined ? { version: attrs.version } : {}),
  };
}

/** From an EK certificate, PEM (one CERTIFICATE block) or DER (trailing NV padding after the DER is ignored). */
export function ekHashFromCertificate(bytes: Uint8Array): EkHashResult {
  const cert = parseEkCertificate(bytes);
  const spki = new Uint8Array(cert.publicKey.rawData);
  return { ...withPath(ekPubHash(spki)), source: 'certificate', ...certificateFields(bytes) };
}

/** From a TPM2B_PUBLIC (`tpm2_readpublic -f tss`, `tpm2_createek -f tss`). */
export function ekHashFromPublic(bytes: Uint8Array): EkHashResult {
  const pub = parseTpm2bPublic(bytes);
  return { ...withPath(ekPubHash(publicToSpkiDer(pub))), source: 'public' };
}

export interface EkHashFromTpmOptions {
  readonly kind: EkKind | 'auto';
  /** Progress lines (stderr in the CLI). */
  readonly progress?: (message: string) => void;
}

/**
 * From the local TPM, as the agent plugin does it: the EK of `kind` (for `auto`, the first kind with a certificate in
 * NV, else RSA) at its persistent handle. Like the agent at its first attestation, this creates and persists the EK
 * from the endorsement seed when no persistent EK exists (the key is deterministic, so the hash is stable).
 * The hash is of the TPM's EK public area; when a certificate is in NV its key must be the same, else this throws.
 */
export async function ekHashFromTpm(device: TpmDevice, options: EkHashFromTpmOptions): Promise<EkHashResult> {
  const progress = options.progress ?? (() => undefined);
  const { kind, certificate } = await selectEk(device, options.kind, progress);
  progress(`reading the ${kind} EK public key from the TPM (creating the persistent EK if absent)…`);
  const ek = await device.ekPublic(kind);
  const pub = parseTpm2bPublic(ek.publicArea);
  const pubHash = ekPubHash(publicToSpkiDer(pub));
  let fields: Pick<EkHashResult, 'manufacturer' | 'vendor' | 'model' | 'version'> = {};
  if (certificate) {
    const fromCert = ekHashFromCertificate(certificate);
    if (fromCert.pub_hash !== pubHash) {
      throw new MalformedInput(
        'ERR_EK_KEY_MISMATCH',
        `the ${kind} EK certificate in NV certifies key ${fromCert.pub_hash}, but the EK at 0x${ek.handle.toString(16)} is ${pubHash}`,
      );
    }
    fields = certificateFields(certificate);
  }
  return {
    ...withPath(pubHash),
    source: 'tpm',
    ek_kind: kind,
    ek_handle: `0x${ek.handle.toString(16)}`,
    ek_certificate: certificate !== undefined,
    ...fields,
  };
}
