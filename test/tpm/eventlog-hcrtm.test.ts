/**
 * Platforms with an H-CRTM or a locality-3 startup (TCG PC Client PFP §10.4.5.3 StartupLocality, §3.3.4.1 and
 * §10.4.1 EV_EFI_HCRTM_EVENT; TPM 2.0 Part 1 §34.3): PCR 0 does not start at zero. Logs are written byte by byte
 * from the PFP structures; expected PCR values are computed here with node:crypto, independently of replay.ts.
 * The swtpm half starts real TPMs that way (swtpm_ioctl -l 3 / -h) and replays against what they report.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { inspectEventLog } from '../../src/cli/eventlog-inspect.js';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { parsePcrValues, PcrSelection } from '../../src/tpm/pcrs.js';
import { EventLogReplayFailed, replayEventLog, type PcrBankValues } from '../../src/tpm/replay.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { startSwtpm, tpm2, type SwtpmHandle, type SwtpmStartup } from '../helpers/swtpm.js';
import { expectError } from './expect-error.js';
import { ascii, buildAgileLog, concat, extend, hash, type Bank, type SyntheticEvent } from './eventlog-builder.js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ALL_BANKS: Bank[] = ['sha1', 'sha256', 'sha384', 'sha512'];
const malformed = (fn: () => unknown, message: RegExp) => {
  const err = expectError(fn, MalformedInput, 'ERR_EVENTLOG_MALFORMED', GrpcCode.INVALID_ARGUMENT);
  expect(err.fields).toHaveProperty('offset');
  expect(err.message).toMatch(message);
};

const startupLocality = (locality: number, extra: Uint8Array = new Uint8Array(0)): SyntheticEvent => ({
  pcr: 0,
  type: EventType.EV_NO_ACTION,
  data: concat([ascii('StartupLocality\0'), Uint8Array.of(locality), extra]),
});
/** What the H-CRTM hashed (the TPM hashes it in every bank); the log's event data is the PFP string "HCRTM". */
const HCRTM_CODE = ascii('H-CRTM code measured by the chipset before the CPU ran anything');
const hcrtmEvent = (pcr = 0): SyntheticEvent => ({
  pcr,
  type: EventType.EV_EFI_HCRTM_EVENT,
  data: ascii('HCRTM'),
  digests: Object.fromEntries(ALL_BANKS.map((b) => [b, hash(b, HCRTM_CODE)])),
});
const firmwareEvents: SyntheticEvent[] = [
  { pcr: 0, type: EventType.EV_S_CRTM_VERSION, data: ascii('1.00\0') },
  { pcr: 0, type: EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, data: ascii('firmware volume') },
  { pcr: 1, type: EventType.EV_EFI_HANDOFF_TABLES, data: ascii('tables') },
  ...[0, 1, 7].map((pcr) => ({ pcr, type: EventType.EV_SEPARATOR, data: new Uint8Array(4) })),
];

/** PCR values computed from first principles: start value, then PCR := H(PCR || H(data)) for each event. */
function expectedPcrs(banks: readonly Bank[], pcr0Start: (bank: Bank) => Uint8Array, events: readonly SyntheticEvent[]): PcrBankValues {
  const out = new Map<string, Map<number, Uint8Array>>();
  for (const bank of banks) {
    const values = new Map<number, Uint8Array>();
    for (const e of events) {
      if (e.type === EventType.EV_NO_ACTION) continue;
      const start = e.pcr === 0 ? pcr0Start(bank) : new Uint8Array(HashAlg.parse(bank).size);
      values.set(e.pcr, extend(bank, values.get(e.pcr) ?? start, e.digests?.[bank] ?? hash(bank, e.data)));
    }
    out.set(bank, values);
  }
  return out;
}
const localityStart = (locality: number) => (bank: Bank) => {
  const v = new Uint8Array(HashAlg.parse(bank).size);
  v[v.length - 1] = locality;
  return v;
};
/** TPM 2.0 Part 1 §34.3: _TPM_Hash_End sets PCR 0 to H(0…04 || H(data)). */
const hcrtmStart = (bank: Bank) => extend(bank, localityStart(4)(bank), hash(bank, HCRTM_CODE));

describe('H-CRTM and StartupLocality: replay in every bank', () => {
  it('H-CRTM: StartupLocality 4 then EV_EFI_HCRTM_EVENT replays in sha1, sha256, sha384 and sha512', () => {
    const events = [startupLocality(4), hcrtmEvent(), ...firmwareEvents];
    const log = parseEventLog(buildAgileLog(events, ALL_BANKS));
    expect(log.startupLocality).toBe(4);
    const quoted = expectedPcrs(ALL_BANKS, localityStart(4), events);
    expect(toHexMap(quoted, 0)).toEqual(toHexMap(expectedPcrs(ALL_BANKS, hcrtmStart, firmwareEvents), 0));
    const verified = replayEventLog(log, { values: quoted });
    for (const bank of ALL_BANKS) expect(verified.replayedPcrs.get(bank)?.has(0), bank).toBe(true);
    expect(verified.onPcr(0).map((e) => e.type)[0]).toBe(EventType.EV_EFI_HCRTM_EVENT);
    expect(verified.appliedQuirks).toEqual([]);
    const inspected = inspectEventLog(buildAgileLog(events, ALL_BANKS), { json: true });
    expect([inspected.startupLocality, inspected.events[1]!.description, inspected.events[2]!.description]).toEqual([4, 'StartupLocality 4', 'H-CRTM measurement (HCRTM)']);
  });

  it('locality 3: PCR 0 starts at 0…03 in every bank', () => {
    const events = [startupLocality(3), ...firmwareEvents];
    const quoted = expectedPcrs(ALL_BANKS, localityStart(3), events);
    const verified = replayEventLog(parseEventLog(buildAgileLog(events, ALL_BANKS)), { values: quoted });
    expect([...verified.replayedPcrs.keys()]).toEqual(ALL_BANKS);
  });

  it('a log that hides the StartupLocality (or claims another) does not replay against a locality-3 TPM', () => {
    const quoted = expectedPcrs(ALL_BANKS, localityStart(3), firmwareEvents);
    for (const events of [firmwareEvents, [startupLocality(0), ...firmwareEvents], [startupLocality(4), ...firmwareEvents]]) {
      const err = expectError(
        () => replayEventLog(parseEventLog(buildAgileLog(events, ALL_BANKS)), { values: quoted }),
        EventLogReplayFailed,
        'ERR_EVENTLOG_REPLAY',
        GrpcCode.PERMISSION_DENIED,
      ) as EventLogReplayFailed;
      expect(err.invalidPcrs.map((m) => `${m.bank}:${m.index}`)).toEqual(ALL_BANKS.map((b) => `${b}:0`));
    }
  });

  it('dropping the EV_EFI_HCRTM_EVENT (or the locality) from an H-CRTM log fails the PCR 0 replay', () => {
    const quoted = expectedPcrs(ALL_BANKS, hcrtmStart, firmwareEvents);
    expect(() => replayEventLog(parseEventLog(buildAgileLog([startupLocality(4), ...firmwareEvents], ALL_BANKS)), { values: quoted })).toThrow(EventLogReplayFailed);
    expect(() => replayEventLog(parseEventLog(buildAgileLog(firmwareEvents, ALL_BANKS)), { values: quoted })).toThrow(EventLogReplayFailed);
  });
});

describe('H-CRTM and StartupLocality: malformed logs are refused, naming the event', () => {
  const parse = (events: SyntheticEvent[]) => () => parseEventLog(buildAgileLog(events, ['sha256']));
  it.each([
    ['locality 1', [startupLocality(1)], /event 1 .*StartupLocality 1 is not 0, 3 or 4/],
    ['locality 2', [startupLocality(2)], /StartupLocality 2 is not 0, 3 or 4/],
    ['locality 5', [startupLocality(5)], /StartupLocality 5 is not 0, 3 or 4/],
    ['a StartupLocality event with a trailing byte', [startupLocality(3, Uint8Array.of(0))], /StartupLocality event is 18 bytes, not 17/],
    ['a StartupLocality event after an extend of PCR 0', [firmwareEvents[0]!, startupLocality(3)], /event 2 .*StartupLocality event after an extend of PCR 0/],
    ['two StartupLocality events', [startupLocality(3), startupLocality(3)], /event 2 .*a second StartupLocality event/],
    ['EV_EFI_HCRTM_EVENT without StartupLocality', [hcrtmEvent()], /EV_EFI_HCRTM_EVENT needs a preceding StartupLocality 4 event \(found none\)/],
    ['EV_EFI_HCRTM_EVENT with StartupLocality 3', [startupLocality(3), hcrtmEvent()], /\(found 3\)/],
    ['EV_EFI_HCRTM_EVENT on PCR 1', [startupLocality(4), hcrtmEvent(1)], /EV_EFI_HCRTM_EVENT on PCR 1, not PCR 0/],
    ['EV_EFI_HCRTM_EVENT after another PCR 0 extend', [startupLocality(4), firmwareEvents[0]!, hcrtmEvent()], /event 3 .*is not the first extend of PCR 0/],
    ['two EV_EFI_HCRTM_EVENTs', [startupLocality(4), hcrtmEvent(), hcrtmEvent()], /event 3 .*a second EV_EFI_HCRTM_EVENT/],
  ])('%s', (_name, events, message) => malformed(parse(events), message));

  it('control: StartupLocality 0, or an H-CRTM log with the events in PFP order, parses', () => {
    expect(parse([startupLocality(0), ...firmwareEvents])().startupLocality).toBe(0);
    expect(parse([startupLocality(4), hcrtmEvent(), ...firmwareEvents])().startupLocality).toBe(4);
  });
});

function toHexMap(values: PcrBankValues, index: number): Record<string, string> {
  return Object.fromEntries([...values].map(([bank, v]) => [bank, Buffer.from(v.get(index)!).toString('hex')]));
}

describe('H-CRTM and locality 3 on a real TPM (swtpm)', () => {
  const tpms: SwtpmHandle[] = [];
  const work = mkdtempSync(join(tmpdir(), 'hcrtm-'));
  afterAll(async () => {
    await Promise.all(tpms.map((t) => t.stop()));
    rmSync(work, { recursive: true, force: true });
  });

  async function readPcrs(tpm: SwtpmHandle, selection: PcrSelection): Promise<PcrBankValues> {
    const file = join(work, `pcrs-${tpms.length}-${Date.now()}`);
    await tpm2(tpm.tcti, 'tpm2_pcrread', ['-o', file, selection.toString()]);
    const out = new Map<string, Map<number, Uint8Array>>();
    for (const v of parsePcrValues(new Uint8Array(readFileSync(file)), selection)) {
      if (!out.has(v.hash.name)) out.set(v.hash.name, new Map());
      out.get(v.hash.name)!.set(v.index, v.value);
    }
    return out;
  }

  it.each<[string, SwtpmStartup, SyntheticEvent[]]>([
    ['H-CRTM (swtpm_ioctl -h before TPM2_Startup)', { hcrtm: HCRTM_CODE }, [startupLocality(4), hcrtmEvent(), ...firmwareEvents]],
    ['TPM2_Startup from locality 3', { locality: 3 }, [startupLocality(3), ...firmwareEvents]],
  ])('%s: the log replays to the TPM\'s own sha1 and sha256 PCRs; without the StartupLocality it does not', async (_name, startup, events) => {
    const tpm = await startSwtpm({ startup });
    tpms.push(tpm);
    const logBytes = buildAgileLog(events, ['sha1', 'sha256']);
    // The TPM did the H-CRTM extend itself; simulateMeasuredBoot extends only what firmware would extend after it.
    await simulateMeasuredBoot(tpm.tcti, buildAgileLog(events.filter((e) => e.type !== EventType.EV_EFI_HCRTM_EVENT), ['sha1', 'sha256']));
    const selection = PcrSelection.parse('sha1:0,1,7+sha256:0,1,7');
    const tpmPcrs = await readPcrs(tpm, selection);
    // Our independent computation agrees with the TPM: the start value really is what the PFP says.
    const start = 'hcrtm' in startup ? hcrtmStart : localityStart(3);
    expect(toHexMap(tpmPcrs, 0)).toEqual(toHexMap(expectedPcrs(['sha1', 'sha256'], start, firmwareEvents), 0));
    const verified = replayEventLog(parseEventLog(logBytes), { values: tpmPcrs });
    expect([...verified.replayedPcrs].map(([bank, v]) => `${bank}:${[...v.keys()].join(',')}`)).toEqual(['sha1:0,1,7', 'sha256:0,1,7']);
    const withoutLocality = buildAgileLog(events.filter((e) => e.type !== EventType.EV_NO_ACTION && e.type !== EventType.EV_EFI_HCRTM_EVENT), ['sha1', 'sha256']);
    expect(() => replayEventLog(parseEventLog(withoutLocality), { values: tpmPcrs })).toThrow(/sha1:0 .*sha256:0/);
    // A TPM restart (TPM Reset) repeats the same startup.
    await tpm.restart();
    const afterReset = await readPcrs(tpm, PcrSelection.parse('sha256:0'));
    expect(Buffer.from(afterReset.get('sha256')!.get(0)!).toString('hex')).toBe(Buffer.from(start('sha256')).toString('hex'));
  }, 120_000);
});
