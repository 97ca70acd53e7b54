/**
 * @module tpm/ek
 * EK certificates (TCG EK Credential Profile for TPM Family 2.0) and the manufacturer trust store.
 *
 * - Parsing tolerates bytes after the certificate's DER: TPM NV indices are often larger than the certificate
 *   (a real STMicro EK is 1169 bytes of DER followed by 431 bytes of padding).
 * - The chain is walked here, leaf → intermediates → a configured root, checking each link ourselves: signature,
 *   validity at the injected `now`, CA flag and keyCertSign on issuers, path length, and critical extensions.
 *   Generic X.509 path validators reject EK certs (critical TCG SAN, EK-only EKU; cf. bloomberg/spire-tpm-plugin#13).
 * - EKU rule: when the leaf has an EKU extension it must contain tcg-kp-EKCertificate (2.23.133.8.1). When it has
 *   none, any purpose is allowed (RFC 5280 4.2.1.12): real vendor EK certs carry the EKU, but Google's CAS-issued
 *   vTPM EK certs ("EK/AK CA Intermediate") carry no EKU and no TPM SAN at all, and they are genuine.
 * - Which certificates are roots: a configured certificate whose subject equals its issuer is a trust anchor;
 *   every other configured certificate is only an intermediate that may help build a path. So trusting an
 *   intermediate alone is not enough to accept its leaves.
 *
 * It does not prove that the agent holds the EK's private key: credential activation (activation.ts) does.
 * This module reads no file: `ek-store-loader.ts` reads `ek_ca_path`.
 */
// @peculiar/x509 resolves its providers through tsyringe, which needs the Reflect metadata API installed first.
import 'reflect-metadata';
import { Buffer } from 'node:buffer';
import { createHash, X509Certificate as NodeX509Certificate, timingSafeEqual } from 'node:crypto';
import {
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  SubjectAlternativeNameExtension,
  X509Certificate,
} from '@peculiar/x509';
import { AttestationRefused, InvalidConfig, MalformedInput } from '../errors.js';

export const OID_TCG_AT_TPM_MANUFACTURER = '2.23.133.2.1';
export const OID_TCG_AT_TPM_MODEL = '2.23.133.2.2';
export const OID_TCG_AT_TPM_VERSION = '2.23.133.2.3';
export const OID_TCG_KP_EK_CERTIFICATE = '2.23.133.8.1';
export const OID_GCE_INSTANCE_INFO = '1.3.6.1.4.1.11129.2.1.21';

/** Extensions whose criticality we honour; any other critical extension fails the chain (RFC 5280 4.2). */
const UNDERSTOOD_EXTENSIONS = new Set([
  '2.5.29.9', // subjectDirectoryAttributes (TPM specification attributes)
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.15', // keyUsage
  '2.5.29.17', // subjectAltName (TCG TPM manufacturer/model/version)
  '2.5.29.19', // basicConstraints
  '2.5.29.32', // certificatePolicies (no policy is required, so any is acceptable)
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.37', // extKeyUsage
]);

/** Largest certificate we parse (bytes). */
export const MAX_CERT_SIZE = 64 * 1024;
/** Longest chain we build: leaf + intermediates + root. */
export const MAX_CHAIN_LENGTH = 6;
/** Most certificates accepted in one trust store. */
export const MAX_STORE_CERTS = 10_000;

export const ERR_EK_CERT_MALFORMED = 'ERR_EK_CERT_MALFORMED';
export const ERR_EK_CHAIN_UNTRUSTED = 'ERR_EK_CHAIN_UNTRUSTED';
export const ERR_EK_CERT_VALIDITY = 'ERR_EK_CERT_VALIDITY';
export const ERR_EK_ISSUER_NOT_CA = 'ERR_EK_ISSUER_NOT_CA';
export const ERR_EK_PATH_LENGTH = 'ERR_EK_PATH_LENGTH';
export const ERR_EK_CRITICAL_EXTENSION = 'ERR_EK_CRITICAL_EXTENSION';
export const ERR_EK_LEAF_IS_CA = 'ERR_EK_LEAF_IS_CA';
export const ERR_EK_EKU = 'ERR_EK_EKU';
export const ERR_EK_KEY_MISMATCH = 'ERR_EK_KEY_MISMATCH';
export const ERR_EK_CA_CONFIG = 'ERR_EK_CA_CONFIG';

// ---- parsing ------------------------------------------------------------------------------------------------

function malformed(message: string, cause?: unknown): MalformedInput {
  return new MalformedInput(ERR_EK_CERT_MALFORMED, `EK certificate: ${message}`, cause === undefined ? {} : { cause });
}

/**
 * Length of the DER element at the start of `bytes` (tag + length + content), from the outer SEQUENCE header.
 * Throws MalformedInput if it is not a definite-length SEQUENCE that fits.
 */
export function derSequenceLength(bytes: Uint8Array): number {
  if (bytes.length < 2 || bytes[0] !== 0x30) throw malformed('does not start with a DER SEQUENCE');
  const first = bytes[1]!;
  if (first < 0x80) return 2 + first;
  const lengthBytes = first & 0x7f;
  if (lengthBytes === 0 || lengthBytes > 3) throw malformed('unsupported DER length form');
  if (bytes.length < 2 + lengthBytes) throw malformed('truncated DER length');
  let length = 0;
  for (let i = 0; i < lengthBytes; i++) length = length * 256 + bytes[2 + i]!;
  const total = 2 + lengthBytes + length;
  if (total > bytes.length) throw malformed(`DER says ${total} bytes, only ${bytes.length} present`);
  return total;
}

/** DER starts with a SEQUENCE tag; anything else is read as PEM text (which may carry `openssl x509 -text` output first). */
function looksLikePem(bytes: Uint8Array): boolean {
  return bytes.length > 0 && bytes[0] !== 0x30 && Buffer.from(bytes.subarray(0, 64 * 1024)).toString('latin1').includes('-----BEGIN');
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;

/** All CERTIFICATE blocks of a PEM text, as DER. Blocks need no newline between them (keylime's files have none). */
function pemBlocks(bytes: Uint8Array): Uint8Array[] {
  const text = Buffer.from(bytes).toString('latin1');
  const out: Uint8Array[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    const body = m[1]!.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw malformed('PEM block is not base64');
    out.push(new Uint8Array(Buffer.from(body, 'base64')));
  }
  return out;
}

function fromDer(der: Uint8Array): X509Certificate {
  if (der.length > MAX_CERT_SIZE) throw malformed(`${der.length} bytes exceeds ${MAX_CERT_SIZE}`);
  const exact = der.subarray(0, derSequenceLength(der));
  try {
    const cert = new X509Certificate(Uint8Array.from(exact));
    // @peculiar/x509 decodes some parts only when first read (the key: found by npm run fuzz); read them here so a
    // bad one is refused now as MalformedInput, not later as a bare asn1 error from a verifier.
    void [cert.publicKey.rawData, cert.publicKey.algorithm, cert.extensions, cert.subject, cert.issuer, cert.notBefore, cert.notAfter, cert.serialNumber];
    return cert;
  } catch (cause) {
    throw malformed('not a parsable X.509 certificate', cause);
  }
}

/**
 * One certificate from DER (trailing bytes after the outer SEQUENCE are ignored: NV-index padding) or PEM
 * (exactly one CERTIFICATE block).
 */
export function parseEkCertificate(bytes: Uint8Array): X509Certificate {
  if (looksLikePem(bytes)) {
    const blocks = pemBlocks(bytes);
    if (blocks.length !== 1) throw malformed(`expected one PEM certificate, found ${blocks.length}`);
    return fromDer(blocks[0]!);
  }
  if (bytes.length > 0 && bytes[0] !== 0x30) {
    throw malformed(`neither DER (a certificate starts with 0x30, this starts with 0x${bytes[0]!.toString(16).padStart(2, '0')}) nor PEM (no -----BEGIN CERTIFICATE----- block)`);
  }
  return fromDer(bytes);
}

/** Every certificate in a PEM bundle, or the single certificate of a DER file. */
export function parseCertificates(bytes: Uint8Array): X509Certificate[] {
  if (bytes.length > 0 && bytes[0] !== 0x30) return pemBlocks(bytes).map(fromDer);
  return [fromDer(bytes)];
}

// ---- TCG attributes -----------------------------------------------------------------------------------------

export interface TpmDeviceAttributes {
  /** As written in the cert, e.g. `id:53544D20`. */
  readonly manufacturer?: string;
  readonly model?: string;
  readonly version?: string;
}

/** TPM manufacturer, model and version from the SAN directoryName (EK Credential Profile 3.2.9). */
export function tpmDeviceAttributes(cert: X509Certificate): TpmDeviceAttributes {
  let san: SubjectAlternativeNameExtension | null;
  try {
    san = cert.getExtension(SubjectAlternativeNameExtension);
  } catch {
    return {}; // a SAN with name forms the library cannot decode carries no TPM attributes we can read
  }
  if (san === null) return {};
  for (const general of san.names.items) {
    if (general.type !== 'dn') continue;
    const name = new Name(general.value);
    const pick = (oid: string): string | undefined => name.getField(oid)[0];
    const attrs = {
      manufacturer: pick(OID_TCG_AT_TPM_MANUFACTURER),
      model: pick(OID_TCG_AT_TPM_MODEL),
      version: pick(OID_TCG_AT_TPM_VERSION),
    };
    if (attrs.manufacturer !== undefined || attrs.model !== undefined || attrs.version !== undefined) {
      return Object.fromEntries(Object.entries(attrs).filter(([, v]) => v !== undefined)) as TpmDeviceAttributes;
    }
  }
  return {};
}

/**
 * TCG vendor IDs (TCG Vendor ID Registry): the 4-byte id is ASCII of the vendor code. swtpm writes IBM's PCI
 * vendor id `id:00001014`.
 */
export const TPM_VENDORS: Readonly<Record<string, string>> = {
  '414D4400': 'AMD',
  '41544D4C': 'Atmel',
  '4252434D': 'Broadcom',
  '4353434F': 'Cisco',
  '464C5953': 'Flyslice',
  '474F4F47': 'Google',
  '48504500': 'HPE',
  '48495349': 'Huawei',
  '49424D00': 'IBM',
  '00001014': 'IBM (swtpm)',
  '49465800': 'Infineon',
  '494E5443': 'Intel',
  '4C454E00': 'Lenovo',
  '4D534654': 'Microsoft',
  '4E534D20': 'National Semiconductor',
  '4E545A00': 'Nationz',
  '4E544300': 'Nuvoton',
  '51434F4D': 'Qualcomm',
  '524F4343': 'Fuzhou Rockchip',
  '534D5343': 'SMSC',
  '534D534E': 'Samsung',
  '534E5300': 'Sinosun',
  '53544D20': 'STMicroelectronics',
  '54584E00': 'Texas Instruments',
  '57454300': 'Winbond',
};

/** Vendor name for a manufacturer attribute such as `id:53544D20` (case-insensitive), or undefined. */
export function tpmVendorName(manufacturer: string): string | undefined {
  const m = /^id:([0-9a-fA-F]{8})$/.exec(manufacturer);
  return m === null ? undefined : TPM_VENDORS[m[1]!.toUpperCase()];
}

// ---- GCE instance identity (Google extension) ---------------------------------------------------------------

export interface GceInstanceInfo {
  readonly zone: string;
  readonly projectNumber: bigint;
  readonly projectId: string;
  readonly instanceId: bigint;
  readonly instanceName: string;
}

/** Minimal DER TLV walk for the one Google extension we read. */
function derChildren(bytes: Uint8Array): { tag: number; value: Uint8Array }[] {
  const out: { tag: number; value: Uint8Array }[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (pos + 2 > bytes.length) throw malformed('truncated DER element');
    const tag = bytes[pos]!;
    let len = bytes[pos + 1]!;
    let header = 2;
    if (len >= 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 3 || pos + 2 + n > bytes.length) throw malformed('bad DER length');
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + bytes[pos + 2 + i]!;
      header += n;
    }
    if (pos + header + len > bytes.length) throw malformed('DER element past the end');
    out.push({ tag, value: bytes.subarray(pos + header, pos + header + len) });
    pos += header + len;
  }
  return out;
}

/** Google Compute Engine instance identity from a GCE vTPM EK/AK cert (OID 1.3.6.1.4.1.11129.2.1.21), if present. */
export function gceInstanceInfo(cert: X509Certificate): GceInstanceInfo | undefined {
  const ext = cert.extensions.find((e) => e.type === OID_GCE_INSTANCE_INFO);
  if (ext === undefined) return undefined;
  const [seq] = derChildren(new Uint8Array(ext.value));
  if (seq === undefined || seq.tag !== 0x30) throw malformed('GCE instance info is not a SEQUENCE');
  const f = derChildren(seq.value);
  const utf8 = (i: number): string => {
    if (f[i]?.tag !== 0x0c) throw malformed('GCE instance info: expected UTF8String');
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(f[i]!.value);
    } catch (cause) {
      // TextDecoder throws a bare TypeError; callers get our typed error.
      throw malformed(`GCE instance info: field ${i} is not valid UTF-8`, cause);
    }
  };
  const int = (i: number): bigint => {
    if (f[i]?.tag !== 0x02 || f[i]!.value.length === 0) throw malformed('GCE instance info: expected INTEGER');
    return BigInt(`0x${Buffer.from(f[i]!.value).toString('hex')}`);
  };
  return { zone: utf8(0), projectNumber: int(1), projectId: utf8(2), instanceId: int(3), instanceName: utf8(4) };
}

/**
 * SHA-256 of the DER of Google's vTPM EK roots (google/go-tpm-tools server/ca-certs: tpm_ek_root_1.cer, the
 * "tpm_ek_v1_cloud_host" root, and gcp_ek_ak_ca_root.crt, the "EK/AK CA Root"). The GCE instance extension
 * speaks for an instance only under these: any other CA an operator trusts for EKs could write it too.
 */
export const GOOGLE_EK_ROOT_SHA256: ReadonlySet<string> = new Set([
  '9bd5285f8fb18502a7947e621ffd470266f49fcd3b73e19a190f690ad32a7caf',
  '594759594b9b61524f6c8ef668f7177f7b9066bc0674f2f49fe9e052be78beb2',
]);

export function isGoogleEkRoot(root: X509Certificate): boolean {
  return GOOGLE_EK_ROOT_SHA256.has(createHash('sha256').update(new Uint8Array(root.rawData)).digest('hex'));
}

/** The leaf's GCE instance identity when `chain` (leaf first, root last) ends at a Google EK root; else undefined. */
export function verifiedGceInstanceInfo(chain: readonly X509Certificate[]): GceInstanceInfo | undefined {
  const root = chain[chain.length - 1];
  if (chain.length < 2 || root === undefined || !isGoogleEkRoot(root)) return undefined;
  return gceInstanceInfo(chain[0]!);
}

// ---- trust store --------------------------------------------------------------------------------------------

/** Manufacturer roots (self-issued) and intermediates, from `ek_ca_path`. Immutable. */
export class EkTrustStore {
  readonly #roots: readonly X509Certificate[];
  readonly #intermediates: readonly X509Certificate[];

  private constructor(roots: readonly X509Certificate[], intermediates: readonly X509Certificate[]) {
    this.#roots = Object.freeze([...roots]);
    this.#intermediates = Object.freeze([...intermediates]);
  }

  /** Splits certificates into anchors (subject = issuer) and intermediates. */
  static fromCertificates(certs: readonly X509Certificate[]): EkTrustStore {
    const roots: X509Certificate[] = [];
    const intermediates: X509Certificate[] = [];
    for (const c of certs) (c.subject === c.issuer ? roots : intermediates).push(c);
    return new EkTrustStore(roots, intermediates);
  }

  /**
   * Builds a store from already-read config entries (`source` names the file for errors). Each entry is a PEM
   * bundle or one DER certificate. Empty entries, unparsable certificates and a store without any root are
   * InvalidConfig: a bad `ek_ca_path` must stop the server at Configure, never trust nothing or everything.
   */
  static fromEntries(
    entries: readonly { readonly source: string; readonly bytes: Uint8Array; readonly inDirectory?: boolean }[],
    warn?: (message: string, fields: Readonly<Record<string, string>>) => void,
  ): EkTrustStore {
    const certs: X509Certificate[] = [];
    for (const { source, bytes, inDirectory } of entries) {
      let parsed: X509Certificate[];
      let problem: InvalidConfig | undefined;
      try {
        parsed = parseCertificates(bytes);
        if (parsed.length === 0) problem = new InvalidConfig(ERR_EK_CA_CONFIG, `ek_ca_path: ${source} holds no certificate`, { fields: { source } });
      } catch (cause) {
        parsed = [];
        problem = new InvalidConfig(ERR_EK_CA_CONFIG, `ek_ca_path: ${source} holds an unparsable certificate`, { cause, fields: { source } });
      }
      if (problem) {
        // A file named in ek_ca_path must be a certificate; a README or checksum file next to the CAs in a
        // directory is skipped (the directory must still yield a root, checked below).
        if (!inDirectory) throw problem;
        warn?.('ek_ca_path: skipping a file that is not a certificate', { path: source, reason: problem.message });
        continue;
      }
      certs.push(...parsed);
      if (certs.length > MAX_STORE_CERTS) throw new InvalidConfig(ERR_EK_CA_CONFIG, `ek_ca_path: more than ${MAX_STORE_CERTS} certificates`);
    }
    if (certs.length === 0) throw new InvalidConfig(ERR_EK_CA_CONFIG, 'ek_ca_path: no certificate found');
    const store = EkTrustStore.fromCertificates(certs);
    if (store.#roots.length === 0) {
      throw new InvalidConfig(ERR_EK_CA_CONFIG, 'ek_ca_path: no root (self-issued) certificate found');
    }
    return store;
  }

  get roots(): readonly X509Certificate[] {
    return this.#roots;
  }
  get intermediates(): readonly X509Certificate[] {
    return this.#intermediates;
  }
}

// ---- chain verification -------------------------------------------------------------------------------------

export interface EkVerification {
  /** CN of the trust anchor the chain ends at ('' if it has none). */
  readonly rootSubjectCn: string;
  readonly manufacturer?: string;
  readonly model?: string;
  readonly version?: string;
  /** Leaf first, root last. */
  readonly chain: readonly X509Certificate[];
}

export interface VerifyEkOptions {
  /** The verification time (injected: this module reads no clock). */
  readonly now: Date;
  /** Extra untrusted intermediates the agent sent, if any. */
  readonly intermediates?: readonly X509Certificate[];
}

function refuse(code: string, message: string): AttestationRefused {
  return new AttestationRefused(code, `EK certificate: ${message}`, { fields: { rule: code } });
}

function checkValidity(cert: X509Certificate, now: Date, role: string): void {
  if (now < cert.notBefore || now > cert.notAfter) {
    throw refuse(ERR_EK_CERT_VALIDITY, `${role} "${cert.subject}" is not valid at ${now.toISOString()}`);
  }
}

function checkCriticalExtensions(cert: X509Certificate, role: string): void {
  for (const e of cert.extensions) {
    if (e.critical && !UNDERSTOOD_EXTENSIONS.has(e.type)) {
      throw refuse(ERR_EK_CRITICAL_EXTENSION, `${role} "${cert.subject}" has unhandled critical extension ${e.type}`);
    }
  }
}

/**
 * The issuer rules. `belowCount` is the number of non-self-issued intermediates between this issuer and the leaf.
 * Trust anchors without basicConstraints (X.509 v1 roots) are accepted as anchors; intermediates must say CA.
 */
function checkIssuer(cert: X509Certificate, isAnchor: boolean, belowCount: number): void {
  const role = isAnchor ? 'root' : 'intermediate';
  checkCriticalExtensions(cert, role);
  const bc = cert.getExtension(BasicConstraintsExtension);
  if ((bc === null && !isAnchor) || (bc !== null && !bc.ca)) {
    throw refuse(ERR_EK_ISSUER_NOT_CA, `${role} "${cert.subject}" is not a CA`);
  }
  const ku = cert.getExtension(KeyUsagesExtension);
  if (ku !== null && (ku.usages & KeyUsageFlags.keyCertSign) === 0) {
    throw refuse(ERR_EK_ISSUER_NOT_CA, `${role} "${cert.subject}" lacks keyCertSign`);
  }
  if (bc?.pathLength !== undefined && belowCount > bc.pathLength) {
    throw refuse(ERR_EK_PATH_LENGTH, `${role} "${cert.subject}" allows ${bc.pathLength} intermediates below it, chain has ${belowCount}`);
  }
}

function checkLeaf(leaf: X509Certificate): void {
  checkCriticalExtensions(leaf, 'leaf');
  const bc = leaf.getExtension(BasicConstraintsExtension);
  if (bc?.ca === true) throw refuse(ERR_EK_LEAF_IS_CA, `leaf "${leaf.subject}" is a CA certificate`);
  const eku = leaf.getExtension(ExtendedKeyUsageExtension);
  if (eku !== null && !eku.usages.map(String).includes(OID_TCG_KP_EK_CERTIFICATE)) {
    throw refuse(ERR_EK_EKU, 'leaf has an EKU without tcg-kp-EKCertificate (2.23.133.8.1)');
  }
}

/** OpenSSL's view of a certificate, for signature checks (synchronous and much cheaper than WebCrypto). */
const opensslViews = new WeakMap<X509Certificate, NodeX509Certificate | null>();

function opensslView(cert: X509Certificate): NodeX509Certificate | null {
  let view = opensslViews.get(cert);
  if (view === undefined) {
    try {
      view = new NodeX509Certificate(new Uint8Array(cert.rawData));
    } catch {
      view = null;
    }
    opensslViews.set(cert, view);
  }
  return view;
}

async function signedBy(child: X509Certificate, issuer: X509Certificate): Promise<boolean> {
  const c = opensslView(child);
  const i = opensslView(issuer);
  if (c && i) {
    try {
      if (c.verify(i.publicKey)) return true;
    } catch {
      // fall through to the WebCrypto path, which knows other parameter encodings
    }
  }
  try {
    return await child.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    return false; // unsupported algorithm or malformed key: this issuer does not verify the child
  }
}

/**
 * Verifies `leaf` up to a root of `store`, at `options.now`. Returns the TPM attributes from the SAN and the chain.
 * Throws AttestationRefused: ERR_EK_CHAIN_UNTRUSTED when no path reaches a root, or the code of the rule that
 * rejected the only candidate path (validity, CA flag, path length, critical extension, leaf EKU / CA flag).
 */
export async function verifyEkCertificate(leaf: X509Certificate, store: EkTrustStore, options: VerifyEkOptions): Promise<EkVerification> {
  const now = options.now;
  checkLeaf(leaf);
  checkValidity(leaf, now, 'leaf');
  const pool = [...store.intermediates, ...(options.intermediates ?? [])];
  let lastRuleFailure: AttestationRefused | undefined;

  // Depth-first search from the leaf; `path` is leaf-first. Issuers are matched by subject, then by signature.
  const extend = async (path: X509Certificate[]): Promise<X509Certificate[] | undefined> => {
    const tip = path[path.length - 1]!;
    const intermediatesBelow = path.length - 1; // certificates between the candidate issuer and the leaf
    for (const root of store.roots) {
      if (root.subject !== tip.issuer || !(await signedBy(tip, root))) continue;
      try {
        checkIssuer(root, true, intermediatesBelow);
        checkValidity(root, now, 'root');
        return [...path, root];
      } catch (err) {
        if (err instanceof AttestationRefused) lastRuleFailure = err;
        else throw err;
      }
    }
    if (path.length + 1 >= MAX_CHAIN_LENGTH) return undefined;
    for (const candidate of pool) {
      if (candidate.subject !== tip.issuer || path.some((p) => p.equal(candidate))) continue;
      if (!(await signedBy(tip, candidate))) continue;
      try {
        checkIssuer(candidate, false, intermediatesBelow);
        checkValidity(candidate, now, 'intermediate');
      } catch (err) {
        if (err instanceof AttestationRefused) {
          lastRuleFailure = err;
          continue;
        }
        throw err;
      }
      const found = await extend([...path, candidate]);
      if (found !== undefined) return found;
    }
    return undefined;
  };

  const chain = await extend([leaf]);
  if (chain === undefined) {
    throw lastRuleFailure ?? refuse(ERR_EK_CHAIN_UNTRUSTED, `no path from "${leaf.issuer}" to a trusted root`);
  }
  const root = chain[chain.length - 1]!;
  return {
    rootSubjectCn: root.subjectName.getField('CN')[0] ?? '',
    ...tpmDeviceAttributes(leaf),
    chain: Object.freeze(chain),
  };
}

/**
 * The certificate's key must be the EK the agent sent (PKIX SPKI DER of the TPM2B_PUBLIC, public.publicToSpkiDer):
 * otherwise a genuine cert could vouch for an unrelated key.
 */
export function checkEkCertMatchesPublic(cert: X509Certificate, ekSpkiDer: Uint8Array): void {
  const certSpki = new Uint8Array(cert.publicKey.rawData);
  if (certSpki.length !== ekSpkiDer.length || !timingSafeEqual(certSpki, ekSpkiDer)) {
    throw refuse(ERR_EK_KEY_MISMATCH, 'certificate key is not the EK public key');
  }
}
