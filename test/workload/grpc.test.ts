/**
 * The workload attestor through the plugin runtime over gRPC, launched the way SPIRE launches it: the built
 * single-file binary dist/bin/edge-workload (npm test builds it first), the go-plugin handshake, Init,
 * Configure with HCL1 (nested block form), then Attest.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { builtPlugin } from '../helpers/binaries.js';
import { FIXTURES, json, makePki, sorted, spirePart, startHttps, tempDir, writeFakeProc, type TestServer } from './helpers.js';

const CG = join(FIXTURES, 'cgroup');
let dir: { path: string; remove(): void };
let binary: string;
let kubelet: TestServer;
let harness: PluginHarness | undefined;

beforeAll(async () => {
  dir = tempDir('wl-grpc-');
  binary = builtPlugin('edge-workload');
  const pki = await makePki();
  writeFileSync(join(dir.path, 'ca.pem'), pki.caPem);
  writeFileSync(join(dir.path, 'token'), 'grpc-token');
  const podList = readFileSync(join(FIXTURES, 'kubelet/spire-pod_list.json'), 'utf8');
  kubelet = await startHttps(pki, (req, res) => (req.headers.authorization === 'Bearer grpc-token' ? json(res, podList) : json(res, {}, 401)));
  const proc = join(dir.path, 'proc');
  writeFakeProc(proc, 101, { cgroup: readFileSync(join(CG, 'spire-cgroups_pid_in_pod.txt'), 'utf8') });
  writeFakeProc(proc, 104, { cgroup: readFileSync(join(CG, 'spire-cgroups_pid_not_in_pod.txt'), 'utf8') });
  writeFakeProc(proc, 150, { cgroup: '0::/kubepods/besteffort/pod99999999-b29f-11e7-9350-020968147796/' + 'e'.repeat(64) + '\n' });
  writeFakeProc(proc, 160, {
    cgroup: '0::/kubepods/pod2c48913c-b29f-11e7-9350-020968147796/' + 'a'.repeat(64) + '\n1:name=systemd:/kubepods/pod2c48913c-b29f-11e7-9350-020968147796/' + 'b'.repeat(64) + '\n',
  });

  harness = await PluginHarness.launch({ binary, type: 'WorkloadAttestor' });
  await harness.init([]);
  await harness.configure(`
    pod_source = "kubelet"
    node_name = "k8s-node-1"
    proc_path = "${proc}"
    miss_retry_deadline = "200ms"
    kubelet {
      host = "127.0.0.1"
      secure_port = ${kubelet.port}
      ca_path = "${join(dir.path, 'ca.pem')}"
      token_path = "${join(dir.path, 'token')}"
    }
  `);
});

afterAll(async () => {
  if (harness) await harness.unload();
  await kubelet?.close();
  dir?.remove();
});

const attest = (pid: number): Promise<{ selector_values: string[] }> => harness!.unary(ServiceNames.workloadAttestor, 'Attest', { pid });

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    return (e as grpc.ServiceError).code;
  }
  throw new Error('expected an error status');
}

describe('edge-workload plugin over gRPC', () => {
  it('attests a pod container with SPIRE k8s selectors', async () => {
    const want = JSON.parse(readFileSync(join(CG, 'spire-cgroups_pid_in_pod.source.json'), 'utf8')).asserts.selectors;
    const res = await attest(101);
    expect(spirePart(res.selector_values)).toEqual(sorted(want));
    expect(res.selector_values).toContain('pod-source:kubelet');
  });
  it('a process outside any container gets no selectors', async () => {
    expect((await attest(104)).selector_values ?? []).toEqual([]);
  });
  it('status codes: DEADLINE_EXCEEDED, FAILED_PRECONDITION, NOT_FOUND, INVALID_ARGUMENT', async () => {
    expect(await status(attest(150))).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(await status(attest(160))).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await status(attest(999_999))).toBe(grpc.status.NOT_FOUND);
    expect(await status(harness!.unary(ServiceNames.workloadAttestor, 'Attest', { pid: -1 }))).toBe(grpc.status.INVALID_ARGUMENT);
  });
  it('many concurrent attestations over one connection', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => attest(i % 2 === 0 ? 101 : 104)));
    for (const [i, r] of results.entries()) {
      if (i % 2 === 0) expect(r.selector_values).toContain('container-name:blog');
      else expect(r.selector_values ?? []).toEqual([]);
    }
  });
  it('writes nothing to stdout after the handshake', () => {
    expect(harness!.extraStdout).toEqual([]);
  });
  it('rejects an unknown config key with INVALID_ARGUMENT', async () => {
    expect(await status(harness!.configure('pod_source = "none"\nbogus_key = 1\n'))).toBe(grpc.status.INVALID_ARGUMENT);
  });
});
