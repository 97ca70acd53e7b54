/**
 * Security property: a spire-tpm-plugin agent is admitted only when the operator allows it, under the same trust,
 * trust domain and plugin name as our agents, marked `legacy_agent:true`, and never with boot selectors (it sends no
 * quote, so a boot policy it cannot pass refuses it while enforced). In-process against the attestor class with a
 * real swtpm, so `npm run mutate` sees the legacy path; legacy-agent.test.ts and test/e2e/legacy-spire.test.ts run
 * the same client through the shipped binary and real SPIRE.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyCommand } from '../../src/cli/policy-create.js';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import type { ServerAttestIo } from '../../src/plugin/types.js';
import { repoRoot } from '../helpers/binaries.js';
import { LegacyTpmAgent } from '../helpers/legacy-tpm-agent.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const core = { trustDomain: 'edge.example' };
const LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;

let work: string;
let tpm: SwtpmHandle;
let agent: LegacyTpmAgent;
let payload: Uint8Array;
let pubHash: string;
let caDir: string;
let policyPath: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'server-legacy-'));
  tpm = await startSwtpm();
  agent = new LegacyTpmAgent(tpm.tcti);
  payload = new Uint8Array(await agent.payload());
  pubHash = createHash('sha256').update(agent.ekSpki!).digest('hex');
  caDir = join(work, 'ca');
  mkdirSync(caDir);
  writeFileSync(join(caDir, 'root.pem'), tpm.rootCaPem);
  writeFileSync(join(caDir, 'intermediate.pem'), tpm.intermediateCaPem);
  policyPath = join(work, 'policy.yaml');
  writeFileSync(policyPath, createPolicyCommand(new Uint8Array(readFileSync(LOG)), { pcrs: [0, 7], name: 'golden' }));
}, 120_000);

afterAll(async () => {
  agent?.close();
  await tpm?.stop();
  rmSync(work, { recursive: true, force: true });
});

function logger() {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }), lines };
}

/** One Attest stream answered by the legacy agent; counts the challenges it was sent. */
function legacyIo(): ServerAttestIo & { challenges: () => number } {
  let n = 0;
  return {
    signal: new AbortController().signal,
    challenge: async (bytes) => {
      n++;
      return new Uint8Array(await agent.answer(Buffer.from(bytes)));
    },
    challenges: () => n,
  };
}

async function server(config: Record<string, unknown>, log = logger().log): Promise<TpmServerAttestor> {
  const s = new TpmServerAttestor(log);
  await s.configure({ ek_ca_path: caDir, ...config }, core);
  return s;
}

describe('legacy_agents = "allow"', () => {
  it('admits the agent under our trust domain and plugin name, marked legacy, with its EK CA and no boot selectors', async () => {
    const io = legacyIo();
    const attrs = await (await server({ legacy_agents: 'allow', plugin_name: 'edge_tpm' })).attest(payload, io);
    expect(io.challenges()).toBe(1);
    expect(attrs.spiffeId).toBe(`spiffe://edge.example/spire/agent/edge_tpm/${pubHash}`);
    expect(attrs.canReattest).toBe(true);
    expect(attrs.selectorValues).toEqual(expect.arrayContaining([`pub_hash:${pubHash}`, 'legacy_agent:true', 'ek_ca:swtpm-localca-rootca']));
    expect(attrs.selectorValues.filter((s) => /^(policy|pcr|secureboot|kernel_cmdline_sha256):/.test(s))).toEqual([]);
  });
  it('the decision line says accepted, legacy, with the full EK hash', async () => {
    const { log, lines } = logger();
    await (await server({ legacy_agents: 'allow' }, log)).attest(payload, legacyIo());
    expect(lines.find((l) => l['@message'] === 'Attestation decision')).toMatchObject({ outcome: 'accepted', legacy_agent: true, ek_hash: pubHash });
  });
  it('uses the configured EK trust: an allowlist that lacks this EK (and no CA) refuses it', async () => {
    const s = new TpmServerAttestor(logger().log);
    await s.configure({ ek_hash_allowlist: ['ab'.repeat(32)], legacy_agents: 'allow' }, core);
    const err = await s.attest(payload, legacyIo()).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
  });
  it('enforced boot policies refuse it (it sends no quote); report mode admits it without policy:* selectors', async () => {
    const enforced = await (await server({ legacy_agents: 'allow', policy_path: policyPath })).attest(payload, legacyIo()).catch((e) => e);
    expect(enforced).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
    const reported = await (await server({ legacy_agents: 'allow', policy_path: policyPath, policy_match: 'report' })).attest(payload, legacyIo());
    expect(reported.selectorValues).toContain('legacy_agent:true');
    expect(reported.selectorValues.some((s) => s.startsWith('policy:'))).toBe(false);
  });
});

describe('legacy_agents = "deny" (the default)', () => {
  it('refuses the agent before any challenge, naming the rule', async () => {
    const io = legacyIo();
    const err = await (await server({})).attest(payload, io).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED, code: 'ERR_LEGACY_AGENT_DENIED' });
    expect(io.challenges()).toBe(0);
  });
});
