/**
 * Real processes in real, kubelet-shaped cgroups: `/proc/<pid>/cgroup` is the kernel's own output.
 *  - cgroup v1 (the `pids` hierarchy), cgroupfs driver: kubepods/besteffort/pod<uid>/<cid>
 *  - cgroup v2 (the unified mount), systemd driver: kubepods.slice/…/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<cid>.scope
 *  - a process placed in two different containers (v1 and v2 disagree): FAILED_PRECONDITION
 *  - a host process: []; many PIDs attested concurrently; PID reuse while attesting; a process that exits.
 * Needs root and writable cgroup mounts. If they are not writable the suite FAILS with the reason, unless
 * SPIRE_EDGE_NO_CGROUP_WRITE=1, which says so with console.warn and runs the same checks on a fake procfs.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { CGROUP_V1 as V1, CGROUP_V2 as V2, cgroupProblem, CgroupLab } from '../helpers/cgroup-lab.js';
import { json, startHttp, tempDir, testContext, writeFakeProc, type TestServer, rejection } from './helpers.js';

const NO_WRITE = process.env['SPIRE_EDGE_NO_CGROUP_WRITE'] === '1';

function hex64(): string {
  return (randomUUID() + randomUUID()).replaceAll('-', '').slice(0, 64);
}

/** Why real cgroups cannot be used here, or undefined when they can. */
interface Pod {
  uid: string;
  name: string;
  containers: Array<{ name: string; id: string }>;
}

const pods: Pod[] = [];
const cg = new CgroupLab();
let server: TestServer;
let podListBody = '';
let onRequest: (() => void) | undefined;
let tmp: { path: string; remove(): void };
let mode: 'real' | 'fake' = 'real';
let procRoot = '/proc';
let fakePid = 1000;

const v1Path = (pod: Pod, cid: string): string => `/kubepods/besteffort/pod${pod.uid}/${cid}`;
const v2Path = (pod: Pod, cid: string): string =>
  `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${pod.uid.replaceAll('-', '_')}.slice/cri-containerd-${cid}.scope`;

/** Puts a new process into a container cgroup; returns the PID to attest. */
async function processIn(where: { v1?: string; v2?: string }): Promise<number> {
  if (mode === 'fake') {
    const pid = ++fakePid;
    const lines = ['12:pids:' + (where.v1 ?? '/'), '1:name=systemd:/', '0::' + (where.v2 ?? '/')];
    writeFakeProc(procRoot, pid, { cgroup: lines.join('\n') + '\n', startTime: 1000 + pid });
    return pid;
  }
  const c = await cg.processIn({ ...(where.v1 ? { [V1]: where.v1 } : {}), ...(where.v2 ? { [V2]: where.v2 } : {}) });
  return c.pid!;
}

function podJson(pod: Pod, scheme: string): unknown {
  return {
    metadata: { uid: pod.uid, name: pod.name, namespace: 'edge', labels: { app: pod.name }, ownerReferences: [{ kind: 'ReplicaSet', name: `${pod.name}-rs`, uid: randomUUID() }] },
    spec: { serviceAccountName: 'workload', nodeName: 'edge-node-1' },
    status: {
      phase: 'Running',
      containerStatuses: pod.containers.map((c) => ({ name: c.name, containerID: `${scheme}://${c.id}`, image: `registry.local/${c.name}:1`, imageID: `registry.local/${c.name}@sha256:${'0'.repeat(64)}` })),
    },
  };
}

beforeAll(async () => {
  const problem = cgroupProblem([V1, V2]);
  if (problem) {
    if (!NO_WRITE) {
      throw new Error(
        `real cgroup tests cannot run: ${problem}. Run as root with writable ${V1} and ${V2}, ` +
          'or set SPIRE_EDGE_NO_CGROUP_WRITE=1 to run these checks on a fake procfs instead.',
      );
    }
    console.warn(`[workload] SPIRE_EDGE_NO_CGROUP_WRITE=1 and ${problem}: using a fake procfs, the kernel's own cgroup output is NOT exercised`);
    mode = 'fake';
  }
  tmp = tempDir('wl-cgroup-');
  if (mode === 'fake') procRoot = join(tmp.path, 'proc');
  for (let i = 0; i < 10; i++) pods.push({ uid: randomUUID(), name: `app-${i}`, containers: [{ name: 'main', id: hex64() }, { name: 'sidecar', id: hex64() }] });
  podListBody = JSON.stringify({ kind: 'PodList', apiVersion: 'v1', items: pods.map((p, i) => podJson(p, i % 2 === 0 ? 'containerd' : 'cri-o')) });
  server = await startHttp((_req, res) => {
    const hook = onRequest;
    onRequest = undefined;
    hook?.();
    json(res, podListBody);
  });
});

afterAll(async () => {
  try {
    await cg.cleanup();
  } finally {
    await server?.close();
    tmp?.remove();
  }
});

async function attestor(extra: Record<string, unknown> = {}): Promise<EdgeWorkloadAttestor> {
  const a = new EdgeWorkloadAttestor(testContext(), { env: {} });
  await a.configure({ pod_source: 'edged', edged_port: server.port, proc_path: procRoot, miss_retry_deadline: '1s', ...extra }, { trustDomain: 'example.org' });
  return a;
}

describe('real cgroups', () => {
  it('the kernel reports the cgroups we created (sanity)', async () => {
    const pid = await processIn({ v1: v1Path(pods[0]!, pods[0]!.containers[0]!.id) });
    const text = readFileSync(join(procRoot, String(pid), 'cgroup'), 'utf8');
    expect(text).toContain(`pids:${v1Path(pods[0]!, pods[0]!.containers[0]!.id)}`);
  });

  it('cgroup v1, cgroupfs driver: kubepods/besteffort/pod<uid>/<cid>', async () => {
    const pod = pods[0]!;
    const pid = await processIn({ v1: v1Path(pod, pod.containers[0]!.id) });
    const a = await attestor();
    try {
      const sel = await a.attest(pid, new AbortController().signal);
      expect(sel).toEqual(expect.arrayContaining([`pod-uid:${pod.uid}`, 'container-name:main', `container-id:${pod.containers[0]!.id}`, 'runtime:containerd', 'pod-source:edged', 'ns:edge', 'sa:workload']));
    } finally {
      await a.close();
    }
  });

  it('cgroup v2, systemd driver: …-pod<uid_>.slice/cri-containerd-<cid>.scope', async () => {
    const pod = pods[1]!;
    const pid = await processIn({ v2: v2Path(pod, pod.containers[1]!.id) });
    const a = await attestor();
    try {
      const sel = await a.attest(pid, new AbortController().signal);
      // the path says containerd; the path wins over the pod status scheme (cri-o in this fake list)
      expect(sel).toEqual(expect.arrayContaining([`pod-uid:${pod.uid}`, 'container-name:sidecar', 'runtime:containerd']));
    } finally {
      await a.close();
    }
  });

  it('two different containers for one process: FAILED_PRECONDITION', async () => {
    const pid = await processIn({ v1: v1Path(pods[2]!, pods[2]!.containers[0]!.id), v2: v2Path(pods[3]!, pods[3]!.containers[0]!.id) });
    const a = await attestor();
    try {
      const e = await rejection(a.attest(pid, new AbortController().signal));
      expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
      expect(e.code).toBe('ERR_WORKLOAD_MULTIPLE_POD_UIDS');
    } finally {
      await a.close();
    }
  });

  it('a host process (and the test runner itself) gets [] at once', async () => {
    const pid = await processIn({});
    const a = await attestor();
    try {
      expect(await a.attest(pid, new AbortController().signal)).toEqual([]);
      if (mode === 'real') expect(await a.attest(process.pid, new AbortController().signal)).toEqual([]);
    } finally {
      await a.close();
    }
  });

  it('many PIDs attested concurrently (20 containers in 10 pods, v1 and v2)', async () => {
    const cases: Array<{ pid: number; pod: Pod; c: { name: string; id: string } }> = [];
    for (const [i, pod] of pods.entries()) {
      for (const c of pod.containers) {
        const pid = await processIn(i % 2 === 0 ? { v1: v1Path(pod, c.id) } : { v2: v2Path(pod, c.id) });
        cases.push({ pid, pod, c });
      }
    }
    const a = await attestor();
    try {
      const all = [...cases, ...cases, ...cases];
      const results = await Promise.all(all.map((x) => a.attest(x.pid, new AbortController().signal)));
      for (const [i, sel] of results.entries()) {
        expect(sel).toContain(`pod-uid:${all[i]!.pod.uid}`);
        expect(sel).toContain(`container-name:${all[i]!.c.name}`);
        expect(sel).toContain(`container-id:${all[i]!.c.id}`);
      }
      expect(a.sourceStatus()!.fetches).toBe(1);
    } finally {
      await a.close();
    }
  });

  it('PID reuse during the lookup (start time changes): FAILED_PRECONDITION', async () => {
    // Two real processes in the same container cgroup, started at different clock ticks. The attested "PID"
    // is a symlink in a proc root of our own, switched from the first process to the second while the
    // attestor waits for the pod source: exactly what the kernel shows when a PID is reused.
    const pod = pods[4]!;
    const late = { name: 'late', id: hex64() };
    const path = v1Path(pod, late.id);
    const root = join(tmp.path, 'reuse-proc');
    mkdirSync(root, { recursive: true });
    let first: number;
    let second: number;
    if (mode === 'real') {
      first = await processIn({ v1: path });
      await new Promise((r) => setTimeout(r, 50));
      second = await processIn({ v1: path });
      symlinkSync(`/proc/${first}`, join(root, '777'));
    } else {
      writeFakeProc(root, 1, { cgroup: `12:pids:${path}\n`, startTime: 111 });
      writeFakeProc(root, 2, { cgroup: `12:pids:${path}\n`, startTime: 222 });
      first = 1;
      second = 2;
      symlinkSync(join(root, '1'), join(root, '777'));
    }
    const a = await attestor({ proc_path: root });
    try {
      onRequest = () => {
        unlinkSync(join(root, '777'));
        symlinkSync(mode === 'real' ? `/proc/${second}` : join(root, '2'), join(root, '777'));
        const list = JSON.parse(podListBody);
        list.items[4].status.containerStatuses.push({ name: late.name, containerID: `containerd://${late.id}`, image: 'late:1', imageID: 'late@sha256:' + '1'.repeat(64) });
        podListBody = JSON.stringify(list);
      };
      const e = await rejection(a.attest(777, new AbortController().signal));
      expect(e.code).toBe('ERR_WORKLOAD_PID_REUSED');
      expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
      // the same lookup without a switch succeeds
      expect(await a.attest(777, new AbortController().signal)).toContain('container-name:late');
      expect(first).not.toBe(second);
    } finally {
      await a.close();
    }
  });

  it('a process that has exited: NOT_FOUND', async () => {
    const a = await attestor();
    try {
      let pid: number;
      if (mode === 'real') {
        const c = spawn('true', { stdio: 'ignore' });
        await new Promise((r) => c.once('exit', r));
        pid = c.pid!;
      } else pid = 99_999;
      const e = await rejection(a.attest(pid, new AbortController().signal));
      expect(e.grpcCode).toBe(GrpcCode.NOT_FOUND);
      expect(e.code).toBe('ERR_WORKLOAD_PID_GONE');
    } finally {
      await a.close();
    }
  });
});
