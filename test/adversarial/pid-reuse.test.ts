/**
 * Attack class: PID reuse. The Workload API names the caller by PID; between the plugin reading that PID's cgroup and
 * answering, the process can exit and the kernel can hand its PID to another process. An answer computed for the old
 * process must never reach the new one. Here the reuse is real: the workload in pod A asks, its pod is not yet in the
 * pod list (the plugin waits for it), the workload exits, and a process in pod B — or on the host — is started with
 * exactly the same PID (through /proc/sys/kernel/ns_last_pid) before pod A appears. The shipped edge-workload must
 * answer FAILED_PRECONDITION naming the reuse, never pod A's selectors.
 */
import * as grpc from '@grpc/grpc-js';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import { json, startHttp, type TestServer } from '../workload/helpers.js';
import { attestPid, CGROUP_V1, cgroupfsPath, cgroupProblem, CgroupLab, labPod, podListJson, type LabPod } from './kit.js';

const NS_LAST_PID = '/proc/sys/kernel/ns_last_pid';
const cg = new CgroupLab();
const podB = labPod('payments', 'payments-admin');
let served: LabPod[] = [podB];
let edged: TestServer;
let plugin: PluginHarness;
/** The reusing processes are the shells' children: killed here, before their cgroups are removed. */
const reusers: number[] = [];

beforeAll(async () => {
  const problem = cgroupProblem([CGROUP_V1]);
  if (problem) throw new Error(`PID-reuse attacks need real cgroups: ${problem}`);
  writeFileSync(NS_LAST_PID, readFileSync(NS_LAST_PID, 'utf8')); // fails loudly if the PID counter cannot be set
  edged = await startHttp((_req, res) => json(res, podListJson(served)));
  plugin = await cg.workloadAttestor(`pod_source = "edged"\nedged_port = ${edged.port}\nmiss_retry_deadline = "15s"`);
}, 60_000);

afterAll(async () => {
  for (const pid of reusers) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await cg.cleanup();
  await edged?.close();
});

const exited = (c: ChildProcess) => new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('exit', () => resolve())));

/**
 * Starts `sleep` with exactly PID `pid` (free again once its last owner was reaped): set the namespace's last PID to
 * pid-1 and fork at once. Another fork on the machine can take the PID first; then it tries again.
 */
async function startWithPid(pid: number): Promise<{ shell: ChildProcess; pid: number }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const shell = cg.track(spawn('/bin/sh', ['-c', `echo ${pid - 1} > ${NS_LAST_PID}; sleep 600 & echo $!; wait`], { stdio: ['ignore', 'pipe', 'inherit'] }));
    const got = Number(await new Promise<string>((resolve) => createInterface({ input: shell.stdout! }).once('line', resolve)));
    reusers.push(got);
    if (got === pid) return { shell, pid: got };
    process.kill(got, 'SIGKILL');
    await exited(shell);
  }
  throw new Error(`could not start a process with PID ${pid} in 50 attempts`);
}

/** Pod A's workload asks; `meanwhile` runs while the plugin waits for pod A to appear; then pod A appears. */
async function attestWhile(meanwhile: (workload: ChildProcess, pid: number) => Promise<void>) {
  const podA = labPod('tenant-a');
  const workload = await cg.processIn({ [CGROUP_V1]: cgroupfsPath(podA) });
  const pid = workload.pid!;
  const requests = edged.requests.length;
  const answer = attestPid(plugin, pid);
  // The plugin has read the cgroup (pod A) and is waiting for the pod list to show pod A.
  for (let i = 0; i < 100 && edged.requests.length <= requests; i++) await new Promise((r) => setTimeout(r, 20));
  expect(edged.requests.length, 'the plugin never asked the pod source').toBeGreaterThan(requests);
  await meanwhile(workload, pid);
  served = [podB, podA];
  const outcome = await answer;
  served = [podB];
  return { ...outcome, podA, pid };
}

describe('PID reuse: an answer for a process never reaches the next owner of its PID', () => {
  it("control: the workload stays; pod A appears; pod A's selectors", async () => {
    const { selectors, podA } = await attestWhile(async () => undefined);
    expect(selectors).toEqual(expect.arrayContaining([`pod-uid:${podA.uid}`, `sa:${podA.sa}`]));
  });

  it("the PID is reused by a process in pod B between lookup and answer: FAILED_PRECONDITION, not pod A's identity", async () => {
    let reused: number | undefined;
    const { selectors, err, pid } = await attestWhile(async (workload, p) => {
      workload.kill('SIGKILL');
      await exited(workload);
      const next = await startWithPid(p);
      writeFileSync(join(cg.mkdir(CGROUP_V1, cgroupfsPath(podB)), 'cgroup.procs'), String(next.pid));
      reused = next.pid;
    });
    expect(reused).toBe(pid); // the kernel really gave the PID to the new process
    expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(podB.cid);
    expect(selectors, "pod A's selectors went to the PID's new owner").toBeUndefined();
    expect(err!.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err!.details).toBe(`pid ${pid} was reused during attestation (start time changed)`);
  });

  it('the PID is reused by a host process (no container at all): FAILED_PRECONDITION', async () => {
    const { selectors, err, pid } = await attestWhile(async (workload, p) => {
      workload.kill('SIGKILL');
      await exited(workload);
      await startWithPid(p);
    });
    expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).not.toContain('kubepods');
    expect(selectors).toBeUndefined();
    expect(err!.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err!.details).toBe(`pid ${pid} was reused during attestation (start time changed)`);
  });

  it('the workload exits and nobody takes the PID: FAILED_PRECONDITION, exited', async () => {
    const { selectors, err, pid } = await attestWhile(async (workload) => {
      workload.kill('SIGKILL');
      await exited(workload);
    });
    expect(selectors).toBeUndefined();
    expect(err!.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err!.details).toBe(`pid ${pid} exited during attestation`);
  });
});
