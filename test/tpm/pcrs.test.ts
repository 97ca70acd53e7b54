import { describe, it, expect } from 'vitest';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { BytesReader, toHex } from '../../src/tpm/bytes.js';
import { encodePcrValues, parsePcrValues, PcrSelection } from '../../src/tpm/pcrs.js';
import { expectError } from './expect-error.js';

const decode = (hex: string): PcrSelection => {
  const r = new BytesReader(new Uint8Array(Buffer.from(hex, 'hex')), 'TPML_PCR_SELECTION');
  const s = PcrSelection.decode(r);
  r.end();
  return s;
};

describe('PcrSelection.parse', () => {
  it('parses one and several banks, sorting indices', () => {
    expect(PcrSelection.parse('sha256:7,0,1').toString()).toBe('sha256:0,1,7');
    const s = PcrSelection.parse('sha1:0+sha256:0,7');
    expect(s.banks.map((b) => b.hash.name)).toEqual(['sha1', 'sha256']);
    expect(s.count).toBe(3);
    expect(s.valuesSize).toBe(20 + 64);
    expect(s.has(HashAlg.SHA256, 7)).toBe(true);
    expect(s.has(HashAlg.SHA1, 7)).toBe(false);
  });
  it.each([
    ['unknown bank', 'sm3:0'],
    ['index above 23', 'sha256:24'],
    ['duplicate index', 'sha256:1,1'],
    ['duplicate bank', 'sha256:1+sha256:2'],
    ['negative', 'sha256:-1'],
    ['leading zero', 'sha256:01'],
    ['no indices', 'sha256:'],
    ['no bank', '0,1'],
    ['empty', ''],
    ['whitespace', 'sha256: 1'],
  ])('rejects %s', (_name, text) => {
    let err: unknown;
    try {
      PcrSelection.parse(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MalformedInput);
    expect((err as MalformedInput).grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(['ERR_TPM_PCR_SELECTION', 'ERR_TPM_UNSUPPORTED_ALG']).toContain((err as MalformedInput).code);
  });
  it('equals is exact (bank order, indices)', () => {
    expect(PcrSelection.parse('sha256:0,1').equals(PcrSelection.parse('sha256:1,0'))).toBe(true);
    expect(PcrSelection.parse('sha256:0,1').equals(PcrSelection.parse('sha256:0,1,2'))).toBe(false);
    expect(PcrSelection.parse('sha1:0+sha256:0').equals(PcrSelection.parse('sha256:0+sha1:0'))).toBe(false);
    expect(PcrSelection.parse('sha1:0').equals(PcrSelection.parse('sha256:0'))).toBe(false);
  });
  it('a literal cannot pass for a PcrSelection', () => {
    const fake = { banks: [], equals: () => true } as unknown as PcrSelection;
    expect(PcrSelection.parse('sha256:0').equals(fake)).toBe(false);
  });
});

describe('TPML_PCR_SELECTION', () => {
  it('encodes the example from tpm-notes (PCRs 0-7 and 10: ff 04 00)', () => {
    const s = PcrSelection.parse('sha256:0,1,2,3,4,5,6,7,10');
    expect(toHex(s.encode())).toBe('00000001000b03ff0400');
    expect(decode('00000001000b03ff0400').equals(s)).toBe(true);
  });
  it('round-trips multi-bank selections', () => {
    const s = PcrSelection.parse('sha1:23+sha384:0,16');
    const r = new BytesReader(s.encode(), 'T');
    expect(PcrSelection.decode(r).equals(s)).toBe(true);
  });
  it('drops banks that select nothing; all-empty decodes to an empty selection', () => {
    expect(decode('00000002000403000000000b03010000').toString()).toBe('sha256:0');
    expect(decode('00000001000b03000000').isEmpty).toBe(true);
  });
  it.each([
    ['PCR 24 selected', '00000001000b0400000001'],
    ['unknown bank', '00000001001203010000'],
    ['duplicate bank', '00000002000b03010000000b03020000'],
    ['sizeofSelect too large', '00000001000b050000000000'],
    ['hostile count', 'ffffffff'],
  ])('rejects %s', (_name, hex) => {
    expectError(() => decode(hex), MalformedInput, 'ERR_TPM_PCR_SELECTION', GrpcCode.INVALID_ARGUMENT);
  });
  it('truncated selection is MalformedInput', () => {
    expectError(() => decode('00000001000b03ff'), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
  });
});

describe('PCR values file', () => {
  it('splits in bank order then ascending index', () => {
    const s = PcrSelection.parse('sha1:2,1+sha256:0');
    const bytes = new Uint8Array(20 + 20 + 32).map((_, i) => i);
    const values = parsePcrValues(bytes, s);
    expect(values.map((v) => `${v.hash.name}:${v.index}`)).toEqual(['sha1:1', 'sha1:2', 'sha256:0']);
    expect(values[1]!.value[0]).toBe(20);
    expect(toHex(encodePcrValues(values))).toBe(toHex(bytes));
  });
  it('PCR supplied but not quoted: extra value bytes are refused', () => {
    const s = PcrSelection.parse('sha256:0');
    expectError(() => parsePcrValues(new Uint8Array(64), s), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
    expectError(() => parsePcrValues(new Uint8Array(31), s), MalformedInput, 'ERR_TPM_MALFORMED', GrpcCode.INVALID_ARGUMENT);
  });
});
