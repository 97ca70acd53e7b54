/**
 * @module workload/config
 *
 * The workload attestor's plugin_data, validated once at Configure into a frozen object. Unknown keys and wrong
 * types are InvalidConfig naming the key and what was expected, so SPIRE refuses to start.
 *
 * HCL1 delivers a nested block as a list of objects (`kubelet { secure_port = 10250 }` arrives as
 * `{ kubelet: [{ secure_port: 10250 }] }`). The blocks `kubelet`, `edged`, `metaserver` and `apiserver` are
 * accepted in that form or as a plain object, and are flattened to the `<block>_<key>` keys below; giving the
 * same setting both ways is an error.
 */
import { z } from 'zod';
import { InvalidConfig } from '../errors.js';
import { parseDuration } from '../plugin/config-schema.js';
import { WorkloadErrorCode } from './errors.js';

export const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
export const POD_SOURCES = ['auto', 'kubelet', 'edged', 'metaserver', 'apiserver', 'none'] as const;
export type PodSourceChoice = (typeof POD_SOURCES)[number];

const BLOCKS = ['kubelet', 'edged', 'metaserver', 'apiserver'] as const;

const duration = z.union([z.string(), z.number()]).refine((v) => parseDuration(v) !== undefined, {
  message: 'expected a duration such as "500ms", "30s" or "5m" (or a number of seconds)',
});
const port = z.number().int().min(0).max(65535);
const path = z.string().min(1);

const Schema = z.strictObject({
  pod_source: z.enum(POD_SOURCES).optional(),
  node_name: z.string().min(1).optional(),
  node_name_env: z.string().min(1).optional(),
  proc_path: path.optional(),

  kubelet_host: z.string().min(1).optional(),
  kubelet_secure_port: port.optional(),
  kubelet_read_only_port: port.optional(),
  kubelet_ca_path: path.optional(),
  kubelet_token_path: path.optional(),
  kubelet_client_cert_path: path.optional(),
  kubelet_client_key_path: path.optional(),
  kubelet_skip_verification: z.boolean().optional(),
  kubelet_tls_server_name: z.string().min(1).optional(),

  edged_host: z.string().min(1).optional(),
  edged_port: port.optional(),

  metaserver_url: z.url({ protocol: /^https?$/ }).optional(),
  metaserver_token_path: path.optional(),
  metaserver_ca_path: path.optional(),
  metaserver_skip_verification: z.boolean().optional(),

  apiserver_url: z.url({ protocol: /^https?$/ }).optional(),
  apiserver_token_path: path.optional(),
  apiserver_ca_path: path.optional(),
  apiserver_skip_verification: z.boolean().optional(),

  poll_interval: duration.optional(),
  max_staleness: duration.optional(),
  miss_retry_deadline: duration.optional(),
  request_timeout: duration.optional(),
  max_pod_list_bytes: z.number().int().positive().optional(),

  runtime_socket: path.optional(),
  docker_socket: path.optional(),
  podman_socket: path.optional(),
  podman_socket_template: z.string().includes('%d').optional(),

  process_selectors: z.boolean().optional(),
  workload_size_limit: z.number().int().optional(),
  disable_container_selectors: z.boolean().optional(),
  mountinfo_fallback: z.boolean().optional(),
  loopback_source_uid: z.number().int().min(0).max(0xfffffffe).optional(),
  container_id_cgroup_matchers: z.array(z.string()).optional(),
});

export interface WorkloadConfig {
  readonly podSource: PodSourceChoice;
  readonly nodeName: string | undefined;
  readonly procPath: string;
  readonly kubelet: {
    readonly host: string;
    readonly securePort: number;
    readonly readOnlyPort: number;
    readonly caPath: string;
    readonly tokenPath: string;
    readonly clientCertPath?: string;
    readonly clientKeyPath?: string;
    readonly skipVerification: boolean;
    readonly tlsServerName?: string;
  };
  readonly edged: { readonly host: string; readonly port: number };
  readonly metaserver: { readonly url: string; readonly tokenPath?: string; readonly caPath?: string; readonly skipVerification: boolean };
  readonly apiserver: { readonly url: string | undefined; readonly tokenPath: string; readonly caPath: string; readonly skipVerification: boolean };
  readonly pollIntervalMs: number;
  readonly maxStalenessMs: number;
  readonly missRetryDeadlineMs: number;
  readonly requestTimeoutMs: number;
  readonly maxPodListBytes: number;
  readonly runtimeSocket?: string;
  readonly dockerSocket?: string;
  readonly podmanSocket: string;
  readonly podmanSocketTemplate: string;
  /** Podman sockets are only used when `podman_socket` or `podman_socket_template` is configured. */
  readonly podmanEnabled: boolean;
  readonly processSelectors: boolean;
  readonly workloadSizeLimit: number;
  readonly disableContainerSelectors: boolean;
  readonly mountinfoFallback: boolean;
  /** The uid that must own the listening socket of an unauthenticated loopback pod source (edged, http MetaServer). */
  readonly loopbackSourceUid: number;
  readonly containerIdCgroupMatchers?: readonly string[];
}

function invalid(key: string, expected: string): InvalidConfig {
  return new InvalidConfig(WorkloadErrorCode.CONFIG, `workload attestor config: "${key}": ${expected}`, { fields: { key, expected } });
}

/** Flattens HCL1 blocks (`{kubelet: [{...}]}` or `{kubelet: {...}}`) into `kubelet_*` keys. */
export function flattenBlocks(raw: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (!(BLOCKS as readonly string[]).includes(k)) {
      out[k] = v;
      continue;
    }
    let block = v;
    if (Array.isArray(block)) {
      if (block.length !== 1) throw invalid(k, 'expected one block');
      block = block[0];
    }
    if (typeof block !== 'object' || block === null || Array.isArray(block)) throw invalid(k, 'expected a block of settings');
    for (const [bk, bv] of Object.entries(block)) {
      const flat = `${k}_${bk}`;
      if (flat in raw || flat in out) throw invalid(flat, `set both as "${flat}" and inside the "${k}" block`);
      out[flat] = bv;
    }
  }
  return out;
}

export function parseConfig(raw: Record<string, unknown>, env: Readonly<Record<string, string | undefined>> = process.env): WorkloadConfig {
  const flat = flattenBlocks(raw ?? {});
  const r = Schema.safeParse(flat);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    if (issue.code === 'unrecognized_keys') throw invalid(issue.keys.join(', '), 'unknown key');
    const key = issue.path.map(String).join('.') || '(root)';
    throw invalid(key, issue.message);
  }
  const c = r.data;
  const ms = (v: string | number | undefined, d: number): number => (v === undefined ? d : parseDuration(v)!);
  const nodeName = c.node_name ?? env[c.node_name_env ?? 'NODE_NAME'] ?? undefined;

  if ((c.kubelet_client_cert_path === undefined) !== (c.kubelet_client_key_path === undefined)) {
    throw invalid(c.kubelet_client_cert_path === undefined ? 'kubelet_client_cert_path' : 'kubelet_client_key_path', 'client certificate and key must be given together');
  }
  const podSource = c.pod_source ?? 'auto';
  if ((podSource === 'metaserver' || podSource === 'apiserver') && !nodeName) {
    throw invalid('node_name', `required with pod_source = "${podSource}" (or set the ${c.node_name_env ?? 'NODE_NAME'} environment variable)`);
  }
  const pollIntervalMs = ms(c.poll_interval, 5_000);
  const maxStalenessMs = ms(c.max_staleness, 10 * 60_000);
  if (pollIntervalMs < 100) throw invalid('poll_interval', 'must be at least 100ms');
  if (maxStalenessMs < pollIntervalMs) throw invalid('max_staleness', 'must not be shorter than poll_interval');
  const envApi = env['KUBERNETES_SERVICE_HOST'] ? `https://${env['KUBERNETES_SERVICE_HOST']}:${env['KUBERNETES_SERVICE_PORT'] ?? '443'}` : undefined;

  const cfg: WorkloadConfig = {
    podSource,
    nodeName,
    procPath: c.proc_path ?? '/proc',
    kubelet: {
      host: c.kubelet_host ?? nodeName ?? '127.0.0.1',
      securePort: c.kubelet_secure_port ?? 10250,
      readOnlyPort: c.kubelet_read_only_port ?? 0,
      caPath: c.kubelet_ca_path ?? `${SA_DIR}/ca.crt`,
      tokenPath: c.kubelet_token_path ?? `${SA_DIR}/token`,
      ...(c.kubelet_client_cert_path !== undefined ? { clientCertPath: c.kubelet_client_cert_path } : {}),
      ...(c.kubelet_client_key_path !== undefined ? { clientKeyPath: c.kubelet_client_key_path } : {}),
      skipVerification: c.kubelet_skip_verification === true,
      ...(c.kubelet_tls_server_name !== undefined ? { tlsServerName: c.kubelet_tls_server_name } : {}),
    },
    edged: { host: c.edged_host ?? '127.0.0.1', port: c.edged_port ?? 10350 },
    metaserver: {
      url: c.metaserver_url ?? 'http://127.0.0.1:10550',
      ...(c.metaserver_token_path !== undefined ? { tokenPath: c.metaserver_token_path } : {}),
      ...(c.metaserver_ca_path !== undefined ? { caPath: c.metaserver_ca_path } : {}),
      skipVerification: c.metaserver_skip_verification === true,
    },
    apiserver: {
      url: c.apiserver_url ?? envApi,
      tokenPath: c.apiserver_token_path ?? `${SA_DIR}/token`,
      caPath: c.apiserver_ca_path ?? `${SA_DIR}/ca.crt`,
      skipVerification: c.apiserver_skip_verification === true,
    },
    pollIntervalMs,
    maxStalenessMs,
    missRetryDeadlineMs: ms(c.miss_retry_deadline, 30_000),
    requestTimeoutMs: ms(c.request_timeout, 10_000),
    maxPodListBytes: c.max_pod_list_bytes ?? 64 << 20,
    ...(c.runtime_socket !== undefined ? { runtimeSocket: c.runtime_socket } : {}),
    ...(c.docker_socket !== undefined ? { dockerSocket: c.docker_socket } : {}),
    podmanSocket: c.podman_socket ?? 'unix:///run/podman/podman.sock',
    podmanSocketTemplate: c.podman_socket_template ?? 'unix:///run/user/%d/podman/podman.sock',
    podmanEnabled: c.podman_socket !== undefined || c.podman_socket_template !== undefined,
    processSelectors: c.process_selectors === true,
    workloadSizeLimit: c.workload_size_limit ?? 0,
    disableContainerSelectors: c.disable_container_selectors === true,
    mountinfoFallback: c.mountinfo_fallback === true, // off by default: see cgroup.ts locateContainer
    loopbackSourceUid: c.loopback_source_uid ?? 0, // edgecore runs as root
    ...(c.container_id_cgroup_matchers !== undefined ? { containerIdCgroupMatchers: c.container_id_cgroup_matchers } : {}),
  };
  if (podSource === 'apiserver' && cfg.apiserver.url === undefined) {
    throw invalid('apiserver_url', 'required with pod_source = "apiserver" outside a cluster (KUBERNETES_SERVICE_HOST is not set)');
  }
  return Object.freeze(cfg);
}
