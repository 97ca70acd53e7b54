/**
 * Revocation end to end on real SPIRE: a swtpm node attests through our tpm-server plugin, which writes decision
 * events to a JSONL file; spire-edge-revoker (the built binary) follows that file. A PCR is extended (a new boot
 * application), the next re-attestation is refused, the event arrives, and the revoker bans the agent, taints the
 * Node (found by its EK-hash label on a real HTTPS Kubernetes API server) and evicts its pods. The node is then
 * repaired (TPM reset, golden boot again): the plugin would accept it, but SPIRE refuses the banned agent. Approval
 * lifts ban and taint, and the node attests again.
 *
 * It measures the timeline that docs/revocation.md reports: drift → refusal → ban → taint → evictions → expiry of
 * the last workload SVID issued before the ban.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionEvent } from '../../src/nodeattestor/decision-event.js';
import type { AuditEntry } from '../../src/revocation/revoker.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { makePod } from '../helpers/edge-node.js';
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js';
import { pcrEvent2Sha256, simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { ekPubHash, NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest } from '../helpers/spire.js';
import { extendPcrs, startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const GOLDEN_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const TD = 'edge.example';
const NODE = 'edge-node-1';
const AGENT_TTL_S = 20;
const WORKLOAD_TTL_S = 16;
const EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003;

const spire = spireUnderTest()[0];

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined | false | Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}
function jsonLines<T>(path: string): T[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T) : [];
}

if (!spire) {
  describe('revocation end to end', () => {
    it('drift → refusal → ban → fence → approve', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
} else {
  describe(`revocation end to end on real SPIRE ${spire.version}`, () => {
    let work: string;
    let tpm: SwtpmHandle;
    let server: SpireServer;
    let agent: SpireAgent;
    let kube: FakeKubeApi;
    let revoker: ChildProcess;
    let watcher: ChildProcess;
    const stoppers: Array<() => Promise<unknown>> = [];
    const svids: Array<{ at: number; event: string; serial?: string; notAfter?: string }> = [];
    let logPath: string;
    let eventsFile: string;
    let stateDir: string;
    let configPath: string;
    let hash: string;
    let agentId: string;

    const events = () => jsonLines<DecisionEvent>(eventsFile);
    const audit = () => jsonLines<AuditEntry>(join(stateDir, 'audit.jsonl'));
    const listed = async () => (await server.agents()).find((a) => `spiffe://${a.id.trust_domain}${a.id.path}` === agentId);
    const agentPlugins = () => [
      { type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-agent'), data: { tpm_tcti: tpm.tcti, event_log_path: logPath } },
      { type: 'WorkloadAttestor', name: 'unix', data: {} },
    ];

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'e2e-revocation-'));
      tpm = await startSwtpm();
      stoppers.push(() => tpm.stop());
      const golden = new Uint8Array(readFileSync(GOLDEN_LOG));
      await simulateMeasuredBoot(tpm.tcti, golden);
      logPath = join(work, 'bios_measurements');
      writeFileSync(logPath, golden);
      writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
      execFileSync(builtPlugin('spire-edge-attest'), ['policy', 'create', '--from-eventlog', GOLDEN_LOG, '--pcrs', '0,2,4,7', '--name', 'golden', '--out', join(work, 'policy.yaml')]);
      hash = ekPubHash(tpm.ekCertRsaDer);
      agentId = `spiffe://${TD}/spire/agent/tpm/${hash}`;
      eventsFile = join(work, 'decisions.jsonl');

      server = await SpireServer.start({
        spire: spire!,
        dir: join(work, 'server'),
        trustDomain: TD,
        agentTtl: `${AGENT_TTL_S}s`,
        defaultX509SvidTtl: `${WORKLOAD_TTL_S}s`,
        plugins: [
          {
            type: 'NodeAttestor',
            name: 'tpm',
            cmd: builtPlugin('tpm-server'),
            data: { ek_ca_path: [join(work, 'ek-ca.pem')], policy_path: join(work, 'policy.yaml'), decision_events: { file: { path: eventsFile } } },
          },
        ],
      });
      stoppers.push(() => server.stop());
      agent = await SpireAgent.start({ spire: spire!, dir: join(work, 'agent'), server, plugins: agentPlugins() });
      stoppers.push(() => agent.stop());

      // The cluster: the node carries its EK hash as a label (set at provisioning), two pods run there.
      kube = await startFakeKubeApi(work);
      stoppers.push(() => kube.close());
      kube.addNode(NODE, { 'attestation.spiffe.io/ek-hash': hash.slice(0, 63) });
      kube.addNode('edge-node-2');
      kube.pods = [
        makePod({ name: 'sensor-gateway', namespace: 'edge', serviceAccount: 'sensor' }, NODE).json,
        makePod({ name: 'camera-relay', namespace: 'edge', serviceAccount: 'camera' }, NODE).json,
        makePod({ name: 'sensor-gateway', namespace: 'edge', serviceAccount: 'sensor' }, 'edge-node-2').json,
      ] as FakeKubeApi['pods'];

      stateDir = join(work, 'revoker');
      configPath = join(work, 'revoker.yaml');
      writeFileSync(
        configPath,
        [
          `events_file: ${eventsFile}`,
          `state_dir: ${stateDir}`,
          'spire:',
          `  admin_socket: ${server.socketPath}`,
          'kubernetes:',
          `  kubeconfig: ${kube.kubeconfigPath}`,
          'node_mapping:',
          '  label: true',
          'retry: { initial: 200ms, max: 2s }',
          'poll_interval: 100ms',
        ].join('\n') + '\n',
      );
      revoker = spawn(builtPlugin('spire-edge-revoker'), ['run', '--config', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
      createInterface({ input: revoker.stderr! }).on('line', (l) => process.env['SPIRE_E2E_ECHO'] && process.stderr.write(`[revoker] ${l}\n`));
      stoppers.push(async () => {
        revoker.kill('SIGTERM');
      });

      // A workload on the node (uid 0 here) holding a Workload API stream open, as a real service does.
      const alias = `spiffe://${TD}/edge/nodes/golden`;
      await server.createEntry(['-node', '-spiffeID', alias, '-selector', 'tpm:policy:golden']);
      await server.createEntry(['-parentID', alias, '-spiffeID', `spiffe://${TD}/edge/sensor`, '-selector', `unix:uid:${process.getuid!()}`, '-x509SVIDTTL', String(WORKLOAD_TTL_S)]);
      watcher = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test/helpers/workload-fetch.ts')], {
        cwd: repoRoot,
        env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}`, FETCH_MODE: 'watch' },
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      createInterface({ input: watcher.stdout! }).on('line', (l) => {
        try {
          svids.push(JSON.parse(l));
        } catch {
          /* not ours */
        }
      });
      stoppers.push(async () => {
        watcher.kill('SIGTERM');
      });
    }, 180_000);

    afterAll(async () => {
      for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it('the first attestation is an accepted, affirming event; the revoker does nothing', async () => {
      const accepted = await until('accepted event', 20_000, () => events().find((e) => e.outcome === 'accepted'));
      expect(accepted).toMatchObject({ agent_id: agentId, ek_hash: hash, status: 'affirming', policies: { passed: ['golden'] } });
      await until('a workload SVID', 30_000, () => svids.some((s) => s.event === 'update'));
      expect(audit()).toEqual([]);
      expect((await listed())?.banned).toBe(false);
    }, 60_000);

    it('drift → refused re-attestation → event → ban, taint and evictions; the repaired node stays out until approved', async () => {
      const t0 = Date.now();
      const data = Buffer.from('\\EFI\\evil\\bootkit.efi');
      const digest = createHash('sha256').update(data).digest();
      await extendPcrs(tpm.tcti, [{ pcr: 4, bank: 'sha256', digestHex: digest.toString('hex') }]);
      writeFileSync(logPath, Buffer.concat([readFileSync(logPath), pcrEvent2Sha256(4, EV_EFI_BOOT_SERVICES_APPLICATION, digest, data)]));
      const lastGood = (await listed())!;

      // An attestation in flight between the extend and the log write quotes the new PCR 4 with the old log and is
      // refused as a replay failure (ERR_EVENTLOG_REPLAY): also a refusal, but the drift verdict is the policy one.
      const refusal = await until('refused event', 3 * AGENT_TTL_S * 1000, () => events().find((e) => e.outcome === 'refused' && e.code === 'ERR_POLICY_VIOLATION'));
      expect(events().filter((e) => e.outcome === 'refused').every((e) => ['ERR_POLICY_VIOLATION', 'ERR_EVENTLOG_REPLAY'].includes(e.code ?? ''))).toBe(true);
      expect(refusal).toMatchObject({ agent_id: agentId, status: 'contraindicated', code: 'ERR_POLICY_VIOLATION', policies: { failed: [{ policy: 'golden' }] } });
      expect(refusal.rule).toMatch(/pcr sha256:4|boot_applications/);
      const ban = await until('ban', 20_000, () => audit().find((e) => e.action === 'ban'));
      const taint = await until('taint', 20_000, () => audit().find((e) => e.action === 'taint'));
      const evict = await until('evict', 20_000, () => audit().find((e) => e.action === 'evict'));
      expect([ban.result, taint.result, evict.result]).toEqual(['done', 'done', 'done']);
      expect(taint.node).toBe(NODE); // found by the EK-hash label
      expect((await listed())?.banned).toBe(true);
      expect(kube.nodes.get(NODE)!.spec.taints).toEqual([expect.objectContaining({ key: 'attestation.spiffe.io/untrusted', effect: 'NoExecute' })]);
      expect(kube.nodes.get('edge-node-2')!.spec.taints).toBeUndefined();
      expect(kube.pods.map((p) => p.spec.nodeName)).toEqual(['edge-node-2']);
      const tBan = Date.parse(ban.time);

      // Workload SVIDs issued before the ban stay valid until their notAfter; none is issued after it.
      await until('agent gives up', Math.max(0, Number(lastGood.x509svid_expires_at) * 1000 - Date.now()) + 40_000, async () => !agent.proc.running || undefined);
      const updates = svids.filter((s) => s.event === 'update');
      const afterBan = updates.filter((u) => u.at > tBan + 1000);
      expect(afterBan).toEqual([]);
      const lastNotAfter = Math.max(...updates.map((u) => Date.parse(u.notAfter!)));

      const timeline = {
        spire: spire!.version,
        agent_ttl_s: AGENT_TTL_S,
        workload_ttl_s: WORKLOAD_TTL_S,
        drift_to_refusal_ms: Date.parse(refusal.decided_at) - t0,
        refusal_to_ban_ms: tBan - Date.parse(refusal.decided_at),
        drift_to_ban_ms: tBan - t0,
        drift_to_taint_ms: Date.parse(taint.time) - t0,
        drift_to_evictions_ms: Date.parse(evict.time) - t0,
        drift_to_last_workload_svid_expiry_ms: lastNotAfter - t0,
        drift_to_agent_svid_expiry_ms: Number(lastGood.x509svid_expires_at) * 1000 - t0,
        workload_svids_issued_after_ban: afterBan.length,
      };
      process.stderr.write(`revocation timeline ${JSON.stringify(timeline)}\n`);
      writeFileSync(join(repoRoot, '.cache', `revocation-timeline-${spire!.version}.json`), JSON.stringify(timeline, null, 2) + '\n');
      expect(timeline.refusal_to_ban_ms).toBeLessThan(5_000);
      expect(timeline.drift_to_refusal_ms).toBeLessThan(3 * AGENT_TTL_S * 1000);

      // Repair: TPM reset and the golden boot again. Our plugin now accepts the evidence, SPIRE refuses the ban.
      await tpm.restart();
      await simulateMeasuredBoot(tpm.tcti, new Uint8Array(readFileSync(GOLDEN_LOG)));
      writeFileSync(logPath, readFileSync(GOLDEN_LOG));
      const acceptedBefore = events().filter((e) => e.outcome === 'accepted').length;
      agent = await SpireAgent.start({ spire: spire!, dir: join(work, 'agent'), server, plugins: agentPlugins(), waitReady: false });
      stoppers.push(() => agent.stop());
      const exit = await Promise.race([agent.proc.exited, sleep(60_000).then(() => undefined)]);
      expect(exit, 'the banned agent cannot attest').toBeDefined();
      expect(events().filter((e) => e.outcome === 'accepted').length).toBeGreaterThan(acceptedBefore);
      expect(agent.logs.some((l) => /banned/i.test(JSON.stringify(l)))).toBe(true);
      expect((await listed())?.banned).toBe(true);
    }, 240_000);

    it('approve <ek-hash> lifts ban and taint; the node attests again', async () => {
      // Asynchronously: the Kubernetes API server the revoker talks to runs in this process.
      const out = await new Promise<string>((resolve, reject) =>
        execFile(builtPlugin('spire-edge-revoker'), ['approve', hash, '--config', configPath], { encoding: 'utf8' }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
      );
      const actions = (JSON.parse(out) as { actions: AuditEntry[] }).actions;
      expect(actions.map((a) => [a.action, a.result])).toEqual([
        ['unban', 'done'],
        ['untaint', 'done'],
      ]);
      expect(kube.nodes.get(NODE)!.spec.taints).toEqual([]);
      agent = await SpireAgent.start({ spire: spire!, dir: join(work, 'agent'), server, plugins: agentPlugins() });
      stoppers.push(() => agent.stop());
      const again = await until('agent listed again', 30_000, listed);
      expect(again.banned).toBe(false);
      expect(audit().filter((e) => e.action === 'ban' && e.result === 'done')).toHaveLength(1);
    }, 120_000);
  });
}
