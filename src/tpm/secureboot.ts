/**
 * Secure Boot state from the PCR 7 events of a replayed log.
 *
 * Input is `VerifiedEvents` only. Event types are not covered by any digest, so the state is a fact only if every
 * PCR 7 event reads as what the TCG PC Client PFP allows there, in the order it allows. Any failure gives `unknown`,
 * which callers and policy treat as NOT enabled (fail closed). The rules, with their PFP (v1.05) references:
 * 1. PCR 7 is quoted and the log accounts for it, and no PCR 7 event follows ExitBootServices() (pcr-integrity.ts).
 * 2. Exactly one EV_SEPARATOR, whose digest covers 00000000 (§10.4.4 EV_SEPARATOR; FFFFFFFF is the error separator:
 *    the firmware failed, state unknown). Without it the configuration part never ended (§3.3.4.8: the separator
 *    closes the Secure Boot configuration).
 * 3. Before the separator, only events whose digest covers their data (§10.4.4, "the digest is the hash of the event
 *    data" for each of these): EV_EFI_VARIABLE_DRIVER_CONFIG and EV_EFI_VARIABLE_AUTHORITY holding a
 *    UEFI_VARIABLE_DATA that parses, EV_EFI_ACTION with a string the PFP defines for PCR 7 ("UEFI Debug Mode",
 *    "DMA Protection Disabled"), and EV_EFI_SPDM_DEVICE_POLICY / EV_EFI_SPDM_DEVICE_AUTHORITY. Requiring covered data
 *    means a relabelled event (say the real SecureBoot=0 measurement logged as an EV_EFI_ACTION) cannot pass.
 * 4. After the separator, only EV_EFI_VARIABLE_AUTHORITY and EV_EFI_SPDM_DEVICE_AUTHORITY (§3.3.4.8: the authorities
 *    that verified each boot-time image). No configuration variable after it: a SecureBoot variable measured there
 *    was extended after the policy was fixed.
 * 5. Every variable is measured at most once, the SecureBoot variable (EFI_GLOBAL_VARIABLE) exactly once and as one
 *    byte; enabled iff that byte is 1, and then PK, KEK and db must hold a key or hash and at least one authority
 *    event whose digest covers its data must show a key in use (else unknown).
 * 6. "UEFI Debug Mode" measured: disabled (a platform in debug mode does not enforce Secure Boot).
 * 7. As Keylime's elchecking: a configuration variable is one of SecureBoot, PK, KEK (EFI_GLOBAL_VARIABLE) or db,
 *    dbx, dbt, dbr (EFI_IMAGE_SECURITY_DATABASE); an authority whose data is covered names db or vendor_db, or shim's
 *    Shim, SbatLevel, MokListRT or MokListTrusted; only db, vendor_db, Shim and MokListRT count as a key in use.
 *
 * PK/KEK/db/dbx contents are reported from their (covered) data; EV_EFI_VARIABLE_AUTHORITY events after the
 * separator are listed with `dataVerified` telling whether their data is covered (shim's often are not).
 *
 * @module
 */
import { X509Certificate, createHash } from 'node:crypto';
import { MalformedInput } from '../errors.js';
import { BytesReader, toHex } from './bytes.js';
import {
  EFI_CERT_SHA256_GUID,
  EFI_CERT_X509_GUID,
  EFI_GLOBAL_VARIABLE_GUID,
  EFI_IMAGE_SECURITY_DATABASE_GUID,
  EventType,
  eventTypeName,
  formatEfiGuid,
} from './eventlog-types.js';
import { digestCoversData, pcrProblems, problemsOf } from './pcr-integrity.js';
import type { VerifiedEvent, VerifiedEvents } from './replay.js';

export { digestCoversData };

export const PCR_SECURE_BOOT_POLICY = 7;
/** Largest UEFI variable name (in UTF-16 code units) accepted in a UEFI_VARIABLE_DATA. */
export const MAX_VARIABLE_NAME_CHARS = 1024;
/** Most EFI_SIGNATURE_DATA entries read from one signature database. */
export const MAX_SIGNATURES = 4096;

/** PFP §10.4.4: the EV_EFI_ACTION strings defined for PCR 7. */
const UEFI_DEBUG_MODE = 'UEFI Debug Mode';
const DMA_PROTECTION_DISABLED = 'DMA Protection Disabled';
const PCR7_ACTIONS: ReadonlySet<string> = new Set([UEFI_DEBUG_MODE, DMA_PROTECTION_DISABLED]);
/** shim's SHIM_LOCK_GUID: the variables shim measures as authorities (Shim, SbatLevel, MokListRT, MokListTrusted). */
const SHIM_LOCK_GUID = '605dab50-e046-4300-abb6-3dd810dd8b23';
/** PFP §3.3.4.8: the Secure Boot configuration variables measured into PCR 7 before the separator (dbt/dbr optional). */
const PCR7_CONFIG_VARIABLES: ReadonlySet<string> = new Set([
  ...['SecureBoot', 'PK', 'KEK'].map((n) => `${EFI_GLOBAL_VARIABLE_GUID}/${n}`),
  ...['db', 'dbx', 'dbt', 'dbr'].map((n) => `${EFI_IMAGE_SECURITY_DATABASE_GUID}/${n}`),
]);
/**
 * The variables an EV_EFI_VARIABLE_AUTHORITY may name: db (PFP §3.3.4.8: the db entry that verified an image) and
 * shim's (vendor_db, and Shim, SbatLevel, MokListRT, MokListTrusted under SHIM_LOCK_GUID). Keylime's elchecking
 * example policy refuses any other authority; so do we.
 */
const AUTHORITY_VARIABLES: ReadonlySet<string> = new Set([
  ...['db', 'vendor_db'].map((n) => `${EFI_IMAGE_SECURITY_DATABASE_GUID}/${n}`),
  ...['Shim', 'SbatLevel', 'MokListRT', 'MokListTrusted'].map((n) => `${SHIM_LOCK_GUID}/${n}`),
]);
/** Of those, the ones that are a key or hash that verified an image (SbatLevel and MokListTrusted are settings). */
const KEY_AUTHORITIES: ReadonlySet<string> = new Set([
  `${EFI_IMAGE_SECURITY_DATABASE_GUID}/db`,
  `${EFI_IMAGE_SECURITY_DATABASE_GUID}/vendor_db`,
  `${SHIM_LOCK_GUID}/Shim`,
  `${SHIM_LOCK_GUID}/MokListRT`,
]);
/** PFP §3.3.4.8: what may follow the PCR 7 separator. */
const POST_SEPARATOR_PCR7_TYPES: ReadonlySet<number> = new Set([EventType.EV_EFI_VARIABLE_AUTHORITY, EventType.EV_EFI_SPDM_DEVICE_AUTHORITY]);

/** UEFI_VARIABLE_DATA (TCG PC Client PFP §10.3.3 / UEFI measured-boot variable event). */
export interface UefiVariableData {
  readonly variableGuid: string;
  readonly name: string;
  readonly value: Uint8Array;
}

/** Parses UEFI_VARIABLE_DATA: EFI_GUID, u64 name length (chars), u64 data length, CHAR16 name[], data[]. */
export function parseUefiVariableData(data: Uint8Array): UefiVariableData {
  const reader = new BytesReader(data, 'UEFI_VARIABLE_DATA');
  const variableGuid = formatEfiGuid(reader.take(16, 'VariableName'));
  const nameChars = reader.u64le('UnicodeNameLength');
  const valueLength = reader.u64le('VariableDataLength');
  if (nameChars > BigInt(MAX_VARIABLE_NAME_CHARS)) reader.fail(`UnicodeNameLength ${nameChars} exceeds ${MAX_VARIABLE_NAME_CHARS}`);
  if (valueLength > BigInt(reader.remaining)) reader.fail(`VariableDataLength ${valueLength} runs past the end`);
  const nameBytes = reader.take(Number(nameChars) * 2, 'UnicodeName');
  const value = reader.take(Number(valueLength), 'VariableData');
  reader.end();
  let name = '';
  for (let i = 0; i < nameBytes.length; i += 2) name += String.fromCharCode(nameBytes[i]! | (nameBytes[i + 1]! << 8));
  return { variableGuid, name, value };
}

export interface SignatureDbCertificate {
  readonly owner: string;
  /** Subject DN as Node prints it, or undefined if the DER does not parse. */
  readonly subject: string | undefined;
  readonly sha256Fingerprint: string;
  readonly der: Uint8Array;
}

/** A signature database variable (PK, KEK, db, dbx): EFI_SIGNATURE_LIST entries (UEFI 2.x §32.4.1). */
export interface SignatureDatabase {
  readonly name: string;
  /** Variable data length > 0 (UEFI measures an absent variable with zero-length data). */
  readonly present: boolean;
  /** The digest matched the data, so the contents below are covered by the quote. */
  readonly dataVerified: boolean;
  readonly certificates: readonly SignatureDbCertificate[];
  /** EFI_CERT_SHA256 entries, hex. */
  readonly sha256Hashes: readonly string[];
  /** Entries of other signature types. */
  readonly otherSignatures: number;
  /** Set when the EFI_SIGNATURE_LIST structure did not parse. */
  readonly parseError?: string;
}

/** Parses concatenated EFI_SIGNATURE_LISTs (UEFI 2.x §32.4.1). */
export function parseSignatureDatabase(name: string, value: Uint8Array, dataVerified: boolean): SignatureDatabase {
  const certificates: SignatureDbCertificate[] = [];
  const sha256Hashes: string[] = [];
  let otherSignatures = 0;
  const base = { name, present: value.length > 0, dataVerified };
  try {
    const reader = new BytesReader(value, `EFI_SIGNATURE_LIST (${name})`);
    let count = 0;
    while (reader.remaining > 0) {
      const type = formatEfiGuid(reader.take(16, 'SignatureType'));
      const listSize = reader.u32le('SignatureListSize');
      const headerSize = reader.u32le('SignatureHeaderSize');
      const signatureSize = reader.u32le('SignatureSize');
      if (listSize < 28 || listSize - 28 > reader.remaining) reader.fail(`SignatureListSize ${listSize} out of range`);
      const body = new BytesReader(reader.take(listSize - 28, 'signature list body'), `EFI_SIGNATURE_LIST (${name})`);
      body.take(headerSize, 'SignatureHeader');
      if (signatureSize < 16) body.fail(`SignatureSize ${signatureSize} below 16`);
      if (body.remaining % signatureSize !== 0) body.fail(`signatures do not fill the list (SignatureSize ${signatureSize})`);
      while (body.remaining > 0) {
        if (++count > MAX_SIGNATURES) body.fail(`more than ${MAX_SIGNATURES} signatures`);
        const owner = formatEfiGuid(body.take(16, 'SignatureOwner'));
        const signature = body.take(signatureSize - 16, 'SignatureData');
        if (type === EFI_CERT_X509_GUID) certificates.push(describeCertificate(owner, signature));
        else if (type === EFI_CERT_SHA256_GUID) sha256Hashes.push(toHex(signature));
        else otherSignatures++;
      }
    }
  } catch (err) {
    if (!(err instanceof MalformedInput)) throw err;
    return { ...base, certificates, sha256Hashes, otherSignatures, parseError: err.message };
  }
  return { ...base, certificates, sha256Hashes, otherSignatures };
}

/** Subject and fingerprint are computed on first use: db/KEK lists are parsed at every attestation, read rarely. */
function describeCertificate(owner: string, der: Uint8Array): SignatureDbCertificate {
  const copy = Uint8Array.from(der);
  let subject: string | undefined | null = null;
  let fingerprint: string | undefined;
  return {
    owner,
    der: copy,
    get subject(): string | undefined {
      if (subject === null) {
        try {
          subject = new X509Certificate(copy).subject.replace(/\n/g, ', ');
        } catch {
          subject = undefined;
        }
      }
      return subject;
    },
    get sha256Fingerprint(): string {
      fingerprint ??= createHash('sha256').update(copy).digest('hex');
      return fingerprint;
    },
  };
}

/** An EV_EFI_VARIABLE_AUTHORITY event: the db entry (or shim/MOK authority) that verified an image. */
export interface SecureBootAuthority {
  readonly sequence: number;
  readonly variableName: string | undefined;
  readonly variableGuid: string | undefined;
  /** Digest equals H(UEFI_VARIABLE_DATA): name and certificate are covered. Otherwise they are hints only. */
  readonly dataVerified: boolean;
  readonly certificate: SignatureDbCertificate | undefined;
}

export type SecureBootStateValue = 'enabled' | 'disabled' | 'unknown';

export interface SecureBootFacts {
  readonly state: SecureBootStateValue;
  /** Shorthand for `state === 'enabled'`: `unknown` counts as not enabled. */
  readonly enabled: boolean;
  /** Why the state is `disabled` or `unknown` (empty when enabled). */
  readonly reason: string;
  readonly pk: SignatureDatabase | undefined;
  readonly kek: SignatureDatabase | undefined;
  readonly db: SignatureDatabase | undefined;
  readonly dbx: SignatureDatabase | undefined;
  readonly separatorSeen: boolean;
  /** EV_EFI_VARIABLE_AUTHORITY events after the separator, in order. */
  readonly postSeparatorAuthorities: readonly SecureBootAuthority[];
  /** A "UEFI Debug Mode" EV_EFI_ACTION was measured into PCR 7. */
  readonly debugMode: boolean;
  /** A "DMA Protection Disabled" EV_EFI_ACTION was measured into PCR 7 (reported; does not change the state). */
  readonly dmaProtectionDisabled: boolean;
}

function asciiOf(data: Uint8Array): string {
  let s = '';
  for (const b of data) s += String.fromCharCode(b);
  return s;
}

/** Derives the Secure Boot facts from the verified PCR 7 events (see the module doc for the rules). */
export function deriveSecureBootFacts(verified: VerifiedEvents): SecureBootFacts {
  const events = verified.onPcr(PCR_SECURE_BOOT_POLICY);
  const databases = new Map<string, SignatureDatabase>();
  const postSeparatorAuthorities: SecureBootAuthority[] = [];
  let separatorSeen = false;
  let debugMode = false;
  let dmaProtectionDisabled = false;
  let secureBootValue: Uint8Array | undefined;
  let secureBootMeasurements = 0;
  /** Authorities whose data the digest covers: a key really verified an image. */
  let verifiedAuthorities = 0;
  const seenVariables = new Set<string>();
  const problems: string[] = [];

  const integrity = problemsOf(pcrProblems(verified, [PCR_SECURE_BOOT_POLICY]), [PCR_SECURE_BOOT_POLICY]);
  if (integrity !== undefined) problems.push(integrity);
  if (events.length === 0) problems.push('no verified PCR 7 events');
  for (const event of events) {
    const at = `event ${event.sequence} (${eventTypeName(event.type)})`;
    if (separatorSeen) {
      if (event.type === EventType.EV_SEPARATOR) problems.push(`${at}: second EV_SEPARATOR in PCR 7`);
      else if (!POST_SEPARATOR_PCR7_TYPES.has(event.type)) problems.push(`${at}: not allowed in PCR 7 after the separator`);
      else if (event.type === EventType.EV_EFI_VARIABLE_AUTHORITY) {
        const authority = describeAuthority(event);
        postSeparatorAuthorities.push(authority);
        // Only covered data says which variable it is; an uncovered or unparsed one (shim's are often) proves nothing.
        if (authority.dataVerified && authority.variableName !== undefined) {
          const key = `${authority.variableGuid}/${authority.variableName}`;
          if (!AUTHORITY_VARIABLES.has(key)) problems.push(`${at}: authority ${authority.variableName} (${authority.variableGuid}) is not db or a shim authority`);
          else if (KEY_AUTHORITIES.has(key)) verifiedAuthorities++;
        }
      }
      continue;
    }
    // Before the separator every event must be a covered measurement of what its type says.
    if (!digestCoversData(event)) {
      problems.push(`${at}: its digest does not cover its data, so it is not what its type says`);
      continue;
    }
    switch (event.type) {
      case EventType.EV_SEPARATOR:
        if (event.data.length === 4 && event.data.every((b) => b === 0)) separatorSeen = true;
        else problems.push(`${at}: error separator ${toHex(event.data)} (the firmware reported a failure)`);
        break;
      case EventType.EV_EFI_ACTION: {
        const action = asciiOf(event.data);
        if (!PCR7_ACTIONS.has(action)) {
          const shown = /^[\x20-\x7e]{0,64}$/.test(action) ? JSON.stringify(action) : `data ${toHex(event.data.subarray(0, 32))}`;
          problems.push(`${at}: ${shown} is not an action the PFP defines for PCR 7`);
        }
        if (action === UEFI_DEBUG_MODE) debugMode = true;
        if (action === DMA_PROTECTION_DISABLED) dmaProtectionDisabled = true;
        break;
      }
      case EventType.EV_EFI_VARIABLE_DRIVER_CONFIG: {
        let variable: UefiVariableData;
        try {
          variable = parseUefiVariableData(event.data);
        } catch (err) {
          if (!(err instanceof MalformedInput)) throw err;
          problems.push(`${at}: UEFI_VARIABLE_DATA does not parse`);
          break;
        }
        const key = `${variable.variableGuid}/${variable.name}`;
        if (!PCR7_CONFIG_VARIABLES.has(key)) {
          problems.push(`${at}: ${variable.name} (${variable.variableGuid}) is not a Secure Boot configuration variable the PFP measures in PCR 7`);
        }
        if (seenVariables.has(key)) problems.push(`${at}: ${variable.name} measured twice`);
        seenVariables.add(key);
        if (variable.name === 'SecureBoot' && variable.variableGuid === EFI_GLOBAL_VARIABLE_GUID) {
          secureBootMeasurements++;
          secureBootValue = variable.value;
        } else if (
          (variable.variableGuid === EFI_GLOBAL_VARIABLE_GUID && (variable.name === 'PK' || variable.name === 'KEK')) ||
          (variable.variableGuid === EFI_IMAGE_SECURITY_DATABASE_GUID && (variable.name === 'db' || variable.name === 'dbx'))
        ) {
          if (!databases.has(variable.name)) databases.set(variable.name, parseSignatureDatabase(variable.name, variable.value, true));
        }
        break;
      }
      case EventType.EV_EFI_VARIABLE_AUTHORITY:
        try {
          const variable = parseUefiVariableData(event.data);
          const key = `${variable.variableGuid}/${variable.name}`;
          if (!AUTHORITY_VARIABLES.has(key)) problems.push(`${at}: authority ${variable.name} (${variable.variableGuid}) is not db or a shim authority`);
          else if (KEY_AUTHORITIES.has(key)) verifiedAuthorities++;
        } catch (err) {
          if (!(err instanceof MalformedInput)) throw err;
          problems.push(`${at}: UEFI_VARIABLE_DATA does not parse`);
        }
        break;
      case EventType.EV_EFI_SPDM_DEVICE_POLICY:
      case EventType.EV_EFI_SPDM_DEVICE_AUTHORITY:
        break;
      default:
        problems.push(`${at}: not allowed in PCR 7`);
        break;
    }
  }
  if (events.length > 0 && !separatorSeen) problems.push('PCR 7 has no EV_SEPARATOR: the Secure Boot configuration never ended');
  if (secureBootMeasurements > 1) problems.push('SecureBoot variable measured more than once');
  if (secureBootMeasurements === 0 && events.length > 0) problems.push('SecureBoot variable not measured');
  if (secureBootValue !== undefined && secureBootValue.length > 1) problems.push(`SecureBoot variable is ${secureBootValue.length} bytes, not 1`);
  if (problems.length === 0 && !debugMode && secureBootValue?.length === 1 && secureBootValue[0] === 1) {
    // Enabled means keys were in force and used (the checks go-attestation's ParseSecurebootState makes too).
    const entries = (db: SignatureDatabase | undefined) => (db ? db.certificates.length + db.sha256Hashes.length + db.otherSignatures : 0);
    for (const name of ['PK', 'KEK', 'db']) {
      if (entries(databases.get(name)) === 0) problems.push(`Secure Boot is on but ${name} holds no key or hash`);
    }
    if (verifiedAuthorities === 0) problems.push('Secure Boot is on but no verified EV_EFI_VARIABLE_AUTHORITY shows a key in use');
  }

  let state: SecureBootStateValue;
  let reason: string;
  if (problems.length > 0) {
    state = 'unknown';
    reason = problems.join('; ');
  } else if (debugMode) {
    state = 'disabled';
    reason = 'UEFI Debug Mode measured into PCR 7';
  } else if (secureBootValue !== undefined && secureBootValue.length === 1 && secureBootValue[0] === 1) {
    state = 'enabled';
    reason = '';
  } else {
    state = 'disabled';
    reason = `SecureBoot variable is ${secureBootValue && secureBootValue.length > 0 ? toHex(secureBootValue) : 'absent'}`;
  }
  return {
    state,
    enabled: state === 'enabled',
    reason,
    pk: databases.get('PK'),
    kek: databases.get('KEK'),
    db: databases.get('db'),
    dbx: databases.get('dbx'),
    separatorSeen,
    postSeparatorAuthorities,
    debugMode,
    dmaProtectionDisabled,
  };
}

function describeAuthority(event: VerifiedEvent): SecureBootAuthority {
  const dataVerified = digestCoversData(event);
  try {
    const variable = parseUefiVariableData(event.data);
    // EFI_SIGNATURE_DATA: SignatureOwner GUID then the certificate (TCG PC Client PFP §10.4.4, db authority).
    const certificate =
      variable.value.length > 16 ? describeCertificate(formatEfiGuid(variable.value.subarray(0, 16)), variable.value.subarray(16)) : undefined;
    return {
      sequence: event.sequence,
      variableName: variable.name,
      variableGuid: variable.variableGuid,
      dataVerified,
      certificate: certificate?.subject === undefined ? undefined : certificate,
    };
  } catch (err) {
    if (!(err instanceof MalformedInput)) throw err;
    return { sequence: event.sequence, variableName: undefined, variableGuid: undefined, dataVerified, certificate: undefined };
  }
}
