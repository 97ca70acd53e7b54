import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { BytesReader, BytesWriter, concatBytes, toHex } from '../../src/tpm/bytes.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { MalformedInput, GrpcCode } from '../../src/errors.js';

function expectMalformed(fn: () => unknown, code = 'ERR_TPM_MALFORMED'): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MalformedInput);
    expect((err as MalformedInput).code).toBe(code);
    expect((err as MalformedInput).grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
    return;
  }
  throw new Error('expected MalformedInput');
}

describe('BytesReader', () => {
  it('reads big- and little-endian integers', () => {
    const r = new BytesReader(Uint8Array.from([1, 0x01, 0x02, 0x01, 0x02, 0x03, 0x04, 0x02, 0x01, 0x04, 0x03, 0x02, 0x01]), 'T');
    expect(r.u8()).toBe(1);
    expect(r.u16be()).toBe(0x0102);
    expect(r.u32be()).toBe(0x01020304);
    expect(r.u16le()).toBe(0x0102);
    expect(r.u32le()).toBe(0x01020304);
    r.end();
  });
  it('reads u64be as bigint', () => {
    const r = new BytesReader(Uint8Array.from([0xff, 0, 0, 0, 0, 0, 0, 1]), 'T');
    expect(r.u64be()).toBe(0xff00000000000001n);
  });
  it('take returns a view, not a copy', () => {
    const data = Uint8Array.from([1, 2, 3, 4]);
    const r = new BytesReader(data, 'T');
    r.u8();
    const t = r.take(2);
    data[1] = 9;
    expect([...t]).toEqual([9, 3]);
    expect(r.offset).toBe(3);
    expect(r.remaining).toBe(1);
  });
  it('refuses reads past the end, naming structure and offset', () => {
    const r = new BytesReader(Uint8Array.from([1, 2, 3]), 'TPMS_X');
    r.u16be();
    try {
      r.u16be('field');
    } catch (err) {
      expect((err as MalformedInput).fields).toMatchObject({ structure: 'TPMS_X', offset: 2 });
    }
    expectMalformed(() => r.u32be());
  });
  it('catches a hostile TPM2B size before reading', () => {
    const r = new BytesReader(Uint8Array.from([0xff, 0xff, 1, 2]), 'T');
    expectMalformed(() => r.tpm2b());
  });
  it('tpm2b enforces an explicit maximum', () => {
    const r = new BytesReader(Uint8Array.from([0, 3, 1, 2, 3]), 'T');
    expectMalformed(() => r.tpm2b('digest', 2));
  });
  it('take refuses negative and non-integer lengths', () => {
    const r = new BytesReader(new Uint8Array(8), 'T');
    expectMalformed(() => r.take(-1));
    expectMalformed(() => r.take(1.5));
  });
  it('end refuses trailing bytes', () => {
    const r = new BytesReader(Uint8Array.from([1, 2]), 'T');
    r.u8();
    expectMalformed(() => r.end());
  });
  it('any read sequence on any bytes returns or throws MalformedInput', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 20 }), (data, ops) => {
        const r = new BytesReader(data, 'T');
        try {
          for (const op of ops) {
            [() => r.u8(), () => r.u16be(), () => r.u32be(), () => r.u64be(), () => r.u16le(), () => r.tpm2b(), () => r.take(3)][op]!();
          }
        } catch (err) {
          expect(err).toBeInstanceOf(MalformedInput);
        }
      }),
    );
  });
});

describe('BytesWriter', () => {
  it('round-trips through the reader', () => {
    const w = new BytesWriter().u8(7).u16be(0x1234).u32be(0xdeadbeef).u64be(5n).u16le(0x0102).u32le(3).tpm2b(Uint8Array.from([9, 8]));
    const r = new BytesReader(w.finish(), 'T');
    expect(r.u8()).toBe(7);
    expect(r.u16be()).toBe(0x1234);
    expect(r.u32be()).toBe(0xdeadbeef);
    expect(r.u64be()).toBe(5n);
    expect(r.u16le()).toBe(0x0102);
    expect(r.u32le()).toBe(3);
    expect([...r.tpm2b()]).toEqual([9, 8]);
    r.end();
  });
  it('range-checks integers', () => {
    expect(() => new BytesWriter().u8(256)).toThrow(RangeError);
    expect(() => new BytesWriter().u16be(-1)).toThrow(RangeError);
    expect(() => new BytesWriter().tpm2b(new Uint8Array(0x10000))).toThrow(RangeError);
  });
  it('helpers', () => {
    expect(toHex(concatBytes(Uint8Array.from([1]), Uint8Array.from([0xab])))).toBe('01ab');
  });
});

describe('HashAlg', () => {
  it('maps ids, names and sizes', () => {
    expect(HashAlg.fromId(0x000b)).toBe(HashAlg.SHA256);
    expect(HashAlg.fromId(0x0004).size).toBe(20);
    expect(HashAlg.fromId(0x000c).name).toBe('sha384');
    expect(HashAlg.parse('SHA512').id).toBe(0x000d);
    expect(toHex(HashAlg.SHA256.digest(new TextEncoder().encode('abc')))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });
  it('refuses unknown algorithms', () => {
    expectMalformed(() => HashAlg.fromId(0x0012), 'ERR_TPM_UNSUPPORTED_ALG');
    expectMalformed(() => HashAlg.parse('md5'), 'ERR_TPM_UNSUPPORTED_ALG');
  });
  it('a literal is not a HashAlg', () => {
    expect(HashAlg.isHashAlg({ id: 11, name: 'sha256', size: 32 })).toBe(false);
    expect(HashAlg.isHashAlg(HashAlg.SHA1)).toBe(true);
  });
});
