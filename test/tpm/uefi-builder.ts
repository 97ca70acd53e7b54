/** Test helper: UEFI signature lists (UEFI 2.x §32.4.1) built byte by byte. */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** EFI_GUID byte order of EFI_CERT_X509_GUID, EFI_CERT_SHA256_GUID and EFI_CERT_RSA2048_GUID (UEFI 2.x §32.4.1). */
export const X509_GUID = Uint8Array.from([0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72]);
export const SHA256_GUID = Uint8Array.from([0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28]);
export const RSA2048_GUID = Uint8Array.from([0xe8, 0x66, 0x57, 0x3c, 0x9c, 0x26, 0x34, 0x4e, 0xaa, 0x14, 0xed, 0x77, 0x6e, 0x85, 0xb3, 0xb6]);
const OWNER = Uint8Array.from({ length: 16 }, (_, i) => 0x10 + i);
export const OWNER_TEXT = '13121110-1514-1716-1819-1a1b1c1d1e1f';

/** A DER certificate with a multi-part subject (C, O, CN). */
export const CERT_DER = new Uint8Array(new X509Certificate(readFileSync(join(import.meta.dirname, '../fixtures/ekcerts/ca/tpm-ca-certificates/src/MSFT/Microsoft-Pluton-Policy-CA-A.cer'))).raw);

/** One EFI_SIGNATURE_LIST: type, sizes, header, then `entries` EFI_SIGNATURE_DATA (owner GUID ‖ data). */
export function signatureList(type: Uint8Array, entries: readonly Uint8Array[], opts: { header?: Uint8Array; signatureSize?: number; listSize?: number } = {}): Uint8Array {
  const header = opts.header ?? new Uint8Array(0);
  const signatureSize = opts.signatureSize ?? 16 + (entries[0]?.length ?? 0);
  const body = Buffer.concat(entries.map((e) => Buffer.concat([OWNER, e])));
  const out = Buffer.alloc(28 + header.length + body.length);
  out.set(type, 0);
  out.writeUInt32LE(opts.listSize ?? out.length, 16);
  out.writeUInt32LE(header.length, 20);
  out.writeUInt32LE(signatureSize, 24);
  out.set(header, 28);
  out.set(body, 28 + header.length);
  return new Uint8Array(out);
}
