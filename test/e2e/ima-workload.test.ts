/**
 * Real SPIRE end to end, the workload half of IMA runtime integrity: an unmodified spire-agent loads the built
 * edge-workload binary (plugin_cmd + plugin_checksum) with container-level IMA on. The node's IMA list is an
 * ima-cgpath list our test writes the way the kernel does and extends into a real swtpm's PCR 10; pods are real
 * cgroups; the workloads are real processes (copies of the spire-agent binary running `api fetch x509`) whose
 * measured executable is or is not allowed by the runtime policy. Registration entries require `k8s:ima:verified`
 * plus the pod's UID: the allowed workload gets its SVID, the one whose executable is not allowed gets none, and
 * a decision event names its pod, container, PID, path, digest and rule.
 *
 * Node attestation is by join token here (test/e2e/ima.test.ts covers the node half with the TPM attestor).
 * Under CI=true a machine without SPIRE fails this file (spireUnderTest throws).
 */
import { spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPlugin } from '../helpers/binaries.js';
import { startFakeKubeApi } from '../helpers/fake-kube-api.js';
import { makePod, PodCgroups, startFakeKubelet, type FakeKubelet, type Pod } from '../helpers/edge-node.js';
import { NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest, type SpireInstall, type SpireLogLine } from '../helpers/spire.js';
import { extendPcrs, startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';
import { fileDigest, synthEntries, toBinaryList } from '../tpm/ima/synth.js';

const TD = 'edge.example';
const NODE_NAME = 'edge-node-ima';
const installs = spireUnderTest();
const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function runChild(child: ReturnType<typeof spawn>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('exit', (code) => resolve({ code, out }));
  });
}

if (installs.length === 0) {
  describe('real SPIRE: workload IMA', () => {
    it('runs against every pinned SPIRE version', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(installs.map((spire) => [spire.version, spire] as [string, SpireInstall]))('real SPIRE %s: workload IMA', (_version, spire) => {
  let work: string;
  let tpm: SwtpmHandle;
  let kubelet: FakeKubelet;
  let server: SpireServer;
  let agent: SpireAgent;
  let agentId: string;
  const cgroups = new PodCgroups();
  const stoppers: Array<() => Promise<void>> = [];
  const allowed = makePod({ name: 'ima-allowed', namespace: 'edge', serviceAccount: 'allowed' }, NODE_NAME);
  const tampered = makePod({ name: 'ima-tampered', namespace: 'edge', serviceAccount: 'tampered' }, NODE_NAME);
  const exes = { allowed: '', tampered: '' };
  const idOf = (pod: Pod) => `spiffe://${TD}/ns/${pod.namespace}/sa/${pod.serviceAccount}`;
  const cgPath = (pod: Pod) => `/kubepods/besteffort/pod${pod.uid}/${pod.containerId}`;
  let eventsPath: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), `e2e-ima-wl-${spire.version}-`));
    tpm = await startSwtpm();
    stoppers.push(() => tpm.stop());
    // The workloads' executables: spire-agent itself, and a copy with bytes appended (it still runs; another digest).
    mkdirSync(join(work, 'bin'));
    exes.allowed = join(work, 'bin', 'edge-app');
    exes.tampered = join(work, 'bin', 'edge-app-tampered');
    copyFileSync(spire.agent, exes.allowed);
    copyFileSync(spire.agent, exes.tampered);
    appendFileSync(exes.tampered, 'implant');
    chmodSync(exes.allowed, 0o755);
    chmodSync(exes.tampered, 0o755);

    // What an ima-cgpath kernel logs when each container execs its executable, extended into PCR 10.
    const entries = synthEntries([
      { template: 'ima-cgpath', path: 'boot_aggregate', content: 'boot', cgroup: '/' },
      { template: 'ima-cgpath', path: exes.allowed, content: readFileSync(exes.allowed), cgroup: cgPath(allowed) },
      { template: 'ima-cgpath', path: exes.tampered, content: readFileSync(exes.tampered), cgroup: cgPath(tampered) },
    ]);
    writeFileSync(join(work, 'binary_runtime_measurements'), toBinaryList(entries));
    await extendPcrs(tpm.tcti, entries.map((e) => ({ pcr: 10, bank: 'sha256' as const, digestHex: sha256(e.templateData) })));
    writeFileSync(
      join(work, 'runtime-policy.json'),
      JSON.stringify({
        meta: { version: 1, generator: 1 },
        release: 0,
        digests: { boot_aggregate: [Buffer.from(fileDigest('sha256', 'boot')).toString('hex')], [exes.allowed]: [sha256(readFileSync(exes.allowed))] },
        excludes: [],
        keyrings: {},
        ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null },
      }),
    );
    eventsPath = join(work, 'workload-events.jsonl');

    kubelet = await startFakeKubelet(join(work, 'kubelet'), () => [allowed, tampered]);
    stoppers.push(() => kubelet.close());
    server = await SpireServer.start({ spire, dir: join(work, 'server'), trustDomain: TD, plugins: [{ type: 'NodeAttestor', name: 'join_token', data: {} }] });
    stoppers.push(() => server.stop());
    const token = /Token:\s*(\S+)/.exec(await server.cliOk(['token', 'generate', '-ttl', '600']))![1]!;
    agentId = `spiffe://${TD}/spire/agent/join_token/${token}`;
    agent = await SpireAgent.start({
      spire,
      dir: join(work, 'agent'),
      server,
      agent: { join_token: token },
      plugins: [
        { type: 'NodeAttestor', name: 'join_token', data: {} },
        {
          type: 'WorkloadAttestor',
          name: 'k8s',
          cmd: builtPlugin('edge-workload'),
          data: {
            pod_source: 'kubelet',
            kubelet_host: '127.0.0.1',
            kubelet_secure_port: kubelet.port,
            kubelet_ca_path: kubelet.caPath,
            kubelet_token_path: kubelet.tokenPath,
            node_name: NODE_NAME,
            ima_log_path: join(work, 'binary_runtime_measurements'),
            ima_policy_path: join(work, 'runtime-policy.json'),
            ima_policy_name: 'edge-runtime',
            ima_tpm_tcti: tpm.tcti,
            decision_events: { file: { path: eventsPath } },
            log_level: 'debug',
          },
        },
      ],
    });
    stoppers.push(() => agent.stop());
    for (const pod of [allowed, tampered]) {
      await server.createEntry([
        '-parentID', agentId,
        '-spiffeID', idOf(pod),
        '-selector', `k8s:pod-uid:${pod.uid}`,
        '-selector', 'k8s:ima:verified',
        '-selector', 'k8s:ima:policy:edge-runtime',
      ]);
    }
  }, 180_000);

  afterAll(async () => {
    await cgroups.cleanup();
    for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** `<exe> api fetch x509 -write` run inside the pod, retried while the agent's entry cache catches up. */
  async function fetchInPod(pod: Pod, exe: string, deadlineMs: number): Promise<{ code: number | null; out: string; dir: string }> {
    const dir = join(work, `svid-${pod.name}`);
    mkdirSync(dir, { recursive: true });
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      const r = await runChild(cgroups.spawn(pod, exe, ['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-write', dir, '-timeout', '3s']));
      if (r.code === 0 || Date.now() > deadline) return { ...r, dir };
      await sleep(500);
    }
  }

  const attestedLine = (pod: Pod) => (l: SpireLogLine) => l.msg === 'PID attested to have selectors' && JSON.stringify(l['selectors'] ?? '').includes(pod.uid);

  it('a workload whose measured executable is allowed gets the SVID of an entry requiring k8s:ima:verified', async () => {
    const r = await fetchInPod(allowed, exes.allowed, 30_000);
    expect(r.code, r.out).toBe(0);
    const svid = new X509Certificate(readFileSync(join(r.dir, 'svid.0.pem')));
    expect(svid.subjectAltName).toBe(`URI:${idOf(allowed)}`);
    const line = await agent.proc.waitForLog(attestedLine(allowed), 10_000, 'the allowed pod attested');
    const selectors = JSON.stringify(line['selectors']);
    expect(selectors).toContain('ima:verified');
    expect(selectors).toContain(`exe-sha256:${sha256(readFileSync(exes.allowed))}`);
  });

  it('a workload whose measured executable is not allowed gets no SVID, and a decision event names it', async () => {
    const r = await fetchInPod(tampered, exes.tampered, 8_000);
    expect(r.code, r.out).not.toBe(0);
    expect(existsSync(join(r.dir, 'svid.0.pem'))).toBe(false);
    const line = await agent.proc.waitForLog(attestedLine(tampered), 10_000, 'the tampered pod attested');
    const selectors = JSON.stringify(line['selectors']);
    expect(selectors).toContain(`pod-uid:${tampered.uid}`);
    expect(selectors).toContain(`exe-sha256:${sha256(readFileSync(exes.tampered))}`);
    expect(selectors).not.toContain('ima:verified');
    expect(selectors).not.toContain('ima:policy');
    const events = readFileSync(eventsPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    const ev = events.find((e) => e.workload?.pod_uid === tampered.uid);
    expect(ev).toMatchObject({
      outcome: 'refused',
      code: 'ERR_IMA_RUNTIME_POLICY_VIOLATION',
      subject: 'workload',
      workload: {
        pod_namespace: 'edge',
        pod_name: (tampered.json as any).metadata.name,
        container_id: tampered.containerId,
        path: exes.tampered,
        digest: `sha256:${sha256(readFileSync(exes.tampered))}`,
        rule: 'not-in-policy',
        policy: 'edge-runtime',
        mode: 'cgroup',
      },
    });
    expect(ev!.workload.pid).toEqual(expect.any(Number));
    expect(events.some((e) => e.workload?.pod_uid === allowed.uid)).toBe(false);
  });

  it('once the allowed container runs a file the policy does not allow (measured, extended into PCR 10), it loses its SVID', async () => {
    const [late] = synthEntries([{ template: 'ima-cgpath', path: '/usr/bin/curl', content: 'fetched at run time', cgroup: cgPath(allowed) }]);
    appendFileSync(join(work, 'binary_runtime_measurements'), toBinaryList([late!]));
    await extendPcrs(tpm.tcti, [{ pcr: 10, bank: 'sha256', digestHex: sha256(late!.templateData) }]);
    const r = await fetchInPod(allowed, exes.allowed, 6_000);
    expect(r.code, r.out).not.toBe(0);
    const lines = agent.logs.filter(attestedLine(allowed));
    expect(JSON.stringify(lines.at(-1)!['selectors'])).not.toContain('ima:verified');
  });

  it('spire-edge-revoker deletes the pods the workload decision events name, and nothing else', async () => {
    const kube = await startFakeKubeApi(work);
    try {
      kube.pods = [structuredClone(allowed.json), structuredClone(tampered.json)] as typeof kube.pods;
      const config = join(work, 'revoker.json');
      writeFileSync(
        config,
        JSON.stringify({ events_file: eventsPath, state_dir: join(work, 'revoker'), kubernetes: { kubeconfig: kube.kubeconfigPath }, node_mapping: { label: false }, poll_interval: '100ms' }),
      );
      const revoker = spawn(builtPlugin('spire-edge-revoker'), ['run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      revoker.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      try {
        for (let i = 0; kube.pods.length > 0; i++) {
          if (i > 200) throw new Error(`pods not deleted: ${kube.pods.map((p) => p.metadata.name).join(', ')}\n${stderr}`);
          await sleep(100);
        }
      } finally {
        revoker.kill('SIGTERM');
        await new Promise((r) => revoker.once('exit', r));
      }
      const deletes = kube.calls.filter((c) => c.method === 'DELETE').map((c) => [c.path, (c.body as { preconditions?: { uid?: string } })?.preconditions?.uid]);
      expect(deletes).toEqual([
        [`/api/v1/namespaces/edge/pods/${(tampered.json as any).metadata.name}`, tampered.uid],
        [`/api/v1/namespaces/edge/pods/${(allowed.json as any).metadata.name}`, allowed.uid],
      ]);
      expect(kube.calls.some((c) => c.method === 'PATCH' || c.path.endsWith('/eviction'))).toBe(false);
    } finally {
      await kube.close();
    }
  });
});
