/**
 * A Kubernetes edge node without Kubernetes, for end-to-end tests and benchmarks: pods are real cgroups
 * (kubelet's cgroupfs layout, `kubepods/besteffort/pod<uid>/<container-id>`) holding real processes, and the
 * kubelet is a real HTTPS server answering `/pods` with kubelet-format JSON for exactly those pods.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { makePki, startHttps, type TestPki, type TestServer } from '../workload/helpers.js';
import { killAndWait } from './cgroup-lab.js';

export interface PodSpec {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly image?: string;
}

export interface Pod extends PodSpec {
  readonly uid: string;
  readonly containerId: string;
  readonly containerName: string;
  /** The kubelet `/pods` item. */
  readonly json: unknown;
}

/** A pod as the kubelet reports it (metadata, spec, status with a running containerd container). */
export function makePod(spec: PodSpec, nodeName: string): Pod {
  const uid = randomUUID();
  const containerId = createHash('sha256').update(`container:${uid}`).digest('hex');
  const containerName = 'main';
  const image = spec.image ?? `registry.edge.example/${spec.name}:1.0.0`;
  const imageId = `registry.edge.example/${spec.name}@sha256:${createHash('sha256').update(image).digest('hex')}`;
  const started = '2026-12-01T08:00:00Z';
  const json = {
    metadata: {
      name: `${spec.name}-6c9f7d8b5-${uid.slice(0, 5)}`,
      generateName: `${spec.name}-6c9f7d8b5-`,
      namespace: spec.namespace,
      uid,
      resourceVersion: '4711',
      creationTimestamp: started,
      labels: { app: spec.name, 'pod-template-hash': '6c9f7d8b5', ...spec.labels },
      annotations: { 'kubernetes.io/config.seen': '2026-12-01T08:00:00.000000000Z', 'kubernetes.io/config.source': 'api' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${spec.name}-6c9f7d8b5`, uid: randomUUID(), controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      containers: [{ name: containerName, image, resources: {}, terminationMessagePath: '/dev/termination-log', imagePullPolicy: 'IfNotPresent' }],
      restartPolicy: 'Always',
      serviceAccountName: spec.serviceAccount,
      serviceAccount: spec.serviceAccount,
      nodeName,
    },
    status: {
      phase: 'Running',
      conditions: ['Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastTransitionTime: started })),
      hostIP: '10.0.0.10',
      podIP: '10.244.0.17',
      startTime: started,
      containerStatuses: [
        {
          name: containerName,
          state: { running: { startedAt: started } },
          ready: true,
          restartCount: 0,
          image,
          imageID: imageId,
          containerID: `containerd://${containerId}`,
          started: true,
        },
      ],
      qosClass: 'BestEffort',
    },
  };
  return { ...spec, uid, containerId, containerName, json };
}

/** The cgroup hierarchy pods are placed in: cgroup v2's unified tree, or v1's pids controller. */
export function cgroupRoot(): string {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return '/sys/fs/cgroup';
  return '/sys/fs/cgroup/pids';
}

/** Creates pod cgroups, starts processes in them, and removes everything it made. */
export class PodCgroups {
  readonly #root: string;
  readonly #dirs: string[] = [];
  readonly #children = new Set<ChildProcess>();

  constructor(root = cgroupRoot()) {
    this.#root = root;
  }

  dirOf(pod: Pod): string {
    return join(this.#root, 'kubepods', 'besteffort', `pod${pod.uid}`, pod.containerId);
  }

  /** Creates the pod's cgroup (root only: a test that cannot create one fails rather than skips). */
  place(pod: Pod): string {
    const dir = this.dirOf(pod);
    // Remember every directory this call creates (kubepods/besteffort too), so cleanup leaves the host as it was.
    const missing: string[] = [];
    for (let d = dir; d.startsWith(`${this.#root}/`) && !existsSync(d); d = dirname(d)) missing.push(d);
    if (missing.length > 0) {
      mkdirSync(dir, { recursive: true });
      this.#dirs.push(...missing);
    }
    return dir;
  }

  /**
   * Starts `command` inside the pod's container cgroup from its first instruction: a shell moves itself into the
   * cgroup, then execs the command, so the PID the agent sees is in the pod for its whole life.
   */
  spawn(pod: Pod, command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
    const dir = this.place(pod);
    const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, command, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...options,
    });
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  /** Moves an already running process into the pod's cgroup. */
  adopt(pod: Pod, pid: number): void {
    writeFileSync(join(this.place(pod), 'cgroup.procs'), String(pid));
  }

  /** Kills the processes it started and removes every cgroup directory it created; returns those directories. */
  async cleanup(): Promise<string[]> {
    await killAndWait(this.#children);
    // Deepest first; a cgroup can be removed only once it is empty (a shared parent another user still fills stays).
    const dirs = this.#dirs.splice(0).sort((a, b) => b.length - a.length);
    for (const dir of dirs) {
      for (let i = 0; i < 50 && existsSync(dir); i++) {
        try {
          rmdirSync(dir);
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
    return dirs;
  }
}

export interface FakeKubelet {
  readonly server: TestServer;
  readonly pki: TestPki;
  readonly port: number;
  readonly caPath: string;
  readonly tokenPath: string;
  /** `/pods` requests answered and bytes sent since start (or the last reset). */
  readonly stats: { requests: number; bytes: number };
  resetStats(): void;
  close(): Promise<void>;
}

/**
 * The kubelet's secure port: HTTPS with a test CA, `/pods` returns a PodList of `pods()` at the time of the request.
 * Any bearer token is accepted (the token file exists so that clients that need one have it).
 */
export async function startFakeKubelet(dir: string, pods: () => readonly Pod[]): Promise<FakeKubelet> {
  mkdirSync(dir, { recursive: true });
  const pki = await makePki();
  const caPath = join(dir, 'kubelet-ca.pem');
  const tokenPath = join(dir, 'token');
  writeFileSync(caPath, pki.caPem);
  writeFileSync(tokenPath, 'e2e-service-account-token');
  const stats = { requests: 0, bytes: 0 };
  const server = await startHttps(pki, (req, res) => {
    if (req.url?.split('?')[0] !== '/pods') {
      res.writeHead(404).end();
      return;
    }
    const body = JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: {}, items: pods().map((p) => p.json) });
    stats.requests += 1;
    stats.bytes += Buffer.byteLength(body);
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  return {
    server,
    pki,
    port: server.port,
    caPath,
    tokenPath,
    stats,
    resetStats: () => {
      stats.requests = 0;
      stats.bytes = 0;
    },
    close: () => server.close(),
  };
}

/** The container ID our cgroup parser and SPIRE's would read for `pid` (for assertions). */
export function cgroupOf(pid: number): string {
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8');
}
