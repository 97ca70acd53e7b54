/**
 * The revoker's configuration file (YAML or JSON; docs/revocation.md). Every action is a switch, so a site can run
 * ban-only, fence-only or audit-only (dry_run).
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { InvalidConfig } from '../errors.js';
import { describeIssues, duration, z } from '../plugin/config-schema.js';

export const DEFAULT_TAINT_KEY = 'attestation.spiffe.io/untrusted';
/** Node label carrying the EK hash; label values are at most 63 characters, so it holds the first 63 hex digits. */
export const EK_HASH_LABEL = 'attestation.spiffe.io/ek-hash';
export const EK_HASH_LABEL_CHARS = 63;
export const DEFAULT_IGNORE_CODES = ['ERR_ENROLMENT_PENDING', 'ERR_ENROLMENT_STORE', 'ERR_ENROLMENT_LOCKED', 'ERR_NONCE_EXPIRED', 'ERR_NONCE_UNKNOWN', 'ERR_INTERNAL'];

export const revokerConfigSchema = z.strictObject({
  /** The JSONL file tpm-server writes (decision_events.file.path). */
  events_file: z.string().min(1),
  /** Offset, audit log and fence state live here (created, mode 0700). */
  state_dir: z.string().min(1),
  /** Log and audit what would be done, change nothing. */
  dry_run: z.boolean().default(false),
  /**
   * Refusal codes that are not evidence against the node, never acted on: a new node awaiting approval, a slow or
   * retried response, and failures on the server's side (enrolment store unreadable, internal errors).
   */
  ignore_codes: z.array(z.string().regex(/^ERR_[A-Z0-9_]+$/)).default(DEFAULT_IGNORE_CODES),
  spire: z
    .strictObject({
      /** spire-server's admin socket (server.socket_path). */
      admin_socket: z.string().min(1),
      ban: z.boolean().default(true),
      timeout: duration().default(10_000),
    })
    .optional(),
  kubernetes: z
    .strictObject({
      /** Path of a kubeconfig; omitted: in-cluster (service account), else $KUBECONFIG / ~/.kube/config. */
      kubeconfig: z.string().min(1).optional(),
      in_cluster: z.boolean().default(false),
      taint: z.boolean().default(true),
      taint_key: z.string().min(1).default(DEFAULT_TAINT_KEY),
      evict: z.boolean().default(true),
      /** Pods of DaemonSets come straight back on a NoExecute-tolerating node; they are not evicted by default. */
      evict_daemonsets: z.boolean().default(false),
      /** Delete the pod a workload refusal names (edge-workload IMA violations); its controller replaces it. */
      delete_pods: z.boolean().default(true),
    })
    .optional(),
  /** How an agent maps to a Node; the first that answers wins: static, then selector, then label. */
  node_mapping: z
    .strictObject({
      /** agent ID or EK hash → Node name (a registration kept by the operator). */
      static: z.record(z.string(), z.string().min(1)).default({}),
      /** A verified selector type:prefix whose rest is the node name, e.g. "k8s_psat:agent_node_name:". */
      selector: z.string().min(1).optional(),
      /** Look the Node up by the label attestation.spiffe.io/ek-hash=<first 63 hex digits of the EK hash>. */
      label: z.boolean().default(true),
    })
    .default({ static: {}, label: true }),
  retry: z
    .strictObject({
      initial: duration().default(500),
      max: duration().default(30_000),
    })
    .default({ initial: 500, max: 30_000 }),
  /** Receive tpm-server's webhook (mTLS) and append each event to events_file. */
  webhook_listen: z
    .strictObject({
      /** host:port; port 0 picks a free one (logged). */
      address: z.string().regex(/^.+:\d{1,5}$/, 'expected host:port'),
      cert_path: z.string().min(1),
      key_path: z.string().min(1),
      /** Roots a sender's client certificate must chain to (for example the SPIRE trust bundle). */
      client_ca_path: z.string().min(1),
      /** If set, the sender's certificate must carry one of these URI SANs (SPIFFE IDs). */
      allowed_client_ids: z.array(z.string().startsWith('spiffe://')).default([]),
    })
    .optional(),
  /** How often to look for new lines when the file has none. */
  poll_interval: duration().default(250),
});
export type RevokerConfig = z.output<typeof revokerConfigSchema>;

export async function loadRevokerConfig(path: string): Promise<RevokerConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', `revoker: cannot read config ${path}: ${(err as Error).message}`);
  }
  return parseRevokerConfig(text, path);
}

/** The revoker's YAML (or JSON) configuration text, read from `path`. */
export function parseRevokerConfig(text: string, path: string): RevokerConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text, { logLevel: 'error' });
  } catch (err) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', `revoker: config ${path} is not YAML or JSON: ${(err as Error).message}`);
  }
  const parsed = revokerConfigSchema.safeParse(raw);
  if (!parsed.success) throw new InvalidConfig('ERR_CONFIG_INVALID', `revoker: config ${path}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}
