/**
 * A process cannot take another pod's identity through the cgroup paths the kernel reports for it (F3, F10), checked
 * in-process (Procfs + locateContainer) on real processes in real cgroups: cgroup v1 `pids` and the v2 unified mount.
 * test/adversarial/nested-cgroup.test.ts performs the same attacks through the shipped binary; this file runs the
 * locator itself so that mutation testing sees it.
 * Needs root and writable cgroup mounts; without them the suite fails, naming the reason.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode, PreconditionFailed } from '../../src/errors.js';
import { locateContainer, type Located } from '../../src/workload/cgroup.js';
import { WorkloadErrorCode } from '../../src/workload/errors.js';
import { Procfs } from '../../src/workload/procfs.js';
import { CGROUP_V1 as V1, CGROUP_V2 as V2, cgroupProblem, CgroupLab } from '../helpers/cgroup-lab.js';
import { thrown } from './helpers.js';
const hex64 = (): string => (randomUUID() + randomUUID()).replaceAll('-', '').slice(0, 64);

interface Pod {
  uid: string;
  cid: string;
}
const podA: Pod = { uid: randomUUID(), cid: hex64() };
const podB: Pod = { uid: randomUUID(), cid: hex64() };
const kindNode = hex64();
const v1Of = (pod: Pod): string => `/kubepods/besteffort/pod${pod.uid}/${pod.cid}`;
const v2SystemdOf = (pod: Pod): string =>
  `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${pod.uid.replaceAll('-', '_')}.slice/cri-containerd-${pod.cid}.scope`;

const cg = new CgroupLab();
const procfs = new Procfs();

beforeAll(() => {
  const problem = cgroupProblem([V1, V2]);
  if (problem) throw new Error(`nested-cgroup checks need real cgroups: ${problem}`);
});

afterAll(() => cg.cleanup());

/** A real process placed (as root in its container could place itself) into these cgroups. */
async function processIn(where: { v1?: string; v2?: string }): Promise<number> {
  const child = await cg.processIn({ ...(where.v1 ? { [V1]: where.v1 } : {}), ...(where.v2 ? { [V2]: where.v2 } : {}) });
  return child.pid!;
}

const locate = (pid: number): Located | undefined => locateContainer({ cgroup: procfs.cgroup(pid), mountinfo: () => procfs.mountinfo(pid) });

function refused(pid: number, code: string, message: RegExp): void {
  const e = thrown(() => locate(pid));
  expect(e).toBeInstanceOf(PreconditionFailed);
  expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
  expect(e.code).toBe(code);
  expect(e.message).toMatch(message);
}

describe("a nested cgroup cannot borrow another pod's identity (real cgroups)", () => {
  it("control: a process in pod A's container is pod A's container", async () => {
    const r = locate(await processIn({ v1: v1Of(podA) }));
    expect([r?.podUid?.toString(), r?.containerId.toString(), r?.via, r?.outerContainerId]).toEqual([podA.uid, podA.cid, 'cgroup', undefined]);
    const s = locate(await processIn({ v2: v2SystemdOf(podA) }));
    expect([s?.podUid?.toString(), s?.containerId.toString(), s?.runtime]).toEqual([podA.uid, podA.cid, 'containerd']);
  });

  it.each([
    ['cgroup v1, cgroupfs names', { v1: `${v1Of(podA)}${v1Of(podB)}` }],
    ['cgroup v2, systemd names', { v2: `${v2SystemdOf(podA)}${v2SystemdOf(podB)}` }],
    ['cgroup v2, cgroupfs names under a systemd-named pod', { v2: `${v2SystemdOf(podA)}${v1Of(podB)}` }],
  ])('%s: <A>/…/pod<B>/<cid B> is refused, not pod B', async (_name, where) => {
    const pid = await processIn(where);
    expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(podB.cid); // the kernel reports a path ending in B
    refused(pid, WorkloadErrorCode.NESTED_CGROUP, /has 2 pod segments: a nested cgroup cannot be told from an impersonation$/);
  });

  it("a container below A's container (<A>/<cid B>) is refused", async () => {
    refused(await processIn({ v1: `${v1Of(podA)}/${podB.cid}` }), WorkloadErrorCode.NESTED_CGROUP, /has 2 container segments outside the kind node-container shape/);
  });

  it('a third container level is refused even inside kind', async () => {
    refused(await processIn({ v1: `/docker/${kindNode}${v1Of(podA)}/${podB.cid}` }), WorkloadErrorCode.NESTED_CGROUP, /has 3 container segments/);
  });

  it("a pod segment below the container (<cid A>/pod<B>) is refused, not read as pod B's", async () => {
    refused(await processIn({ v1: `/kubepods/besteffort/${podA.cid}/pod${podB.uid}` }), WorkloadErrorCode.NESTED_CGROUP, /has a pod segment below its container/);
  });

  it("kind's real nesting attests to the inner container; the node container is only the outer one", async () => {
    const r = locate(await processIn({ v1: `/docker/${kindNode}${v1Of(podA)}` }));
    expect([r?.podUid?.toString(), r?.containerId.toString(), r?.outerContainerId?.toString()]).toEqual([podA.uid, podA.cid, kindNode]);
  });

  it('one container ID both above and below the pod segment (a container naming itself again inside a built pod path) is refused', async () => {
    refused(await processIn({ v1: `/docker/${podA.cid}/kubepods/besteffort/pod${podB.uid}/docker/${podA.cid}` }), WorkloadErrorCode.NESTED_CGROUP, /names one container both above and below its pod segment/);
    // Docker Desktop's repeated ID without a pod in between is still one container.
    const r = locate(await processIn({ v1: `/docker/${podA.cid}/docker/${podA.cid}` }));
    expect([r?.containerId.toString(), r?.podUid]).toEqual([podA.cid, undefined]);
  });

  it('a container above a pod without the kubepods tree between is not kind: refused', async () => {
    refused(await processIn({ v1: `/docker/${kindNode}/besteffort/pod${podA.uid}/${podA.cid}` }), WorkloadErrorCode.NESTED_CGROUP, /outside the kind node-container shape/);
  });
});

describe('lines that disagree fail closed (real cgroups)', () => {
  it("v1 names pod A's container, v2 a pod-less other container: refused", async () => {
    refused(
      await processIn({ v1: v1Of(podA), v2: `/system.slice/docker-${podB.cid}.scope` }),
      WorkloadErrorCode.MULTIPLE_CONTAINER_IDS,
      new RegExp(`^multiple container IDs found in cgroups \\(${podA.cid} in pod ${podA.uid}, ${podB.cid} without a pod\\)$`),
    );
  });

  it('v1 names pod A, v2 pod B: refused', async () => {
    refused(await processIn({ v1: v1Of(podA), v2: v2SystemdOf(podB) }), WorkloadErrorCode.MULTIPLE_POD_UIDS, new RegExp(`\\(${podA.uid}, ${podB.uid}\\)`));
  });

  it('v1 and v2 name the same pod and container: the runtime the v2 path names is kept', async () => {
    const r = locate(await processIn({ v1: v1Of(podA), v2: v2SystemdOf(podA) }));
    expect([r?.podUid?.toString(), r?.containerId.toString(), r?.runtime]).toEqual([podA.uid, podA.cid, 'containerd']);
  });

  it('kind: a pod-less line naming the node container agrees with the pod line, in either order', async () => {
    const r = locate(await processIn({ v1: `/docker/${kindNode}${v1Of(podA)}`, v2: `/docker/${kindNode}` }));
    expect([r?.podUid?.toString(), r?.containerId.toString()]).toEqual([podA.uid, podA.cid]);
    const s = locate(await processIn({ v1: `/docker/${kindNode}`, v2: `/docker/${kindNode}${v1Of(podA)}` }));
    expect([s?.podUid?.toString(), s?.containerId.toString()]).toEqual([podA.uid, podA.cid]);
  });
});
