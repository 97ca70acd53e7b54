/**
 * The replay accounts for every quoted PCR: a value the log does not reproduce exactly is refused (PCRs 0-9) or kept
 * out of every fact (other PCRs), and only the replay can vouch for events. Each test is a way a node could try to
 * have a PCR pass without the log explaining it.
 */
import { describe, expect, it } from 'vitest';
import { AttestationRefused } from '../../src/errors.js';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventLogReplayFailed, VerifiedEvents, computePcrs, replayEventLog, type PcrBankValues } from '../../src/tpm/replay.js';
import { toHex } from '../../src/tpm/bytes.js';
import { agileEvent, ALG, ascii, buildAgileLog, concat, extend, hash, specIdEvent, type SyntheticEvent } from './eventlog-builder.js';

const postCode = (pcr: number, text: string): SyntheticEvent => ({ pcr, type: EventType.EV_POST_CODE, data: ascii(text) });
const logOf = (events: readonly SyntheticEvent[], banks: ('sha1' | 'sha256')[] = ['sha256']) => parseEventLog(buildAgileLog(events, banks));
const quote = (entries: Record<string, [number, Uint8Array][]>): PcrBankValues => new Map(Object.entries(entries).map(([bank, values]) => [bank, new Map(values)]));
const zeros = (n = 32) => new Uint8Array(n);
const ones = (n = 32) => new Uint8Array(n).fill(0xff);

function refused(fn: () => unknown): EventLogReplayFailed {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EventLogReplayFailed);
    expect(err).toBeInstanceOf(AttestationRefused);
    return err as EventLogReplayFailed;
  }
  throw new Error('expected the replay to be refused');
}

describe('a firmware PCR the log does not explain is refused', () => {
  it('PCR 4 extended but no PCR 4 event in the log, whatever bytes of the value are zero', () => {
    const log = logOf([postCode(0, 'fw')]);
    const partlyZero = new Uint8Array(32).fill(0xab);
    partlyZero[0] = 0;
    const err = refused(() => replayEventLog(log, { values: quote({ sha256: [[0, computePcrs(log).get('sha256')!.get(0)!], [4, partlyZero]] }) }));
    expect(err.invalidPcrs).toEqual([{ bank: 'sha256', index: 4, quoted: toHex(partlyZero), replayed: `${'00'.repeat(32)} (no events)` }]);
  });

  it('a quoted value that only starts with the replayed value does not match', () => {
    const log = logOf([postCode(0, 'fw')]);
    const replayed = computePcrs(log).get('sha256')!.get(0)!;
    const longer = new Uint8Array([...replayed, 0]);
    const err = refused(() => replayEventLog(log, { values: quote({ sha256: [[0, longer]] }) }, { quirks: [] }));
    expect(err.invalidPcrs.map((m) => m.index)).toEqual([0]);
  });

  it('the refusal names every PCR, in index order, with quoted and replayed values', () => {
    const log = logOf([postCode(4, 'shim'), postCode(9, 'kernel')]);
    const computed = computePcrs(log).get('sha256')!;
    const bad9 = ones();
    const bad4 = new Uint8Array(32).fill(4);
    const err = refused(() => replayEventLog(log, { values: quote({ sha256: [[9, bad9], [4, bad4]] }) }, { quirks: [] }));
    const [r4, r9] = [toHex(computed.get(4)!), toHex(computed.get(9)!)];
    expect(err.message).toBe(
      `event log does not replay to the quoted PCRs: sha256:4 (quoted ${'04'.repeat(32)}, replayed ${r4}); sha256:9 (quoted ${'ff'.repeat(32)}, replayed ${r9})`,
    );
    expect(err.fields).toMatchObject({
      rule: 'eventlog replay',
      pcrs: 'sha256:4,sha256:9',
      'sha256:4.quoted': '04'.repeat(32),
      'sha256:4.replayed': r4,
      'sha256:9.quoted': 'ff'.repeat(32),
      'sha256:9.replayed': r9,
    });
  });
});

describe('reset values', () => {
  it('PCRs 17-22 reset to all ones and the others to zero: at reset they need no events', () => {
    const log = logOf([postCode(0, 'fw')]);
    const pcr0 = computePcrs(log).get('sha256')!.get(0)!;
    const verified = replayEventLog(log, { values: quote({ sha256: [[0, pcr0], [16, zeros()], [17, ones()], [22, ones()], [23, zeros()]] }) });
    expect([...verified.explainedPcrs].sort((a, b) => a - b)).toEqual([0, 16, 17, 22, 23]);
    expect([...verified.unexplainedPcrs]).toEqual([]);
  });

  it('a DRTM PCR quoted at zero, or PCR 23 at all ones, is not at reset: unexplained', () => {
    const log = logOf([postCode(0, 'fw')]);
    const pcr0 = computePcrs(log).get('sha256')!.get(0)!;
    const verified = replayEventLog(log, { values: quote({ sha256: [[0, pcr0], [17, zeros()], [22, zeros()], [23, ones()]] }) });
    expect([...verified.unexplainedPcrs].sort((a, b) => a - b)).toEqual([17, 22, 23]);
    expect([...verified.explainedPcrs]).toEqual([0]);
  });

  it('PCR 0 starts at 0…03 for StartupLocality 3, at zero for 0, and any other locality is refused at parse', () => {
    const startup2 = agileEvent(0, EventType.EV_NO_ACTION, [{ id: ALG.sha256, digest: zeros() }], new Uint8Array([...ascii('StartupLocality\0'), 2]));
    expect(() => parseEventLog(concat([specIdEvent([{ id: ALG.sha256, size: 32 }]), startup2]))).toThrow(/StartupLocality/);
    for (const [locality, start] of [[3, 3], [0, 0]] as const) {
      const startup = agileEvent(0, EventType.EV_NO_ACTION, [{ id: ALG.sha256, digest: zeros() }], new Uint8Array([...ascii('StartupLocality\0'), locality]));
      const event = agileEvent(0, EventType.EV_POST_CODE, [{ id: ALG.sha256, digest: hash('sha256', ascii('fw')) }], ascii('fw'));
      const log = parseEventLog(concat([specIdEvent([{ id: ALG.sha256, size: 32 }]), startup, event]));
      const initial = zeros();
      initial[31] = start;
      expect(toHex(computePcrs(log).get('sha256')!.get(0)!)).toBe(toHex(extend('sha256', initial, hash('sha256', ascii('fw')))));
    }
  });

  it('a log with no extended event at all replays against PCRs at reset without failing', () => {
    const log = parseEventLog(specIdEvent([{ id: ALG.sha256, size: 32 }]));
    const verified = replayEventLog(log, { values: quote({ sha256: [[0, zeros()], [7, zeros()]] }) });
    expect([...verified.explainedPcrs]).toEqual([0, 7]);
    expect(verified.events).toEqual([]);
  });
});

describe('banks', () => {
  it('a quoted bank this project cannot hash explains nothing and is not compared', () => {
    const sm3 = 0x0012;
    const fw = agileEvent(0, EventType.EV_POST_CODE, [{ id: ALG.sha256, digest: hash('sha256', ascii('fw')) }, { id: sm3, digest: ones() }], ascii('fw'));
    const log = parseEventLog(concat([specIdEvent([{ id: ALG.sha256, size: 32 }, { id: sm3, size: 32 }]), fw]));
    expect(log.banks).toEqual(['sha256', 'alg_0x0012']);
    const pcr0 = computePcrs(log).get('sha256')!.get(0)!;
    const verified = replayEventLog(log, { values: quote({ sha256: [[0, pcr0]], alg_0x0012: [[0, ones()]] }) });
    expect(verified.events.map((e) => [...e.digests.keys()])).toEqual([['sha256']]);
  });

  it('a PCR explained in one bank but unexplained in another is unexplained, so facts on it are unknown', () => {
    const log = logOf([postCode(0, 'fw')], ['sha1', 'sha256']);
    const pcrs = computePcrs(log);
    const verified = replayEventLog(log, {
      values: quote({ sha1: [[0, pcrs.get('sha1')!.get(0)!], [12, zeros(20)]], sha256: [[0, pcrs.get('sha256')!.get(0)!], [12, new Uint8Array(32).fill(7)]] }),
    });
    expect([...verified.unexplainedPcrs]).toEqual([12]);
    expect(verified.explainedPcrs.has(12)).toBe(false);
    expect(deriveBootFacts(verified).kernelCommandLines).toEqual({ known: false, reason: 'PCR 12 was extended but the log has no event for it' });
  });

  it('a bank quoted without values is not kept as quoted', () => {
    const log = logOf([postCode(0, 'fw')]);
    const verified = replayEventLog(log, { values: quote({ sha1: [], sha256: [[0, computePcrs(log).get('sha256')!.get(0)!]] }) });
    expect([...verified.quotedPcrs.keys()]).toEqual(['sha256']);
  });
});

describe('only the replay makes VerifiedEvents', () => {
  it('the constructor refuses any other caller, and the result is frozen', () => {
    const Ctor = VerifiedEvents as unknown as new (token: symbol, init: unknown) => VerifiedEvents;
    expect(() => new Ctor(Symbol('VerifiedEvents.create'), {})).toThrow(new TypeError('VerifiedEvents can only be created by replayEventLog'));
    const log = logOf([postCode(0, 'fw')]);
    const verified = replayEventLog(log, { values: computePcrs(log) });
    expect(Object.isFrozen(verified)).toBe(true);
    expect(() => Object.assign(verified, { format: 'legacy' })).toThrow(TypeError);
  });

  it('isVerifiedEvents is true only for a replay result, and never throws', () => {
    const log = logOf([postCode(0, 'fw')]);
    expect(VerifiedEvents.isVerifiedEvents(replayEventLog(log, { values: computePcrs(log) }))).toBe(true);
    for (const value of [null, undefined, 5, 'events', {}, { events: [] }, () => undefined]) expect(VerifiedEvents.isVerifiedEvents(value)).toBe(false);
  });
});
