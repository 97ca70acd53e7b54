/**
 * Without Kubernetes: container selectors from the runtime socket. A real grpc-js server speaking
 * runtime.v1.RuntimeService/ContainerStatus on a unix socket, and real HTTP servers on unix sockets answering
 * the Docker/podman `GET /containers/<id>/json`. Also checks proto/cri/runtime/v1/api.proto, the in-code
 * descriptor and the upstream field numbers agree.
 */
import * as grpc from '@grpc/grpc-js';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { CRI_DESCRIPTOR, criServiceDefinition } from '../../src/workload/runtime.js';
import { repoRoot } from '../helpers/binaries.js';
import { FIXTURES, json, startHttp, tempDir, testContext, writeFakeProc, type TestServer } from './helpers.js';

/** The agent runs in the corpus's kind node container (SPIRE's kind fixtures assume an agent on that node). */
const KIND_NODE_SELF = '0::/docker/93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26/system.slice/spire-agent.service\n';

const CRI_ID = 'a'.repeat(64);
const DOCKER_ID = 'b'.repeat(64);
const PODMAN_ID = 'c'.repeat(64);
const MISSING_ID = 'd'.repeat(64);

let dir: { path: string; remove(): void };
let cri: grpc.Server;
let criCalls = 0;
const httpServers: http.Server[] = [];
let emptyPods: TestServer;
const proc = (): string => join(dir.path, 'proc');

function listenUnix(path: string, handler: http.RequestListener): Promise<void> {
  const s = http.createServer(handler);
  httpServers.push(s);
  return new Promise((resolve) => s.listen(path, () => resolve()));
}

beforeAll(async () => {
  dir = tempDir('wl-runtime-');
  cri = new grpc.Server();
  cri.addService(criServiceDefinition(), {
    ContainerStatus: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
      criCalls++;
      if (call.request.container_id !== CRI_ID) return cb({ code: grpc.status.NOT_FOUND, details: 'no such container' });
      cb(null, {
        status: {
          id: CRI_ID,
          metadata: { name: 'web', attempt: 0 },
          state: 'CONTAINER_RUNNING',
          image: { image: 'sha256:' + '9'.repeat(64), user_specified_image: 'docker.io/library/nginx:1.27' },
          image_ref: 'docker.io/library/nginx@sha256:' + '8'.repeat(64),
          labels: { 'io.kubernetes.container.name': 'web', team: 'edge' },
        },
      });
    },
  });
  await new Promise<void>((resolve, reject) =>
    cri.bindAsync(`unix:${join(dir.path, 'containerd.sock')}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
  );
  const dockerLike = (id: string, name: string): http.RequestListener => (req, res) => {
    if (req.url === `/containers/${id}/json`) return json(res, { Id: id, Name: `/${name}`, Image: 'sha256:' + '7'.repeat(64), Config: { Image: `${name}:latest`, Labels: { tier: name } } });
    json(res, { message: 'No such container' }, 404);
  };
  await listenUnix(join(dir.path, 'docker.sock'), dockerLike(DOCKER_ID, 'redis'));
  await listenUnix(join(dir.path, 'podman-1000.sock'), dockerLike(PODMAN_ID, 'pgsql'));
  // The fuzzer's crash (test/fuzz/crashes/workload-docker-inspect): a Name that is not a string.
  await listenUnix(join(dir.path, 'docker-bad.sock'), (_req, res) => json(res, { Name: { Image: 'nginx:1' }, Config: { Labels: { a: 1 } } }));
  emptyPods = await startHttp((_q, res) => json(res, { items: [] }));

  writeFakeProc(proc(), 11, { cgroup: `0::/system.slice/containerd.service/cri-containerd-${CRI_ID}.scope\n` });
  writeFakeProc(proc(), 12, { cgroup: `0::/system.slice/docker-${DOCKER_ID}.scope\n` });
  writeFakeProc(proc(), 13, { cgroup: `0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${PODMAN_ID}.scope\n` });
  writeFakeProc(proc(), 14, { cgroup: `0::/system.slice/docker-${MISSING_ID}.scope\n` });
});

afterAll(async () => {
  cri.forceShutdown();
  for (const s of httpServers) s.close();
  await emptyPods.close();
  dir.remove();
});

async function withAttestor<T>(cfg: Record<string, unknown>, fn: (a: EdgeWorkloadAttestor) => Promise<T>): Promise<T> {
  const a = new EdgeWorkloadAttestor(testContext(), { env: {}, selfCgroup: KIND_NODE_SELF });
  await a.configure({ proc_path: proc(), ...cfg }, { trustDomain: 'example.org' });
  try {
    return await fn(a);
  } finally {
    await a.close();
  }
}
const sig = (): AbortSignal => new AbortController().signal;

describe('runtime sockets (pod_source = "none")', () => {
  it('CRI ContainerStatus over unix-socket gRPC: image, digest, labels; cached per container', async () => {
    await withAttestor({ pod_source: 'none', runtime_socket: `unix://${join(dir.path, 'containerd.sock')}` }, async (a) => {
      const before = criCalls;
      const sel = await a.attest(11, sig());
      expect(sel).toEqual([
        'container-name:web',
        'container-image:docker.io/library/nginx:1.27',
        'container-image:docker.io/library/nginx@sha256:' + '8'.repeat(64),
        'container-label:io.kubernetes.container.name:web',
        'container-label:team:edge',
        `container-id:${CRI_ID}`,
        'runtime:containerd',
        'pod-source:runtime',
      ]);
      await a.attest(11, sig());
      expect(criCalls - before).toBe(1);
    });
  });
  it('Docker Engine API over the unix socket', async () => {
    await withAttestor({ pod_source: 'none', docker_socket: `unix://${join(dir.path, 'docker.sock')}` }, async (a) => {
      expect(await a.attest(12, sig())).toEqual([
        'container-name:redis',
        'container-image:redis:latest',
        'container-image:sha256:' + '7'.repeat(64),
        'container-label:tier:redis',
        `container-id:${DOCKER_ID}`,
        'runtime:docker',
        'pod-source:runtime',
      ]);
    });
  });
  it('rootless podman: the socket of the user from the cgroup path', async () => {
    await withAttestor({ pod_source: 'none', podman_socket_template: `unix://${join(dir.path, 'podman-%d.sock')}` }, async (a) => {
      const sel = await a.attest(13, sig());
      expect(sel).toContain('container-name:pgsql');
      expect(sel).toContain('runtime:podman');
    });
  });
  it('a container the runtime does not know: NOT_FOUND-class error (DEADLINE_EXCEEDED family)', async () => {
    await withAttestor({ pod_source: 'none', docker_socket: join(dir.path, 'docker.sock') }, async (a) => {
      const e = await a.attest(14, sig()).catch((x) => x);
      expect(e.code).toBe('ERR_WORKLOAD_RUNTIME_NOT_FOUND');
      expect(e.grpcCode).toBe(GrpcCode.DEADLINE_EXCEEDED);
    });
  });
  it('an inspect body of the wrong shape: a typed INVALID_ARGUMENT, and the plugin keeps serving', async () => {
    await withAttestor({ pod_source: 'none', docker_socket: `unix://${join(dir.path, 'docker-bad.sock')}` }, async (a) => {
      const e = await a.attest(12, sig()).catch((x) => x);
      expect(e.code).toBe('ERR_WORKLOAD_SOURCE_BODY');
      expect(e.grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
      expect(e.message).toContain('Name is not a string');
    });
  });
  it('runtime socket down: UNAVAILABLE', async () => {
    await withAttestor({ pod_source: 'none', runtime_socket: join(dir.path, 'nothing.sock'), request_timeout: '2s' }, async (a) => {
      const e = await a.attest(11, sig()).catch((x) => x);
      expect(e.code).toBe('ERR_WORKLOAD_RUNTIME_UNAVAILABLE');
      expect(e.grpcCode).toBe(GrpcCode.UNAVAILABLE);
    });
  });
  it('no pod source and no socket: identity selectors only', async () => {
    await withAttestor({ pod_source: 'none' }, async (a) => {
      expect(await a.attest(12, sig())).toEqual([`container-id:${DOCKER_ID}`, 'runtime:docker', 'pod-source:none']);
    });
  });
  it('with a pod source: a plain container (no pod UID, not in any pod) falls back to the runtime', async () => {
    await withAttestor({ pod_source: 'edged', edged_port: emptyPods.port, docker_socket: join(dir.path, 'docker.sock') }, async (a) => {
      const sel = await a.attest(12, sig());
      expect(sel).toContain('container-name:redis');
      expect(sel).toContain('pod-source:runtime');
    });
  });
});

describe('pod_source = "auto" with a runtime socket', () => {
  it('a pod source that comes up after Configure is found: runtime selectors meanwhile, pod selectors after', async () => {
    // The docs' KubeEdge setup: the edge node boots (and the SPIRE agent configures) before edged listens.
    const kindPods = readFileSync(join(FIXTURES, 'kubelet', 'spire-kind_pod_list.json'), 'utf8');
    writeFakeProc(proc(), 21, { cgroup: readFileSync(join(FIXTURES, 'cgroup', 'spire-cgroups_pid_in_kind_pod.txt'), 'utf8') });
    let up = false;
    const edged = await startHttp((req, res) => (up && req.url === '/pods' ? json(res, JSON.parse(kindPods)) : json(res, { message: 'starting' }, 503)));
    const ctx = testContext();
    const a = new EdgeWorkloadAttestor(ctx, { env: {}, selfCgroup: KIND_NODE_SELF, probeTimeoutMs: 500 });
    try {
      await a.configure(
        {
          pod_source: 'auto',
          proc_path: proc(),
          kubelet_token_path: join(dir.path, 'no-token'),
          edged_port: edged.port,
          runtime_socket: join(dir.path, 'containerd.sock'),
          poll_interval: '200ms',
        },
        { trustDomain: 'example.org' },
      );
      const configured = ctx.log.lines.find((l) => l.message === 'workload attestor configured')!;
      expect(configured.fields?.['pod_source']).toBe('auto (probing)');
      expect(ctx.log.lines.some((l) => l.level === 'warn' && /using the container runtime socket until one does/.test(l.message))).toBe(true);
      // Meanwhile the runtime socket answers for containers.
      const early = await a.attest(11, sig());
      expect(early).toContain('container-name:web');
      expect(early).toContain('pod-source:runtime');
      // edged comes up: the next poll finds it, and pods get their ns/sa selectors without an agent restart.
      up = true;
      const end = Date.now() + 10_000;
      while (a.sourceStatus()?.ageMs === undefined && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(a.sourceStatus()?.source).toBe('edged');
      const later = await a.attest(21, sig());
      expect(later).toContain('pod-source:edged');
      expect(later.some((s) => s.startsWith('ns:'))).toBe(true);
      expect(later.some((s) => s.startsWith('sa:'))).toBe(true);
    } finally {
      await a.close();
      await edged.close();
    }
  });
});

describe('proto/cri/runtime/v1/api.proto', () => {
  // Field numbers from kubernetes/cri-api pkg/apis/runtime/v1/api.proto (upstream facts, checked by hand).
  const UPSTREAM: Record<string, Record<string, number>> = {
    ContainerStatusRequest: { container_id: 1, verbose: 2 },
    ContainerStatusResponse: { status: 1, info: 2 },
    ContainerMetadata: { name: 1, attempt: 2 },
    ImageSpec: { image: 1, annotations: 2, user_specified_image: 18 },
    ContainerStatus: { id: 1, metadata: 2, state: 3, created_at: 4, image: 8, image_ref: 9, labels: 12, annotations: 13, image_id: 17 },
  };
  it('the .proto file, the in-code descriptor and upstream agree', () => {
    const root = new protobuf.Root().loadSync(join(repoRoot, 'proto/cri/runtime/v1/api.proto'), { keepCase: true });
    const fromCode = protobuf.Root.fromJSON(CRI_DESCRIPTOR as unknown as protobuf.INamespace);
    for (const [msg, fields] of Object.entries(UPSTREAM)) {
      for (const r of [root, fromCode]) {
        const t = r.lookupType(`runtime.v1.${msg}`);
        const got = Object.fromEntries(Object.values(t.fields).map((f) => [f.name, f.id]));
        expect(got).toEqual(fields);
      }
      const a = root.lookupType(`runtime.v1.${msg}`);
      const b = fromCode.lookupType(`runtime.v1.${msg}`);
      for (const f of Object.values(a.fields)) expect(b.fields[f.name]!.type).toBe(f.type);
    }
    const svc = root.lookupService('runtime.v1.RuntimeService');
    expect(svc.methods['ContainerStatus']!.requestType).toBe('ContainerStatusRequest');
    expect(fromCode.lookupService('runtime.v1.RuntimeService').methods['ContainerStatus']!.responseType).toBe('ContainerStatusResponse');
  });
});
