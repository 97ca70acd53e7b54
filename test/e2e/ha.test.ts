/**
 * Highly available cloud servers: two spire-server processes share one PostgreSQL datastore (Debian's postgres,
 * on loopback), each with its own tpm-server plugin. An agent reaches them through a switchable TCP forwarder
 * (the load balancer): it attests to one and re-attests to the other.
 *
 * What must hold with per-server plugin state (nonces live in one Attest stream; EK chain and boot-fact caches
 * are derivable from the config and the bytes sent):
 *  - a node admitted by one server is admitted by the other, and each attestation is decided by exactly the
 *    server that got the stream;
 *  - a policy change rolled out to both takes effect on both;
 *  - a restart of either loses nothing that matters.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { edgeAgent, haServer, TRUST_DOMAIN, type AgentParams } from '../../kubeedge-demo/topology.js';
import { repoRoot } from '../helpers/binaries.js';
import { startFakeKubelet, type FakeKubelet } from '../helpers/edge-node.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { ekPubHash, NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest, type SpireLogLine } from '../helpers/spire.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';
import { startTcpSwitch, type TcpSwitch } from '../helpers/tcp-switch.js';
import { agentRoleOptions, serverRoleOptions } from '../helpers/topology.js';

const GOLDEN_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const TD = TRUST_DOMAIN;
const AGENT_TTL_S = 20;
// Topology tests run on the newest pinned SPIRE (SPIRE_TOPOLOGY_ALL=1: every install).
const installs = spireUnderTest();
const targets = process.env['SPIRE_TOPOLOGY_ALL'] ? installs : installs.slice(0, 1);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (targets.length === 0) {
  describe('HA cloud servers on PostgreSQL', () => {
    it('run on real SPIRE', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(targets.map((s) => [s.version, s] as const))('HA cloud servers on PostgreSQL, SPIRE %s', (_v, spire) => {
  let work: string;
  let pg: Postgres;
  let tpm: SwtpmHandle;
  /** A second node, booted the same way, for fresh first attestations (its own EK, so its own agent ID). */
  let probeTpm: SwtpmHandle;
  let lb: TcpSwitch;
  const servers: SpireServer[] = [];
  let agent: SpireAgent;
  let agentId: string;
  const stops: Array<() => Promise<void>> = [];
  const policyPath = () => join(work, 'policy.yaml');

  /** The node's pod source: the agents run the edge agent role of kubeedge-demo/topology.ts, edge-workload included. */
  let kubelet: FakeKubelet;
  // The roles of kubeedge-demo/topology.ts (what the ha-postgres overlay deploys), with temp paths and short TTLs.
  const agentParams = (t: SwtpmHandle, node: string): AgentParams => {
    const tpmWorkDir = join(work, `tpm-work-${node}`);
    mkdirSync(tpmWorkDir, { recursive: true });
    return {
      tpmTcti: t.tcti,
      eventLogPath: join(work, 'bbm'),
      tpmWorkDir,
      podSource: { kind: 'kubelet', host: '127.0.0.1', securePort: kubelet.port, caPath: kubelet.caPath, tokenPath: kubelet.tokenPath },
      nodeName: { name: node },
      maxStaleness: '1h',
    };
  };
  const decisions = (_s: SpireServer, outcome: string) => (l: SpireLogLine) => l.msg === 'Attestation decision' && l['agent_id'] === agentId && l['outcome'] === outcome;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'e2e-ha-'));
    pg = await startPostgres();
    stops.push(() => pg.stop());
    await pg.createDatabase('spire');
    [tpm, probeTpm] = await Promise.all([startSwtpm(), startSwtpm()]);
    stops.push(() => tpm.stop(), () => probeTpm.stop());
    const log = new Uint8Array(readFileSync(GOLDEN_LOG));
    await Promise.all([simulateMeasuredBoot(tpm.tcti, log), simulateMeasuredBoot(probeTpm.tcti, log)]);
    writeFileSync(join(work, 'bbm'), log);
    writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
    const { createPolicyCommand } = await import('../../src/cli/policy-create.js');
    writeFileSync(policyPath(), createPolicyCommand(log, { pcrs: [0, 2, 4, 7], name: 'golden' }));
    writeFileSync(join(work, 'golden.yaml'), readFileSync(policyPath()));
    kubelet = await startFakeKubelet(join(work, 'kubelet'), () => []);
    stops.push(() => kubelet.close());

    for (const name of ['cloud-1', 'cloud-2']) {
      // One after the other: the first creates the schema.
      const dir = join(work, name);
      const role = haServer({
        dataDir: join(dir, 'data'),
        ekCaPaths: [join(work, 'ek-ca.pem')],
        policyPath: policyPath(),
        ttl: { ca: '24h', agent: `${AGENT_TTL_S}s`, svid: '1h' },
        postgres: pg.connectionString('spire'),
      });
      const s = await SpireServer.start({ spire, dir, ...serverRoleOptions(role) });
      servers.push(s);
      stops.push(() => s.stop());
    }
    // Each server publishes its own CA into the shared bundle; the agent's bootstrap bundle must hold both.
    for (let i = 0; i < 100; i++) {
      const count = (await servers[0]!.bundlePem()).match(/BEGIN CERTIFICATE/g)?.length ?? 0;
      if (count >= 2) break;
      await sleep(200);
    }
    lb = await startTcpSwitch(servers[0]!.port);
    stops.push(() => lb.close());
    agent = await SpireAgent.start({
      spire,
      dir: join(work, 'agent'),
      server: servers[0]!,
      serverPort: lb.port,
      ...agentRoleOptions(edgeAgent(agentParams(tpm, 'edge-1'))),
    });
    stops.push(() => agent.stop());
    agentId = `spiffe://${TD}/spire/agent/tpm/${ekPubHash(tpm.ekCertRsaDer)}`;
  }, 180_000);

  afterAll(async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the bootstrap bundle carries both servers’ CAs (one shared datastore)', async () => {
    const pems = (await servers[1]!.bundlePem()).match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    expect(pems.length).toBeGreaterThanOrEqual(2);
  });

  it('admitted through cloud-1; cloud-2 lists the same agent with the same selectors', async () => {
    expect(servers[0]!.logs.filter(decisions(servers[0]!, 'accepted')).length).toBe(1);
    expect(servers[1]!.logs.filter(decisions(servers[1]!, 'accepted')).length).toBe(0);
    const [a1, a2] = await Promise.all(servers.map((s) => s.agents()));
    expect(a2!.map((a) => a.id.path)).toEqual(a1!.map((a) => a.id.path));
    expect(a2![0]!.selectors).toEqual(a1![0]!.selectors);
    expect(a2![0]!.selectors.map((s) => `${s.type}:${s.value}`)).toContain('tpm:policy:golden');
  });

  it('re-attests to cloud-2 after the balancer moves it: each attestation is decided by the server that got the stream', async () => {
    const on2 = servers[1]!.proc.countFrom(decisions(servers[1]!, 'accepted'));
    const on1 = servers[0]!.proc.countFrom(decisions(servers[0]!, 'accepted'));
    lb.switchTo(servers[1]!.port);
    await servers[1]!.proc.waitForLog(decisions(servers[1]!, 'accepted'), 3 * AGENT_TTL_S * 1000, 're-attestation on cloud-2', true);
    expect(on2().length).toBeGreaterThanOrEqual(1);
    expect(on1()).toEqual([]);
    // No "nonce unknown/expired" anywhere: a challenge never crossed servers.
    for (const s of servers) expect(s.logs.filter((l) => l.msg === 'Attestation decision' && l['outcome'] === 'refused')).toEqual([]);
    const serial = (await servers[0]!.agents())[0]!.x509svid_serial_number;
    expect((await servers[1]!.agents())[0]!.x509svid_serial_number).toBe(serial);
  });

  it('a restart of either server loses nothing: the agent re-attests to the restarted one', async () => {
    await servers[0]!.restart();
    lb.switchTo(servers[0]!.port);
    await servers[0]!.proc.waitForLog(decisions(servers[0]!, 'accepted'), 3 * AGENT_TTL_S * 1000, 're-attestation on restarted cloud-1', true);
    await servers[1]!.restart();
    lb.switchTo(servers[1]!.port);
    await servers[1]!.proc.waitForLog(decisions(servers[1]!, 'accepted'), 3 * AGENT_TTL_S * 1000, 're-attestation on restarted cloud-2', true);
    expect((await agent.cli(['healthcheck'])).code).toBe(0);
  }, 180_000);

  it('a policy change rolled out to both servers takes effect on both, and rolling it back does too', async () => {
    // A policy the node fails: PCR 7 pinned to a value it does not have.
    writeFileSync(policyPath(), ['policies:', '  - name: golden', '    pcrs:', '      sha256:', `        "7": "${'ab'.repeat(32)}"`, ''].join('\n'));
    const probe = async (s: SpireServer, name: string) => {
      const a = await SpireAgent.start({
        spire,
        dir: join(work, `probe-${name}-${Date.now()}`),
        server: s,
        waitReady: false,
        ...agentRoleOptions(edgeAgent(agentParams(probeTpm, `probe-${name}`))),
      });
      try {
        const outcome = await Promise.race([
          a.proc.waitForLog((l) => l.msg === 'Node attestation was successful', 60_000, 'attestation').then(() => 'accepted'),
          a.proc.exited.then(() => 'refused'),
        ]);
        return outcome;
      } finally {
        await a.stop();
      }
    };
    for (const s of servers) await s.restart(); // the rollout: a rolling restart with the new file
    expect(await probe(servers[0]!, 'c1')).toBe('refused');
    expect(await probe(servers[1]!, 'c2')).toBe('refused');
    for (const s of servers) {
      const refused = s.proc.logs.find((l) => l.msg === 'Attestation decision' && l['outcome'] === 'refused');
      expect(refused?.['rule'], `${s.configPath}`).toEqual(expect.any(String));
    }
    writeFileSync(policyPath(), readFileSync(join(work, 'golden.yaml')));
    for (const s of servers) await s.restart();
    expect(await probe(servers[0]!, 'c1b')).toBe('accepted');
    expect(await probe(servers[1]!, 'c2b')).toBe('accepted');
  }, 240_000);
});
