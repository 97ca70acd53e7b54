/**
 * Keeps kubeedge-demo honest. Each kustomization (base, overlays/nested-edge, overlays/ha-postgres) is rendered with
 * the real kustomize (`.cache/tools/kustomize build`, pinned in tools/kustomize), and then:
 *  - its references resolve: ServiceAccounts, ConfigMaps, Secrets (and their keys), Services, RBAC;
 *  - every embedded server.conf / agent.conf is byte for byte what `npm run topology` generates from
 *    kubeedge-demo/topology.ts, and decodes to exactly the plugins and settings of that role: the functions that
 *    test/e2e/nested.test.ts and ha.test.ts run on real SPIRE, with the parameters in DEPLOYMENT;
 *  - our plugins' plugin_data validates against their schemas;
 *  - the pods mount what the confs name (EK CAs, boot policy, data dir, TPM, event log, sockets, bundle), agents use
 *    dnsPolicy Default, and every SPIRE container has resource requests and limits;
 *  - real SPIRE accepts each embedded conf (`spire-server validate` / `spire-agent validate`), with the pod's
 *    ConfigMap volumes laid out under a temp root at their mount paths, so our tpm-server validates its
 *    plugin_data against the files the pod would see.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  cloudServer,
  DEPLOYED,
  DEPLOYMENT,
  EDGE_SERVER_WORKLOAD,
  edgeAgent,
  edgeServer,
  generatedConfigs,
  haServer,
  K8S_BUNDLE_NOTIFIER,
  type AgentRole,
  type PluginDecl,
  type ServerRole,
} from '../../kubeedge-demo/topology.js';
import { builtPlugin } from '../helpers/binaries.js';
import { NO_SPIRE_NOTE, sha256File, spireUnderTest } from '../helpers/spire.js';
import { agentConfigSchema } from '../../src/nodeattestor/agent.js';
import { serverConfigSchema } from '../../src/nodeattestor/server.js';
import { parseConfig } from '../../src/plugin/config-schema.js';
import { decodePluginData, isPlainObject } from '../../src/plugin/hcl.js';
import { parsePolicyFile } from '../../src/policy/policy.js';
import { parseConfig as parseWorkloadConfig } from '../../src/workload/config.js';

const DEMO = fileURLToPath(new URL('../../kubeedge-demo/', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const KUSTOMIZE = join(ROOT, '.cache/tools/kustomize');
const NO_KUSTOMIZE = 'not run: no .cache/tools/kustomize (npm run spire:install builds it from tools/kustomize)';
/** Stands in for the deliberately empty trust/ek-ca placeholder, which tpm-server refuses (no certificate). */
const FIXTURE_EK_CA = join(ROOT, 'test/fixtures/ekcerts/ca/tpm-ca-certificates/MIRROR.tpm-ca-certificates.pem');
const spire = spireUnderTest()[0];

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [key: string]: unknown;
}
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  configMap?: { name: string };
  secret?: { secretName: string };
  /** Not Kubernetes: set for a StatefulSet's volumeClaimTemplates, which podSpec() lists with the volumes. */
  claimTemplate?: true;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: Mount[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}
interface PodSpec {
  serviceAccountName?: string;
  hostPID?: boolean;
  hostNetwork?: boolean;
  dnsPolicy?: string;
  nodeSelector?: Record<string, string>;
  containers: Container[];
  volumes?: Volume[];
}

/** What each kustomization must embed: ConfigMap (namespace/name/key) → the generated file. */
interface Expected {
  readonly dir: string;
  readonly servers: ReadonlyArray<{ ns: string; configMap: string; file: string; role: () => ServerRole; extra: readonly PluginDecl[]; workload: string }>;
  readonly agents: ReadonlyArray<{ ns: string; configMap: string; file: string; role: () => AgentRole; daemonSet: string }>;
}
const BASE_AGENT = { ns: 'spire', configMap: 'spire-agent-config', file: 'kubeedge-demo/base/config/agent.conf', role: DEPLOYED.gatewayAgent, daemonSet: 'spire-agent' };
const CLOUD = { ns: 'spire', configMap: 'spire-server-config', file: 'kubeedge-demo/base/config/server.conf', role: DEPLOYED.cloudServer, extra: [K8S_BUNDLE_NOTIFIER], workload: 'spire-server' };
const KUSTOMIZATIONS: readonly Expected[] = [
  { dir: 'base', servers: [CLOUD], agents: [BASE_AGENT] },
  {
    dir: 'overlays/nested-edge',
    servers: [
      CLOUD,
      { ns: EDGE_SERVER_WORKLOAD.namespace, configMap: 'spire-server-config', file: 'kubeedge-demo/overlays/nested-edge/edge-server/config/edge-server.conf', role: DEPLOYED.edgeServer, extra: [], workload: 'spire-server' },
    ],
    agents: [
      BASE_AGENT,
      { ns: 'spire', configMap: 'spire-edge-agent-config', file: 'kubeedge-demo/overlays/nested-edge/config/edge-agent.conf', role: DEPLOYED.edgeAgent, daemonSet: 'spire-edge-agent' },
    ],
  },
  {
    dir: 'overlays/ha-postgres',
    servers: [{ ...CLOUD, file: 'kubeedge-demo/overlays/ha-postgres/config/server.conf', role: DEPLOYED.haServer }],
    agents: [BASE_AGENT],
  },
];

function render(dir: string): K8sObject[] | undefined {
  if (!existsSync(KUSTOMIZE)) {
    if (process.env['CI'] === 'true') throw new Error(`${KUSTOMIZE} is missing (CI=true): run npm run spire:install`);
    return undefined;
  }
  const r = spawnSync(KUSTOMIZE, ['build', join(DEMO, dir)], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`kustomize build kubeedge-demo/${dir} failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`kubeedge-demo/${dir}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return doc.toJS() as K8sObject;
  });
}

/** HCL1 blocks decode to one-element lists; the single element, or an error. */
function only(value: unknown, what: string): Record<string, unknown> {
  const list = Array.isArray(value) ? value : [value];
  if (list.length !== 1 || !isPlainObject(list[0])) throw new Error(`${what}: expected exactly one block`);
  return list[0];
}

/** A decoded HCL value with blocks (one-element lists of objects) turned back into objects, to compare with the topology. */
function unblock(value: unknown): unknown {
  if (Array.isArray(value) && value.length === 1 && isPlainObject(value[0])) return unblock(value[0]);
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, unblock(v)]));
  return value;
}

interface Decl {
  type: string;
  name: string;
  body: Record<string, unknown>;
}
function plugins(conf: Record<string, unknown>): Decl[] {
  const out: Decl[] = [];
  for (const [type, list] of Object.entries(only(conf['plugins'], 'plugins'))) {
    for (const named of list as Array<Record<string, unknown>>) {
      for (const [name, body] of Object.entries(named)) out.push({ type, name, body: only(body, `${type} "${name}"`) });
    }
  }
  return out;
}
function plugin(conf: Record<string, unknown>, type: string, name: string): Decl {
  const found = plugins(conf).find((p) => p.type === type && p.name === name);
  if (!found) throw new Error(`no ${type} "${name}" plugin`);
  return found;
}
/** plugin_data as our plugin receives it: SPIRE re-prints the block, the runtime takes log_level off. */
function pluginData(decl: Decl): Record<string, unknown> {
  const { log_level: _logLevel, ...raw } = only(decl.body['plugin_data'], `${decl.type} "${decl.name}" plugin_data`);
  return raw;
}

function mountFor(container: Container, path: string): Mount {
  const mounts = (container.volumeMounts ?? []).filter((m) => path === m.mountPath || path.startsWith(m.mountPath + '/'));
  mounts.sort((a, b) => b.mountPath.length - a.mountPath.length);
  if (!mounts[0]) throw new Error(`nothing is mounted at ${path}`);
  return mounts[0];
}
function volumeFor(spec: PodSpec, path: string): { mount: Mount; volume: Volume } {
  const mount = mountFor(spec.containers[0]!, path);
  const volume = spec.volumes?.find((v) => v.name === mount.name);
  if (!volume) throw new Error(`mount ${mount.name} has no volume`);
  return { mount, volume };
}
const hostFile = (spec: PodSpec, path: string): string => {
  const { mount, volume } = volumeFor(spec, path);
  expect(volume.hostPath, `${path} is on a hostPath`).toBeDefined();
  return join(volume.hostPath!.path, path.slice(mount.mountPath.length));
};
const WORKLOADS = ['Deployment', 'StatefulSet', 'DaemonSet'];
/** The pod template's spec, with a StatefulSet's claim templates among its volumes (they are mounted by name too). */
function podSpec(o: K8sObject): PodSpec {
  const spec = o['spec'] as { template: { spec: PodSpec }; volumeClaimTemplates?: Array<{ metadata: { name: string } }> };
  const claims = (spec.volumeClaimTemplates ?? []).map((t): Volume => ({ name: t.metadata.name, claimTemplate: true }));
  return { ...spec.template.spec, volumes: [...(spec.template.spec.volumes ?? []), ...claims] };
}

for (const k of KUSTOMIZATIONS) {
  const objects = render(k.dir);
  describe(`kubeedge-demo/${k.dir} rendered by kustomize`, () => {
    if (!objects) {
      it('renders', ({ skip }) => skip(NO_KUSTOMIZE));
      return;
    }
    const find = (kind: string, ns: string | undefined, name: string): K8sObject => {
      const found = objects.find((o) => o.kind === kind && o.metadata.name === name && (o.kind === 'Namespace' || o.metadata.namespace === ns));
      if (!found) throw new Error(`kubeedge-demo/${k.dir} has no ${kind} ${ns ?? ''}/${name}`);
      return found;
    };
    const data = (kind: 'ConfigMap' | 'Secret', ns: string, name: string) => (find(kind, ns, name)['data'] ?? {}) as Record<string, string>;
    const confText = (ns: string, name: string, key: string) => data('ConfigMap', ns, name)[key]!;
    const confKey = (file: string) => (file.endsWith('agent.conf') ? 'agent.conf' : 'server.conf');
    /** The pod spec whose container runs `-config` from this ConfigMap. */
    const runnerOf = (ns: string, configMap: string): { object: K8sObject; spec: PodSpec } => {
      const runners = objects.filter((o) => WORKLOADS.includes(o.kind) && o.metadata.namespace === ns && podSpec(o).volumes?.some((v) => v.configMap?.name === configMap));
      expect(runners.map((r) => r.metadata.name), `who mounts ${ns}/${configMap}`).toHaveLength(1);
      return { object: runners[0]!, spec: podSpec(runners[0]!) };
    };

    it('every object has apiVersion, kind, a name and one of the demo namespaces', () => {
      expect(objects.length).toBeGreaterThan(15);
      const namespaces = objects.filter((o) => o.kind === 'Namespace').map((o) => o.metadata.name);
      for (const o of objects) {
        expect(o, `${o.kind}/${o.metadata.name}`).toMatchObject({ apiVersion: expect.any(String), kind: expect.any(String), metadata: { name: expect.any(String) } });
        if (o.kind !== 'Namespace') expect(namespaces, `${o.kind}/${o.metadata.name}`).toContain(o.metadata.namespace);
      }
    });

    it('references resolve: service accounts, ConfigMaps, Secrets and their keys, Services, RBAC subjects and resources', () => {
      let checked = 0;
      for (const o of objects.filter((x) => WORKLOADS.includes(x.kind))) {
        const ns = o.metadata.namespace!;
        const spec = podSpec(o);
        find('ServiceAccount', ns, spec.serviceAccountName!);
        for (const v of spec.volumes ?? []) {
          if (v.configMap) find('ConfigMap', ns, v.configMap.name);
          if (v.secret) find('Secret', ns, v.secret.secretName);
          checked++;
        }
        for (const c of spec.containers) {
          for (const m of c.volumeMounts ?? []) expect(spec.volumes?.map((v) => v.name), `${o.metadata.name} mount ${m.name}`).toContain(m.name);
          for (const e of c.env ?? []) {
            const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
            if (!ref) continue;
            expect(data(e.valueFrom?.secretKeyRef ? 'Secret' : 'ConfigMap', ns, ref.name), `${o.metadata.name} env ${e.name}`).toHaveProperty(ref.key);
            checked++;
          }
        }
        if (o.kind === 'StatefulSet') find('Service', ns, (o['spec'] as { serviceName: string }).serviceName);
      }
      for (const svc of objects.filter((o) => o.kind === 'Service')) {
        const selector = (svc['spec'] as { selector: Record<string, string> }).selector;
        const targets = objects.filter((o) => WORKLOADS.includes(o.kind) && o.metadata.namespace === svc.metadata.namespace).filter((o) => {
          const labels = (o['spec'] as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
          return Object.entries(selector).every(([key, val]) => labels[key] === val);
        });
        expect(targets.length, `Service ${svc.metadata.namespace}/${svc.metadata.name} selects a workload`).toBeGreaterThan(0);
      }
      for (const rb of objects.filter((o) => o.kind === 'RoleBinding')) {
        const ns = rb.metadata.namespace!;
        const role = find('Role', ns, (rb['roleRef'] as { name: string }).name);
        for (const s of rb['subjects'] as Array<{ kind: string; name: string; namespace: string }>) find(s.kind, s.namespace, s.name);
        for (const rule of role['rules'] as Array<{ resources: string[]; resourceNames?: string[] }>) {
          for (const name of rule.resourceNames ?? []) find('ConfigMap', ns, name);
        }
      }
      expect(checked).toBeGreaterThan(10);
    });

    it('every embedded .conf is what `npm run topology` generates from kubeedge-demo/topology.ts', () => {
      const generated = generatedConfigs();
      const expected = [...k.servers, ...k.agents].map((e) => ({ where: `${e.ns}/${e.configMap}`, key: confKey(e.file), file: e.file }));
      const embedded = objects
        .filter((o) => o.kind === 'ConfigMap')
        .flatMap((o) => Object.keys((o['data'] ?? {}) as object).filter((key) => key.endsWith('.conf')).map((key) => `${o.metadata.namespace}/${o.metadata.name}:${key}`));
      expect(embedded.sort()).toEqual(expected.map((e) => `${e.where}:${e.key}`).sort());
      for (const e of expected) {
        const [ns, name] = e.where.split('/') as [string, string];
        expect(confText(ns, name, e.key), `${e.where} ${e.key} = ${e.file}`).toBe(generated[e.file]);
      }
    });

    it.each(k.servers)('$ns/$configMap: the server role of topology.ts, plugin for plugin, and it validates', async (s) => {
      const conf = await decodePluginData(confText(s.ns, s.configMap, 'server.conf'));
      const role = s.role();
      const server = unblock(only(conf['server'], 'server')) as Record<string, unknown>;
      expect(server).toMatchObject({ ...role.settings, trust_domain: role.trustDomain, data_dir: DEPLOYMENT.server.dataDir, socket_path: DEPLOYMENT.server.socket });
      const want = [
        { type: 'DataStore', name: 'sql', data: role.dataStore },
        { type: 'KeyManager', name: role.keyManager, data: { keys_path: `${DEPLOYMENT.server.dataDir}/keys.json` } },
        ...role.plugins,
        ...s.extra,
      ];
      const got = plugins(conf);
      expect(got.map((p) => `${p.type} ${p.name}`).sort()).toEqual(want.map((p) => `${p.type} ${p.name}`).sort());
      for (const p of want) {
        const decl = plugin(conf, p.type, p.name);
        expect(unblock(pluginData(decl)), `${p.type} "${p.name}"`).toEqual(p.data);
        if ('binary' in p && p.binary) {
          expect(decl.body['plugin_cmd']).toBe(`${DEPLOYMENT.pluginDir}/${p.binary}`);
          expect(decl.body['plugin_checksum']).toMatch(/^[0-9a-f]{64}$/);
        } else expect(decl.body['plugin_cmd']).toBeUndefined();
      }
      const tpm = parseConfig(serverConfigSchema, pluginData(plugin(conf, 'NodeAttestor', 'tpm')), 'tpm server');
      expect(tpm.policy_path).toBeDefined();
      expect(tpm.ek_ca_path).toBeDefined();
    });

    it.each(k.agents)('$ns/$configMap: the agent role of topology.ts, plugin for plugin, and it validates', async (a) => {
      const conf = await decodePluginData(confText(a.ns, a.configMap, 'agent.conf'));
      const role = a.role();
      const agent = unblock(only(conf['agent'], 'agent')) as Record<string, unknown>;
      expect(agent).toMatchObject({ ...role.settings, trust_domain: role.trustDomain, socket_path: DEPLOYMENT.agent.socket, trust_bundle_path: DEPLOYMENT.agent.bundlePath });
      const want = [{ type: 'KeyManager', name: 'disk', data: { directory: DEPLOYMENT.agent.dataDir } }, ...role.plugins];
      expect(plugins(conf).map((p) => `${p.type} ${p.name}`).sort()).toEqual(want.map((p) => `${p.type} ${p.name}`).sort());
      for (const p of want) expect(unblock(pluginData(plugin(conf, p.type, p.name))), `${p.type} "${p.name}"`).toEqual(p.data);
      expect(parseConfig(agentConfigSchema, pluginData(plugin(conf, 'NodeAttestor', 'tpm')), 'tpm agent').tpm_tcti).toBe('device:/dev/tpmrm0');
      const workload = parseWorkloadConfig(pluginData(plugin(conf, 'WorkloadAttestor', 'k8s')), { NODE_NAME: 'edge-node-1' });
      expect(workload.podSource).toBe('edged');
      expect(workload.edged).toEqual(DEPLOYMENT.agent.edged);
    });

    it.each(k.servers)('$ns/$configMap: the server pod mounts its config, EK CAs, boot policy, persistent data dir and has resources', async (s) => {
      const conf = await decodePluginData(confText(s.ns, s.configMap, 'server.conf'));
      const { object, spec } = runnerOf(s.ns, s.configMap);
      const c = spec.containers[0]!;
      const configPath = c.args![c.args!.indexOf('-config') + 1]!;
      const configMount = volumeFor(spec, configPath);
      expect(configMount.volume.configMap?.name).toBe(s.configMap);
      expect(configPath.slice(configMount.mount.mountPath.length + 1)).toBe('server.conf');
      expect(spec.serviceAccountName).toBe(s.workload);
      expect(spec.dnsPolicy ?? 'ClusterFirst', 'hostNetwork pods that resolve names need a resolver').toBe(spec.hostNetwork ? 'Default' : 'ClusterFirst');

      const tpm = parseConfig(serverConfigSchema, pluginData(plugin(conf, 'NodeAttestor', 'tpm')), 'tpm server');
      for (const caPath of [tpm.ek_ca_path!].flat()) expect(volumeFor(spec, caPath).volume.configMap?.name).toBe('tpm-ek-ca');
      const policy = volumeFor(spec, tpm.policy_path!);
      expect(policy.mount.readOnly).toBe(true);
      const policyFile = data('ConfigMap', s.ns, policy.volume.configMap!.name)[tpm.policy_path!.slice(policy.mount.mountPath.length + 1)]!;
      expect(parsePolicyFile(policyFile).map((p) => p.name)).toContain('golden');

      // Keys and datastore persist: a claim template or a hostPath, never an emptyDir.
      const dataDir = only(conf['server'], 'server')['data_dir'] as string;
      const dataVolume = volumeFor(spec, dataDir).volume;
      expect(dataVolume.claimTemplate === true || dataVolume.hostPath !== undefined, `${dataDir} persists`).toBe(true);

      for (const decl of plugins(conf).filter((p) => p.type === 'Notifier' && p.name === 'k8sbundle')) {
        const n = pluginData(decl) as { namespace: string; config_map: string };
        find('ConfigMap', n.namespace, n.config_map);
        const rb = objects.find((o) => o.kind === 'RoleBinding' && o.metadata.namespace === n.namespace && (o['subjects'] as Array<{ name: string; namespace: string }>).some((x) => x.name === s.workload && x.namespace === s.ns));
        expect(rb, 'the notifier may patch its ConfigMap').toBeDefined();
      }
      const res = c.resources;
      expect(res?.requests?.['memory'], `${object.metadata.name} memory request`).toMatch(/^\d+Mi$/);
      expect(res?.requests?.['cpu']).toBeDefined();
      expect(parseInt(res!.limits!['memory']!, 10)).toBeGreaterThanOrEqual(parseInt(res!.requests!['memory']!, 10));
    });

    it.each(k.agents)('$daemonSet: on edge nodes with host PIDs and network, dnsPolicy Default, the TPM, the event log, resources', async (a) => {
      const conf = await decodePluginData(confText(a.ns, a.configMap, 'agent.conf'));
      const ds = find('DaemonSet', a.ns, a.daemonSet);
      const spec = podSpec(ds);
      expect(runnerOf(a.ns, a.configMap).object.metadata.name).toBe(a.daemonSet);
      expect(spec.nodeSelector?.['node-role.kubernetes.io/edge']).toBe('');
      expect(spec.hostPID).toBe(true);
      expect(spec.hostNetwork).toBe(true);
      expect(spec.dnsPolicy, 'agents must not depend on the edge cluster DNS').toBe('Default');
      const c = spec.containers[0]!;
      const configPath = c.args![c.args!.indexOf('-config') + 1]!;
      expect(volumeFor(spec, configPath).volume.configMap?.name).toBe(a.configMap);

      const tpm = parseConfig(agentConfigSchema, pluginData(plugin(conf, 'NodeAttestor', 'tpm')), 'tpm agent');
      expect(volumeFor(spec, tpm.tpm_tcti.replace(/^device:/, '')).volume.hostPath).toEqual({ path: '/dev/tpmrm0', type: 'CharDevice' });
      const eventLog = volumeFor(spec, tpm.event_log_path);
      expect(eventLog.volume.hostPath?.path).toBe('/sys/kernel/security');
      expect(eventLog.mount.readOnly).toBe(true);
      expect(volumeFor(spec, tpm.tpm!.work_dir!).mount.name).toBe('tpm-work');
      const agent = only(conf['agent'], 'agent');
      const bundle = volumeFor(spec, agent['trust_bundle_path'] as string);
      expect(data('ConfigMap', a.ns, bundle.volume.configMap!.name)).toHaveProperty(String(agent['trust_bundle_path']).split('/').pop()!);
      expect(bundle.volume.configMap?.name).toBe(DEPLOYMENT.bundle.configMap);
      expect(volumeFor(spec, agent['data_dir'] as string).volume.hostPath, 'the agent SVID survives restarts').toBeDefined();
      hostFile(spec, agent['socket_path'] as string);
      expect(c.env?.map((e) => e.name)).toContain(DEPLOYMENT.agent.nodeNameEnv);

      const res = c.resources;
      expect(res?.requests?.['memory'], 'memory request').toMatch(/^\d+Mi$/);
      expect(res?.requests?.['cpu']).toBeDefined();
      // spire-agent (≤ 71 MiB) + two plugin processes (≤ 103 MiB each) under load must fit under the limit.
      expect(parseInt(res!.limits!['memory']!, 10)).toBeGreaterThanOrEqual(71 + 2 * 103);
    });

    it('the demo services reach an agent socket through the same host file, and run on edge nodes', () => {
      const agentSpec = podSpec(find('DaemonSet', 'spire', 'spire-agent'));
      const agentSocket = hostFile(agentSpec, DEPLOYMENT.agent.socket);
      for (const name of ['greeter-server', 'greeter-client']) {
        const spec = podSpec(find('Deployment', 'demo', name));
        expect(spec.nodeSelector?.['node-role.kubernetes.io/edge']).toBe('');
        expect(spec.serviceAccountName).toBe(name);
        const endpoint = spec.containers[0]!.env?.find((e) => e.name === 'SPIFFE_ENDPOINT_SOCKET')?.value ?? '';
        expect(endpoint).toMatch(/^unix:\/\//);
        const inPod = endpoint.slice('unix://'.length);
        expect(volumeFor(spec, inPod).mount.readOnly).toBe(true);
        expect(hostFile(spec, inPod)).toBe(agentSocket);
      }
      const env = (name: string, n: string) => podSpec(find('Deployment', 'demo', name)).containers[0]!.env!.find((e) => e.name === n)?.value;
      expect(env('greeter-server', 'ALLOWED_CLIENT_ID')).toBe('spiffe://edge.example/ns/demo/sa/greeter-client');
      expect(env('greeter-client', 'SERVER_ID')).toBe('spiffe://edge.example/ns/demo/sa/greeter-server');
    });

    it('every plugin_cmd is one of our binaries, copied into the image that runs it', async () => {
      const images = readdirSync(join(DEMO, 'images')).filter((f) => f.endsWith('.Dockerfile')).map((f) => readFileSync(join(DEMO, 'images', f), 'utf8'));
      for (const e of [...k.servers, ...k.agents]) {
        const conf = await decodePluginData(confText(e.ns, e.configMap, confKey(e.file)));
        for (const decl of plugins(conf).filter((p) => p.body['plugin_cmd'] !== undefined)) {
          const cmd = decl.body['plugin_cmd'] as string;
          expect(dirname(cmd)).toBe(DEPLOYMENT.pluginDir);
          const binary = cmd.slice(DEPLOYMENT.pluginDir.length + 1);
          expect(existsSync(join(ROOT, 'plugins', `${binary}.ts`)), `plugins/${binary}.ts builds the ${binary} binaries`).toBe(true);
          // The images copy the single executables from an unpacked release archive (bin/<name>).
          expect(images.some((text) => new RegExp(`^COPY .*\\bbin/${binary}\\b.* /opt/spire/plugins/`, 'm').test(text)), `an image copies ${binary}`).toBe(true);
        }
      }
      const used = objects.filter((o) => WORKLOADS.includes(o.kind)).map((o) => podSpec(o).containers[0]!.image);
      expect([...new Set(used)].sort()).toEqual(['greeter:demo', 'spire-edge-agent:demo', 'spire-edge-server:demo']);
    });

    /**
     * The conf as SPIRE would read it in the pod: every ConfigMap volume written under `root` at its mount path, the
     * conf's paths under those mounts (and its data dir) moved under `root`, our plugins at dist/bin with real checksums.
     */
    function asInPod(spec: PodSpec, text: string, ns: string, root: string): string {
      const mounts = spec.containers[0]!.volumeMounts ?? [];
      for (const m of mounts) {
        mkdirSync(join(root, m.mountPath), { recursive: true });
        const volume = spec.volumes?.find((v) => v.name === m.name);
        if (!volume?.configMap) continue;
        for (const [file, content] of Object.entries(data('ConfigMap', ns, volume.configMap.name))) {
          writeFileSync(join(root, m.mountPath, file), volume.configMap.name === 'tpm-ek-ca' ? readFileSync(FIXTURE_EK_CA) : content);
        }
      }
      let out = text;
      for (const m of [...mounts].sort((a, b) => b.mountPath.length - a.mountPath.length)) out = out.replaceAll(`"${m.mountPath}`, `"${root}${m.mountPath}`);
      return out.replace(/plugin_cmd = "\/opt\/spire\/plugins\/([\w-]+)"\n(\s*#[^\n]*\n)?(\s*)plugin_checksum = "0{64}"/g, (_all, binary: string, comment: string | undefined, indent: string) => {
        const cmd = builtPlugin(binary);
        return `plugin_cmd = ${JSON.stringify(cmd)}\n${comment ?? ''}${indent}plugin_checksum = "${sha256File(cmd)}"`;
      });
    }

    it.for([...k.servers.map((s) => ({ ...s, kind: 'server' as const })), ...k.agents.map((a) => ({ ...a, kind: 'agent' as const }))])(
      '$ns/$configMap: real SPIRE accepts it as the pod would read it (spire-$kind validate)',
      { timeout: 60_000 },
      ({ ns, configMap, kind, file }, ctx) => {
        if (!spire) {
          ctx.skip(NO_SPIRE_NOTE);
          return;
        }
        const root = mkdtempSync(join(tmpdir(), 'manifests-validate-'));
        try {
          const { spec } = runnerOf(ns, configMap);
          const text = asInPod(spec, confText(ns, configMap, confKey(file)), ns, root);
          expect(text).not.toContain('/opt/spire/plugins');
          const confPath = join(root, 'validate.conf');
          writeFileSync(confPath, text);
          const c = spec.containers[0]!;
          const env = Object.fromEntries((c.env ?? []).filter((e) => e.valueFrom?.secretKeyRef).map((e) => [e.name, 'dbname=spire host=127.0.0.1']));
          const args = ['validate', '-config', confPath, ...(c.args?.includes('-expandEnv') ? ['-expandEnv'] : [])];
          const r = spawnSync(kind === 'server' ? spire.server : spire.agent, args, { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
          // spire-server validate exits 0 on an invalid file: its verdict is the line it prints.
          expect(`${r.stdout}${r.stderr}`, `${ns}/${configMap}`).toMatch(new RegExp(`SPIRE ${kind} configuration file is valid`));
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      },
    );

    if (k.dir === 'overlays/nested-edge') {
      it('the edge server gets its CA through the gateway agent on its node: same socket file, gateway-only scheduling', async () => {
        const edge = k.servers[1]!;
        const conf = await decodePluginData(confText(edge.ns, edge.configMap, 'server.conf'));
        const upstream = pluginData(plugin(conf, 'UpstreamAuthority', 'spire')) as Record<string, string>;
        const edgeSpec = runnerOf(edge.ns, edge.configMap).spec;
        const gatewaySpec = podSpec(find('DaemonSet', 'spire', 'spire-agent'));
        expect(hostFile(edgeSpec, upstream['workload_api_socket']!)).toBe(hostFile(gatewaySpec, DEPLOYMENT.agent.socket));
        expect(edgeSpec.nodeSelector).toEqual(gatewaySpec.nodeSelector);
        expect(gatewaySpec.nodeSelector?.['spire.edge.example/gateway']).toBe('true');
        // Edge agents and the demo services they serve stay off the gateway node.
        for (const [kind, ns, name] of [['DaemonSet', 'spire', 'spire-edge-agent'], ['Deployment', 'demo', 'greeter-server'], ['Deployment', 'demo', 'greeter-client']] as const) {
          expect(JSON.stringify(podSpec(find(kind, ns, name))), `${kind} ${name}`).toContain('"key":"spire.edge.example/gateway","operator":"DoesNotExist"');
        }
        // Edge agents dial the edge server's port on the gateway node's host network.
        const agentConf = await decodePluginData(confText('spire', 'spire-edge-agent-config', 'agent.conf'));
        const port = Number(only(agentConf['agent'], 'agent')['server_port']);
        expect(edgeSpec.hostNetwork).toBe(true);
        expect(Number(only(conf['server'], 'server')['bind_port'])).toBe(port);
        expect(edgeSpec.containers[0]!.volumeMounts?.find((m) => m.mountPath === dirname(upstream['workload_api_socket']!))?.readOnly).toBe(true);
      });
    }

    if (k.dir === 'overlays/ha-postgres') {
      it('two server replicas on PostgreSQL, the connection string expanded from the spire-datastore Secret', async () => {
        const sts = find('StatefulSet', 'spire', 'spire-server');
        expect((sts['spec'] as { replicas: number }).replicas).toBe(2);
        const c = podSpec(sts).containers[0]!;
        expect(c.args).toContain('-expandEnv');
        const conf = await decodePluginData(confText('spire', 'spire-server-config', 'server.conf'));
        const ds = pluginData(plugin(conf, 'DataStore', 'sql')) as Record<string, string>;
        expect(ds['database_type']).toBe('postgres');
        const envName = /^\$\{(\w+)\}$/.exec(ds['connection_string']!)?.[1];
        expect(c.env?.find((e) => e.name === envName)?.valueFrom?.secretKeyRef?.name).toBe('spire-datastore');
      });
    }
  });
}

describe('the topology is parametrised only by paths, addresses, ports and TTLs', () => {
  /** Leaves of a role: path → value. */
  function leaves(v: unknown, at = ''): Map<string, unknown> {
    const out = new Map<string, unknown>();
    if (isPlainObject(v) || Array.isArray(v)) for (const [key, x] of Object.entries(v)) for (const [p, y] of leaves(x, `${at}/${key}`)) out.set(p, y);
    else out.set(at, v);
    return out;
  }
  const e2eServer = { dataDir: '/tmp/e2e/cloud/data', ekCaPaths: ['/tmp/e2e/ek-ca.pem'], policyPath: '/tmp/e2e/policy.yaml', ttl: { ca: '60s', agent: '20s', svid: '10s' } };
  const e2eAgent = {
    tpmTcti: 'swtpm:host=127.0.0.1,port=2321',
    eventLogPath: '/tmp/e2e/bbm',
    tpmWorkDir: '/tmp/e2e/tpm-work',
    podSource: { kind: 'kubelet' as const, host: '127.0.0.1', securePort: 10250, caPath: '/tmp/e2e/ca.pem', tokenPath: '/tmp/e2e/token' },
    nodeName: { name: 'edge-b' },
    maxStaleness: '1h',
  };
  const cases: Array<[string, unknown, unknown, string[]]> = [
    ['cloud server', DEPLOYED.cloudServer(), cloudServer(e2eServer), []],
    ['edge server', DEPLOYED.edgeServer(), edgeServer({ ...e2eServer, upstream: { address: '127.0.0.1', port: 41000 }, gatewayAgentSocket: '/tmp/e2e/gateway/agent.sock' }), []],
    ['HA server', DEPLOYED.haServer(), haServer({ ...e2eServer, postgres: 'host=127.0.0.1 port=5432 dbname=spire' }), []],
    // The pod source differs in kind (edged on a KubeEdge node, the tests' kubelet), and so in its keys.
    ['edge agent', DEPLOYED.edgeAgent(), edgeAgent(e2eAgent), ['pod_source', 'edged', 'kubelet_', 'node_name']],
  ];
  it.each(cases)('%s: the deployed and the e2e role differ only where a parameter goes', (_name, deployed, e2e, podSourceKeys) => {
    const [d, t] = [leaves(deployed), leaves(e2e)];
    const podSource = (p: string) => podSourceKeys.some((key) => p.split('/').some((seg) => seg.startsWith(key)));
    expect([...d.keys()].filter((p) => !podSource(p)).sort()).toEqual([...t.keys()].filter((p) => !podSource(p)).sort());
    const differing = [...d.keys()].filter((p) => !podSource(p) && d.get(p) !== t.get(p));
    // Every differing leaf is a parameter: a path, an address, a port, a TTL or the connection string.
    for (const p of differing) expect(p, `${p}: ${String(d.get(p))} vs ${String(t.get(p))}`).toMatch(/path|dir|_ca_path|tcti|address|port|socket|_ttl|\/ca$|\/agent$|\/svid$|connection_string|max_staleness/);
    // The plugin list itself is no parameter.
    const names = (r: unknown) => (r as { plugins: PluginDecl[] }).plugins.map((p) => `${p.type} ${p.name} ${p.binary ?? ''}`);
    expect(names(deployed)).toEqual(names(e2e));
  });

  it('the e2e tests build their SPIRE servers and agents from kubeedge-demo/topology.ts, not by hand', () => {
    for (const file of ['test/e2e/nested.test.ts', 'test/e2e/ha.test.ts']) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      expect(text, file).toMatch(/from '\.\.\/\.\.\/kubeedge-demo\/topology\.js'/);
      expect(text, `${file} declares no plugin by hand`).not.toMatch(/type: '(NodeAttestor|WorkloadAttestor|UpstreamAuthority)'/);
      expect(text, `${file} passes no plugin list by hand`).not.toMatch(/\bplugins: \[/);
      expect(text.match(/(SpireServer|SpireAgent)\.start\(/g)?.length, file).toBe(text.match(/\.\.\.(serverRoleOptions|agentRoleOptions)\(/g)?.length);
    }
  });
});

describe("the README's registration entries", () => {
  const readme = readFileSync(join(DEMO, 'README.md'), 'utf8');
  const entries = [...readme.matchAll(/spire-server entry create((?:[^\n]*\\\n)*[^\n]*)/g)].map((m) => m[1]!.replace(/\\\n/g, ' '));

  it('use the manifests’ namespace, service accounts and a tpm:policy node alias', () => {
    const alias = entries.find((e) => /-node\b/.test(e));
    expect(alias).toMatch(/-selector tpm:policy:golden\b/);
    const aliasId = /-spiffeID (\S+)/.exec(alias!)![1];
    const workloads = entries.filter((e) => /-selector k8s:ns:demo\b/.test(e));
    expect(workloads.map((e) => /k8s:sa:(\S+)/.exec(e)![1]).sort()).toEqual(['greeter-client', 'greeter-server']);
    for (const entry of workloads) {
      expect(/-parentID (\S+)/.exec(entry)?.[1]).toBe(aliasId);
      const sa = /k8s:sa:(\S+)/.exec(entry)![1]!;
      expect(/-spiffeID (\S+)/.exec(entry)?.[1]).toBe(`spiffe://edge.example/ns/demo/sa/${sa}`);
    }
  });

  it('the downstream entry selects the edge server as the nested-edge overlay runs it', () => {
    const downstream = entries.filter((e) => /-downstream\b/.test(e));
    expect(downstream).toHaveLength(1);
    expect(downstream[0]).toContain(`-spiffeID spiffe://edge.example${EDGE_SERVER_WORKLOAD.spiffeIdPath}`);
    expect(downstream[0]).toContain(`-selector k8s:ns:${EDGE_SERVER_WORKLOAD.namespace}`);
    expect(downstream[0]).toContain(`-selector k8s:sa:${EDGE_SERVER_WORKLOAD.serviceAccount}`);
  });
});
