/**
 * Security property: every attestation decision leaves exactly one structured audit line saying who (agent ID, EK
 * hash, the unauthenticated host hint kept apart), what (outcome, policies passed and failed) and why (code, rule,
 * reason), including failures that are not our typed errors; and the legacy spire-tpm-plugin payload is recognised
 * and judged by its own rules. In-process with soft TPMs.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import { EventType, EXIT_BOOT_SERVICES_INVOCATION, EXIT_BOOT_SERVICES_RETURNED } from '../../src/tpm/eventlog-types.js';
import { agileEvent, ALG, ascii, buildAgileLog, concat, extend, hash } from '../tpm/eventlog-builder.js';
import { BytesWriter } from '../../src/tpm/bytes.js';
import { SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE } from '../../src/tpm/eventlog.js';
import { SoftAgent } from './soft-agent.js';

const core = { trustDomain: 'example.org' };
// One firmware event in PCR 0, so policies have a verified log to judge; every other PCR is at reset.
const EVENT = { pcr: 0, type: EventType.EV_S_CRTM_VERSION, data: ascii('firmware 1.0') };
const agent = new SoftAgent({ pcrs: new Map([[0, extend('sha256', new Uint8Array(32), hash('sha256', EVENT.data))]]) });
const LOG = buildAgileLog([EVENT], ['sha256']);
let work: string;
let policies: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'server-audit-'));
  policies = join(work, 'policies.yaml');
  // PCR 7 of the soft TPM is at reset: "zero7" passes, "ones0" cannot.
  writeFileSync(
    policies,
    `policies:\n  - name: zero7\n    pcrs:\n      sha256:\n        "7": "${'00'.repeat(32)}"\n  - name: ones0\n    pcrs:\n      sha256:\n        "0": "${'11'.repeat(32)}"\n`,
  );
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function decide(config: Record<string, unknown>, io = agent.io(), payload = agent.payload({ event_log: LOG })) {
  const lines: Record<string, unknown>[] = [];
  const server = new TpmServerAttestor(createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }));
  await server.configure({ ek_hash_allowlist: [agent.ekHash], require_event_log: false, ...config }, core);
  const result = await server.attest(payload, io).catch((e: Error) => e);
  const decisions = lines.filter((l) => l['@message'] === 'Attestation decision');
  expect(decisions, 'exactly one audit line per decision').toHaveLength(1);
  return { result, decision: decisions[0]!, lines };
}

const agentId = `spiffe://example.org/spire/agent/tpm/${agent.ekHash}`;

describe('one audit line per decision', () => {
  it('an admitted node: info, who it is, the unauthenticated host hint, how long it took', async () => {
    const { result, decision } = await decide({}, { ...agent.io(), untrustedForwardedHost: 'edge-17.example' });
    expect(result).toMatchObject({ spiffeId: agentId });
    expect(decision).toMatchObject({ '@level': 'info', outcome: 'accepted', agent_id: agentId, ek_hash: agent.ekHash, node_hint: 'edge-17.example' });
    expect(decision['duration_ms']).toEqual(expect.any(Number));
    expect(decision['duration_ms']).toBeGreaterThanOrEqual(0);
    expect(decision['duration_ms']).toBeLessThan(60_000);
    expect(decision['policy_match']).toBeUndefined();
    expect(decision['policies']).toBeUndefined();
    expect(decision['code']).toBeUndefined();
    expect(decision['quirks'], 'a log that replays as it is used no firmware workaround').toBeUndefined();
    expect(decision['policies_failed'], 'no policy configured, none failed').toBeUndefined();
  });
  it('policies: the ones passed become selectors and are audited, the failed ones are named with their rule', async () => {
    const { result, decision } = await decide({ policy_path: policies });
    expect((result as { selectorValues: readonly string[] }).selectorValues).toContain('policy:zero7');
    expect((result as { selectorValues: readonly string[] }).selectorValues).not.toContain('policy:ones0');
    expect(decision).toMatchObject({ outcome: 'accepted', policy_match: 'any', policies: 'zero7' });
    expect(decision['policies_failed']).toMatch(/^ones0: pcr sha256:0 \(observed [0-9a-f]{64}, expected 1{64}\)$/);
  });
  it('several passed policies are audited as a comma-separated list', async () => {
    const two = join(work, 'two.yaml');
    writeFileSync(two, `policies:\n  - name: zero7\n    pcrs:\n      sha256:\n        "7": "${'00'.repeat(32)}"\n  - name: zero6\n    pcrs:\n      sha256:\n        "6": "${'00'.repeat(32)}"\n`);
    const { decision } = await decide({ policy_path: two });
    expect(decision).toMatchObject({ outcome: 'accepted', policies: 'zero7,zero6' });
  });
  it('a refused node\'s audit line also has a sane duration', async () => {
    const { decision } = await decide({}, agent.io({ response: () => ({ secret: new Uint8Array(32) }) }));
    expect(decision['outcome']).toBe('refused');
    expect(decision['duration_ms']).toBeGreaterThanOrEqual(0);
    expect(decision['duration_ms']).toBeLessThan(60_000);
  });
  it('a refusal by policy: warn, the code, the rule and the reason', async () => {
    const { result, decision } = await decide({ policy_path: policies, policy_match: 'all' });
    expect(result).toMatchObject({ code: 'ERR_POLICY_VIOLATION', grpcCode: GrpcCode.PERMISSION_DENIED });
    expect(decision).toMatchObject({ '@level': 'warn', outcome: 'refused', code: 'ERR_POLICY_VIOLATION', rule: 'pcr sha256:0', agent_id: agentId });
    expect(decision['reason']).toBe((result as Error).message);
    expect(decision['policies_failed']).toMatch(/^ones0: /);
  });
  it('a failure that is not one of our errors (the agent stream broke) is audited as ERR_INTERNAL with its message', async () => {
    const io = { signal: new AbortController().signal, challenge: () => Promise.reject(new Error('stream reset by peer')) };
    const { result, decision } = await decide({}, io);
    expect(result).toBeInstanceOf(Error);
    expect(decision).toMatchObject({ '@level': 'warn', outcome: 'refused', code: 'ERR_INTERNAL', reason: 'stream reset by peer', agent_id: agentId });
    expect(decision['rule']).toBeUndefined();
  });
  it('a refusal whose rule is not a string carries no rule field', async () => {
    const { decision } = await decide({}, agent.io(), new TextEncoder().encode('{"v":1}'));
    expect(decision).toMatchObject({ outcome: 'refused', code: 'ERR_WIRE_FIELD' });
    expect(decision['rule']).toBeUndefined();
    expect(decision['ek_hash']).toBeUndefined(); // nothing parsed, nothing claimed
  });
});

describe('a firmware workaround the replay needed is audited', () => {
  // PCR 5 holds a logged separator, then the two "Exit Boot Services" actions the firmware extended but did not log.
  const separator5 = { pcr: 5, type: EventType.EV_SEPARATOR, data: new Uint8Array(4) };
  const afterSeparator = extend('sha256', new Uint8Array(32), hash('sha256', separator5.data));
  const pcr5 = [EXIT_BOOT_SERVICES_INVOCATION, EXIT_BOOT_SERVICES_RETURNED].reduce((pcr, text) => extend('sha256', pcr, hash('sha256', ascii(text))), afterSeparator);
  const quirky = new SoftAgent({ ek: agent.ek, ak: agent.ak, pcrs: new Map([[0, extend('sha256', new Uint8Array(32), hash('sha256', EVENT.data))], [5, pcr5]]) });

  it('a log missing the Exit Boot Services actions replays only with that workaround, and the decision line names it', async () => {
    const { result, decision } = await decide({}, quirky.io(), quirky.payload({ event_log: buildAgileLog([EVENT, separator5], ['sha256']) }));
    expect(result).toMatchObject({ spiffeId: agentId });
    expect(decision).toMatchObject({ outcome: 'accepted', quirks: 'exit-boot-services-unlogged' });
  });
  it('a parse workaround and a replay workaround are both named, in that order', async () => {
    // The Spec ID event's vendorInfo (4 bytes) runs past its declared eventSize (37), as tpm2-tools' fixture does.
    const specIdHead = new BytesWriter()
      .bytes(ascii('Spec ID Event03\0'))
      .u32le(0).u8(0).u8(2).u8(0).u8(2)
      .u32le(1).u16le(ALG.sha256).u16le(32)
      .u8(4)
      .finish();
    const first = new BytesWriter().u32le(0).u32le(EventType.EV_NO_ACTION).bytes(new Uint8Array(20)).u32le(specIdHead.length).bytes(specIdHead).bytes(Uint8Array.of(0xde, 0xad, 0xbe, 0xef)).finish();
    const events = [EVENT, separator5].map((e) => agileEvent(e.pcr, e.type, [{ id: ALG.sha256, digest: hash('sha256', e.data) }], e.data));
    const { result, decision } = await decide({}, quirky.io(), quirky.payload({ event_log: concat([first, ...events]) }));
    expect(result).toMatchObject({ spiffeId: agentId });
    expect(decision['quirks']).toBe(`${SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE},exit-boot-services-unlogged`);
  });
  it('the same log against a TPM whose PCR 5 has only the separator needs no workaround', async () => {
    const plain = new SoftAgent({ ek: agent.ek, ak: agent.ak, pcrs: new Map([[0, extend('sha256', new Uint8Array(32), hash('sha256', EVENT.data))], [5, afterSeparator]]) });
    const { decision } = await decide({}, plain.io(), plain.payload({ event_log: buildAgileLog([EVENT, separator5], ['sha256']) }));
    expect(decision).toMatchObject({ outcome: 'accepted' });
    expect(decision['quirks']).toBeUndefined();
  });
});

describe('a spire-tpm-plugin payload is judged as one', () => {
  it('it is parsed by the legacy rules (its errors name that format) and audited as a legacy agent', async () => {
    const { result, decision } = await decide({ legacy_agents: 'allow' }, agent.io(), new TextEncoder().encode('{"EK":"not pem","AK":{}}'));
    expect(result).toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT });
    expect((result as Error).message).toMatch(/legacy attestation payload \(spire-tpm-plugin\)/);
    expect(decision).toMatchObject({ outcome: 'refused', legacy_agent: true });
  });
});

describe('the same decision as a decision event (what the revoker acts on)', () => {
  const readEvents = async (path: string, n: number): Promise<Record<string, any>[]> => {
    for (let i = 0; i < 200; i++) {
      const lines = existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : [];
      if (lines.length >= n) return lines.map((l) => JSON.parse(l) as Record<string, any>);
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`fewer than ${n} decision events in ${path}`);
  };

  it('an admitted node is an accepted event naming it and the policies it passed; a refused one a refused event with the code', async () => {
    const path = join(work, 'events-accepted.jsonl');
    await decide({ policy_path: policies, decision_events: { file: { path } } });
    const [accepted] = await readEvents(path, 1);
    expect(accepted).toMatchObject({ type: 'spire-edge.attestation.decision', outcome: 'accepted', agent_id: agentId, ek_hash: agent.ekHash });
    expect(accepted!['policies'].passed).toEqual(['zero7']);
    expect(accepted!['policies'].failed.map((f: { policy: string }) => f.policy)).toEqual(['ones0']);

    const refusedPath = join(work, 'events-refused.jsonl');
    await decide({ decision_events: { file: { path: refusedPath } } }, agent.io({ response: () => ({ secret: new Uint8Array(32) }) }));
    const [refused] = await readEvents(refusedPath, 1);
    expect(refused).toMatchObject({ outcome: 'refused', status: 'contraindicated' });
    expect(refused!['code']).toMatch(/^ERR_/);
    expect(refused!['outcome']).not.toBe('accepted');
    // No policy was configured there: the event claims none passed and none failed.
    expect(refused!['policies']).toMatchObject({ passed: [], failed: [] });
  });
  it('a sink that cannot write logs the loss as an error of its own component (<plugin>.events), and the node is still admitted', async () => {
    const dir = join(work, 'events-is-a-directory');
    mkdirSync(dir, { recursive: true });
    const { result, lines } = await decide({ decision_events: { file: { path: dir } } });
    expect(result).toMatchObject({ spiffeId: agentId });
    for (let i = 0; i < 200 && !lines.some((l) => l['@message'] === 'Decision event dropped'); i++) await new Promise((r) => setTimeout(r, 25));
    expect(lines.find((l) => l['@message'] === 'Decision event dropped')).toMatchObject({ '@level': 'error', '@module': 'test.events', outcome: 'accepted' });
  });
  it('a node admitted without boot policies is an event with no policy passed or failed', async () => {
    const path = join(work, 'events-no-policies.jsonl');
    await decide({ decision_events: { file: { path } } });
    const [accepted] = await readEvents(path, 1);
    expect(accepted).toMatchObject({ outcome: 'accepted', policies: { passed: [], failed: [] } });
  });
});
