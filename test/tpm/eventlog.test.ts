import { describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { MAX_EVENT_DATA, PCR_INDEX_NOT_EXTENDED, parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { computePcrs } from '../../src/tpm/replay.js';
import { toHex } from '../../src/tpm/bytes.js';
import { expectError } from './expect-error.js';
import {
  ALG,
  agileEvent,
  ascii,
  buildAgileLog,
  buildLegacyLog,
  concat,
  extend,
  hash,
  legacyEvent,
  specIdEvent,
} from './eventlog-builder.js';

const malformed = (fn: () => unknown) => expectError(fn, MalformedInput, 'ERR_EVENTLOG_MALFORMED', GrpcCode.INVALID_ARGUMENT);
const zero = (n: number) => new Uint8Array(n);

describe('parseEventLog: formats', () => {
  it('parses a crypto-agile log: Spec ID algorithms, then TCG_PCR_EVENT2 digests per bank', () => {
    const log = parseEventLog(buildAgileLog([{ pcr: 4, type: EventType.EV_EFI_ACTION, data: ascii('hello') }]));
    expect(log.trust).toBe('unverified');
    expect(log.format).toBe('crypto-agile');
    expect(log.banks).toEqual(['sha1', 'sha256']);
    expect(log.untrustedEvents).toHaveLength(2);
    const event = log.untrustedEvents[1]!;
    expect([event.pcrIndex, event.type, event.sequence]).toEqual([4, EventType.EV_EFI_ACTION, 1]);
    expect(toHex(event.digests.get('sha256')!)).toBe(toHex(hash('sha256', ascii('hello'))));
  });

  it('parses a legacy SHA-1 log (TCG_PCR_EVENT only)', () => {
    const log = parseEventLog(buildLegacyLog([{ pcr: 0, type: EventType.EV_S_CRTM_VERSION, data: ascii('v1') }]));
    expect(log.format).toBe('legacy-sha1');
    expect(log.banks).toEqual(['sha1']);
    expect(log.specId).toBeUndefined();
  });

  it('keeps the Spec ID vendor data', () => {
    const bytes = specIdEvent([{ id: ALG.sha256, size: 32 }], Uint8Array.of(1, 2, 3));
    expect(toHex(parseEventLog(bytes).specId!.vendorInfo)).toBe('010203');
  });

  it('accepts an algorithm it cannot hash, sized by the Spec ID event, and does not replay that bank', () => {
    const sm3 = 0x0012;
    const bytes = concat([
      specIdEvent([{ id: ALG.sha256, size: 32 }, { id: sm3, size: 32 }]),
      agileEvent(0, EventType.EV_POST_CODE, [{ id: ALG.sha256, digest: hash('sha256', ascii('x')) }, { id: sm3, digest: zero(32).fill(7) }], ascii('x')),
    ]);
    const log = parseEventLog(bytes);
    expect(log.banks).toEqual(['sha256', 'alg_0x0012']);
    expect(log.untrustedEvents[1]!.digests.get('alg_0x0012')).toHaveLength(32);
    expect([...computePcrs(log).keys()]).toEqual(['sha256']);
  });

  it('StartupLocality 3 starts PCR 0 at 0…03 and H-CRTM locality 4 at 0…04; EV_NO_ACTION is not extended', () => {
    for (const locality of [3, 4]) {
      const locEvent = { pcr: 0, type: EventType.EV_NO_ACTION, data: concat([ascii('StartupLocality\0'), Uint8Array.of(locality)]) };
      const log = parseEventLog(buildAgileLog([locEvent, { pcr: 0, type: EventType.EV_S_CRTM_VERSION, data: ascii('v') }], ['sha256']));
      expect(log.startupLocality).toBe(locality);
      const initial = zero(32);
      initial[31] = locality;
      expect(toHex(computePcrs(log).get('sha256')!.get(0)!)).toBe(toHex(extend('sha256', initial, hash('sha256', ascii('v')))));
    }
  });

  it('skips events on PCR index 0xFFFFFFFF (never extended)', () => {
    const log = parseEventLog(
      buildAgileLog([
        { pcr: PCR_INDEX_NOT_EXTENDED, type: EventType.EV_EFI_ACTION, data: ascii('info') },
        { pcr: 1, type: EventType.EV_EFI_ACTION, data: ascii('a') },
      ]),
    );
    expect(log.untrustedEvents).toHaveLength(3);
    expect([...computePcrs(log).get('sha1')!.keys()]).toEqual([1]);
  });

  it('copies its input: mutating the caller buffer afterwards changes nothing', () => {
    const bytes = buildAgileLog([{ pcr: 1, type: EventType.EV_EFI_ACTION, data: ascii('a') }]);
    const log = parseEventLog(bytes);
    const before = toHex(log.untrustedEvents[1]!.data);
    bytes.fill(0);
    expect(toHex(log.untrustedEvents[1]!.data)).toBe(before);
  });
});

describe('parseEventLog: hostile input (MalformedInput naming event and offset)', () => {
  it('empty input', () => {
    malformed(() => parseEventLog(new Uint8Array(0)));
  });

  it('event size past the end', () => {
    const good = buildAgileLog([{ pcr: 1, type: EventType.EV_EFI_ACTION, data: ascii('abc') }]);
    const first = specIdEvent([{ id: ALG.sha1, size: 20 }, { id: ALG.sha256, size: 32 }]).length;
    const bad = Uint8Array.from(good);
    // eventSize of event 1 sits after pcr, type, count and the two TPMT_HA: 4+4+4+(2+20)+(2+32).
    const sizeOffset = first + 4 + 4 + 4 + 22 + 34;
    new DataView(bad.buffer).setUint32(sizeOffset, 0xc0000000, true); // a 3 GB event
    const err = malformed(() => parseEventLog(bad));
    expect(err.fields).toMatchObject({ event: 1, offset: sizeOffset });
  });

  it('event size above MAX_EVENT_DATA is refused before reading', () => {
    const bytes = concat([legacyEvent(0, 1, zero(20), new Uint8Array(0), MAX_EVENT_DATA + 1), new Uint8Array(64)]);
    expect(malformed(() => parseEventLog(bytes)).fields.event).toBe(0);
  });

  it('truncated header', () => {
    const bytes = buildLegacyLog([{ pcr: 0, type: 1, data: ascii('a') }, { pcr: 0, type: 1, data: ascii('b') }]);
    expect(malformed(() => parseEventLog(bytes.subarray(0, bytes.length - 20))).fields.event).toBe(1);
  });

  it('digest algorithm not listed in the Spec ID event', () => {
    const bytes = concat([specIdEvent([{ id: ALG.sha256, size: 32 }]), agileEvent(0, 1, [{ id: ALG.sha384, digest: zero(48) }], ascii('a'))]);
    expect(malformed(() => parseEventLog(bytes)).fields.event).toBe(1);
  });

  it('more digests than Spec ID algorithms, or one bank twice', () => {
    const spec = specIdEvent([{ id: ALG.sha256, size: 32 }]);
    const twice = [{ id: ALG.sha256, digest: zero(32) }, { id: ALG.sha256, digest: zero(32) }];
    malformed(() => parseEventLog(concat([spec, agileEvent(0, 1, twice, ascii('a'))])));
    const spec2 = specIdEvent([{ id: ALG.sha1, size: 20 }, { id: ALG.sha256, size: 32 }]);
    const dup = [{ id: ALG.sha1, digest: zero(20) }, { id: ALG.sha1, digest: zero(20) }];
    malformed(() => parseEventLog(concat([spec2, agileEvent(0, 1, dup, ascii('a'))])));
  });

  it('Spec ID event with a wrong size for a known algorithm, no algorithms, or trailing bytes', () => {
    malformed(() => parseEventLog(specIdEvent([{ id: ALG.sha256, size: 20 }])));
    malformed(() => parseEventLog(specIdEvent([])));
    const spec = specIdEvent([{ id: ALG.sha256, size: 32 }]);
    const withTrailing = Uint8Array.from(concat([spec, Uint8Array.of(0)]));
    new DataView(withTrailing.buffer).setUint32(28, spec.length - 32 + 1, true); // eventSize + 1 covers the extra byte
    malformed(() => parseEventLog(withTrailing));
  });

  it('a second StartupLocality event', () => {
    const loc = { pcr: 0, type: EventType.EV_NO_ACTION, data: concat([ascii('StartupLocality\0'), Uint8Array.of(3)]) };
    malformed(() => parseEventLog(buildAgileLog([loc, loc])));
  });
});
