/** Test helper: builds synthetic TCG PC Client event logs (TCG PC Client PFP §10.2) byte by byte. */
import { createHash } from 'node:crypto';
import { BytesWriter } from '../../src/tpm/bytes.js';
import { EventType } from '../../src/tpm/eventlog-types.js';

export const ALG = { sha1: 0x0004, sha256: 0x000b, sha384: 0x000c, sha512: 0x000d } as const;
export type Bank = keyof typeof ALG;
const SIZES: Record<Bank, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

export interface SpecIdAlg {
  readonly id: number;
  readonly size: number;
}

export function hash(bank: string, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash(bank).update(data).digest());
}

export function ascii(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** TCG_PCClientPCREvent (legacy SHA-1 format). */
export function legacyEvent(pcr: number, type: number, digest: Uint8Array, data: Uint8Array, eventSize = data.length): Uint8Array {
  return new BytesWriter().u32le(pcr).u32le(type).bytes(digest).u32le(eventSize).bytes(data).finish();
}

/** The first event of an agile log: EV_NO_ACTION carrying TCG_EfiSpecIDEvent "Spec ID Event03". */
export function specIdEvent(algs: readonly SpecIdAlg[], vendorInfo: Uint8Array = new Uint8Array(0)): Uint8Array {
  const body = new BytesWriter().bytes(ascii('Spec ID Event03\0')).u32le(0).u8(0).u8(2).u8(0).u8(2).u32le(algs.length);
  for (const a of algs) body.u16le(a.id).u16le(a.size);
  body.u8(vendorInfo.length).bytes(vendorInfo);
  return legacyEvent(0, 3, new Uint8Array(20), body.finish());
}

/** TCG_PCR_EVENT2 with explicit digests. */
export function agileEvent(pcr: number, type: number, digests: readonly { id: number; digest: Uint8Array }[], data: Uint8Array): Uint8Array {
  const w = new BytesWriter().u32le(pcr).u32le(type).u32le(digests.length);
  for (const d of digests) w.u16le(d.id).bytes(d.digest);
  return w.u32le(data.length).bytes(data).finish();
}

export interface SyntheticEvent {
  readonly pcr: number;
  readonly type: number;
  readonly data: Uint8Array;
  /** Digest per bank; default H(data) for every bank of the log. */
  readonly digests?: Partial<Record<Bank, Uint8Array>>;
}

/** A crypto-agile log over `banks` whose events digest their data unless told otherwise. */
export function buildAgileLog(events: readonly SyntheticEvent[], banks: readonly Bank[] = ['sha1', 'sha256']): Uint8Array {
  const parts = [specIdEvent(banks.map((b) => ({ id: ALG[b], size: SIZES[b] })))];
  for (const e of events) {
    parts.push(agileEvent(e.pcr, e.type, banks.map((b) => ({ id: ALG[b], digest: e.digests?.[b] ?? hash(b, e.data) })), e.data));
  }
  return concat(parts);
}

/** A legacy SHA-1 log. */
export function buildLegacyLog(events: readonly SyntheticEvent[]): Uint8Array {
  return concat(events.map((e) => legacyEvent(e.pcr, e.type, e.digests?.sha1 ?? hash('sha1', e.data), e.data)));
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const w = new BytesWriter();
  for (const p of parts) w.bytes(p);
  return w.finish();
}

/** PCR := H(PCR || digest) from an initial value. */
export function extend(bank: string, pcr: Uint8Array, digest: Uint8Array): Uint8Array {
  return hash(bank, concat([pcr, digest]));
}

/** UEFI_VARIABLE_DATA (GUID bytes in EFI_GUID layout, UTF-16LE name, value). */
export function uefiVariableData(guidBytes: Uint8Array, name: string, value: Uint8Array): Uint8Array {
  const w = new BytesWriter().bytes(guidBytes);
  const nameLen = new Uint8Array(8);
  new DataView(nameLen.buffer).setBigUint64(0, BigInt(name.length), true);
  const valueLen = new Uint8Array(8);
  new DataView(valueLen.buffer).setBigUint64(0, BigInt(value.length), true);
  w.bytes(nameLen).bytes(valueLen);
  for (const ch of name) w.u16le(ch.charCodeAt(0));
  return w.bytes(value).finish();
}

/** EFI_GLOBAL_VARIABLE 8be4df61-93ca-11d2-aa0d-00e098032b8c in EFI_GUID byte order. */
export const EFI_GLOBAL_VARIABLE_BYTES = Uint8Array.from([
  0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
]);

export function secureBootVariable(enabled: boolean): Uint8Array {
  return uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'SecureBoot', Uint8Array.of(enabled ? 1 : 0));
}

/** EFI_IMAGE_SECURITY_DATABASE_GUID d719b2cb-3d3a-4596-a3bc-dad00e67656f (db, dbx) in EFI_GUID byte order. */
export const IMAGE_DB_GUID = Uint8Array.from([0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f]);
/** EFI_CERT_SHA256_GUID c1c41626-504c-4092-aca9-41f936934328 in EFI_GUID byte order. */
export const CERT_SHA256_GUID = Uint8Array.from([0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28]);

/** One EFI_SIGNATURE_LIST holding one SHA-256 entry (owner GUID zero, hash bytes all `fill`; UEFI 2.x §32.4.1). */
export function sha256SignatureList(fill: number): Uint8Array {
  const out = Buffer.alloc(28 + 16 + 32);
  out.set(CERT_SHA256_GUID, 0);
  out.writeUInt32LE(out.length, 16);
  out.writeUInt32LE(0, 20);
  out.writeUInt32LE(48, 24);
  out.fill(fill, 28 + 16);
  return new Uint8Array(out);
}

/** A normal EV_SEPARATOR (data 00000000) in `pcr`. */
export const separatorEvent = (pcr: number): SyntheticEvent => ({ pcr, type: EventType.EV_SEPARATOR, data: new Uint8Array(4) });
/** An EV_EFI_VARIABLE_DRIVER_CONFIG event in PCR 7. */
export const pcr7ConfigEvent = (data: Uint8Array): SyntheticEvent => ({ pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data });
