/**
 * @module workload/runtime
 *
 * Container selectors without Kubernetes, straight from the runtime's socket:
 * - CRI (containerd, CRI-O): `runtime.v1.RuntimeService/ContainerStatus` over unix-socket gRPC. The message
 *   subset is declared below as a protobufjs JSON descriptor, equal to proto/cri/runtime/v1/api.proto (a test
 *   checks they agree), so nothing reads a .proto file at run time.
 * - Docker and podman: `GET /containers/<id>/json` on the Engine (or podman's compatible) API socket.
 * Answers are cached per container ID: image and labels of a container never change.
 */
import http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { fromJSON } from '@grpc/proto-loader';
import { Cancelled, DeadlineExceeded, MalformedInput, SourceUnavailable } from '../errors.js';
import type { ContainerRuntime } from './cgroup.js';
import { WorkloadErrorCode } from './errors.js';
import type { RuntimeContainerInfo } from './selectors.js';

export interface RuntimeInspectResult extends RuntimeContainerInfo {
  readonly runtime?: ContainerRuntime;
}

export interface RuntimeClient {
  readonly kind: 'cri' | 'docker';
  readonly endpoint: string;
  inspect(containerId: string, signal: AbortSignal): Promise<RuntimeInspectResult>;
  close(): void;
}

const map = { keyType: 'string', type: 'string' };
/** protobufjs JSON descriptor of proto/cri/runtime/v1/api.proto. */
export const CRI_DESCRIPTOR = {
  nested: {
    runtime: {
      nested: {
        v1: {
          nested: {
            RuntimeService: {
              methods: { ContainerStatus: { requestType: 'ContainerStatusRequest', responseType: 'ContainerStatusResponse' } },
            },
            ContainerStatusRequest: { fields: { container_id: { type: 'string', id: 1 }, verbose: { type: 'bool', id: 2 } } },
            ContainerStatusResponse: { fields: { status: { type: 'ContainerStatus', id: 1 }, info: { ...map, id: 2 } } },
            ContainerState: { values: { CONTAINER_CREATED: 0, CONTAINER_RUNNING: 1, CONTAINER_EXITED: 2, CONTAINER_UNKNOWN: 3 } },
            ContainerMetadata: { fields: { name: { type: 'string', id: 1 }, attempt: { type: 'uint32', id: 2 } } },
            ImageSpec: {
              fields: { image: { type: 'string', id: 1 }, annotations: { ...map, id: 2 }, user_specified_image: { type: 'string', id: 18 } },
            },
            ContainerStatus: {
              fields: {
                id: { type: 'string', id: 1 },
                metadata: { type: 'ContainerMetadata', id: 2 },
                state: { type: 'ContainerState', id: 3 },
                created_at: { type: 'int64', id: 4 },
                image: { type: 'ImageSpec', id: 8 },
                image_ref: { type: 'string', id: 9 },
                labels: { ...map, id: 12 },
                annotations: { ...map, id: 13 },
                image_id: { type: 'string', id: 17 },
              },
            },
          },
        },
      },
    },
  },
} as const;

const LOADER_OPTS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true } as const;

export function criServiceDefinition(): grpc.ServiceDefinition {
  const pkg = fromJSON(CRI_DESCRIPTOR as unknown as Record<string, unknown>, LOADER_OPTS);
  return pkg['runtime.v1.RuntimeService'] as grpc.ServiceDefinition;
}

interface CriStatusResponse {
  status?: {
    id?: string;
    metadata?: { name?: string } | null;
    image?: { image?: string; user_specified_image?: string } | null;
    image_ref?: string;
    image_id?: string;
    labels?: Record<string, string>;
  } | null;
}

class Cache {
  readonly #m = new Map<string, RuntimeInspectResult>();
  get(id: string): RuntimeInspectResult | undefined {
    return this.#m.get(id);
  }
  set(id: string, v: RuntimeInspectResult): void {
    if (this.#m.size >= 2048) this.#m.delete(this.#m.keys().next().value as string);
    this.#m.set(id, v);
  }
}

function cancelled(): Cancelled {
  return new Cancelled(WorkloadErrorCode.CANCELLED, 'attestation cancelled');
}

export class CriClient implements RuntimeClient {
  readonly kind = 'cri' as const;
  readonly endpoint: string;
  readonly #client: grpc.Client;
  readonly #timeoutMs: number;
  readonly #runtime: ContainerRuntime | undefined;
  readonly #cache = new Cache();

  /** `socket` is `unix:///run/containerd/containerd.sock` or a plain path. */
  constructor(socket: string, timeoutMs: number, runtime?: ContainerRuntime) {
    const path = socket.replace(/^unix:\/\//, '');
    this.endpoint = `unix://${path}`;
    this.#timeoutMs = timeoutMs;
    this.#runtime = runtime ?? (/crio/.test(path) ? 'crio' : /containerd/.test(path) ? 'containerd' : undefined);
    const Ctor = grpc.makeGenericClientConstructor(criServiceDefinition(), 'RuntimeService');
    this.#client = new Ctor(`unix://${path}`, grpc.credentials.createInsecure());
  }

  close(): void {
    this.#client.close();
  }

  inspect(containerId: string, signal: AbortSignal): Promise<RuntimeInspectResult> {
    const hit = this.#cache.get(containerId);
    if (hit) return Promise.resolve(hit);
    if (signal.aborted) return Promise.reject(cancelled());
    return new Promise((resolve, reject) => {
      const call = (this.#client as unknown as Record<string, Function>)['ContainerStatus']!.call(
        this.#client,
        { container_id: containerId, verbose: false },
        { deadline: Date.now() + this.#timeoutMs },
        (err: grpc.ServiceError | null, res: CriStatusResponse) => {
          signal.removeEventListener('abort', onAbort);
          if (err) {
            if (signal.aborted) reject(cancelled());
            else if (err.code === grpc.status.NOT_FOUND)
              reject(new DeadlineExceeded(WorkloadErrorCode.RUNTIME_NOT_FOUND, `CRI runtime does not know container ${containerId}`, { fields: { container_id: containerId } }));
            else
              reject(new SourceUnavailable(WorkloadErrorCode.RUNTIME_UNAVAILABLE, `CRI ContainerStatus on ${this.endpoint} failed (${grpc.status[err.code] ?? err.code})`, { fields: { endpoint: this.endpoint }, cause: err }));
            return;
          }
          const s = res.status;
          if (!s) {
            reject(new MalformedInput(WorkloadErrorCode.SOURCE_BODY, 'CRI ContainerStatus without status', { fields: { container_id: containerId } }));
            return;
          }
          const image = s.image?.user_specified_image || s.image?.image || undefined;
          const digest = s.image_ref || s.image_id || undefined;
          const out: RuntimeInspectResult = {
            ...(s.metadata?.name ? { name: s.metadata.name } : {}),
            ...(image ? { image } : {}),
            ...(digest ? { imageDigest: digest } : {}),
            ...(s.labels && Object.keys(s.labels).length ? { labels: s.labels } : {}),
            ...(this.#runtime ? { runtime: this.#runtime } : {}),
          };
          this.#cache.set(containerId, out);
          resolve(out);
        },
      ) as grpc.ClientUnaryCall;
      const onAbort = (): void => call.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

interface DockerInspect {
  Id?: string;
  Name?: string;
  Image?: string;
  Config?: { Image?: string; Labels?: Record<string, string> | null } | null;
}

/** The `GET /containers/<id>/json` body of Docker or Podman as what the selectors need. */
export function decodeDockerInspect(body: Uint8Array, runtime: ContainerRuntime, endpoint: string): RuntimeInspectResult {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch (err) {
    throw new MalformedInput(WorkloadErrorCode.SOURCE_BODY, `${endpoint}: inspect body is not JSON`, { cause: err });
  }
  // The body is the runtime's, but its shape is checked like any input: a wrong type is a typed refusal.
  const bad = (what: string): never => {
    throw new MalformedInput(WorkloadErrorCode.SOURCE_BODY, `${endpoint}: inspect body: ${what}`, { fields: { endpoint, rule: 'inspect-shape' } });
  };
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(raw)) return bad('not an object');
  for (const key of ['Name', 'Image']) if (raw[key] !== undefined && typeof raw[key] !== 'string') bad(`${key} is not a string`);
  const config = raw['Config'];
  if (config !== undefined && config !== null) {
    if (!isObj(config)) bad('Config is not an object');
    else {
      if (config['Image'] !== undefined && typeof config['Image'] !== 'string') bad('Config.Image is not a string');
      const l = config['Labels'];
      if (l !== undefined && l !== null && (!isObj(l) || Object.values(l).some((v) => typeof v !== 'string'))) bad('Config.Labels is not a map of strings');
    }
  }
  const j = raw as DockerInspect;
  const name = j.Name?.replace(/^\//, '');
  const image = j.Config?.Image || undefined;
  const labels = j.Config?.Labels ?? undefined;
  return {
    ...(name ? { name } : {}),
    ...(image ? { image } : {}),
    ...(j.Image ? { imageDigest: j.Image } : {}),
    ...(labels && Object.keys(labels).length ? { labels } : {}),
    runtime,
  };
}

export class DockerClient implements RuntimeClient {
  readonly kind = 'docker' as const;
  readonly endpoint: string;
  readonly #path: string;
  readonly #timeoutMs: number;
  readonly #runtime: ContainerRuntime;
  readonly #agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  readonly #cache = new Cache();

  constructor(socket: string, timeoutMs: number, runtime: 'docker' | 'podman' = 'docker') {
    this.#path = socket.replace(/^unix:\/\//, '');
    this.endpoint = `unix://${this.#path}`;
    this.#timeoutMs = timeoutMs;
    this.#runtime = runtime;
  }

  close(): void {
    this.#agent.destroy();
  }

  inspect(containerId: string, signal: AbortSignal): Promise<RuntimeInspectResult> {
    const hit = this.#cache.get(containerId);
    if (hit) return Promise.resolve(hit);
    if (signal.aborted) return Promise.reject(cancelled());
    return new Promise((resolve, reject) => {
      const req = http.request(
        { socketPath: this.#path, path: `/containers/${encodeURIComponent(containerId)}/json`, method: 'GET', agent: this.#agent, headers: { host: 'docker' }, signal },
        (res) => {
          const chunks: Buffer[] = [];
          let n = 0;
          res.on('data', (c: Buffer) => {
            n += c.length;
            if (n > 4 << 20) res.destroy(new Error('inspect body too large'));
            else chunks.push(c);
          });
          res.on('error', (e) => reject(new SourceUnavailable(WorkloadErrorCode.RUNTIME_UNAVAILABLE, `${this.endpoint}: ${e.message}`, { cause: e })));
          res.on('end', () => {
            if (res.statusCode === 404) {
              reject(new DeadlineExceeded(WorkloadErrorCode.RUNTIME_NOT_FOUND, `${this.#runtime} does not know container ${containerId}`, { fields: { container_id: containerId } }));
              return;
            }
            if (res.statusCode !== 200) {
              reject(new SourceUnavailable(WorkloadErrorCode.RUNTIME_UNAVAILABLE, `${this.endpoint}: HTTP ${res.statusCode ?? 0}`, { fields: { endpoint: this.endpoint } }));
              return;
            }
            let out: RuntimeInspectResult;
            try {
              out = decodeDockerInspect(Buffer.concat(chunks), this.#runtime, this.endpoint);
            } catch (err) {
              reject(err);
              return;
            }
            this.#cache.set(containerId, out);
            resolve(out);
          });
        },
      );
      req.setTimeout(this.#timeoutMs, () => req.destroy(new Error(`no answer within ${this.#timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (signal.aborted) reject(cancelled());
        else reject(new SourceUnavailable(WorkloadErrorCode.RUNTIME_UNAVAILABLE, `${this.endpoint}: ${e.code ?? e.message}`, { fields: { endpoint: this.endpoint }, cause: e }));
      });
      req.end();
    });
  }
}
