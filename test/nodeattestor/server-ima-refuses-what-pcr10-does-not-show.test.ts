/**
 * Security property: with an IMA runtime policy, the server admits a node only when the IMA list it sent replays to
 * PCR 10 in the same verified quote and every entry is allowed; it never takes the list's word for anything the
 * quote does not show, never learns state from a refused attestation, and offers an increment only to a node whose
 * whole list it verified. In-process with a soft TPM (a fake agent can sign any PCR 10); the same through the built
 * binaries on swtpm is in ima-incremental.test.ts and ima-e2e.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { decodeChallenge } from '../../src/nodeattestor/wire.js';
import { createLogger } from '../../src/plugin/log.js';
import type { AgentAttributes } from '../../src/plugin/types.js';
import type { ImaEntry } from '../../src/tpm/ima/index.js';
import { expectedPcr10, fileDigest, synthEntries, toBinaryList, type SynthEntry } from '../tpm/ima/synth.js';
import { SoftAgent } from './soft-agent.js';

const core = { trustDomain: 'example.org' };
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const FILES = ['/usr/bin/sensor', '/usr/lib/libc.so.6'];
const allowed = (path: string): SynthEntry => ({ template: 'ima-ng', path, content: `${path} v1`, digestAlg: 'sha256' });
const BOOT: SynthEntry = { template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' };
let work: string;
let policyPath: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'server-ima-'));
  policyPath = join(work, 'runtime.json');
  const digests: Record<string, string[]> = { boot_aggregate: ['00'.repeat(32)] };
  for (const f of FILES) digests[f] = [hex(fileDigest('sha256', `${f} v1`))];
  writeFileSync(policyPath, JSON.stringify({ meta: { version: 1, generator: 0 }, release: 0, digests, excludes: [], keyrings: {}, ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null } }));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A fake agent whose PCR 10 is what `entries` extend to (or `pcr10` when forged). */
function agentFor(entries: readonly ImaEntry[], pcr10 = expectedPcr10(entries, 'sha256')): SoftAgent {
  return new SoftAgent({ pcrs: new Map([[10, Buffer.from(pcr10, 'hex')]]) });
}

async function server(extra: Record<string, unknown> = {}, agent: SoftAgent) {
  const lines: Record<string, unknown>[] = [];
  const s = new TpmServerAttestor(createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }));
  await s.configure({ ek_hash_allowlist: [agent.ekHash], require_event_log: false, pcr_selection: 'sha256:10', ima_policy_path: policyPath, ima_policy_name: 'edge-runtime', ...extra }, core);
  return { s, lines };
}

async function attest(s: TpmServerAttestor, agent: SoftAgent, log: Uint8Array | undefined, extra: { ima_total?: number; ima_offset?: number } = {}) {
  const offered: (number | undefined)[] = [];
  const io = agent.io({ response: () => ({ ...(log ? { ima_log: log } : {}), ...extra }) }, { onChallenge: (b) => offered.push(decodeChallenge(b).ima_offset) });
  const result = await s.attest(agent.payload(), io).catch((e: Error & { grpcCode?: number }) => e);
  return { result, offered };
}

describe('node-level IMA, decided by the server', () => {
  it('a list that replays to the quoted PCR 10 and is allowed: ima:entries counts it, ima:policy names the policy', async () => {
    const entries = synthEntries([BOOT, ...FILES.map(allowed)]);
    const agent = agentFor(entries);
    const { s, lines } = await server({}, agent);
    const { result } = await attest(s, agent, toBinaryList(entries));
    expect(result).not.toBeInstanceOf(Error);
    expect((result as AgentAttributes).selectorValues).toEqual(expect.arrayContaining(['ima:entries:3', 'ima:policy:edge-runtime']));
    const decision = lines.find((l) => l['@message'] === 'Attestation decision');
    expect(decision).toMatchObject({ outcome: 'accepted', ima_entries_sent: 3, ima_entries_verified: 3 });
  });

  it('a file the policy does not allow is PERMISSION_DENIED naming the entry, path and rule', async () => {
    const entries = synthEntries([BOOT, allowed(FILES[0]!), { template: 'ima-ng', path: FILES[1]!, content: 'tampered', digestAlg: 'sha256' }]);
    const agent = agentFor(entries);
    const { s } = await server({}, agent);
    const { result } = await attest(s, agent, toBinaryList(entries));
    expect(result).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
    expect((result as Error).message).toMatch(/IMA entry 2 "\/usr\/lib\/libc\.so\.6" \(sha256:[0-9a-f]{64}\).*\[rule digest-not-allowed\]/);
  });

  it('a clean list the quoted PCR 10 does not show (PCR 10 extended by something unlisted) is refused', async () => {
    const entries = synthEntries([BOOT, ...FILES.map(allowed)]);
    const hidden = synthEntries([BOOT, ...FILES.map(allowed), { template: 'ima-ng', path: '/tmp/evil', content: 'x', digestAlg: 'sha256' }]);
    const agent = agentFor(entries, expectedPcr10(hidden, 'sha256'));
    const { s } = await server({}, agent);
    const { result } = await attest(s, agent, toBinaryList(entries));
    expect(result).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
    expect((result as Error).message).toMatch(/PCR 10/);
  });

  it('an unusable ima_state_dir is logged as an error of the IMA component, and IMA state stays in memory', async () => {
    const entries = synthEntries([BOOT, ...FILES.map(allowed)]);
    const agent = agentFor(entries);
    const { s, lines } = await server({ ima_state_dir: policyPath }, agent); // a file, not a directory
    const { result } = await attest(s, agent, toBinaryList(entries));
    expect((result as AgentAttributes).selectorValues).toContain('ima:policy:edge-runtime');
    // Opened at first use, not at Configure (Validate never touches it).
    expect(lines.find((l) => /IMA state directory unusable/.test(String(l['@message'])))).toMatchObject({ '@level': 'error', '@module': expect.stringMatching(/^test\.ima\b/) });
  });
  it('no list at all while a runtime policy is set is refused (ERR_IMA_LOG_MISSING), not admitted without IMA', async () => {
    const agent = agentFor([]);
    const { s } = await server({}, agent);
    const { result } = await attest(s, agent, undefined);
    expect(result).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED, code: 'ERR_IMA_LOG_MISSING' });
  });

  it('an increment is offered only after a whole list was verified and accepted, and a refusal teaches nothing', async () => {
    const entries = synthEntries([BOOT, ...FILES.map(allowed)]);
    const agent = agentFor(entries);
    const { s } = await server({}, agent);
    // Refused (bad total): no state, so the next challenge offers no offset.
    const bad = await attest(s, agent, toBinaryList(entries), { ima_total: 7 });
    expect(bad.result).toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT });
    const first = await attest(s, agent, toBinaryList(entries), { ima_total: 3 });
    expect(first.offered).toEqual([undefined]);
    expect(first.result).not.toBeInstanceOf(Error);
    // Now the server offers offset 3: an agent sending nothing new is still counted with every verified entry.
    const second = await attest(s, agent, new Uint8Array(0), { ima_total: 3, ima_offset: 3 });
    expect(second.offered).toEqual([3]);
    expect((second.result as AgentAttributes).selectorValues).toContain('ima:entries:3');
  });

  it('without a policy, a list that replays is counted (ima:entries) and no ima:policy selector is claimed', async () => {
    const entries = synthEntries([BOOT, { template: 'ima-ng', path: '/opt/anything', content: 'whatever', digestAlg: 'sha256' }]);
    const agent = agentFor(entries);
    const lines: Record<string, unknown>[] = [];
    const s = new TpmServerAttestor(createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }));
    await s.configure({ ek_hash_allowlist: [agent.ekHash], require_event_log: false, pcr_selection: 'sha256:10' }, core);
    const { result } = await attest(s, agent, toBinaryList(entries));
    const selectors = (result as AgentAttributes).selectorValues;
    expect(selectors).toContain('ima:entries:2');
    expect(selectors.some((v) => v.startsWith('ima:policy:'))).toBe(false);
  });
});
