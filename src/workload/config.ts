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
import { InvalidConfig, InvalidConfigList } from '../errors.js';
import { decisionEventsSchema, type DecisionEventsConfig } from '../nodeattestor/event-sinks.js';
import { issueMessages, parseDuration } from '../plugin/config-schema.js';
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

  // SPIRE's built-in k8s workload attestor keys (SPIRE_K8S_ALIASES and spireK8sNotes give their meaning here).
  kubelet_use_anonymous_authentication: z.boolean().optional(),
  max_poll_attempts: z.number().int().optional(),
  poll_retry_interval: duration.optional(),
  reload_interval: duration.optional(),
  use_new_container_locator: z.boolean().optional(),
  verbose_container_locator_logs: z.boolean().optional(),
  enable_namespace_labels: z.boolean().optional(),
  /** Where namespace labels come from; default: the pod source when it is one of these, else the API server if known, else MetaServer. */
  namespace_label_source: z.enum(['apiserver', 'metaserver']).optional(),

  // Container-level IMA (src/workload/ima.ts, docs/ima.md "Workload attestation"); off unless an ima_* key is set.
  ima_log_path: path.optional(),
  ima_policy_path: path.optional(),
  ima_policy_name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
  ima_policy_sha256: z.string().regex(/^[0-9a-fA-F]{64}$/).optional(),
  ima_policy_verification_key_path: path.optional(),
  ima_signing_key_paths: z.array(path).max(64).optional(),
  ima_tpm_tcti: z.string().min(1).optional(),
  ima_pcr_bank: z.enum(['sha1', 'sha256', 'sha384', 'sha512']).optional(),
  ima_mode: z.enum(['auto', 'cgroup', 'files']).optional(),
  ima_file_size_limit: z.number().int().min(0).optional(),
  /** Where IMA violations go as decision events (the tpm server's sinks and shape; the revoker deletes the pod). */
  decision_events: decisionEventsSchema.optional(),
});

export const DEFAULT_IMA_LOG_PATH = '/sys/kernel/security/ima/binary_runtime_measurements';

/** Container-level IMA settings (docs/ima.md). */
export interface WorkloadImaConfig {
  readonly logPath: string;
  readonly policyPath?: string;
  readonly policyName: string;
  readonly policySha256?: string;
  readonly verificationKeyPath?: string;
  readonly signingKeyPaths?: readonly string[];
  /** tpm2-tools TCTI PCR 10 is read through; undefined: the tools' default (device:/dev/tpmrm0). */
  readonly tcti?: string;
  readonly pcrBank: 'sha1' | 'sha256' | 'sha384' | 'sha512';
  /** auto: by cgroup when the log carries ima-cgpath/ima-dep-cgn entries, else by the process's files. */
  readonly mode: 'auto' | 'cgroup' | 'files';
  /** Largest file hashed for matching (bytes, 0 = no limit). */
  readonly fileSizeLimit: number;
}

/**
 * SPIRE's k8s workload attestor keys that mean exactly one of ours (docs/workload-attestor.md, "Drop-in for SPIRE's
 * k8s workload attestor"). Giving a SPIRE key and the key it stands for is an error, as for blocks.
 */
export const SPIRE_K8S_ALIASES: Readonly<Record<string, string>> = {
  skip_kubelet_verification: 'kubelet_skip_verification',
  token_path: 'kubelet_token_path',
  certificate_path: 'kubelet_client_cert_path',
  private_key_path: 'kubelet_client_key_path',
  use_anonymous_authentication: 'kubelet_use_anonymous_authentication',
};

/** SPIRE's defaults that differ from what a setting would otherwise default to here. */
const SPIRE_NODE_NAME_ENV = 'MY_NODE_NAME';
const SPIRE_MAX_POLL_ATTEMPTS = 60;
const SPIRE_POLL_RETRY_INTERVAL_MS = 500;

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
    /** No token and no client certificate (SPIRE's use_anonymous_authentication). */
    readonly anonymous: boolean;
  };
  readonly edged: { readonly host: string; readonly port: number };
  readonly metaserver: { readonly url: string; readonly tokenPath?: string; readonly caPath?: string; readonly skipVerification: boolean };
  readonly apiserver: { readonly url: string | undefined; readonly tokenPath: string; readonly caPath: string; readonly skipVerification: boolean };
  readonly pollIntervalMs: number;
  readonly maxStalenessMs: number;
  readonly missRetryDeadlineMs: number;
  /** Least time between two pod-list requests made for misses (SPIRE's poll_retry_interval). */
  readonly missRefreshGapMs: number;
  /** SPIRE's verbose_container_locator_logs: log what the container locator saw for each PID. */
  readonly verboseLocatorLogs: boolean;
  /** SPIRE's enable_namespace_labels: where `ns-label:` selectors come from; undefined when off. */
  readonly namespaceLabels: { readonly source: 'apiserver' | 'metaserver' } | undefined;
  /** Settings accepted for compatibility that change nothing here, with the reason, to be logged at Configure. */
  readonly ignored: readonly { readonly key: string; readonly reason: string }[];
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
  /** Container-level IMA; undefined when no ima_* key is set. */
  readonly ima: WorkloadImaConfig | undefined;
  readonly decisionEvents: DecisionEventsConfig | undefined;
}

/** The name an operator wrote: SPIRE's key when ours has one. */
function spireName(key: string): string {
  return Object.keys(SPIRE_K8S_ALIASES).find((a) => SPIRE_K8S_ALIASES[a] === key) ?? key;
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

/** Renames SPIRE's k8s attestor keys to ours; a key given both ways is an error. */
function applySpireAliases(flat: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(flat)) {
    const ours = SPIRE_K8S_ALIASES[k];
    if (ours === undefined) {
      if (k in out) throw invalid(k, `set both as "${k}" and as SPIRE's ${Object.keys(SPIRE_K8S_ALIASES).find((a) => SPIRE_K8S_ALIASES[a] === k)}`);
      out[k] = v;
      continue;
    }
    if (ours in flat || ours in out) throw invalid(k, `set both as SPIRE's "${k}" and as "${ours}"; keep one`);
    out[ours] = v;
  }
  return out;
}

function imaSettings(c: z.output<typeof Schema>): WorkloadImaConfig | undefined {
  const set = (Object.keys(c) as (keyof typeof c)[]).some((k) => k.startsWith('ima_') && c[k] !== undefined);
  if (!set) return undefined;
  if (c.ima_policy_path === undefined) {
    const orphan = (['ima_policy_name', 'ima_policy_sha256', 'ima_policy_verification_key_path'] as const).find((k) => c[k] !== undefined);
    if (orphan) throw invalid(orphan, 'only means something with ima_policy_path');
  }
  return {
    logPath: c.ima_log_path ?? DEFAULT_IMA_LOG_PATH,
    ...(c.ima_policy_path !== undefined ? { policyPath: c.ima_policy_path } : {}),
    policyName: c.ima_policy_name ?? 'runtime',
    ...(c.ima_policy_sha256 !== undefined ? { policySha256: c.ima_policy_sha256.toLowerCase() } : {}),
    ...(c.ima_policy_verification_key_path !== undefined ? { verificationKeyPath: c.ima_policy_verification_key_path } : {}),
    ...(c.ima_signing_key_paths !== undefined ? { signingKeyPaths: c.ima_signing_key_paths } : {}),
    ...(c.ima_tpm_tcti !== undefined ? { tcti: c.ima_tpm_tcti } : {}),
    pcrBank: c.ima_pcr_bank ?? 'sha256',
    mode: c.ima_mode ?? 'auto',
    fileSizeLimit: c.ima_file_size_limit ?? 256 * 1024 * 1024,
  };
}

export function parseConfig(raw: Record<string, unknown>, env: Readonly<Record<string, string | undefined>> = process.env): WorkloadConfig {
  const flat = applySpireAliases(flattenBlocks(raw ?? {}));
  const r = Schema.safeParse(flat);
  if (!r.success) {
    // Every problem at once, with a "did you mean" for unknown keys.
    const problems = issueMessages(r.error, Schema).map((m) => `workload attestor config: ${m}`);
    const keys = r.error.issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys : [i.path.map(String).join('.') || '(root)']));
    if (problems.length === 1) throw new InvalidConfig(WorkloadErrorCode.CONFIG, problems[0]!, { fields: { key: keys[0] } });
    throw new InvalidConfigList(WorkloadErrorCode.CONFIG, `workload attestor config: ${problems.length} problems: ${problems.join('; ')}`, problems);
  }
  const c = r.data;
  const ms = (v: string | number | undefined, d: number): number => (v === undefined ? d : parseDuration(v)!);
  // SPIRE reads MY_NODE_NAME by default; NODE_NAME, this plugin's earlier default, still works when that is unset.
  const nodeNameEnv = c.node_name_env ?? SPIRE_NODE_NAME_ENV;
  const nodeName = c.node_name ?? env[nodeNameEnv] ?? (c.node_name_env === undefined ? env['NODE_NAME'] : undefined) ?? undefined;

  if (c.kubelet_secure_port !== undefined && c.kubelet_secure_port > 0 && c.kubelet_read_only_port !== undefined && c.kubelet_read_only_port > 0) {
    throw invalid('kubelet_read_only_port', 'cannot use both the read-only and the secure port (as in SPIRE)');
  }
  const anonymous = c.kubelet_use_anonymous_authentication === true;
  if (anonymous) {
    const other = (['kubelet_token_path', 'kubelet_client_cert_path', 'kubelet_client_key_path'] as const).find((k) => c[k] !== undefined);
    if (other) throw invalid('use_anonymous_authentication', `cannot be used with ${spireName(other)}: anonymous means no token and no client certificate`);
  }
  const ignored: { key: string; reason: string }[] = [];
  if (c.reload_interval !== undefined) {
    ignored.push({ key: 'reload_interval', reason: 'the token, CA and client certificate are read from disk at every request, so rotated files are used at once' });
  }
  if (c.use_new_container_locator === false) {
    ignored.push({ key: 'use_new_container_locator', reason: 'there is one container locator, and it handles cgroup v1 and v2' });
  }
  if ((c.max_poll_attempts !== undefined || c.poll_retry_interval !== undefined) && c.miss_retry_deadline !== undefined) {
    throw invalid('miss_retry_deadline', 'set either miss_retry_deadline or SPIRE\'s max_poll_attempts/poll_retry_interval, not both');
  }
  const pollAttempts = c.max_poll_attempts !== undefined && c.max_poll_attempts > 0 ? c.max_poll_attempts : SPIRE_MAX_POLL_ATTEMPTS;
  const pollRetryMs = c.poll_retry_interval !== undefined && parseDuration(c.poll_retry_interval)! > 0 ? parseDuration(c.poll_retry_interval)! : SPIRE_POLL_RETRY_INTERVAL_MS;
  const spirePolling = c.max_poll_attempts !== undefined || c.poll_retry_interval !== undefined;

  if ((c.kubelet_client_cert_path === undefined) !== (c.kubelet_client_key_path === undefined)) {
    throw invalid(c.kubelet_client_cert_path === undefined ? 'kubelet_client_cert_path' : 'kubelet_client_key_path', 'client certificate and key must be given together');
  }
  const podSource = c.pod_source ?? 'auto';
  if ((podSource === 'metaserver' || podSource === 'apiserver') && !nodeName) {
    throw invalid('node_name', `required with pod_source = "${podSource}" (or set the ${nodeNameEnv} environment variable)`);
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
      anonymous,
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
    // SPIRE polls the kubelet up to max_poll_attempts times, poll_retry_interval apart (60 x 500ms = 30s).
    missRetryDeadlineMs: spirePolling ? pollAttempts * pollRetryMs : ms(c.miss_retry_deadline, 30_000),
    missRefreshGapMs: spirePolling ? pollRetryMs : 50,
    verboseLocatorLogs: c.verbose_container_locator_logs === true,
    namespaceLabels: undefined,
    ignored,
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
    ima: imaSettings(c),
    decisionEvents: c.decision_events,
  };
  if (podSource === 'apiserver' && cfg.apiserver.url === undefined) {
    throw invalid('apiserver_url', 'required with pod_source = "apiserver" outside a cluster (KUBERNETES_SERVICE_HOST is not set)');
  }
  if (c.namespace_label_source !== undefined && c.enable_namespace_labels !== true) {
    throw invalid('namespace_label_source', 'only means something with enable_namespace_labels = true');
  }
  if (c.enable_namespace_labels === true) {
    const source =
      c.namespace_label_source ??
      (podSource === 'apiserver' || podSource === 'metaserver' ? podSource : cfg.apiserver.url !== undefined ? 'apiserver' : 'metaserver');
    if (source === 'apiserver' && cfg.apiserver.url === undefined) {
      throw invalid('namespace_label_source', 'namespace labels from the API server need apiserver_url outside a cluster (KUBERNETES_SERVICE_HOST is not set)');
    }
    return Object.freeze({ ...cfg, namespaceLabels: { source } });
  }
  return Object.freeze(cfg);
}
