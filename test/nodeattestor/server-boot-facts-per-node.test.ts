/**
 * Security property: boot facts come only from evidence this node's quote verified. A log that verifies none of the
 * quoted PCRs is no evidence (refused while require_event_log is on), and the server's per-boot facts cache never
 * gives one node the facts of another: not across different logs, and not across the same log with different PCR
 * states (a PCR extended outside the log must make its facts unknown even after a clean node sent those log bytes).
 * In-process with soft TPMs whose PCRs are the log's own replay.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import {
  ascii, buildAgileLog, EFI_GLOBAL_VARIABLE_BYTES, extend, hash, secureBootVariable, uefiVariableData, type Bank, type SyntheticEvent,
} from '../tpm/eventlog-builder.js';
import { sha256SignatureList as signatureList, separatorEvent as separator, pcr7ConfigEvent as config, IMAGE_DB_GUID } from '../tpm/eventlog-builder.js';
import { softEk, softKey } from '../tpm/soft-tpm.js';
import { SoftAgent } from './soft-agent.js';

const core = { trustDomain: 'example.org' };
const SELECTION = 'sha256:0,1,2,3,4,5,6,7,8,9,12';

function logger() {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }), lines };
}

/** The sha256 PCRs a TPM holds after exactly these events (plus `extra` extends the log does not show). */
function pcrsOf(events: readonly SyntheticEvent[], extra: ReadonlyMap<number, Uint8Array> = new Map()): Map<number, Uint8Array> {
  const pcrs = new Map<number, Uint8Array>();
  const zero = new Uint8Array(32);
  for (const e of events) pcrs.set(e.pcr, extend('sha256', pcrs.get(e.pcr) ?? zero, e.digests?.sha256 ?? hash('sha256', e.data)));
  for (const [pcr, digest] of extra) pcrs.set(pcr, extend('sha256', pcrs.get(pcr) ?? zero, digest));
  return pcrs;
}

let slot = 10;
function node(events: readonly SyntheticEvent[], extra?: ReadonlyMap<number, Uint8Array>, banks: readonly Bank[] = ['sha256']) {
  const s = slot++;
  const agent = new SoftAgent({ ek: softEk('p256', 200 + s), ak: softKey('p256', { slot: s }), pcrs: pcrsOf(events, extra) });
  return { agent, payload: agent.payload({ event_log: buildAgileLog(events, banks) }) };
}

/** PCR 7 of a Secure Boot platform: SecureBoot, PK, KEK, db, separator, the authority that verified the loader. */
const pcr7 = (enabled: boolean): SyntheticEvent[] => [
  config(secureBootVariable(enabled)),
  config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', signatureList(1))),
  config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'KEK', signatureList(2))),
  config(uefiVariableData(IMAGE_DB_GUID, 'db', signatureList(3))),
  separator(7),
  { pcr: 7, type: EventType.EV_EFI_VARIABLE_AUTHORITY, data: uefiVariableData(IMAGE_DB_GUID, 'db', new Uint8Array(48).fill(3)) },
];
const CMDLINE = 'root=/dev/vda1 ro lockdown=integrity';
const grubCmdline: SyntheticEvent = { pcr: 8, type: EventType.EV_IPL, data: ascii(`kernel_cmdline: ${CMDLINE}`), digests: { sha256: hash('sha256', ascii(CMDLINE)) } };
const CMDLINE_SELECTOR = `kernel_cmdline_sha256:${createHash('sha256').update(CMDLINE).digest('hex')}`;

async function server(config: Record<string, unknown>, nodes: { agent: SoftAgent }[], log = logger().log) {
  const s = new TpmServerAttestor(log);
  await s.configure({ ek_hash_allowlist: nodes.map((n) => n.agent.ekHash), pcr_selection: SELECTION, ...config }, core);
  return s;
}

describe('a log that verifies nothing is no evidence', () => {
  it.each([
    ['an empty sha256 log', [] as Bank[], /event log \(crypto-agile, banks sha256\) replays none of the quoted PCRs \(sha256:0,1,2,3,4,5,6,7,8,9,12\)/, ['sha256'] as Bank[]],
    ['a log only in a bank that was not quoted', [], /banks sha1\) replays none/, ['sha1'] as Bank[]],
  ])('%s is refused while require_event_log is on', async (_name, _unused, message, banks) => {
    const n = node([], undefined, banks);
    const err = await (await server({}, [n])).attest(n.payload, n.agent.io()).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_EVENTLOG_VERIFIES_NOTHING', grpcCode: GrpcCode.PERMISSION_DENIED, fields: { rule: 'require_event_log' } });
    expect(err.message).toMatch(message);
  });
  it('a log whose events are all on PCRs that were not quoted verifies nothing either', async () => {
    const n = node([{ pcr: 15, type: EventType.EV_EVENT_TAG, data: ascii('not quoted') }]);
    const err = await (await server({}, [n])).attest(n.payload, n.agent.io()).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_EVENTLOG_VERIFIES_NOTHING' });
  });
  it('the refusal lists every bank the log carries', async () => {
    const n = node([], undefined, ['sha1', 'sha384']);
    const err = await (await server({}, [n])).attest(n.payload, n.agent.io()).catch((e) => e);
    expect(err.message).toMatch(/banks sha1,sha384\)/);
  });
  it('with require_event_log off the node is admitted, and facts from nothing are no Secure Boot', async () => {
    const n = node([]);
    const attrs = await (await server({ require_event_log: false }, [n])).attest(n.payload, n.agent.io());
    expect(attrs.selectorValues).toContain('secureboot:disabled');
    expect(attrs.selectorValues.some((s) => s.startsWith('kernel_cmdline_sha256:'))).toBe(false);
  });
});

describe('facts are derived per node from what its quote verified', () => {
  it('Secure Boot on, then off on another node: the second does not inherit the first one\'s facts', async () => {
    const on = node(pcr7(true));
    const off = node(pcr7(false));
    const { log, lines } = logger();
    const s = await server({}, [on, off], log);
    expect((await s.attest(on.payload, on.agent.io())).selectorValues).toContain('secureboot:enabled');
    expect((await s.attest(off.payload, off.agent.io())).selectorValues).toContain('secureboot:disabled');
    expect((await s.attest(on.payload, on.agent.io())).selectorValues).toContain('secureboot:enabled');
    const decisions = lines.filter((l) => l['@message'] === 'Attestation decision').map((l) => l['secure_boot']);
    expect(decisions).toEqual(['enabled', 'disabled', 'enabled']);
  });

  it.each([
    ['the clean node first', true],
    ['the tampered node first', false],
  ])('same log bytes, PCR 12 extended outside the log on one node (%s): only the clean node gets the command line', async (_name, cleanFirst) => {
    const clean = node([...pcr7(true), grubCmdline]);
    const tampered = node([...pcr7(true), grubCmdline], new Map([[12, hash('sha256', ascii('root=/dev/evil init=/bin/sh'))]]));
    const s = await server({}, [clean, tampered]);
    const order = cleanFirst ? [clean, tampered] : [tampered, clean];
    const results = new Map<unknown, readonly string[]>();
    for (const n of order) results.set(n, (await s.attest(n.payload, n.agent.io())).selectorValues);
    expect(results.get(clean)).toContain(CMDLINE_SELECTOR);
    expect(results.get(tampered)).not.toContain(CMDLINE_SELECTOR);
    expect(results.get(tampered)!.some((v) => v.startsWith('kernel_cmdline_sha256:'))).toBe(false);
  });
});
