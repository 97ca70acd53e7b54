/**
 * Attack class F4: downgrade the workload attestor to an unauthenticated pod source. The kubelet's secure port
 * fails (a man in the middle with another certificate, or the kubelet is not up yet) and an unprivileged process
 * (uid 65534) listening on 127.0.0.1 serves a forged pod list that gives the attacker's container
 * `sa:cluster-admin`. The shipped edge-workload must never fall from the kubelet to that listener, and must refuse
 * a loopback listener owned by anyone but the expected user even when told to use it.
 *
 * Real parts: real processes in real cgroups (cgroup v1 `pids`), real HTTP(S) servers, one of them a separate
 * process running as uid 65534, and the plugin reading /proc/net/tcp.
 */
import * as grpc from '@grpc/grpc-js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { json, makePki, startHttp, startHttps, tempDir, type TestServer } from '../workload/helpers.js';

const V1 = '/sys/fs/cgroup/pids';
const NOBODY = 65534;
const hex64 = (): string => (randomUUID() + randomUUID()).replaceAll('-', '').slice(0, 64);

const victim = { uid: randomUUID(), cid: hex64() };
const createdDirs: string[] = [];
const children: ChildProcess[] = [];
const plugins: PluginHarness[] = [];
let dir: { path: string; remove(): void };
let workloadPid: number;
let forgedPort: number;
let honestEdged: TestServer;
let mitmKubelet: TestServer;

function podList(sa: string): string {
  return JSON.stringify({
    kind: 'PodList',
    apiVersion: 'v1',
    items: [
      {
        metadata: { uid: victim.uid, name: 'web', namespace: 'edge', labels: {} },
        spec: { serviceAccountName: sa, nodeName: 'edge-node-1' },
        status: { phase: 'Running', containerStatuses: [{ name: 'main', containerID: `containerd://${victim.cid}`, image: 'web:1', imageID: `web@sha256:${'0'.repeat(64)}` }] },
      },
    ],
  });
}

/** The attacker: a separate process running as uid 65534 that serves a forged pod list on 127.0.0.1. */
async function startForgedListener(): Promise<number> {
  const script = `const body = ${JSON.stringify(podList('cluster-admin'))};
require('node:http').createServer((q, s) => { s.writeHead(200, { 'content-type': 'application/json' }); s.end(body); })
  .listen(0, '127.0.0.1', function () { console.log(this.address().port); });`;
  const child = spawn(process.execPath, ['-e', script], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'inherit'], cwd: '/' });
  children.push(child);
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`forged listener exited (${code})`)));
  });
  return Number(line);
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('pod-source downgrade attacks need root (real cgroups, a uid-65534 child)');
  dir = tempDir('adv-podsrc-');
  // The workload: a real process in the victim pod's container cgroup.
  const c = spawn('sleep', ['600'], { stdio: 'ignore' });
  children.push(c);
  await new Promise<void>((resolve, reject) => (c.once('spawn', () => resolve()), c.once('error', reject)));
  let cur = V1;
  for (const part of `kubepods/besteffort/pod${victim.uid}/${victim.cid}`.split('/')) {
    cur = join(cur, part);
    if (!existsSync(cur)) (mkdirSync(cur), createdDirs.push(cur));
  }
  writeFileSync(join(cur, 'cgroup.procs'), String(c.pid));
  workloadPid = c.pid!;

  forgedPort = await startForgedListener();
  honestEdged = await startHttp((_q, s) => json(s, podList('web'))); // owned by root, like edgecore
  // A kubelet impostor with a certificate from another CA: TLS verification fails.
  const realPki = await makePki();
  const mitmPki = await makePki();
  writeFileSync(join(dir.path, 'kubelet-ca.pem'), realPki.caPem);
  writeFileSync(join(dir.path, 'token'), 'kubelet-token');
  mitmKubelet = await startHttps(mitmPki, (_q, s) => json(s, podList('cluster-admin')));
}, 60_000);

afterAll(async () => {
  for (const p of plugins.splice(0)) await p.kill();
  for (const c of children) c.kill('SIGKILL');
  await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
  await honestEdged?.close();
  await mitmKubelet?.close();
  for (const d of createdDirs.reverse()) for (let i = 0; i < 50 && existsSync(d); i++) {
    try {
      rmdirSync(d);
    } catch {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  dir?.remove();
  expect(createdDirs.filter((d) => existsSync(d))).toEqual([]);
});

async function workloadAttestor(hcl: string): Promise<PluginHarness> {
  const p = await PluginHarness.launch({ binary: builtPlugin('edge-workload'), type: 'WorkloadAttestor', env: { KUBERNETES_SERVICE_HOST: undefined } });
  plugins.push(p);
  await p.init([]);
  await p.configure(`${hcl}\nmiss_retry_deadline = "500ms"\nrequest_timeout = "2s"`);
  return p;
}

async function attest(p: PluginHarness): Promise<{ selectors?: string[]; err?: grpc.ServiceError }> {
  return p.unary(ServiceNames.workloadAttestor, 'Attest', { pid: workloadPid }).then(
    (r: { selector_values?: string[] }) => ({ selectors: r.selector_values ?? [] }),
    (err: grpc.ServiceError) => ({ err }),
  );
}

describe('F4: no downgrade to an unauthenticated pod source, and no impostor on a loopback port', () => {
  it('sanity: the forged listener really runs as uid 65534 and really serves cluster-admin', async () => {
    const status = readFileSync(`/proc/${children[1]!.pid}/status`, 'utf8');
    expect(status).toMatch(new RegExp(`^Uid:\\s+${NOBODY}\\s`, 'm'));
    const body = await (await fetch(`http://127.0.0.1:${forgedPort}/pods`)).text();
    expect(body).toContain('cluster-admin');
  });

  it('explicit edged on a port held by uid 65534: UNAVAILABLE naming the owner, never its pods', async () => {
    const p = await workloadAttestor(`pod_source = "edged"\nedged_port = ${forgedPort}`);
    const { selectors, err } = await attest(p);
    expect(selectors, 'forged pod data was used').toBeUndefined();
    expect(err!.code).toBe(grpc.status.UNAVAILABLE);
    // The attestation says the source is not usable; the plugin's log says why.
    expect(p.stderrLines.join('\n')).toMatch(new RegExp(`port ${forgedPort} is held by uid ${NOBODY} \\(socket inode \\d+\\), not uid 0`));
  });

  it('control: explicit edged on a root-owned port is used', async () => {
    const p = await workloadAttestor(`pod_source = "edged"\nedged_port = ${honestEdged.port}`);
    expect((await attest(p)).selectors).toEqual(expect.arrayContaining([`pod-uid:${victim.uid}`, 'sa:web', 'pod-source:edged']));
  });

  it.each([
    ['the kubelet presents another CA\'s certificate (a man in the middle)', () => mitmKubelet.port],
    ['the kubelet is not answering yet', () => 1],
  ])('auto, %s: never falls back to the loopback listener', async (_name, kubeletPort) => {
    for (const edgedPort of [forgedPort, honestEdged.port]) {
      const p = await workloadAttestor(
        `pod_source = "auto"\nkubelet_host = "127.0.0.1"\nkubelet_secure_port = ${kubeletPort()}\nkubelet_ca_path = "${join(dir.path, 'kubelet-ca.pem')}"\n` +
          `kubelet_token_path = "${join(dir.path, 'token')}"\nedged_port = ${edgedPort}`,
      );
      const { selectors, err } = await attest(p);
      expect(selectors, `auto used the pod list on port ${edgedPort}`).toBeUndefined();
      expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(err!.code);
      expect(p.stderrLines.join('\n')).not.toMatch(/"source":"edged"/);
    }
  });

  it('auto with nothing authenticated on the node: the loopback listener is used only when root owns it', async () => {
    const none = join(dir.path, 'no-such-token');
    const forged = await workloadAttestor(`pod_source = "auto"\nkubelet_token_path = "${none}"\nedged_port = ${forgedPort}`);
    const refused = await attest(forged);
    expect(refused.selectors, 'forged pod data was used').toBeUndefined();
    expect(refused.err!.code).toBe(grpc.status.UNAVAILABLE);
    const honest = await workloadAttestor(`pod_source = "auto"\nkubelet_token_path = "${none}"\nedged_port = ${honestEdged.port}`);
    expect((await attest(honest)).selectors).toEqual(expect.arrayContaining(['sa:web', 'pod-source:edged']));
  });
});
