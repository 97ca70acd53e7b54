/**
 * Event-log classes other verifiers handle, attested end to end through the shipped tpm-agent and tpm-server over
 * the plugin protocol, on swtpm TPMs started the way such platforms start:
 * - H-CRTM: swtpm runs the H-CRTM sequence (_TPM_Hash_Start/Data/End) before TPM2_Startup, so PCR 0 starts at
 *   H(0…04 ‖ H(code)); the log says so with StartupLocality 4 and EV_EFI_HCRTM_EVENT (TCG PC Client PFP §10.4.5.3);
 * - locality 3: TPM2_Startup sent from locality 3, so PCR 0 starts at 0…03;
 * - a TPM 1.2-style legacy SHA-1 log against a TPM 2.0 quote of the sha1 bank.
 * Logs are written byte by byte by test code (kit.ts / eventlog-builder.ts) from the real OVMF golden log's events.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/tpm/bytes.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { repoRoot } from '../helpers/binaries.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import { runCli } from '../cli/run-cli.js';
import { extendPcrs, type SwtpmHandle } from '../helpers/swtpm.js';
import { AttackLab, expectRefused, goldenEvents, writeLog, type LogEvent } from '../adversarial/kit.js';
import { ascii, buildLegacyLog, concat, hash } from '../tpm/eventlog-builder.js';

const lab = new AttackLab();
afterAll(() => lab.cleanup());

const HCRTM_CODE = ascii('H-CRTM: the chipset measured this before the CPU ran');
const startupLocality = (locality: number): LogEvent => {
  const data = concat([ascii('StartupLocality\0'), Uint8Array.of(locality)]);
  return { pcr: 0, type: EventType.EV_NO_ACTION, data, digest: new Uint8Array(32) };
};
const hcrtmEvent: LogEvent = { pcr: 0, type: EventType.EV_EFI_HCRTM_EVENT, data: ascii('HCRTM'), digest: hash('sha256', HCRTM_CODE) };

async function attest(tpm: SwtpmHandle, log: Uint8Array, serverSettings: Record<string, unknown> = {}, policy?: string) {
  const server = await lab.server(policy === undefined ? undefined : lab.file('policy.yaml', policy), serverSettings);
  const agent = await lab.agent(tpm, lab.file('eventlog.bin', log));
  return relayAttestation(agent, server);
}

describe('H-CRTM and locality-3 platforms through the shipped tpm-server', () => {
  let events: LogEvent[];
  let hcrtmNode: SwtpmHandle;
  let locality3Node: SwtpmHandle;
  beforeAll(async () => {
    events = goldenEvents();
    // The TPM itself extends the H-CRTM digest; the firmware then extends the golden events.
    [hcrtmNode, locality3Node] = await Promise.all([
      lab.bootNode(events, { startup: { hcrtm: HCRTM_CODE } }),
      lab.bootNode(events, { startup: { locality: 3 } }),
    ]);
  }, 120_000);

  it('an H-CRTM log (StartupLocality 4, EV_EFI_HCRTM_EVENT, then the firmware events) is admitted with its boot facts', async () => {
    const { attributes } = await attest(hcrtmNode, writeLog([startupLocality(4), hcrtmEvent, ...events]));
    expect(attributes.selector_values).toContain('secureboot:enabled');
    expect(attributes.selector_values.filter((s) => s.startsWith('kernel_cmdline_sha256:'))).toHaveLength(1);
  }, 60_000);

  it('the same TPM with the H-CRTM hidden from the log is refused: PCR 0 does not replay', async () => {
    for (const log of [writeLog(events), writeLog([startupLocality(4), ...events])]) {
      await expectRefused(attest(hcrtmNode, log), grpc.status.PERMISSION_DENIED, /ERR_EVENTLOG_REPLAY|does not replay to the quoted PCRs: sha256:0 \(/);
    }
  }, 60_000);

  it('a log that breaks the PFP order (EV_EFI_HCRTM_EVENT without StartupLocality 4) is malformed: INVALID_ARGUMENT', async () => {
    await expectRefused(attest(hcrtmNode, writeLog([hcrtmEvent, ...events])), grpc.status.INVALID_ARGUMENT, /EV_EFI_HCRTM_EVENT needs a preceding StartupLocality 4 event/);
  }, 60_000);

  it('locality 3: admitted with StartupLocality 3; refused without it', async () => {
    expect((await attest(locality3Node, writeLog([startupLocality(3), ...events]))).attributes.selector_values).toContain('secureboot:enabled');
    await expectRefused(attest(locality3Node, writeLog(events)), grpc.status.PERMISSION_DENIED, /sha256:0 \(quoted/);
  }, 60_000);
});

describe('a TPM 1.2-style SHA-1 log against a TPM 2.0 quote of the sha1 bank', () => {
  const SHA1_PCRS = { pcr_selection: 'sha1:0,1,2,3,4,5,6,7,8,9' };
  let legacyLog: Uint8Array;
  let node: SwtpmHandle;
  beforeAll(async () => {
    // The golden events' sha1 digests: H(data) where the PFP digests the data, a stand-in for image hashes.
    const sha1Events = goldenEvents().map((e) => ({ pcr: e.pcr, type: e.type, data: e.data, digests: { sha1: hash('sha1', e.data) } }));
    legacyLog = buildLegacyLog(sha1Events);
    node = await lab.bootNode([]);
    await extendPcrs(
      node.tcti,
      sha1Events.filter((e) => e.type !== EventType.EV_NO_ACTION).map((e) => ({ pcr: e.pcr, bank: 'sha1' as const, digestHex: toHex(e.digests.sha1) })),
    );
  }, 120_000);

  it('is admitted; Secure Boot, a fact SHA-1 can still carry, is read from it', async () => {
    const { attributes } = await attest(node, legacyLog, SHA1_PCRS);
    expect(attributes.selector_values).toContain('secureboot:enabled');
    // The command line is not a fact from SHA-1 alone, so no selector names it.
    expect(attributes.selector_values.filter((s) => s.startsWith('kernel_cmdline_sha256:'))).toEqual([]);
  }, 60_000);

  it('a policy on the kernel command line fails closed: SHA-1 cannot vouch for data the node chooses', async () => {
    const policy = 'policies:\n  - name: tpm12\n    secure_boot: true\n    kernel_cmdline: [".*"]\n';
    await expectRefused(attest(node, legacyLog, SHA1_PCRS, policy), grpc.status.PERMISSION_DENIED, /kernel_cmdline: observed unknown \(PCR 8 is verified only in SHA-1, which is collision-broken/);
  }, 60_000);

  it('against the default sha256 quote the same log verifies nothing and is refused', async () => {
    await expectRefused(attest(node, legacyLog), grpc.status.PERMISSION_DENIED, /replays none of the quoted PCRs/);
  }, 60_000);
});

describe('the firmware workaround eventlog inspect --pcrs reports is the one tpm-server applies', () => {
  it('a log missing its ExitBootServices events is admitted with its facts; the CLI names exit-boot-services-unlogged', async () => {
    const events = goldenEvents();
    const node = await lab.bootNode(events);
    const stripped = events.filter((e) => !(e.pcr === 5 && Buffer.from(e.data).toString('latin1').startsWith('Exit Boot Services')));
    expect(stripped.length).toBe(events.length - 2);
    const log = writeLog(stripped);
    // Same bytes as the CLI fixture: what the docs/cli.md example replays.
    expect(Buffer.from(log).equals(readFileSync(`${repoRoot}test/fixtures/eventlog/cli-exit-boot-services-unlogged.bin`))).toBe(true);
    const { attributes } = await attest(node, log);
    expect(attributes.selector_values).toContain('secureboot:enabled');
    const cli = await runCli(['eventlog', 'inspect', lab.file('log.bin', log), '--pcrs', `${repoRoot}test/fixtures/eventlog/cli-exit-boot-services-unlogged.pcrs.yaml`, '--json']);
    expect(JSON.parse(cli.stdout).replay).toMatchObject({ result: 'match', quirks: [{ id: 'exit-boot-services-unlogged' }], secureBoot: { state: 'enabled' } });
  }, 120_000);
});

