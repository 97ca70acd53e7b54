/** Property tests (fast-check): the parser is total over bytes, and replay equals extending by hand. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MalformedInput } from '../../src/errors.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { toHex } from '../../src/tpm/bytes.js';
import { buildAgileLog, buildLegacyLog, extend, hash, type Bank } from './eventlog-builder.js';

const FIXTURE = readFileSync(join(import.meta.dirname, '../fixtures/eventlog/gtt-cos-85-amd-sev.bin'));

function parsesOrMalformed(bytes: Uint8Array): void {
  try {
    parseEventLog(bytes);
  } catch (err) {
    expect(err).toBeInstanceOf(MalformedInput);
  }
}

describe('parseEventLog is total', () => {
  it('any byte array parses or throws MalformedInput, nothing else', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => parsesOrMalformed(bytes)), { numRuns: 2000 });
  });

  it('any truncation of a real log parses or throws MalformedInput', () => {
    fc.assert(fc.property(fc.nat({ max: FIXTURE.length }), (n) => parsesOrMalformed(FIXTURE.subarray(0, n))), { numRuns: 500 });
  });

  it('any single-byte corruption of a real log parses or throws MalformedInput', () => {
    fc.assert(
      fc.property(fc.nat({ max: FIXTURE.length - 1 }), fc.integer({ min: 0, max: 255 }), (at, value) => {
        const bytes = Uint8Array.from(FIXTURE);
        bytes[at] = value;
        parsesOrMalformed(bytes);
      }),
      { numRuns: 500 },
    );
  });
});

const eventArb = fc.record({
  pcr: fc.integer({ min: 0, max: 23 }),
  type: fc.constantFrom(0x1, 0x4, 0xd, 0x80000001, 0x80000003, 0x80000007),
  data: fc.uint8Array({ maxLength: 64 }),
});

describe('a generated log replays to the PCRs built by extending it', () => {
  it.each([['agile', ['sha1', 'sha256', 'sha384'] as Bank[]], ['legacy', ['sha1'] as Bank[]]])('%s', (kind, banks) => {
    fc.assert(
      fc.property(fc.array(eventArb, { minLength: kind === 'legacy' ? 1 : 0, maxLength: 40 }), (events) => {
        const bytes = kind === 'agile' ? buildAgileLog(events, banks) : buildLegacyLog(events);
        const expected = new Map<string, Map<number, Uint8Array>>();
        for (const bank of banks) {
          const pcrs = new Map<number, Uint8Array>();
          for (const e of events) pcrs.set(e.pcr, extend(bank, pcrs.get(e.pcr) ?? new Uint8Array(hash(bank, new Uint8Array()).length), hash(bank, e.data)));
          if (pcrs.size > 0) expected.set(bank, pcrs);
        }
        const log = parseEventLog(bytes);
        const computed = computePcrs(log);
        expect([...computed.keys()]).toEqual([...expected.keys()]);
        for (const [bank, pcrs] of expected) {
          for (const [index, value] of pcrs) expect(toHex(computed.get(bank)!.get(index)!)).toBe(toHex(value));
        }
        const verified = replayEventLog(log, { values: expected });
        expect(verified.events).toHaveLength(events.length);
      }),
      { numRuns: 200 },
    );
  });
});
