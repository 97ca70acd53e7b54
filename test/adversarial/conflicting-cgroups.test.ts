/**
 * Attack class: conflicting cgroups. A process's /proc/<pid>/cgroup has one line per hierarchy, and root in a
 * container can move itself in each hierarchy separately: into pod A's container in one and pod B's in another, two
 * containers of one pod, or one container ID filed under two pods. Any of them could be read as either identity.
 * The shipped edge-workload refuses them all with FAILED_PRECONDITION naming both IDs, and never returns selectors.
 *
 * Real processes in this host's cgroups: v1 `pids` and `freezer`, and the v2 unified mount.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import { json, startHttp, type TestServer } from '../workload/helpers.js';
import {
  attestPid,
  CGROUP_V1,
  CGROUP_V1_FREEZER,
  CGROUP_V2,
  cgroupfsPath,
  cgroupProblem,
  CgroupLab,
  labPod,
  podListJson,
  systemdPath,
} from './kit.js';

const cg = new CgroupLab();
const podA = labPod('tenant-a');
const podB = labPod('payments', 'payments-admin');
let edged: TestServer;
let plugin: PluginHarness;

beforeAll(async () => {
  const problem = cgroupProblem([CGROUP_V1, CGROUP_V1_FREEZER, CGROUP_V2]);
  if (problem) throw new Error(`conflicting-cgroup attacks need real cgroups: ${problem}`);
  const body = podListJson([podA, podB]);
  edged = await startHttp((_req, res) => json(res, body)); // a root-owned loopback source, as edgecore's
  plugin = await cg.workloadAttestor(`pod_source = "edged"\nedged_port = ${edged.port}\nmiss_retry_deadline = "1s"`);
}, 60_000);

afterAll(async () => {
  await cg.cleanup();
  await edged?.close();
});

async function refused(where: Record<string, string>): Promise<grpc.ServiceError> {
  const pid = (await cg.processIn(where)).pid!;
  const { selectors, err } = await attestPid(plugin, pid);
  expect(selectors, `selectors were returned for ${readFileSync(`/proc/${pid}/cgroup`, 'utf8')}`).toBeUndefined();
  expect(err!.code).toBe(grpc.status.FAILED_PRECONDITION);
  return err!;
}

describe('conflicting cgroups: a process in two identities is in none', () => {
  it("control: pod A's container in every hierarchy gets pod A's selectors", async () => {
    const pid = (await cg.processIn({ [CGROUP_V1]: cgroupfsPath(podA), [CGROUP_V1_FREEZER]: cgroupfsPath(podA), [CGROUP_V2]: systemdPath(podA) })).pid!;
    expect((await attestPid(plugin, pid)).selectors).toEqual(expect.arrayContaining([`pod-uid:${podA.uid}`, `sa:${podA.sa}`, `container-id:${podA.cid}`]));
  });

  it("v1 says pod A's container, v2 says pod B's: FAILED_PRECONDITION naming both", async () => {
    const err = await refused({ [CGROUP_V1]: cgroupfsPath(podA), [CGROUP_V2]: systemdPath(podB) });
    expect(err.details).toBe(`multiple pod UIDs found in cgroups (${podA.uid}, ${podB.uid})`);
  });

  it("two v1 hierarchies disagree (pids: pod A, freezer: pod B): FAILED_PRECONDITION", async () => {
    const err = await refused({ [CGROUP_V1]: cgroupfsPath(podA), [CGROUP_V1_FREEZER]: cgroupfsPath(podB) });
    expect(err.details).toBe(`multiple pod UIDs found in cgroups (${podA.uid}, ${podB.uid})`);
  });

  it("one container ID filed under two pods: FAILED_PRECONDITION, multiple pod UIDs", async () => {
    const err = await refused({ [CGROUP_V1]: cgroupfsPath(podA), [CGROUP_V2]: `/kubepods/besteffort/pod${podB.uid}/${podA.cid}` });
    expect(err.details).toBe(`multiple pod UIDs found in cgroups (${podA.uid}, ${podB.uid})`);
  });

  it("two containers of one pod: FAILED_PRECONDITION, multiple container IDs", async () => {
    const err = await refused({ [CGROUP_V1]: cgroupfsPath(podA), [CGROUP_V1_FREEZER]: `/kubepods/besteffort/pod${podA.uid}/${podB.cid}` });
    expect(err.details).toBe(`multiple container IDs found in cgroups (${podA.cid}, ${podB.cid})`);
  });

  it("pod A's container in v1, a pod-less container in v2 (systemd docker scope): FAILED_PRECONDITION", async () => {
    const err = await refused({ [CGROUP_V1]: cgroupfsPath(podA), [CGROUP_V2]: `/system.slice/docker-${podB.cid}.scope` });
    expect(err.details).toBe(`multiple container IDs found in cgroups (${podA.cid} in pod ${podA.uid}, ${podB.cid} without a pod)`);
  });

  it('the plugin logs nothing that would suggest an identity was given', async () => {
    expect(plugin.stderrLines.filter((l) => l.includes(podB.sa))).toEqual([]);
  });
});
