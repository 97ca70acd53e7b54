/** Any byte array given to a parser parses or throws MalformedInput: never another error, never a hang. */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { MalformedInput } from '../../src/errors.js';
import { parseCredentialFile } from '../../src/tpm/activation.js';
import { parseAttest } from '../../src/tpm/attest.js';
import { BytesReader } from '../../src/tpm/bytes.js';
import { parseCertificates, parseEkCertificate } from '../../src/tpm/ek.js';
import { parsePcrValues, PcrSelection } from '../../src/tpm/pcrs.js';
import { encodeTpm2bPublic, parseTpm2bPublic, parseTpmtPublic, publicName } from '../../src/tpm/public.js';
import { parseSignature } from '../../src/tpm/signature.js';
import { buildAttest, softKey } from './soft-tpm.js';

function parsesOrMalformed(parse: (b: Uint8Array) => unknown): (b: Uint8Array) => void {
  return (bytes) => {
    try {
      parse(bytes);
    } catch (err) {
      if (!(err instanceof MalformedInput)) throw err;
    }
  };
}

/** Random bytes, and mutations (byte flips, truncation, extension) of a valid structure. */
function inputs(valid: Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.tuple(fc.nat(valid.length), fc.integer({ min: 0, max: 255 })).map(([i, v]) => {
      const b = Uint8Array.from(valid);
      if (i < b.length) b[i] = v;
      return b;
    }),
    fc.nat(valid.length).map((n) => valid.subarray(0, n)),
    fc.uint8Array({ maxLength: 8 }).map((tail) => Uint8Array.from([...valid, ...tail])),
  );
}

const SEL = PcrSelection.parse('sha256:0,1,7+sha1:3');
const rsaPub = encodeTpm2bPublic(softKey('rsa').pub);
const eccPub = encodeTpm2bPublic(softKey('p256').pub);
const attest = buildAttest({ selection: SEL, values: [new Uint8Array(32), new Uint8Array(32), new Uint8Array(32), new Uint8Array(20)], nonce: new Uint8Array(16) });

describe('parsers never throw anything but MalformedInput', () => {
  it('parseTpm2bPublic (RSA and ECC seeds)', () => {
    fc.assert(fc.property(fc.oneof(inputs(rsaPub), inputs(eccPub)), parsesOrMalformed(parseTpm2bPublic)), { numRuns: 2000 });
  });
  it('parseTpmtPublic + publicName', () => {
    fc.assert(fc.property(inputs(eccPub.subarray(2)), parsesOrMalformed((b) => publicName(parseTpmtPublic(b)))), { numRuns: 1000 });
  });
  it('parseAttest', () => {
    fc.assert(fc.property(inputs(attest), parsesOrMalformed(parseAttest)), { numRuns: 2000 });
  });
  it('parseSignature', () => {
    const sig = Uint8Array.from([0, 0x14, 0, 0x0b, 0, 4, 1, 2, 3, 4]);
    fc.assert(fc.property(inputs(sig), parsesOrMalformed(parseSignature)), { numRuns: 2000 });
  });
  it('PcrSelection.decode', () => {
    fc.assert(fc.property(inputs(SEL.encode()), parsesOrMalformed((b) => PcrSelection.decode(new BytesReader(b, 'T')))), { numRuns: 2000 });
  });
  it('parsePcrValues', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 140 }), parsesOrMalformed((b) => parsePcrValues(b, SEL))), { numRuns: 500 });
  });
  it('parseCredentialFile', () => {
    const file = Uint8Array.from([0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0, 2, 1, 2, 0, 1, 9]);
    fc.assert(fc.property(inputs(file), parsesOrMalformed(parseCredentialFile)), { numRuns: 1000 });
  });
  it('PcrSelection.parse on arbitrary strings', () => {
    fc.assert(fc.property(fc.string({ maxLength: 40 }), (s) => parsesOrMalformed(() => PcrSelection.parse(s))(new Uint8Array(0))), { numRuns: 2000 });
  });
  it('parseEkCertificate / parseCertificates', () => {
    const pemish = fc.string({ maxLength: 200 }).map((s) => new TextEncoder().encode(`-----BEGIN CERTIFICATE-----\n${s}\n-----END CERTIFICATE-----`));
    const derish = fc.uint8Array({ maxLength: 300 }).map((b) => Uint8Array.from([0x30, 0x82, b.length >> 8, b.length & 0xff, ...b]));
    const arb = fc.oneof(fc.uint8Array({ maxLength: 300 }), pemish, derish);
    fc.assert(fc.property(arb, parsesOrMalformed(parseEkCertificate)), { numRuns: 500 });
    fc.assert(fc.property(arb, parsesOrMalformed(parseCertificates)), { numRuns: 500 });
  });
  it('round-trip: encode → parse is the identity for PCR selections', () => {
    const bank = fc.constantFrom('sha1', 'sha256', 'sha384', 'sha512');
    fc.assert(
      fc.property(fc.uniqueArray(bank, { minLength: 1, maxLength: 4 }), fc.uniqueArray(fc.integer({ min: 0, max: 23 }), { minLength: 1, maxLength: 24 }), (banks, idx) => {
        const s = PcrSelection.parse(banks.map((b) => `${b}:${idx.join(',')}`).join('+'));
        const r = new BytesReader(s.encode(), 'T');
        const back = PcrSelection.decode(r);
        r.end();
        expect(back.equals(s)).toBe(true);
        expect(PcrSelection.parse(s.toString()).equals(s)).toBe(true);
      }),
    );
  });
});
