/**
 * Migration under real SPIRE: an unmodified spire-server loads the built tpm-server with legacy_agents = "allow",
 * and a node speaking spire-tpm-plugin's protocol (test/helpers/legacy-tpm-agent.ts on a real swtpm) attests
 * through the server's own Agent API (AttestAgent, as spire-agent calls it). SPIRE issues the agent SVID for
 * spiffe://<td>/spire/agent/tpm/<pub_hash> and stores the legacy_agent:true selector; with the default
 * (deny) the same node is refused.
 */
import * as grpc from '@grpc/grpc-js';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestAgent } from '../helpers/agent-api.js';
import { builtPlugin } from '../helpers/binaries.js';
import { LegacyTpmAgent } from '../helpers/legacy-tpm-agent.js';
import { NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest, type HclValue, type SpireInstall } from '../helpers/spire.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const TD = 'legacy.example';
const installs = spireUnderTest();

if (installs.length === 0) {
  describe('spire-tpm-plugin agents under real SPIRE', () => {
    it('runs against every pinned SPIRE version', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(installs.map((spire) => [spire.version, spire] as [string, SpireInstall]))('spire-tpm-plugin agents under real SPIRE %s', (_version, spire) => {
  let work: string;
  let tpm: SwtpmHandle;
  let upgradedTpm: SwtpmHandle;
  let agent: LegacyTpmAgent;
  const servers: SpireServer[] = [];
  const agents: SpireAgent[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), `legacy-spire-${spire.version}-`));
    [tpm, upgradedTpm] = await Promise.all([startSwtpm(), startSwtpm()]);
    agent = new LegacyTpmAgent(tpm.tcti);
  }, 120_000);

  afterAll(async () => {
    for (const a of agents) await a.stop();
    for (const s of servers) await s.stop();
    agent?.close();
    await Promise.all([tpm?.stop(), upgradedTpm?.stop()]);
    rmSync(work, { recursive: true, force: true });
  });

  async function server(name: string, data: Record<string, HclValue>): Promise<SpireServer> {
    const s = await SpireServer.start({
      spire,
      dir: join(work, name),
      trustDomain: TD,
      plugins: [{ type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-server'), data }],
    });
    servers.push(s);
    return s;
  }

  it('legacy_agents = "allow": SPIRE issues the agent SVID for the same agent ID and stores legacy_agent:true', async () => {
    const payload = await agent.payload();
    const hash = createHash('sha256').update(agent.ekSpki!).digest('hex');
    const s = await server('allow', { ek_hash_allowlist: [hash], legacy_agents: 'allow' });
    const result = await attestAgent(s, payload, (c) => agent.answer(c));
    const id = `spiffe://${TD}/spire/agent/tpm/${hash}`;
    expect(result).toEqual({ spiffeId: id, reattestable: true });
    const listed = (await s.agents()).find((a) => `spiffe://${a.id.trust_domain}${a.id.path}` === id)!;
    expect(listed.attestation_type).toBe('tpm');
    expect(listed.selectors.map((x) => `${x.type}:${x.value}`).sort()).toEqual([`tpm:legacy_agent:true`, `tpm:pub_hash:${hash}`].sort());
  }, 180_000);

  it('no flag day: one server admits a legacy node and an upgraded spire-agent + tpm-agent node side by side', async () => {
    const payload = await agent.payload();
    const legacyHash = createHash('sha256').update(agent.ekSpki!).digest('hex');
    const upgradedHash = createHash('sha256').update(new X509Certificate(upgradedTpm.ekCertRsaDer).publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
    const s = await server('mixed', { ek_hash_allowlist: [legacyHash, upgradedHash], legacy_agents: 'allow', require_event_log: false });
    await attestAgent(s, payload, (c) => agent.answer(c));
    const upgraded = await SpireAgent.start({
      spire,
      dir: join(work, 'upgraded-agent'),
      server: s,
      plugins: [
        { type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-agent'), data: { tpm_tcti: upgradedTpm.tcti, ek_kind: 'rsa', send_ek_certificate: false } },
        { type: 'WorkloadAttestor', name: 'unix', data: {} },
      ],
    });
    agents.push(upgraded);
    const listed = new Map((await s.agents()).map((a) => [a.id.path, a.selectors.map((x) => `${x.type}:${x.value}`)]));
    expect(listed.get(`/spire/agent/tpm/${legacyHash}`)).toContain('tpm:legacy_agent:true');
    const upgradedSelectors = listed.get(`/spire/agent/tpm/${upgradedHash}`)!;
    expect(upgradedSelectors).toContain(`tpm:pub_hash:${upgradedHash}`);
    expect(upgradedSelectors).not.toContain('tpm:legacy_agent:true');
    expect(upgradedSelectors.some((v) => v.startsWith('tpm:pcr:sha256:'))).toBe(true); // the upgraded node quoted its PCRs
  }, 180_000);

  it('legacy_agents left at its default: SPIRE refuses the node and no agent is stored', async () => {
    const payload = await agent.payload();
    const hash = createHash('sha256').update(agent.ekSpki!).digest('hex');
    const s = await server('deny', { ek_hash_allowlist: [hash] });
    const err = (await attestAgent(s, payload, (c) => agent.answer(c)).catch((e) => e)) as grpc.ServiceError;
    expect(err).toBeInstanceOf(Error);
    expect(err.code).not.toBe(grpc.status.OK);
    expect(err.details).toMatch(/legacy_agents/);
    expect(await s.agents()).toEqual([]);
  }, 180_000);
});
