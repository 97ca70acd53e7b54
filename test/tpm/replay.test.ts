import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { AttestationRefused, GrpcCode } from '../../src/errors.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EVENT_LOG_QUIRKS } from '../../src/tpm/eventlog-quirks.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { EventLogReplayFailed, VerifiedEvents, computePcrs, replayEventLog, type PcrBankValues } from '../../src/tpm/replay.js';
import { toHex } from '../../src/tpm/bytes.js';
import { expectError } from './expect-error.js';
import { ascii, buildAgileLog, extend, hash } from './eventlog-builder.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/eventlog');
const cos85 = () => readFileSync(join(FIXTURES, 'gtt-cos-85-amd-sev.bin'));

function replayFails(fn: () => unknown): EventLogReplayFailed {
  return expectError(fn, AttestationRefused, 'ERR_EVENTLOG_REPLAY', GrpcCode.PERMISSION_DENIED) as EventLogReplayFailed;
}

function withValue(values: PcrBankValues, bank: string, index: number, value: Uint8Array): PcrBankValues {
  const copy = new Map([...values].map(([b, m]) => [b, new Map(m)]));
  copy.get(bank)!.set(index, value);
  return copy;
}

describe('replayEventLog', () => {
  it('a flipped digest in the log fails naming the PCR, quoted and replayed values', () => {
    const good = parseEventLog(cos85());
    const quoted = computePcrs(good);
    const bytes = Uint8Array.from(cos85());
    // Flip one byte inside the sha256 digest of the first PCR 4 event.
    const target = good.untrustedEvents.find((e) => e.pcrIndex === 4)!;
    const at = target.offset + 12 + (2 + 20) + 2; // pcr, type, count, sha1 TPMT_HA, sha256 alg id
    bytes[at] ^= 0xff;
    const err = replayFails(() => replayEventLog(parseEventLog(bytes), { values: quoted }, { quirks: [] }));
    expect(err.invalidPcrs.map((m) => `${m.bank}:${m.index}`)).toEqual(['sha256:4']);
    expect(err.invalidPcrs[0]!.quoted).toBe(toHex(quoted.get('sha256')!.get(4)!));
    expect(err.fields.pcrs).toBe('sha256:4');
  });

  it('a log that does not match the PCRs lists every mismatched bank:index', () => {
    const log = parseEventLog(cos85());
    let quoted = computePcrs(log);
    quoted = withValue(quoted, 'sha1', 0, new Uint8Array(20));
    quoted = withValue(quoted, 'sha256', 7, new Uint8Array(32).fill(1));
    const err = replayFails(() => replayEventLog(log, { values: quoted }));
    expect(err.invalidPcrs.map((m) => `${m.bank}:${m.index}`)).toEqual(['sha1:0', 'sha256:7']);
  });

  it('quoted PCRs the log does not extend are kept but verify no event; unquoted banks expose no digests', () => {
    const log = parseEventLog(cos85());
    const sha256 = new Map(computePcrs(log).get('sha256')!);
    sha256.set(10, new Uint8Array(32).fill(0xaa)); // IMA PCR, not in this log
    const verified = replayEventLog(log, { values: new Map([['sha256', sha256]]) });
    expect(verified.quotedPcrs.get('sha256')!.has(10)).toBe(true);
    expect(verified.replayedPcrs.get('sha256')!.has(10)).toBe(false);
    expect(verified.events.every((e) => [...e.digests.keys()].join() === 'sha256')).toBe(true);
  });

  it('only events on matched PCRs are verified', () => {
    const log = parseEventLog(cos85());
    const only7 = new Map([['sha256', new Map([[7, computePcrs(log).get('sha256')!.get(7)!]])]]);
    const verified = replayEventLog(log, { values: only7 });
    expect(new Set(verified.events.map((e) => e.pcrIndex))).toEqual(new Set([7]));
  });

  it('accepts a QuotedPcrs-shaped input (bank(name))', () => {
    const log = parseEventLog(cos85());
    const computed = computePcrs(log);
    const quotedLike = { bank: (name: string) => computed.get(name) ?? new Map<number, Uint8Array>() };
    expect(replayEventLog(log, quotedLike).replayedPcrs.get('sha384')!.size).toBe(10);
  });

  it('VerifiedEvents cannot be forged by a literal or constructed outside replay', () => {
    expectTypeOf({ events: [], quotedPcrs: new Map(), replayedPcrs: new Map(), appliedQuirks: [], format: 'legacy-sha1' as const }).not.toMatchTypeOf<VerifiedEvents>();
    expect(() => new VerifiedEvents(Symbol('VerifiedEvents.create'), {} as never)).toThrow(TypeError);
    expect(VerifiedEvents.isVerifiedEvents({ events: [] })).toBe(false);
  });
});

describe('firmware quirks', () => {
  const events = [
    { pcr: 4, type: EventType.EV_EFI_ACTION, data: ascii('Calling EFI Application from Boot Option') },
    { pcr: 5, type: EventType.EV_SEPARATOR, data: new Uint8Array(4) },
  ];
  const log = () => parseEventLog(buildAgileLog(events, ['sha256']));
  const pcr5WithEbs = (also: string[]) => {
    let pcr5 = computePcrs(log()).get('sha256')!.get(5)!;
    for (const text of also) pcr5 = extend('sha256', pcr5, hash('sha256', ascii(text)));
    return withValue(computePcrs(log()), 'sha256', 5, pcr5);
  };

  it('the table names the unlogged ExitBootServices quirk for PCR 5', () => {
    expect(EVENT_LOG_QUIRKS.find((q) => q.id === 'exit-boot-services-unlogged')?.pcrIndex).toBe(5);
  });

  it('ExitBootServices extended into PCR 5 without being logged: strict replay fails, the quirk is applied and reported', () => {
    const quoted = pcr5WithEbs(['Exit Boot Services Invocation', 'Exit Boot Services Returned with Success']);
    replayFails(() => replayEventLog(log(), { values: quoted }, { quirks: [] }));
    const verified = replayEventLog(log(), { values: quoted });
    expect(verified.appliedQuirks.map((q) => q.id)).toEqual(['exit-boot-services-unlogged']);
    expect(verified.onPcr(5).filter((e) => e.quirk === 'exit-boot-services-unlogged')).toHaveLength(2);
  });

  it('a quirk never hides a mismatch it does not explain', () => {
    const quoted = withValue(pcr5WithEbs(['Exit Boot Services Invocation']), 'sha256', 4, new Uint8Array(32));
    const err = replayFails(() => replayEventLog(log(), { values: quoted }));
    expect(err.invalidPcrs.map((m) => `${m.bank}:${m.index}`)).toEqual(['sha256:4', 'sha256:5']);
  });

  it('a strict match applies no quirk', () => {
    expect(replayEventLog(log(), { values: computePcrs(log()) }).appliedQuirks).toEqual([]);
  });
});

describe('replayEventLog: quoted PCRs the log does not extend', () => {
  const log = () => parseEventLog(buildAgileLog([{ pcr: 0, type: EventType.EV_POST_CODE, data: ascii('firmware') }], ['sha256']));
  const quotedWith = (index: number, value: Uint8Array): PcrBankValues => withValue(computePcrs(log()), 'sha256', index, value);

  it('PCR 0-9 extended but absent from the log: the replay fails, naming it', () => {
    const err = replayFails(() => replayEventLog(log(), { values: quotedWith(4, hash('sha256', ascii('shim'))) }));
    expect(err.invalidPcrs.map((m) => [`${m.bank}:${m.index}`, m.replayed])).toEqual([['sha256:4', `${'0'.repeat(64)} (no events)`]]);
  });

  it('PCR 0-9 at its reset value with no event: explained, nothing to verify', () => {
    const verified = replayEventLog(log(), { values: quotedWith(4, new Uint8Array(32)) });
    expect([...verified.explainedPcrs].sort()).toEqual([0, 4]);
    expect(verified.unexplainedPcrs.size).toBe(0);
  });

  it('another PCR (12) extended but absent: not a replay failure, but unexplained (facts on it are unknown)', () => {
    const verified = replayEventLog(log(), { values: quotedWith(12, hash('sha256', ascii('x'))) });
    expect([...verified.unexplainedPcrs]).toEqual([12]);
    expect(verified.explainedPcrs.has(12)).toBe(false);
  });

  it('PCRs 17-22 reset to all ones', () => {
    const verified = replayEventLog(log(), { values: quotedWith(17, new Uint8Array(32).fill(0xff)) });
    expect(verified.explainedPcrs.has(17)).toBe(true);
    expect(replayEventLog(log(), { values: quotedWith(17, new Uint8Array(32)) }).unexplainedPcrs.has(17)).toBe(true);
  });

  it('a bank the log does not carry explains nothing and is not compared', () => {
    const sha1Only = new Map([['sha1', new Map([[4, new Uint8Array(20).fill(9)]])]]);
    const verified = replayEventLog(log(), { values: sha1Only });
    expect([verified.replayedPcrs.size, verified.explainedPcrs.size, verified.unexplainedPcrs.size]).toEqual([0, 0, 0]);
  });
});
