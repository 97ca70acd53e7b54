/**
 * The UEFI structures Secure Boot facts are read from (UEFI_VARIABLE_DATA, EFI_SIGNATURE_LIST) parse exactly what
 * was measured: sizes are bounded, truncation and trailing bytes are refused with the field named, and a signature
 * database reports every entry by its type, so "PK/KEK/db hold a key" is counted from the real contents.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MalformedInput } from '../../src/errors.js';
import { MAX_SIGNATURES, MAX_VARIABLE_NAME_CHARS, parseSignatureDatabase, parseUefiVariableData } from '../../src/tpm/secureboot.js';
import { EFI_GLOBAL_VARIABLE_BYTES, uefiVariableData } from './eventlog-builder.js';
import { CERT_DER, OWNER_TEXT, RSA2048_GUID, SHA256_GUID, X509_GUID, signatureList } from './uefi-builder.js';

const parseError = (value: Uint8Array) => parseSignatureDatabase('db', value, true).parseError;

function malformed(fn: () => unknown): MalformedInput {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MalformedInput);
    return err as MalformedInput;
  }
  throw new Error('expected MalformedInput');
}

describe('UEFI_VARIABLE_DATA parses exactly what was measured', () => {
  it('reads the GUID, the UTF-16LE name (also beyond latin1) and the value', () => {
    const v = parseUefiVariableData(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'Ā€Boot', Uint8Array.of(1, 2)));
    expect(v).toEqual({ variableGuid: '8be4df61-93ca-11d2-aa0d-00e098032b8c', name: 'Ā€Boot', value: Uint8Array.of(1, 2) });
  });

  it(`bounds the name at ${MAX_VARIABLE_NAME_CHARS} characters`, () => {
    const atLimit = 'x'.repeat(MAX_VARIABLE_NAME_CHARS);
    expect(parseUefiVariableData(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, atLimit, new Uint8Array(0))).name).toBe(atLimit);
    const err = malformed(() => parseUefiVariableData(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, `${atLimit}x`, new Uint8Array(0))));
    expect(err.message).toMatch(/^UEFI_VARIABLE_DATA: UnicodeNameLength 1025 exceeds 1024/);
  });

  it('refuses a data length past the end before reading the name, and accepts one that ends exactly', () => {
    const exact = uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, '', Uint8Array.of(7, 7, 7));
    expect(parseUefiVariableData(exact).value).toEqual(Uint8Array.of(7, 7, 7));
    const tooLong = Uint8Array.from(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'db', Uint8Array.of(7, 7, 7)));
    new DataView(tooLong.buffer).setBigUint64(24, 8n, true); // 8 bytes of data, but only 4 + 3 bytes follow
    expect(malformed(() => parseUefiVariableData(tooLong)).message).toMatch(/^UEFI_VARIABLE_DATA: VariableDataLength 8 runs past the end/);
  });

  it('names the field where the structure is cut off, and refuses trailing bytes', () => {
    const full = uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', Uint8Array.of(1, 2, 3, 4));
    const cases: [number, RegExp][] = [
      [10, /VariableName: needs 16 bytes/],
      [20, /UnicodeNameLength/],
      [30, /VariableDataLength/],
    ];
    for (const [length, field] of cases) expect(malformed(() => parseUefiVariableData(full.subarray(0, length))).message).toMatch(field);
    // Name length 2, data length claims 0 but the name is cut: the name field is named.
    const shortName = uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', new Uint8Array(0)).subarray(0, 34);
    expect(malformed(() => parseUefiVariableData(shortName)).message).toMatch(/UnicodeName: needs 4 bytes/);
    // The data length fits what follows the lengths, but not after the name.
    expect(malformed(() => parseUefiVariableData(full.subarray(0, full.length - 2))).message).toMatch(/VariableData: needs 4 bytes, 2 remain/);
    const trailing = new Uint8Array([...uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', Uint8Array.of(1)), 0]);
    expect(malformed(() => parseUefiVariableData(trailing)).message).toMatch(/1 trailing bytes/);
  });
});

describe('signature databases report every entry by its type', () => {
  it('X.509 certificates (subject and fingerprint), SHA-256 hashes and other types, across lists', () => {
    const hash = new Uint8Array(32).fill(0xab);
    const value = new Uint8Array([
      ...signatureList(X509_GUID, [CERT_DER]),
      ...signatureList(SHA256_GUID, [hash, new Uint8Array(32).fill(0xcd)]),
      ...signatureList(RSA2048_GUID, [new Uint8Array(256)]),
    ]);
    const db = parseSignatureDatabase('db', value, true);
    expect(db).toMatchObject({ name: 'db', present: true, dataVerified: true, sha256Hashes: ['ab'.repeat(32), 'cd'.repeat(32)], otherSignatures: 1 });
    expect(db.parseError).toBeUndefined();
    expect(db.certificates).toHaveLength(1);
    const [cert] = db.certificates;
    const expected = new X509Certificate(CERT_DER);
    expect(cert!.owner).toBe(OWNER_TEXT);
    expect(cert!.der).toEqual(CERT_DER);
    expect(cert!.subject).toBe(expected.subject.replace(/\n/g, ', '));
    expect(cert!.subject).toBe('C=US, O=Microsoft Corporation, CN=Microsoft Pluton Policy CA A');
    expect(cert!.sha256Fingerprint).toBe(createHash('sha256').update(CERT_DER).digest('hex'));
  });

  it('a certificate entry whose DER does not parse has no subject but keeps its fingerprint', () => {
    const [cert] = parseSignatureDatabase('db', signatureList(X509_GUID, [Uint8Array.of(1, 2, 3)]), true).certificates;
    expect(cert!.subject).toBeUndefined();
    expect(cert!.subject).toBeUndefined();
    expect(cert!.sha256Fingerprint).toBe(createHash('sha256').update(Uint8Array.of(1, 2, 3)).digest('hex'));
  });

  it('an absent variable (zero-length data) is not present and holds nothing', () => {
    expect(parseSignatureDatabase('PK', new Uint8Array(0), false)).toEqual({
      name: 'PK', present: false, dataVerified: false, certificates: [], sha256Hashes: [], otherSignatures: 0,
    });
  });

  it('boundary sizes: a list of only its header, a 16-byte signature, a header before the entries', () => {
    expect(parseSignatureDatabase('db', signatureList(SHA256_GUID, [], { signatureSize: 16 }), true)).not.toHaveProperty('parseError');
    expect(parseSignatureDatabase('db', signatureList(SHA256_GUID, [new Uint8Array(0)], { signatureSize: 16 }), true)).toMatchObject({ sha256Hashes: [''] });
    const withHeader = parseSignatureDatabase('db', signatureList(SHA256_GUID, [new Uint8Array(32).fill(1)], { header: Uint8Array.of(9, 9, 9, 9) }), true);
    expect(withHeader.sha256Hashes).toEqual(['01'.repeat(32)]);
    expect(withHeader).not.toHaveProperty('parseError');
  });

  it.each([
    ['a list size below its own header', signatureList(SHA256_GUID, [], { listSize: 27 }), /SignatureListSize 27 out of range/],
    ['a list size past the end', signatureList(SHA256_GUID, [new Uint8Array(32)], { listSize: 200 }), /SignatureListSize 200 out of range/],
    ['a signature size below 16', signatureList(SHA256_GUID, [], { signatureSize: 15 }), /SignatureSize 15 below 16/],
    ['entries that do not fill the list', signatureList(SHA256_GUID, [new Uint8Array(32)], { signatureSize: 40 }), /signatures do not fill the list \(SignatureSize 40\)/],
    ['a header past the list', signatureList(SHA256_GUID, [], { header: Uint8Array.of(1), listSize: 28 }), /SignatureHeader/],
    ['a list cut in its type', signatureList(SHA256_GUID, [new Uint8Array(32)]).subarray(0, 10), /SignatureType: needs 16 bytes/],
    ['a list cut in its size', signatureList(SHA256_GUID, [new Uint8Array(32)]).subarray(0, 18), /SignatureListSize: needs 4 bytes/],
    ['a list cut in its header size', signatureList(SHA256_GUID, [new Uint8Array(32)]).subarray(0, 22), /SignatureHeaderSize: needs 4 bytes/],
    ['a list cut in its signature size', signatureList(SHA256_GUID, [new Uint8Array(32)]).subarray(0, 26), /SignatureSize: needs 4 bytes/],
  ])('%s is reported as a parse error, entries read so far kept, nothing thrown', (_name, list, message) => {
    const good = signatureList(SHA256_GUID, [new Uint8Array(32).fill(5)]);
    const db = parseSignatureDatabase('KEK', new Uint8Array([...good, ...list]), true);
    expect(db.sha256Hashes).toEqual(['05'.repeat(32)]);
    expect(db.parseError).toMatch(/^EFI_SIGNATURE_LIST \(KEK\): /);
    expect(db.parseError).toMatch(message);
  });

  it(`bounds the entries at ${MAX_SIGNATURES} across all lists`, () => {
    const entries = (n: number) => Array.from({ length: n }, () => new Uint8Array(0));
    expect(parseError(signatureList(SHA256_GUID, entries(MAX_SIGNATURES), { signatureSize: 16 }))).toBeUndefined();
    const over = new Uint8Array([...signatureList(SHA256_GUID, entries(MAX_SIGNATURES), { signatureSize: 16 }), ...signatureList(SHA256_GUID, entries(1), { signatureSize: 16 })]);
    expect(parseError(over)).toMatch(/more than 4096 signatures/);
  });
});
