/**
 * The one source of truth for the SPIRE configurations of the edge topologies (issue 10): which plugins each role
 * runs and with which plugin_data, and the server/agent settings that matter for the topology. Both consumers call
 * these functions:
 *  - the e2e tests (test/e2e/nested.test.ts, test/e2e/ha.test.ts) with temp paths, loopback ports and short TTLs;
 *  - scripts/gen-topology.ts, which writes the .conf files the kustomize bases and overlays embed, with the
 *    in-cluster paths and addresses in DEPLOYMENT.
 * The functions take only paths, addresses, ports and TTLs, so "the manifests are the tested configs" holds by
 * construction. What only a deployment has (k8sbundle notifier, health listener, disk key manager on agents, real
 * plugin checksums) is added by the generator and listed in DEPLOYMENT_ONLY.
 */

export type Hcl = string | number | boolean | readonly Hcl[] | { readonly [k: string]: Hcl | undefined };
export type HclObject = { readonly [k: string]: Hcl | undefined };

/** Our plugin binaries: plugin_cmd is where the runner keeps them, plugin_checksum the runner's business. */
export type OurBinary = 'tpm-server' | 'tpm-agent' | 'edge-workload';

export interface PluginDecl {
  readonly type: string;
  readonly name: string;
  /** Set for our external plugins; built-in SPIRE plugins have none. */
  readonly binary?: OurBinary;
  readonly data: HclObject;
  /** Why it is configured this way: rendered as a comment above the block. */
  readonly why?: string;
}

export interface ServerRole {
  readonly trustDomain: string;
  /** `server { }` settings beyond the listen address, sockets, data dir and logging, which each runner sets. */
  readonly settings: HclObject;
  readonly keyManager: 'disk';
  readonly dataStore: { readonly database_type: string; readonly connection_string: string };
  readonly plugins: readonly PluginDecl[];
}

export interface AgentRole {
  readonly trustDomain: string;
  /** `agent { }` settings beyond data dir, logging, server address/port, socket and bundle path. */
  readonly settings: HclObject;
  readonly plugins: readonly PluginDecl[];
}

export const TRUST_DOMAIN = 'edge.example';

/**
 * The edge server as a workload of the gateway agent: the downstream entry on the cloud server selects it by these,
 * and the nested-edge overlay runs it in this namespace under this service account.
 */
export const EDGE_SERVER_WORKLOAD = { namespace: 'spire-edge', serviceAccount: 'spire-server', spiffeIdPath: '/edge/spire-server' } as const;

export interface Ttls {
  /** The server's CA lifetime; on the edge server, the longest the edge runs without the cloud. */
  readonly ca: string;
  /** Agent SVID lifetime: with can_reattest, every rotation (at about half of it) re-runs the TPM attestation. */
  readonly agent: string;
  readonly svid: string;
}

export interface ServerParams {
  /** The server's data_dir: the sqlite3 datastore and the disk key manager's keys live here. */
  readonly dataDir: string;
  readonly ekCaPaths: readonly string[];
  readonly policyPath: string;
  readonly ttl: Ttls;
}

function tpmServer(p: ServerParams): PluginDecl {
  return {
    type: 'NodeAttestor',
    name: 'tpm',
    binary: 'tpm-server',
    why: 'can_reattest: every agent SVID rotation re-runs the whole attestation (EK, fresh-nonce quote, event-log replay, boot policy).',
    data: {
      ek_ca_path: [...p.ekCaPaths],
      pcr_selection: 'sha256:0,1,2,3,4,5,6,7,8,9',
      selector_pcrs: [7],
      policy_path: p.policyPath,
      policy_match: 'any',
      require_event_log: true,
      nonce_ttl: '60s',
    },
  };
}

function serverSettings(ttl: Ttls): HclObject {
  return {
    ca_key_type: 'ec-p256',
    ca_ttl: ttl.ca,
    agent_ttl: ttl.agent,
    default_x509_svid_ttl: ttl.svid,
    ca_subject: { country: ['US'], organization: ['KubeEdge SPIFFE demo'] },
  };
}

const sqlite = (dataDir: string) => ({ database_type: 'sqlite3', connection_string: `${dataDir}/datastore.sqlite3` });

/** The cloud root: its own CA, TPM node attestation, sqlite3 in its data dir. */
export function cloudServer(p: ServerParams): ServerRole {
  return { trustDomain: TRUST_DOMAIN, settings: serverSettings(p.ttl), keyManager: 'disk', dataStore: sqlite(p.dataDir), plugins: [tpmServer(p)] };
}

export interface EdgeServerParams extends ServerParams {
  /** The cloud server as the edge gateway node reaches it. */
  readonly upstream: { readonly address: string; readonly port: number };
  /** The gateway agent's Workload API socket, through which the edge server gets its intermediate CA. */
  readonly gatewayAgentSocket: string;
}

/** The downstream edge server: intermediate CA from the cloud through the gateway agent, TPM node attestation. */
export function edgeServer(p: EdgeServerParams): ServerRole {
  return {
    trustDomain: TRUST_DOMAIN,
    settings: serverSettings(p.ttl),
    keyManager: 'disk',
    dataStore: sqlite(p.dataDir),
    plugins: [
      tpmServer(p),
      {
        type: 'UpstreamAuthority',
        name: 'spire',
        why: 'ca_ttl bounds how long the edge keeps issuing without the cloud: the intermediate cannot be renewed offline.',
        data: { server_address: p.upstream.address, server_port: String(p.upstream.port), workload_api_socket: p.gatewayAgentSocket },
      },
    ],
  };
}

export interface HaServerParams extends ServerParams {
  /** PostgreSQL connection string shared by every replica (in the manifests, expanded from a Secret). */
  readonly postgres: string;
}

/** One of several cloud servers on one PostgreSQL datastore; each keeps its own CA key in its data dir. */
export function haServer(p: HaServerParams): ServerRole {
  return { ...cloudServer(p), dataStore: { database_type: 'postgres', connection_string: p.postgres } };
}

/** Where edge-workload reads the node's pods: edged (KubeEdge) or a kubelet's secure port (the tests' fake kubelet). */
export type PodSource =
  | { readonly kind: 'edged'; readonly host: string; readonly port: number }
  | { readonly kind: 'kubelet'; readonly host: string; readonly securePort: number; readonly caPath: string; readonly tokenPath: string };

export interface AgentParams {
  readonly tpmTcti: string;
  readonly eventLogPath: string;
  readonly tpmWorkDir: string;
  readonly podSource: PodSource;
  /** The node's name, or the env variable that holds it. */
  readonly nodeName: { readonly env: string } | { readonly name: string };
  /** How long edge-workload keeps answering from its snapshot after the pod source stopped answering. */
  readonly maxStaleness: string;
}

function podSourceData(s: PodSource): HclObject {
  return s.kind === 'edged'
    ? { pod_source: 'edged', edged: { host: s.host, port: s.port } }
    : { pod_source: 'kubelet', kubelet_host: s.host, kubelet_secure_port: s.securePort, kubelet_ca_path: s.caPath, kubelet_token_path: s.tokenPath };
}

/** An edge agent: TPM node attestation, KubeEdge-aware workload attestation under the name "k8s". */
export function edgeAgent(p: AgentParams): AgentRole {
  return {
    trustDomain: TRUST_DOMAIN,
    settings: {},
    plugins: [
      {
        type: 'NodeAttestor',
        name: 'tpm',
        binary: 'tpm-agent',
        data: { tpm_tcti: p.tpmTcti, ek_kind: 'auto', ak_alg: 'ecc', event_log_path: p.eventLogPath, tpm: { work_dir: p.tpmWorkDir } },
      },
      {
        type: 'WorkloadAttestor',
        name: 'k8s',
        binary: 'edge-workload',
        why: "Replaces SPIRE's built-in k8s attestor under the same name, so k8s:ns / k8s:sa entries work unchanged. max_staleness bounds how long a dead pod source is trusted.",
        data: {
          ...podSourceData(p.podSource),
          ...('env' in p.nodeName ? { node_name_env: p.nodeName.env } : { node_name: p.nodeName.name }),
          proc_path: '/proc',
          poll_interval: '5s',
          max_staleness: p.maxStaleness,
        },
      },
    ],
  };
}

/** The agent on the edge gateway node, attested to the cloud; the edge server is one of its workloads. */
export const gatewayAgent = edgeAgent;

// ---------------------------------------------------------------------------------------------------------------
// The deployment's parameters (kubeedge-demo/base and overlays)

export const DEPLOYMENT = {
  pluginDir: '/opt/spire/plugins',
  /**
   * Set each to the sha256 of dist/bin/<plugin> that `npm run build` prints, then `npm run topology`. SPIRE refuses a
   * plugin whose checksum does not match, so these all-zero placeholders fail loudly instead of running unchecked code.
   */
  pluginChecksums: { 'tpm-server': '0'.repeat(64), 'tpm-agent': '0'.repeat(64), 'edge-workload': '0'.repeat(64) } satisfies Record<OurBinary, string>,
  server: {
    port: 8081,
    healthPort: 8080,
    socket: '/tmp/spire-server/private/api.sock',
    dataDir: '/run/spire/data',
    ekCaDir: '/run/spire/tpm-ca',
    policyPath: '/run/spire/boot-policy/boot-policy.yaml',
  },
  /** The cloud server as edge nodes reach it: a public name of its node port (see the spire-server Service). */
  cloud: { address: 'spire.cloud.example.com', nodePort: 31081 },
  /** The edge server on the gateway node's host network, as the edge nodes reach it. */
  edge: { address: 'spire-gateway.edge.example.com', port: 8081 },
  agent: {
    dataDir: '/var/lib/spire/agent',
    socket: '/run/spire/sockets/agent.sock',
    bundlePath: '/run/spire/bundle/bundle.crt',
    tpmTcti: 'device:/dev/tpmrm0',
    eventLogPath: '/sys/kernel/security/tpm0/binary_bios_measurements',
    tpmWorkDir: '/run/spire/tpm',
    edged: { host: '127.0.0.1', port: 10350 },
    nodeNameEnv: 'NODE_NAME',
  },
  cloudTtl: { ca: '168h', agent: '1h', svid: '1h' },
  /** The edge intermediate's lifetime is the offline window (see README "Sizing the offline window"). */
  edgeTtl: { ca: '72h', agent: '1h', svid: '1h' },
  /** Edge nodes can be cut off from the cloud for long; edged keeps answering, this bounds a dead edged. */
  maxStaleness: '24h',
  /** Expanded by `spire-server run -expandEnv` from the spire-datastore Secret. */
  postgresEnv: 'SPIRE_DATASTORE_CONNECTION',
  bundle: { namespace: 'spire', configMap: 'spire-bundle' },
} as const;

/** What the manifests have and the e2e tests cannot run (no Kubernetes API, no kubelet probes). */
export const DEPLOYMENT_ONLY = [
  'plugin_checksum: DEPLOYMENT.pluginChecksums, all-zero placeholders until set (the tests use the real sha256 of the built plugin)',
  'Notifier "k8sbundle" on cloud servers: writes the bundle into the spire-bundle ConfigMap (needs the Kubernetes API)',
  'health_checks: the listener the probes use',
  'KeyManager "disk" on agents, so a restart while offline keeps the agent SVID (the test helper\'s agents use "memory")',
  'log_level INFO (the tests run DEBUG)',
] as const;

const serverParams = (ttl: Ttls): ServerParams => ({
  dataDir: DEPLOYMENT.server.dataDir,
  ekCaPaths: [DEPLOYMENT.server.ekCaDir],
  policyPath: DEPLOYMENT.server.policyPath,
  ttl,
});

const agentParams: AgentParams = {
  tpmTcti: DEPLOYMENT.agent.tpmTcti,
  eventLogPath: DEPLOYMENT.agent.eventLogPath,
  tpmWorkDir: DEPLOYMENT.agent.tpmWorkDir,
  podSource: { kind: 'edged', ...DEPLOYMENT.agent.edged },
  nodeName: { env: DEPLOYMENT.agent.nodeNameEnv },
  maxStaleness: DEPLOYMENT.maxStaleness,
};

// ---------------------------------------------------------------------------------------------------------------
// Rendering to SPIRE's HCL

function value(v: Hcl): string {
  return Array.isArray(v) ? `[${v.map((x) => value(x as Hcl)).join(', ')}]` : JSON.stringify(v);
}

function body(obj: HclObject, indent: string): string[] {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    if (typeof v === 'object' && !Array.isArray(v)) lines.push(`${indent}${k} {`, ...body(v as HclObject, `${indent}  `), `${indent}}`);
    else lines.push(`${indent}${k} = ${value(v as Hcl)}`);
  }
  return lines;
}

function pluginBlock(p: PluginDecl, pluginDir: string): string[] {
  const lines = p.why ? [`  # ${p.why}`] : [];
  lines.push(`  ${p.type} "${p.name}" {`);
  if (p.binary) {
    lines.push(`    plugin_cmd = ${value(`${pluginDir}/${p.binary}`)}`);
    lines.push(`    # The sha256 of dist/bin/${p.binary}: DEPLOYMENT.pluginChecksums in kubeedge-demo/topology.ts.`);
    lines.push(`    plugin_checksum = ${value(DEPLOYMENT.pluginChecksums[p.binary])}`);
  }
  lines.push('    plugin_data {', ...body(p.data, '      '), '    }', '  }');
  return lines;
}

const HEADER = (what: string) => [
  `# ${what}`,
  '# GENERATED by `npm run topology` from kubeedge-demo/topology.ts, the functions the e2e tests run: do not edit.',
  '',
];

function serverConf(what: string, role: ServerRole, extraPlugins: readonly PluginDecl[]): string {
  const s = DEPLOYMENT.server;
  return [
    ...HEADER(what),
    ...body(
      {
        server: {
          bind_address: '0.0.0.0',
          bind_port: String(s.port),
          socket_path: s.socket,
          trust_domain: role.trustDomain,
          data_dir: s.dataDir,
          log_level: 'INFO',
          log_format: 'json',
          ...role.settings,
        },
      },
      '',
    ),
    '',
    'plugins {',
    ...pluginBlock({ type: 'DataStore', name: 'sql', data: role.dataStore }, DEPLOYMENT.pluginDir),
    ...pluginBlock({ type: 'KeyManager', name: role.keyManager, data: { keys_path: `${s.dataDir}/keys.json` } }, DEPLOYMENT.pluginDir),
    ...[...role.plugins, ...extraPlugins].flatMap((p) => pluginBlock(p, DEPLOYMENT.pluginDir)),
    '}',
    '',
    ...body({ health_checks: { listener_enabled: true, bind_address: '0.0.0.0', bind_port: String(s.healthPort), live_path: '/live', ready_path: '/ready' } }, ''),
    '',
  ].join('\n');
}

function agentConf(what: string, role: AgentRole, server: { address: string; port: number }): string {
  const a = DEPLOYMENT.agent;
  return [
    ...HEADER(what),
    ...body(
      {
        agent: {
          data_dir: a.dataDir,
          log_level: 'INFO',
          log_format: 'json',
          server_address: server.address,
          server_port: String(server.port),
          socket_path: a.socket,
          trust_domain: role.trustDomain,
          trust_bundle_path: a.bundlePath,
          ...role.settings,
        },
      },
      '',
    ),
    '',
    'plugins {',
    '  # On disk (a hostPath), so an agent restart while the edge is offline keeps its SVID and cache.',
    ...pluginBlock({ type: 'KeyManager', name: 'disk', data: { directory: a.dataDir } }, DEPLOYMENT.pluginDir),
    ...role.plugins.flatMap((p) => pluginBlock(p, DEPLOYMENT.pluginDir)),
    '}',
    '',
  ].join('\n');
}

export const K8S_BUNDLE_NOTIFIER: PluginDecl = {
  type: 'Notifier',
  name: 'k8sbundle',
  why: 'Keeps the trust bundle in the spire-bundle ConfigMap; KubeEdge syncs it to the edge nodes whose agents mount it.',
  data: { namespace: DEPLOYMENT.bundle.namespace, config_map: DEPLOYMENT.bundle.configMap },
};

/** The roles as the manifests deploy them, with DEPLOYMENT's parameters. */
export const DEPLOYED = {
  cloudServer: () => cloudServer(serverParams(DEPLOYMENT.cloudTtl)),
  edgeServer: () =>
    edgeServer({
      ...serverParams(DEPLOYMENT.edgeTtl),
      upstream: { address: DEPLOYMENT.cloud.address, port: DEPLOYMENT.cloud.nodePort },
      gatewayAgentSocket: DEPLOYMENT.agent.socket,
    }),
  haServer: () => haServer({ ...serverParams(DEPLOYMENT.cloudTtl), postgres: `\${${DEPLOYMENT.postgresEnv}}` }),
  gatewayAgent: () => gatewayAgent(agentParams),
  edgeAgent: () => edgeAgent(agentParams),
};

/** Every generated file, by path from the repository root, and its content. */
export function generatedConfigs(): Record<string, string> {
  return {
    'kubeedge-demo/base/config/server.conf': serverConf('Cloud SPIRE server: the root CA, TPM node attestation.', DEPLOYED.cloudServer(), [K8S_BUNDLE_NOTIFIER]),
    'kubeedge-demo/base/config/agent.conf': agentConf(
      'SPIRE agent on edge nodes, attested to the cloud server (in nested-edge: the gateway agent).',
      DEPLOYED.gatewayAgent(),
      { address: DEPLOYMENT.cloud.address, port: DEPLOYMENT.cloud.nodePort },
    ),
    'kubeedge-demo/overlays/nested-edge/edge-server/config/edge-server.conf': serverConf(
      'Edge SPIRE server on the gateway node: intermediate CA from the cloud through the gateway agent.',
      DEPLOYED.edgeServer(),
      [],
    ),
    'kubeedge-demo/overlays/nested-edge/config/edge-agent.conf': agentConf('SPIRE agent on edge nodes behind the gateway, attested to the edge server.', DEPLOYED.edgeAgent(), {
      address: DEPLOYMENT.edge.address,
      port: DEPLOYMENT.edge.port,
    }),
    'kubeedge-demo/overlays/ha-postgres/config/server.conf': serverConf(
      'Cloud SPIRE server, one of several replicas on one PostgreSQL datastore.',
      DEPLOYED.haServer(),
      [K8S_BUNDLE_NOTIFIER],
    ),
  };
}
