/**
 * Attack class F3 (and F10): take another pod's identity through cgroups. A process in pod A's cgroup creates
 * `<A>/kubepods/besteffort/pod<B>/<cid B>` (or the systemd-named equivalent) and moves itself there; the kernel then
 * reports a path that ENDS like pod B's container. The shipped edge-workload must refuse it with
 * FAILED_PRECONDITION, still accept kind's real nesting, and refuse a pod line and a pod-less line that disagree.
 *
 * Real processes in real cgroups on this host (cgroup v1 `pids`, and the v2 unified mount of the hybrid layout).
 * Needs root and writable cgroup mounts; without them the suite fails, naming the reason.
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin } from '../helpers/binaries.js';
import { CGROUP_V1 as V1, CGROUP_V2 as V2, cgroupProblem, CgroupLab } from '../helpers/cgroup-lab.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { json, startHttp, type TestServer } from '../workload/helpers.js';

const hex64 = (): string => (randomUUID() + randomUUID()).replaceAll('-', '').slice(0, 64);

interface Pod {
  uid: string;
  name: string;
  sa: string;
  cid: string;
}
const podA: Pod = { uid: randomUUID(), name: 'tenant-a', sa: 'tenant-a', cid: hex64() };
const podB: Pod = { uid: randomUUID(), name: 'cluster-admin-tool', sa: 'cluster-admin', cid: hex64() };
const kindNode = hex64();

const cg = new CgroupLab();
let edged: TestServer;
let plugin: PluginHarness;
/** The same binary running inside the kind node container (as an agent on a kind node does). */
let kindPlugin: PluginHarness;

/** A real process placed (as it could place itself, being root in its container) into these cgroups. */
async function processIn(where: { v1?: string; v2?: string }): Promise<number> {
  const child = await cg.processIn({ ...(where.v1 ? { [V1]: where.v1 } : {}), ...(where.v2 ? { [V2]: where.v2 } : {}) });
  return child.pid!;
}

const v1Of = (pod: Pod): string => `/kubepods/besteffort/pod${pod.uid}/${pod.cid}`;
const v2SystemdOf = (pod: Pod): string =>
  `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${pod.uid.replaceAll('-', '_')}.slice/cri-containerd-${pod.cid}.scope`;

function podJson(pod: Pod): unknown {
  return {
    metadata: { uid: pod.uid, name: pod.name, namespace: 'edge', labels: { app: pod.name } },
    spec: { serviceAccountName: pod.sa, nodeName: 'edge-node-1' },
    status: {
      phase: 'Running',
      containerStatuses: [{ name: 'main', containerID: `containerd://${pod.cid}`, image: `registry.local/${pod.name}:1`, imageID: `registry.local/${pod.name}@sha256:${'0'.repeat(64)}` }],
    },
  };
}

beforeAll(async () => {
  const problem = cgroupProblem([V1, V2]);
  if (problem) throw new Error(`nested-cgroup attacks need real cgroups: ${problem}`);
  const body = JSON.stringify({ kind: 'PodList', apiVersion: 'v1', items: [podJson(podA), podJson(podB)] });
  edged = await startHttp((_req, res) => json(res, body));
  plugin = await PluginHarness.launch({ binary: builtPlugin('edge-workload'), type: 'WorkloadAttestor' });
  await plugin.init([]);
  await plugin.configure(`pod_source = "edged"\nedged_port = ${edged.port}\nmiss_retry_deadline = "1s"`);
  kindPlugin = await PluginHarness.launch({ binary: builtPlugin('edge-workload'), type: 'WorkloadAttestor' });
  // Moved into the kind node container's cgroup before Configure, where it reads its own /proc/self/cgroup.
  writeFileSync(join(cg.mkdir(V1, `/docker/${kindNode}/system.slice/spire-agent.service`), 'cgroup.procs'), String(kindPlugin.child.pid));
  await kindPlugin.init([]);
  await kindPlugin.configure(`pod_source = "edged"\nedged_port = ${edged.port}\nmiss_retry_deadline = "1s"`);
}, 60_000);

afterAll(async () => {
  // The plugins first: one of them runs in a cgroup the lab created.
  await plugin?.unload();
  await kindPlugin?.unload();
  await edged?.close();
  await cg.cleanup();
});

const attest = (pid: number, via = plugin): Promise<{ selector_values?: string[] }> => via.unary(ServiceNames.workloadAttestor, 'Attest', { pid });

async function refusal(pid: number, via = plugin): Promise<grpc.ServiceError> {
  const outcome = await attest(pid, via).then(
    (r) => ({ admitted: r.selector_values ?? [] }),
    (e: grpc.ServiceError) => e,
  );
  expect('admitted' in outcome ? outcome.admitted : undefined, 'the impersonation was admitted').toBeUndefined();
  return outcome as grpc.ServiceError;
}

describe('F3: a nested cgroup cannot borrow another pod\'s identity', () => {
  it('control: the process in pod A\'s container gets pod A\'s selectors', async () => {
    const pid = await processIn({ v1: v1Of(podA) });
    const sel = (await attest(pid)).selector_values ?? [];
    expect(sel).toEqual(expect.arrayContaining([`pod-uid:${podA.uid}`, `sa:${podA.sa}`, `container-id:${podA.cid}`]));
  });

  it.each([
    ['cgroup v1, cgroupfs names', { v1: `${v1Of(podA)}${v1Of(podB)}` }],
    ['cgroup v2, systemd names', { v2: `${v2SystemdOf(podA)}${v2SystemdOf(podB)}` }],
    ['cgroup v2, cgroupfs names under a systemd-named pod', { v2: `${v2SystemdOf(podA)}${v1Of(podB)}` }],
  ])('%s: <A>/…/pod<B>/<cid B> is FAILED_PRECONDITION, not pod B', async (_name, where) => {
    const pid = await processIn(where);
    const text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    expect(text).toContain(podB.cid); // the kernel really reports a path ending in pod B's container
    const err = await refusal(pid);
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/has 2 pod segments: a nested cgroup cannot be told from an impersonation/);
  });

  it('only a container below A\'s container (<A>/<cid B>): FAILED_PRECONDITION', async () => {
    const pid = await processIn({ v1: `${v1Of(podA)}/${podB.cid}` });
    const err = await refusal(pid);
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/has 2 container segments outside the kind node-container shape/);
  });

  it('kind\'s real nesting (node container above the kubepods tree) still attests, to the inner container, on that kind node', async () => {
    const pid = await processIn({ v1: `/docker/${kindNode}${v1Of(podA)}` });
    const sel = (await attest(pid, kindPlugin)).selector_values ?? [];
    expect(sel).toEqual(expect.arrayContaining([`pod-uid:${podA.uid}`, `container-id:${podA.cid}`]));
    expect(sel).not.toContain(`container-id:${kindNode}`);
  });

  it('the kind shape under any other container (a plain container building a pod path below its own): FAILED_PRECONDITION', async () => {
    // A root process in an ordinary Docker container, on a host agent or on another kind node.
    const rogue = hex64();
    const pid = await processIn({ v1: `/docker/${rogue}${v1Of(podB)}` });
    for (const via of [plugin, kindPlugin]) {
      const err = await refusal(pid, via);
      expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(err.details).toMatch(new RegExp(`nests a pod inside container ${rogue}, but this agent does not run in that \\(kind node\\) container`));
    }
  });
});

describe('F10: a pod line and a pod-less line naming different containers fail closed', () => {
  it('v1 says pod A\'s container, v2 a pod-less other container: FAILED_PRECONDITION', async () => {
    const pid = await processIn({ v1: v1Of(podA), v2: `/system.slice/docker-${podB.cid}.scope` });
    const err = await refusal(pid);
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toMatch(new RegExp(`multiple container IDs found in cgroups \\(${podA.cid} in pod ${podA.uid}, ${podB.cid} without a pod\\)`));
  });

  it('kind: a pod-less line naming the node container agrees with the pod line', async () => {
    const pid = await processIn({ v1: `/docker/${kindNode}${v1Of(podA)}`, v2: `/docker/${kindNode}` });
    expect((await attest(pid, kindPlugin)).selector_values ?? []).toContain(`pod-uid:${podA.uid}`);
  });
});
