/**
 * `eventlog inspect FILE --pcrs PCRFILE`: the log replayed against given PCR values exactly as tpm-server replays it
 * against a quote (the same replayEventLog call, every firmware quirk, the require_event_log rule), saying which
 * workaround it used. The fixture pair is a real OVMF + shim + GRUB log (keylime's) with its two ExitBootServices
 * events removed, and the PCRs of a swtpm that measured the full log, as `tpm2_pcrread` printed them; the first test
 * re-derives those values from a fresh swtpm so the fixture cannot drift.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { inspectEventLog, type EventLogInspection } from '../../src/cli/eventlog-inspect.js';
import { MAX_PCRS_FILE_BYTES, parsePcrValuesFile } from '../../src/cli/pcr-values-file.js';
import { toHex } from '../../src/tpm/bytes.js';
import { goldenEvents } from '../adversarial/kit.js';
import { extendPcrs, startSwtpm, tpm2, type SwtpmHandle } from '../helpers/swtpm.js';
import { expectError } from '../tpm/expect-error.js';
import { runCli } from './run-cli.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/eventlog');
const LOG = join(FIXTURES, 'cli-exit-boot-services-unlogged.bin');
const PCRS_YAML = join(FIXTURES, 'cli-exit-boot-services-unlogged.pcrs.yaml');
const PCRS_JSON = join(FIXTURES, 'cli-exit-boot-services-unlogged.pcrs.json');
const OTHER_LOG = join(FIXTURES, 'gtt-cos-85-amd-sev.bin');
const read = (path: string) => new Uint8Array(readFileSync(path));
const pcrs = (path: string) => ({ source: path, values: parsePcrValuesFile(read(path), path) });

describe('the fixture is what a TPM reports', () => {
  let tpm: SwtpmHandle | undefined;
  afterAll(() => tpm?.stop());
  it('a swtpm that measured the full golden log prints exactly the fixture (tpm2_pcrread YAML)', async () => {
    tpm = await startSwtpm();
    const measured = goldenEvents().filter((e) => e.type !== 3 && e.pcr <= 23);
    await extendPcrs(tpm.tcti, measured.map((e) => ({ pcr: e.pcr, bank: 'sha256' as const, digestHex: toHex(e.digest) })));
    const { stdout } = await tpm2(tpm.tcti, 'tpm2_pcrread', ['sha256:0,1,2,3,4,5,6,7,8,9']);
    expect(stdout).toBe(readFileSync(PCRS_YAML, 'utf8'));
  }, 60_000);
});

describe('eventlog inspect --pcrs', () => {
  it.each([['tpm2_pcrread YAML', PCRS_YAML], ['JSON', PCRS_JSON]])('%s: replays with the exit-boot-services-unlogged workaround and says so', (_name, file) => {
    const { replay } = inspectEventLog(read(LOG), { json: true, pcrs: pcrs(file) });
    expect(replay).toMatchObject({
      against: file,
      result: 'match',
      parseQuirks: [],
      quirks: [{ id: 'exit-boot-services-unlogged', pcrIndex: 5 }],
      mismatches: [],
      replayedPcrs: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] },
      unexplainedPcrs: [],
    });
    // The ExitBootServices events the workaround adds were never logged: they end the boot after every logged event,
    // so the facts still hold (before this fix every PCR 7 event counted as measured after ExitBootServices()).
    expect(replay!.secureBoot).toEqual({ state: 'enabled', reason: '' });
  });

  it('the text output names the workaround; exit 0', async () => {
    const res = await runCli(['eventlog', 'inspect', LOG, '--pcrs', PCRS_YAML]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^PASS replay: sha256:0,1,2,3,4,5,6,7,8,9$/m);
    expect(res.stdout).toMatch(/^ {2}firmware workaround: exit-boot-services-unlogged \(PCR 5\): Firmware extends/m);
    expect(res.stdout).toMatch(/^ {2}secure boot against these values: enabled$/m);
  });

  it('a log that does not replay: FAIL naming each PCR with the given and replayed values; exit 1, no error line', async () => {
    const res = await runCli(['eventlog', 'inspect', OTHER_LOG, '--pcrs', PCRS_JSON, '--json']);
    expect(res.code).toBe(1);
    expect(res.stderr).not.toMatch(/error/);
    const { replay } = JSON.parse(res.stdout) as EventLogInspection;
    expect(replay!.result).toBe('mismatch');
    expect(replay!.mismatches.map((m) => `${m.bank}:${m.index}`)).toEqual(expect.arrayContaining(['sha256:0', 'sha256:5', 'sha256:7']));
    expect(replay!.quirks).toEqual([]);
    expect(replay!.mismatches.find((m) => m.index === 5)).toMatchObject({ quoted: '4316832e478197a3729fcaed54ec97989dcd67bc00ca2ac58230a414ff2b5277' });
    const text = await runCli(['eventlog', 'inspect', OTHER_LOG, '--pcrs', PCRS_JSON]);
    expect([text.code, /^FAIL replay: the log does not replay to sha256:/m.test(text.stdout)]).toEqual([1, true]);
  });

  it('the workaround is tried only for the PCR it repairs: without PCR 5 in the values the strict replay matches', () => {
    const strict = inspectEventLog(read(LOG), { json: true, pcrs: { source: 'x', values: new Map([['sha256', new Map([...parsePcrValuesFile(read(PCRS_YAML), 'x').get('sha256')!].filter(([i]) => i !== 5))]]) } });
    expect(strict.replay).toMatchObject({ result: 'match', quirks: [] });
  });

  it('values in a bank the log does not carry verify nothing: tpm-server refuses that (require_event_log); exit 1', async () => {
    const file = join(FIXTURES, 'cli-exit-boot-services-unlogged.pcrs.json');
    const sha1Only = { source: file, values: new Map([['sha1', new Map([[0, new Uint8Array(20).fill(1)]])]]) };
    expect(inspectEventLog(read(LOG), { json: true, pcrs: sha1Only }).replay).toMatchObject({ result: 'verifies-nothing', replayedPcrs: {} });
  });

  it('usage: --pcrs without a value is exit 2; a missing file is ERR_FILE_NOT_FOUND', async () => {
    expect((await runCli(['eventlog', 'inspect', LOG, '--pcrs'])).code).toBe(2);
    const missing = await runCli(['eventlog', 'inspect', LOG, '--pcrs', join(FIXTURES, 'no-such.yaml')]);
    expect([missing.code, /error \[ERR_FILE_NOT_FOUND\]/.test(missing.stderr)]).toEqual([1, true]);
  });
});

describe('parsePcrValuesFile', () => {
  const parse = (text: string | Uint8Array) => () => parsePcrValuesFile(typeof text === 'string' ? new TextEncoder().encode(text) : text, 'p.yaml');
  const bad = (text: string | Uint8Array, message: RegExp) => {
    const err = expectError(parse(text), MalformedInput, 'ERR_CLI_PCRS_FILE', GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toMatch(message);
  };
  it('reads tpm2_pcrread YAML (0x, upper case) and JSON alike; values are exact bytes', () => {
    const yaml = parsePcrValuesFile(read(PCRS_YAML), 'y');
    const json = parsePcrValuesFile(read(PCRS_JSON), 'j');
    expect(toHex(yaml.get('sha256')!.get(5)!)).toBe('4316832e478197a3729fcaed54ec97989dcd67bc00ca2ac58230a414ff2b5277');
    expect([...json.get('sha256')!].map(([i, v]) => [i, toHex(v)])).toEqual([...yaml.get('sha256')!].map(([i, v]) => [i, toHex(v)]));
    const two = parse(`  sha1:\n    0 : 0x${'AB'.repeat(20)}\n  sha256:\n    23 : 0x${'cd'.repeat(32)}\n`)();
    expect([...two.keys(), toHex(two.get('sha256')!.get(23)!)]).toEqual(['sha1', 'sha256', 'cd'.repeat(32)]);
  });
  it.each([
    ['an unknown bank', `md5:\n  0 : 0x${'00'.repeat(16)}\n`, /unknown PCR bank "md5"/],
    ['PCR 24', `sha256:\n  24 : 0x${'00'.repeat(32)}\n`, /"24" is not a PCR index 0..23/],
    ['a short value', `sha256:\n  0 : 0x${'00'.repeat(31)}\n`, /sha256:0 is not 32 bytes of hex/],
    ['a number where hex belongs', '{"sha256": {"0": 0}}', /sha256:0 is not 32 bytes of hex/],
    ['a list', '[1, 2]', /expected a map of banks/],
    ['no values', '{}', /holds no PCR value/],
    ['a duplicate key', `sha256:\n  0 : 0x${'00'.repeat(32)}\n  0 : 0x${'00'.repeat(32)}\n`, /does not parse: .*[Uu]nique|does not parse/],
    ['invalid UTF-8', Uint8Array.of(0xff, 0xfe), /not UTF-8 text/],
    ['a file over the bound', 'a'.repeat(MAX_PCRS_FILE_BYTES + 1), /more than 65536/],
  ])('refuses %s', (_name, text, message) => bad(text, message));
});
