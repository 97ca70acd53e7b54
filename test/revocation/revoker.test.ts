/**
 * spire-edge-revoker (the built binary, as a child process) against a real spire-server and a real HTTPS server
 * speaking the Kubernetes API paths it uses. Agents are real spire-agents attested by join token (what is banned is
 * SPIRE's agent record; how it attested does not matter here; test/e2e/revocation.test.ts does it with a TPM).
 *
 * Tests run in order on one server: ban + fence, the banned agent cannot renew, duplicates, malformed lines, a
 * SPIRE outage, a Kubernetes outage with the revoker killed mid-way, approve, dry run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestationRefused } from '../../src/errors.js';
import { buildDecisionEvent } from '../../src/nodeattestor/decision-event.js';
import type { AuditEntry } from '../../src/revocation/revoker.js';
import { builtPlugin } from '../helpers/binaries.js';
import { makePod } from '../helpers/edge-node.js';
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js';
import { NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest } from '../helpers/spire.js';

const installs = spireUnderTest();
const spire = installs[0];
const TD = 'edge.example';
const TAINT = 'attestation.spiffe.io/untrusted';

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; revoker log:\n${lastRevokerLines()}`);
    await sleep(100);
  }
}

function refusalLine(agentId: string | undefined, eventId: string, code = 'ERR_POLICY_VIOLATION', ekHash?: string): string {
  const event = buildDecisionEvent({
    eventId,
    outcome: 'refused',
    audit: { ...(agentId ? { agent_id: agentId } : {}), ...(ekHash ? { ek_hash: ekHash } : {}) },
    policies: { passed: [], failed: [{ policy: 'golden', rules: ['pcr sha256:4'] }] },
    error: new AttestationRefused(code, 'policy "golden": pcr sha256:4: observed 5c9f, expected ce5e', { fields: { rule: 'pcr sha256:4' } }),
    startedAt: new Date(),
    decidedAt: new Date(),
    verifierBuild: 'test',
  });
  return JSON.stringify(event) + '\n';
}

let current: RevokerProcess | undefined;
const lastRevokerLines = () => (current ? current.logs.slice(-8).map((l) => JSON.stringify(l)).join('\n') : '(none)');

/** The revoker as it runs in production: the bundled binary, logs on stderr. */
class RevokerProcess {
  readonly logs: Array<Record<string, unknown>> = [];
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  constructor(args: readonly string[]) {
    this.child = spawn(builtPlugin('spire-edge-revoker'), [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    current = this;
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
    createInterface({ input: this.child.stderr! }).on('line', (l) => {
      try {
        this.logs.push(JSON.parse(l));
      } catch {
        this.logs.push({ raw: l });
      }
    });
  }
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

function runCli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(builtPlugin('spire-edge-revoker'), [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

if (!spire) {
  describe('spire-edge-revoker on real SPIRE', () => {
    it('bans and fences', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
} else {
  describe(`spire-edge-revoker on real SPIRE ${spire.version}`, () => {
    let work: string;
    let server: SpireServer;
    let kube: FakeKubeApi;
    const agents: Record<string, { agent: SpireAgent; id: string }> = {};
    const stoppers: Array<() => Promise<unknown>> = [];
    let revoker: RevokerProcess | undefined;
    let eventsFile: string;
    let stateDir: string;
    let configPath: string;

    const audit = (dir = stateDir): AuditEntry[] =>
      existsSync(join(dir, 'audit.jsonl'))
        ? readFileSync(join(dir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditEntry)
        : [];
    const agentState = async (id: string) => (await server.agents()).find((a) => `spiffe://${a.id.trust_domain}${a.id.path}` === id);
    const taints = (node: string) => kube.nodes.get(node)!.spec.taints ?? [];

    async function joinAgent(name: string, keepRunning: boolean): Promise<void> {
      const out = await server.cliOk(['token', 'generate', '-ttl', '600']);
      const token = /Token:\s*(\S+)/.exec(out)![1]!;
      const agent = await SpireAgent.start({
        spire: spire!,
        dir: join(work, `agent-${name}`),
        server,
        agent: { join_token: token },
        plugins: [
          { type: 'NodeAttestor', name: 'join_token', data: {} },
          { type: 'WorkloadAttestor', name: 'unix', data: {} },
        ],
      });
      agents[name] = { agent, id: `spiffe://${TD}/spire/agent/join_token/${token}` };
      if (keepRunning) stoppers.push(() => agent.stop());
      else await agent.stop();
    }

    function writeConfig(path: string, overrides: Record<string, unknown> = {}): void {
      writeFileSync(
        path,
        JSON.stringify({
          events_file: eventsFile,
          state_dir: stateDir,
          spire: { admin_socket: server.socketPath, timeout: '3s' },
          kubernetes: { kubeconfig: kube.kubeconfigPath },
          node_mapping: {
            static: Object.fromEntries(['a', 'b', 'c', 'd', 'e'].map((n) => [agents[n]!.id, `edge-${n}`])),
            label: false,
          },
          retry: { initial: '200ms', max: '1s' },
          poll_interval: '100ms',
          ...overrides,
        }),
      );
    }

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'revoker-'));
      server = await SpireServer.start({
        spire: spire!,
        dir: join(work, 'server'),
        trustDomain: TD,
        agentTtl: '20s',
        plugins: [{ type: 'NodeAttestor', name: 'join_token', data: {} }],
      });
      stoppers.push(() => server.stop());
      kube = await startFakeKubeApi(work);
      stoppers.push(() => kube.close());
      // Agent a keeps running (its renewals must fail once banned); the others only need their agent records.
      await joinAgent('a', true);
      for (const n of ['b', 'c', 'd', 'e']) await joinAgent(n, false);
      for (const n of ['a', 'b', 'c', 'd', 'e']) kube.addNode(`edge-${n}`);
      kube.pods = [
        makePod({ name: 'sensor-gateway', namespace: 'edge', serviceAccount: 'sensor' }, 'edge-a').json,
        makePod({ name: 'camera-relay', namespace: 'edge', serviceAccount: 'camera' }, 'edge-a').json,
        makePod({ name: 'sensor-gateway', namespace: 'edge', serviceAccount: 'sensor' }, 'edge-b').json,
        makePod({ name: 'camera-relay', namespace: 'edge', serviceAccount: 'camera' }, 'edge-d').json,
      ] as FakeKubeApi['pods'];
      // A DaemonSet pod on edge-a: NoExecute handles it per its tolerations; the revoker does not evict it.
      const ds = makePod({ name: 'node-exporter', namespace: 'monitoring', serviceAccount: 'node-exporter' }, 'edge-a').json as { metadata: { ownerReferences: Array<{ kind: string }> } };
      ds.metadata.ownerReferences[0]!.kind = 'DaemonSet';
      kube.pods.push(ds as unknown as FakeKubeApi['pods'][number]);

      eventsFile = join(work, 'events.jsonl');
      writeFileSync(eventsFile, '');
      stateDir = join(work, 'state');
      configPath = join(work, 'revoker.json');
      writeConfig(configPath);
    }, 180_000);

    afterAll(async () => {
      await revoker?.stop('SIGKILL');
      for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it('a refusal: the agent is banned in SPIRE, its Node tainted NoExecute and its pods evicted; every action audited', async () => {
      expect((await agentState(agents.a!.id))?.banned).toBe(false);
      revoker = new RevokerProcess(['run', '--config', configPath]);
      appendFileSync(eventsFile, refusalLine(agents.a!.id, 'ev-a-1'));
      await until('evict audited for a', 20_000, () => audit().find((e) => e.action === 'evict' && e.agent_id === agents.a!.id));

      expect((await agentState(agents.a!.id))?.banned).toBe(true);
      expect(taints('edge-a')).toEqual([expect.objectContaining({ key: TAINT, effect: 'NoExecute', value: 'ERR_POLICY_VIOLATION_pcr_sha256_4' })]);
      const evictions = kube.calls.filter((c) => c.method === 'POST' && c.path.endsWith('/eviction'));
      expect(evictions).toHaveLength(2);
      expect(evictions.every((c) => /^\/api\/v1\/namespaces\/edge\/pods\/(sensor-gateway|camera-relay)-/.test(c.path) && c.status === 201)).toBe(true);
      // Pods elsewhere, and the DaemonSet pod, stay.
      expect(kube.pods.map((p) => `${p.spec.nodeName}/${p.metadata.namespace}`).sort()).toEqual(['edge-a/monitoring', 'edge-b/edge', 'edge-d/edge']);
      const patch = kube.calls.find((c) => c.method === 'PATCH')!;
      expect(patch.contentType).toBe('application/merge-patch+json');
      expect(patch.body).toMatchObject({ metadata: { resourceVersion: expect.any(String) } });

      const mine = audit().filter((e) => e.agent_id === agents.a!.id);
      expect(mine.map((e) => [e.action, e.result])).toEqual([
        ['ban', 'done'],
        ['taint', 'done'],
        ['evict', 'done'],
      ]);
      expect(mine.every((e) => e.event_id === 'ev-a-1')).toBe(true);
      expect(mine[2]!.pods).toHaveLength(2);
    }, 60_000);

    it('the banned agent is refused by SPIRE at its next renewal or sync, shuts down, and its serial never changes', async () => {
      const before = await agentState(agents.a!.id);
      const bannedAt = Date.parse(audit().find((e) => e.action === 'ban' && e.agent_id === agents.a!.id)!.time);
      // A banned agent's SVID no longer authorizes the agent's calls: whichever comes first after the ban, the
      // SVID renewal (RenewAgent) or the entry sync (SyncAuthorizedEntries), is refused with PermissionDenied, and
      // spire-agent then removes its SVID and exits.
      const refused = await agents.a!.agent.proc.waitForLog(
        (l) => (l.msg === 'Failed to renew agent' || l.msg === 'Agent is banned: removing SVID and shutting down') && Date.parse(l.time) >= bannedAt - 1000,
        40_000,
        'refused renewal or sync',
      );
      expect(JSON.stringify(refused)).toMatch(/PermissionDenied[^"]*authorization denied for method \/spire\.api\.server\.(agent\.v1\.Agent\/RenewAgent|entry\.v1\.Entry\/SyncAuthorizedEntries)/);
      // Before the ban, nothing had been refused.
      expect(agents.a!.agent.logs.filter((l) => /PermissionDenied/.test(JSON.stringify(l)) && Date.parse(l.time) < bannedAt - 1000)).toEqual([]);
      const exit = await Promise.race([agents.a!.agent.proc.exited, sleep(40_000).then(() => undefined)]);
      expect(exit, 'spire-agent shuts down once it learns it is banned').toBeDefined();
      const after = await agentState(agents.a!.id);
      expect(after?.banned).toBe(true);
      expect(after?.x509svid_serial_number).toBe(before?.x509svid_serial_number);
    }, 90_000);

    it('a duplicate event (same and new event ID) bans nothing twice and patches nothing again', async () => {
      const writes = () => kube.calls.filter((c) => c.method !== 'GET').length;
      const before = writes();
      appendFileSync(eventsFile, refusalLine(agents.a!.id, 'ev-a-1') + refusalLine(agents.a!.id, 'ev-a-2'));
      await until('second duplicate handled', 20_000, () => audit().filter((e) => e.action === 'evict' && e.agent_id === agents.a!.id).length === 3 || undefined);
      const dup = audit().filter((e) => e.agent_id === agents.a!.id).slice(3);
      expect(dup.map((e) => [e.action, e.result])).toEqual([
        ['ban', 'already'],
        ['taint', 'already'],
        ['evict', 'already'],
        ['ban', 'already'],
        ['taint', 'already'],
        ['evict', 'already'],
      ]);
      expect(writes()).toBe(before);
      expect(taints('edge-a')).toHaveLength(1);
    }, 60_000);

    it('malformed lines are logged and skipped; the event after them is handled', async () => {
      appendFileSync(eventsFile, 'this is not json\n' + JSON.stringify({ version: 2, outcome: 'refused', agent_id: agents.b!.id }) + '\n' + refusalLine(agents.b!.id, 'ev-b-1'));
      await until('b banned', 20_000, () => audit().find((e) => e.action === 'ban' && e.agent_id === agents.b!.id));
      const skipped = audit().filter((e) => e.action === 'skip' && e.detail?.startsWith('malformed'));
      expect(skipped).toHaveLength(2);
      expect(skipped[1]!.detail).toMatch(/version/);
      expect(revoker!.logs.filter((l) => l['@message'] === 'Malformed decision event skipped')).toHaveLength(2);
      expect((await agentState(agents.b!.id))?.banned).toBe(true);
    }, 60_000);

    it('refusals that are not evidence against the node (pending enrolment, unreadable store) are audited as skipped, never acted on', async () => {
      appendFileSync(eventsFile, refusalLine(agents.e!.id, 'ev-e-pending', 'ERR_ENROLMENT_PENDING') + refusalLine(agents.e!.id, 'ev-e-store', 'ERR_ENROLMENT_STORE'));
      await until('e skipped twice', 20_000, () => audit().filter((e) => e.agent_id === agents.e!.id).length === 2 || undefined);
      const e = audit().filter((x) => x.agent_id === agents.e!.id);
      expect(e.map((x) => [x.action, x.result, x.event_id])).toEqual([
        ['skip', 'skipped', 'ev-e-pending'],
        ['skip', 'skipped', 'ev-e-store'],
      ]);
      expect(e[0]!.detail).toContain('ERR_ENROLMENT_PENDING is in ignore_codes');
      expect((await agentState(agents.e!.id))?.banned).toBe(false);
      expect(taints('edge-e')).toEqual([]);
    }, 60_000);

    it('SPIRE down: the revoker retries with backoff, commits nothing, and bans once SPIRE is back', async () => {
      // A real outage: spire-server stops (its datastore stays on disk) and comes back on the same admin socket.
      const options = server.options;
      await server.stop();
      const offsetBefore = readFileSync(join(stateDir, 'offset.json'), 'utf8');
      appendFileSync(eventsFile, refusalLine(agents.c!.id, 'ev-c-1'));
      await until('spire retries', 20_000, () => revoker!.logs.filter((l) => l['@message'] === 'spire get agent failed, retrying').length >= 3 || undefined);
      expect(readFileSync(join(stateDir, 'offset.json'), 'utf8')).toBe(offsetBefore);
      expect(audit().some((e) => e.agent_id === agents.c!.id)).toBe(false);
      server = await SpireServer.start(options);
      stoppers.push(() => server.stop());
      // The line is committed once its last step (evict) is done.
      await until('c handled', 30_000, () => audit().find((e) => e.action === 'evict' && e.agent_id === agents.c!.id));
      await until('offset committed', 5_000, () => readFileSync(join(stateDir, 'offset.json'), 'utf8') !== offsetBefore || undefined);
      expect(audit().find((e) => e.action === 'ban' && e.agent_id === agents.c!.id)!.result).toBe('done');
      expect((await agentState(agents.c!.id))?.banned).toBe(true);
    }, 90_000);

    it('Kubernetes down and the revoker killed mid-way: the restarted revoker resumes that event and finishes the fence', async () => {
      kube.down = true;
      appendFileSync(eventsFile, refusalLine(agents.d!.id, 'ev-d-1'));
      await until('d banned', 20_000, () => audit().find((e) => e.action === 'ban' && e.agent_id === agents.d!.id));
      await until('kube retries', 20_000, () => revoker!.logs.some((l) => l['@message'] === 'kubernetes taint node failed, retrying') || undefined);
      expect(await revoker!.stop('SIGKILL')).toBeNull();
      const handledBefore = audit().length;
      kube.down = false;
      revoker = new RevokerProcess(['run', '--config', configPath]);
      await until('d evicted', 20_000, () => audit().find((e) => e.action === 'evict' && e.agent_id === agents.d!.id));
      const d = audit().filter((e) => e.agent_id === agents.d!.id);
      expect(d.map((e) => [e.action, e.result])).toEqual([
        ['ban', 'done'],
        ['ban', 'already'],
        ['taint', 'done'],
        ['evict', 'done'],
      ]);
      expect(taints('edge-d')).toEqual([expect.objectContaining({ key: TAINT })]);
      expect(kube.pods.some((p) => p.spec.nodeName === 'edge-d')).toBe(false);
      // Nothing before that event was handled again.
      expect(audit().slice(handledBefore).every((e) => e.agent_id === agents.d!.id)).toBe(true);
      expect(revoker.logs.find((l) => l['@message'] === 'Revoker started')?.['resume']).toMatch(/"offset":\d+/);
    }, 60_000);

    it('approve <agent-id>: deletes the ban (the agent record) and removes the taint; a second approve finds nothing to do', async () => {
      const r = await runCli(['approve', agents.a!.id, '--config', configPath]);
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { actions: AuditEntry[] };
      expect(out.actions.map((e) => [e.action, e.result])).toEqual([
        ['unban', 'done'],
        ['untaint', 'done'],
      ]);
      expect(await agentState(agents.a!.id)).toBeUndefined();
      expect(taints('edge-a')).toEqual([]);
      const again = JSON.parse((await runCli(['approve', agents.a!.id, '--config', configPath])).stdout) as { actions: AuditEntry[] };
      expect(again.actions.map((e) => e.result)).toEqual(['not_found', 'already']);
      const status = JSON.parse((await runCli(['status', '--config', configPath])).stdout) as { fenced: Record<string, unknown> };
      expect(Object.keys(status.fenced).sort()).toEqual([agents.b!.id, agents.c!.id, agents.d!.id].sort());
    }, 60_000);

    it('dry run: audits what it would do, bans nothing and writes nothing to Kubernetes', async () => {
      await revoker?.stop();
      const dryDir = join(work, 'state-dry');
      mkdirSync(dryDir);
      const dryEvents = join(work, 'events-dry.jsonl');
      writeFileSync(dryEvents, refusalLine(agents.e!.id, 'ev-e-1'));
      const dryConfig = join(work, 'revoker-dry.json');
      writeConfig(dryConfig, { events_file: dryEvents, state_dir: dryDir });
      const writes = kube.calls.filter((c) => c.method !== 'GET').length;
      revoker = new RevokerProcess(['run', '--config', dryConfig, '--dry-run']);
      await until('dry evict', 20_000, () => audit(dryDir).find((e) => e.action === 'evict'));
      expect(audit(dryDir).map((e) => [e.action, e.result, e.dry_run])).toEqual([
        ['ban', 'dry_run', true],
        ['taint', 'dry_run', true],
        ['evict', 'dry_run', true],
      ]);
      expect((await agentState(agents.e!.id))?.banned).toBe(false);
      expect(kube.calls.filter((c) => c.method !== 'GET').length).toBe(writes);
      expect(await revoker.stop()).toBe(0);
    }, 60_000);
  });
}
