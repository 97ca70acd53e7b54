/**
 * Spec ID events whose vendorInfo runs past the declared event size (TCG PC Client PFP §10.4.5.1
 * TCG_EfiSpecIDEvent: ... numberOfAlgorithms, digestSizes[], vendorInfoSize u8, vendorInfo[vendorInfoSize]).
 * tpm2-tools reads them (its fixture specid-vendordata.bin: eventSize 37 ends at vendorInfoSize, the 4 vendorInfo
 * bytes follow). Accepted as the named parse quirk `spec-id-vendor-info-past-event-size`; what does not fit that
 * shape stays malformed. Bytes are written here from the PFP layout.
 */
import { describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { toHex } from '../../src/tpm/bytes.js';
import { BytesWriter } from '../../src/tpm/bytes.js';
import { parseEventLog, SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { computePcrs } from '../../src/tpm/replay.js';
import { expectError } from './expect-error.js';
import { ALG, agileEvent, ascii, concat, extend, hash, specIdEvent } from './eventlog-builder.js';

/** The Spec ID body up to and including vendorInfoSize (TCG_EfiSpecIDEvent), for sha1 + sha256. */
function specIdHead(vendorInfoSize: number): Uint8Array {
  return new BytesWriter()
    .bytes(ascii('Spec ID Event03\0'))
    .u32le(0).u8(0).u8(2).u8(0).u8(2)
    .u32le(2).u16le(ALG.sha1).u16le(20).u16le(ALG.sha256).u16le(32)
    .u8(vendorInfoSize)
    .finish();
}
/** TCG_PCClientPCREvent header with an explicit eventSize, then `body` (which may be longer than eventSize). */
function firstEvent(eventSize: number, body: Uint8Array): Uint8Array {
  return new BytesWriter().u32le(0).u32le(EventType.EV_NO_ACTION).bytes(new Uint8Array(20)).u32le(eventSize).bytes(body).finish();
}
const VENDOR = Uint8Array.of(0xde, 0xad, 0xbe, 0xef);
const separator = agileEvent(7, EventType.EV_SEPARATOR, [{ id: ALG.sha1, digest: hash('sha1', new Uint8Array(4)) }, { id: ALG.sha256, digest: hash('sha256', new Uint8Array(4)) }], new Uint8Array(4));
const malformed = (bytes: Uint8Array, message: RegExp) => {
  const err = expectError(() => parseEventLog(bytes), MalformedInput, 'ERR_EVENTLOG_MALFORMED', GrpcCode.INVALID_ARGUMENT);
  expect(err.message).toMatch(message);
};

describe('Spec ID vendorInfo past the declared event size', () => {
  it('tpm2-tools\' shape: eventSize 37 ends at vendorInfoSize, the 4 vendorInfo bytes follow; the next event parses and replays', () => {
    const head = specIdHead(4);
    expect(head.length).toBe(37);
    const log = parseEventLog(concat([firstEvent(37, concat([head, VENDOR])), separator]));
    expect(log.parseQuirks).toEqual([SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE]);
    expect(toHex(log.specId!.vendorInfo)).toBe('deadbeef');
    expect(log.banks).toEqual(['sha1', 'sha256']);
    expect(log.untrustedEvents.map((e) => [e.pcrIndex, e.type])).toEqual([[0, EventType.EV_NO_ACTION], [7, EventType.EV_SEPARATOR]]);
    expect(toHex(computePcrs(log).get('sha256')!.get(7)!)).toBe(toHex(extend('sha256', new Uint8Array(32), hash('sha256', new Uint8Array(4)))));
  });

  it('the same log with nothing after the Spec ID event (tpm2-tools\' fixture itself)', () => {
    const log = parseEventLog(firstEvent(37, concat([specIdHead(4), VENDOR])));
    expect([log.parseQuirks, toHex(log.specId!.vendorInfo), log.untrustedEvents.length]).toEqual([[SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE], 'deadbeef', 1]);
  });

  it('an eventSize that covers part of vendorInfo: the rest is read from after the event', () => {
    const log = parseEventLog(concat([firstEvent(39, concat([specIdHead(4), VENDOR])), separator]));
    expect([log.parseQuirks, toHex(log.specId!.vendorInfo), log.untrustedEvents.length]).toEqual([[SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE], 'deadbeef', 2]);
  });

  it('a Spec ID event that follows the PFP needs no quirk', () => {
    const log = parseEventLog(concat([specIdEvent([{ id: ALG.sha1, size: 20 }, { id: ALG.sha256, size: 32 }], VENDOR), separator]));
    expect([log.parseQuirks, toHex(log.specId!.vendorInfo)]).toEqual([[], 'deadbeef']);
  });

  it.each([
    ['vendorInfo runs past the end of the log', firstEvent(37, concat([specIdHead(4), VENDOR.subarray(0, 2)])), /event 0 at offset 0: Spec ID event: vendorInfoSize 4 runs past the end of the log/],
    ['eventSize cuts into the algorithm list', firstEvent(30, specIdHead(0)), /event 0 at offset 0: Spec ID event: numberOfAlgorithms 2 runs past the end/],
    ['eventSize ends before vendorInfoSize', firstEvent(36, concat([specIdHead(4), VENDOR])), /event 0 at offset 36: TCG_EfiSpecIDEvent: vendorInfoSize: needs 1 bytes/],
    ['trailing bytes after vendorInfo inside the event', firstEvent(42, concat([specIdHead(4), VENDOR, Uint8Array.of(0)])), /1 trailing bytes after vendorInfo/],
  ])('malformed: %s', (_name, bytes, message) => malformed(bytes, message));
});
