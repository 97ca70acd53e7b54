/**
 * Constants of the TCG PC Client Platform Firmware Profile (PFP) event log and of the UEFI variables it measures.
 * Data only: event-type numbers (TCG PC Client PFP §10.4.1, "Event Types"), UEFI variable GUIDs (UEFI 2.x §3.3 and
 * §32.4.1) and the EFI_SIGNATURE_LIST type GUIDs (UEFI 2.x §32.4.1).
 *
 * Event types are NOT covered by any digest: a name derived from one is a hint (see docs/cli.md).
 */

/** TCG PC Client PFP event types. */
export const EventType = {
  EV_PREBOOT_CERT: 0x00000000,
  EV_POST_CODE: 0x00000001,
  EV_UNUSED: 0x00000002,
  EV_NO_ACTION: 0x00000003,
  EV_SEPARATOR: 0x00000004,
  EV_ACTION: 0x00000005,
  EV_EVENT_TAG: 0x00000006,
  EV_S_CRTM_CONTENTS: 0x00000007,
  EV_S_CRTM_VERSION: 0x00000008,
  EV_CPU_MICROCODE: 0x00000009,
  EV_PLATFORM_CONFIG_FLAGS: 0x0000000a,
  EV_TABLE_OF_DEVICES: 0x0000000b,
  EV_COMPACT_HASH: 0x0000000c,
  EV_IPL: 0x0000000d,
  EV_IPL_PARTITION_DATA: 0x0000000e,
  EV_NONHOST_CODE: 0x0000000f,
  EV_NONHOST_CONFIG: 0x00000010,
  EV_NONHOST_INFO: 0x00000011,
  EV_OMIT_BOOT_DEVICE_EVENTS: 0x00000012,
  EV_POST_CODE2: 0x00000013,
  EV_EFI_VARIABLE_DRIVER_CONFIG: 0x80000001,
  EV_EFI_VARIABLE_BOOT: 0x80000002,
  EV_EFI_BOOT_SERVICES_APPLICATION: 0x80000003,
  EV_EFI_BOOT_SERVICES_DRIVER: 0x80000004,
  EV_EFI_RUNTIME_SERVICES_DRIVER: 0x80000005,
  EV_EFI_GPT_EVENT: 0x80000006,
  EV_EFI_ACTION: 0x80000007,
  EV_EFI_PLATFORM_FIRMWARE_BLOB: 0x80000008,
  EV_EFI_HANDOFF_TABLES: 0x80000009,
  EV_EFI_PLATFORM_FIRMWARE_BLOB2: 0x8000000a,
  EV_EFI_HANDOFF_TABLES2: 0x8000000b,
  EV_EFI_VARIABLE_BOOT2: 0x8000000c,
  EV_EFI_GPT_EVENT2: 0x8000000d,
  EV_EFI_HCRTM_EVENT: 0x80000010,
  EV_EFI_VARIABLE_AUTHORITY: 0x800000e0,
  EV_EFI_SPDM_FIRMWARE_BLOB: 0x800000e1,
  EV_EFI_SPDM_FIRMWARE_CONFIG: 0x800000e2,
  EV_EFI_SPDM_DEVICE_POLICY: 0x800000e3,
  EV_EFI_SPDM_DEVICE_AUTHORITY: 0x800000e4,
} as const;
export type EventTypeName = keyof typeof EventType;

const eventTypeNames: ReadonlyMap<number, EventTypeName> = new Map(
  (Object.entries(EventType) as [EventTypeName, number][]).map(([name, value]) => [value, name]),
);

/** The PFP name of an event type, or `EV_UNKNOWN_0x…` (event types are untrusted hints). */
export function eventTypeName(type: number): string {
  return eventTypeNames.get(type) ?? `EV_UNKNOWN_0x${type.toString(16).padStart(8, '0')}`;
}

/** UEFI 2.x §3.3: EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK, Boot####, BootOrder...). */
export const EFI_GLOBAL_VARIABLE_GUID = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
/** UEFI 2.x §32.6.1: EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx, dbt, dbr). */
export const EFI_IMAGE_SECURITY_DATABASE_GUID = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';
/** UEFI 2.x §32.4.1: EFI_CERT_X509_GUID, an EFI_SIGNATURE_LIST of DER certificates. */
export const EFI_CERT_X509_GUID = 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072';
/** UEFI 2.x §32.4.1: EFI_CERT_SHA256_GUID, an EFI_SIGNATURE_LIST of SHA-256 image hashes. */
export const EFI_CERT_SHA256_GUID = 'c1c41626-504c-4092-aca9-41f936934328';

/** TCG PC Client PFP §10.4.5: the data of the first event of a crypto-agile log starts with this signature. */
export const SPEC_ID_EVENT03_SIGNATURE = 'Spec ID Event03\0';
/** TCG PC Client PFP §10.4.5.3: EV_NO_ACTION "StartupLocality" event (signature + u8 locality). */
export const STARTUP_LOCALITY_SIGNATURE = 'StartupLocality\0';

/** TCG PC Client PFP §10.4.4: EV_EFI_ACTION strings measured into PCR5 around ExitBootServices(). */
export const EXIT_BOOT_SERVICES_INVOCATION = 'Exit Boot Services Invocation';
export const EXIT_BOOT_SERVICES_RETURNED = 'Exit Boot Services Returned with Success';

/** Formats an EFI_GUID (UEFI 2.x Appendix A: u32le, u16le, u16le, 8 bytes) in its canonical text form. */
const HEX_BYTE = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));

export function formatEfiGuid(bytes: Uint8Array): string {
  if (bytes.length !== 16) throw new RangeError('EFI_GUID is 16 bytes');
  // Data1..Data3 are little-endian integers, Data4 is a byte array (UEFI spec, EFI_GUID). dbx lists hold
  // thousands of owners, so this avoids per-byte array building.
  const h = (i: number): string => HEX_BYTE[bytes[i]!]!;
  return (
    h(3) + h(2) + h(1) + h(0) + '-' + h(5) + h(4) + '-' + h(7) + h(6) + '-' + h(8) + h(9) + '-' +
    h(10) + h(11) + h(12) + h(13) + h(14) + h(15)
  );
}
