/**
 * Keeps kubeedge-demo/manifests honest: every file parses as YAML, every server.conf/agent.conf embedded in a
 * ConfigMap decodes with our HCL1 decoder, and the plugin_data of our plugins in them validates against the
 * plugins' own schemas. Cross-checks the wiring between the objects (mounted paths, the socket, the boot policy,
 * the plugin binaries in the images, the registration entries in the README).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { agentConfigSchema } from '../../src/nodeattestor/agent.js';
import { serverConfigSchema } from '../../src/nodeattestor/server.js';
import { parseConfig } from '../../src/plugin/config-schema.js';
import { decodePluginData, isPlainObject } from '../../src/plugin/hcl.js';
import { parsePolicyFile } from '../../src/policy/policy.js';
import { parseConfig as parseWorkloadConfig } from '../../src/workload/config.js';

const DEMO = fileURLToPath(new URL('../../kubeedge-demo/', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [key: string]: unknown;
}
// Loose views of the parts the cross-checks read.
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  configMap?: { name: string };
}
interface Container {
  name: string;
  image: string;
  env?: Array<{ name: string; value?: string }>;
  volumeMounts?: Mount[];
  securityContext?: { privileged?: boolean };
}
interface PodSpec {
  serviceAccountName?: string;
  hostPID?: boolean;
  hostNetwork?: boolean;
  nodeSelector?: Record<string, string>;
  containers: Container[];
  volumes?: Volume[];
}

function loadManifests(): Array<{ file: string; object: K8sObject }> {
  const dir = join(DEMO, 'manifests');
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  return files.flatMap((file) =>
    parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((doc) => {
      if ('errors' in doc && doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      return { file, object: doc.toJS() as K8sObject };
    }),
  );
}

const manifests = loadManifests();
const objects = manifests.map((m) => m.object);

function find(kind: string, name: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in kubeedge-demo/manifests`);
  return found;
}
const podSpec = (o: K8sObject): PodSpec => (o['spec'] as { template: { spec: PodSpec } }).template.spec;
const configData = (name: string): Record<string, string> => find('ConfigMap', name)['data'] as Record<string, string>;

/** HCL1 blocks decode to one-element lists; the single element, or an error. */
function only(value: unknown, what: string): Record<string, unknown> {
  const list = Array.isArray(value) ? value : [value];
  if (list.length !== 1 || !isPlainObject(list[0])) throw new Error(`${what}: expected exactly one block`);
  return list[0];
}

interface PluginDecl {
  type: string;
  name: string;
  body: Record<string, unknown>;
}

/** `plugins { Type "name" { ... } }` of a decoded server.conf/agent.conf. */
function plugins(conf: Record<string, unknown>): PluginDecl[] {
  const out: PluginDecl[] = [];
  for (const [type, list] of Object.entries(only(conf['plugins'], 'plugins'))) {
    for (const named of list as Array<Record<string, unknown>>) {
      for (const [name, body] of Object.entries(named)) out.push({ type, name, body: only(body, `${type} "${name}"`) });
    }
  }
  return out;
}

/** plugin_data as our plugin receives it: SPIRE re-prints the block, the runtime takes log_level off. */
function pluginData(decl: PluginDecl): Record<string, unknown> {
  const { log_level: _logLevel, ...raw } = only(decl.body['plugin_data'], `${decl.type} "${decl.name}" plugin_data`);
  return raw;
}

function plugin(conf: Record<string, unknown>, type: string, name: string): PluginDecl {
  const found = plugins(conf).find((p) => p.type === type && p.name === name);
  if (!found) throw new Error(`no ${type} "${name}" plugin`);
  return found;
}

/** The mount of the directory holding `path` (the longest mount path that is a parent). */
function mountFor(spec: PodSpec, path: string): Mount {
  const mounts = (spec.containers[0]!.volumeMounts ?? []).filter((m) => path === m.mountPath || path.startsWith(m.mountPath + '/'));
  mounts.sort((a, b) => b.mountPath.length - a.mountPath.length);
  if (!mounts[0]) throw new Error(`nothing is mounted at ${path}`);
  return mounts[0];
}

/** The pod volume mounted at the directory holding `path`. */
function volumeFor(spec: PodSpec, path: string): { mount: Mount; volume: Volume } {
  const mount = mountFor(spec, path);
  const volume = spec.volumes?.find((v) => v.name === mount.name);
  if (!volume) throw new Error(`mount ${mount.name} has no volume`);
  return { mount, volume };
}

const serverConf = await decodePluginData(configData('spire-server-config')['server.conf']!);
const agentConf = await decodePluginData(configData('spire-agent-config')['agent.conf']!);

describe('kubeedge-demo manifests', () => {
  it('parse as YAML into Kubernetes objects with apiVersion, kind and a name', () => {
    expect(manifests.length).toBeGreaterThan(10);
    for (const { file, object } of manifests) {
      expect(object, file).toMatchObject({ apiVersion: expect.any(String), kind: expect.any(String), metadata: { name: expect.any(String) } });
      if (object.kind !== 'Namespace') expect(['spire', 'demo'], `${file} ${object.kind}/${object.metadata.name}`).toContain(object.metadata.namespace);
    }
  });

  it('every embedded server.conf / agent.conf decodes with our HCL1 decoder', async () => {
    let confs = 0;
    for (const { object } of manifests.filter((m) => m.object.kind === 'ConfigMap')) {
      for (const [key, text] of Object.entries((object['data'] ?? {}) as Record<string, string>)) {
        if (!key.endsWith('.conf')) continue;
        confs++;
        const conf = await decodePluginData(text);
        expect(Object.keys(conf), key).toContain('plugins');
        expect(only(conf[key === 'server.conf' ? 'server' : 'agent'], key)['trust_domain']).toBe('edge.example');
      }
    }
    expect(confs).toBe(2);
  });

  it('server NodeAttestor "tpm" plugin_data validates against the tpm-server schema', () => {
    const decl = plugin(serverConf, 'NodeAttestor', 'tpm');
    expect(decl.body['plugin_cmd']).toBe('/opt/spire/plugins/tpm-server');
    expect(decl.body['plugin_checksum']).toMatch(/^[0-9a-f]{64}$/);
    const config = parseConfig(serverConfigSchema, pluginData(decl), 'tpm server');
    expect(config.policy_path).toBeDefined();
    expect(config.ek_ca_path).toBeDefined();
  });

  it('agent NodeAttestor "tpm" and WorkloadAttestor "k8s" plugin_data validate against their schemas', () => {
    const tpm = plugin(agentConf, 'NodeAttestor', 'tpm');
    expect(tpm.body['plugin_cmd']).toBe('/opt/spire/plugins/tpm-agent');
    expect(parseConfig(agentConfigSchema, pluginData(tpm), 'tpm agent').tpm_tcti).toBe('device:/dev/tpmrm0');

    const workload = plugin(agentConf, 'WorkloadAttestor', 'k8s');
    expect(workload.body['plugin_cmd']).toBe('/opt/spire/plugins/edge-workload');
    const config = parseWorkloadConfig(pluginData(workload), { NODE_NAME: 'edge-node-1' });
    expect(['edged', 'metaserver']).toContain(config.podSource);
    expect(config.edged).toEqual({ host: '127.0.0.1', port: 10350 });
  });

  it('the server mounts the EK CAs and a boot policy file that parses and defines the "golden" policy', () => {
    const spec = podSpec(find('StatefulSet', 'spire-server'));
    const tpm = parseConfig(serverConfigSchema, pluginData(plugin(serverConf, 'NodeAttestor', 'tpm')), 'tpm server');
    for (const caPath of [tpm.ek_ca_path!].flat()) expect(volumeFor(spec, caPath).volume.configMap?.name).toBe('tpm-ek-ca');

    const policyPath = tpm.policy_path!;
    const { mount, volume } = volumeFor(spec, policyPath);
    expect(mount.readOnly).toBe(true);
    const policyFile = configData(volume.configMap!.name)[policyPath.slice(mount.mountPath.length + 1)]!;
    expect(parsePolicyFile(policyFile).map((p) => p.name)).toContain('golden');

    const data = only(serverConf['server'], 'server')['data_dir'] as string;
    const claims = (find('StatefulSet', 'spire-server')['spec'] as { volumeClaimTemplates: Array<{ metadata: { name: string } }> }).volumeClaimTemplates;
    expect(claims.map((c) => c.metadata.name)).toContain(mountFor(spec, data).name); // keys and datastore persist
    expect(spec.nodeSelector?.['node-role.kubernetes.io/edge']).toBeUndefined();
  });

  it('the agent DaemonSet runs on edge nodes with host PIDs, host network, the TPM and the event log', () => {
    const spec = podSpec(find('DaemonSet', 'spire-agent'));
    expect(spec.nodeSelector).toEqual({ 'node-role.kubernetes.io/edge': '' });
    expect(spec.hostPID).toBe(true);
    expect(spec.hostNetwork).toBe(true);
    const agentTpm = parseConfig(agentConfigSchema, pluginData(plugin(agentConf, 'NodeAttestor', 'tpm')), 'tpm agent');
    const device = agentTpm.tpm_tcti.replace(/^device:/, '');
    expect(volumeFor(spec, device).volume.hostPath).toEqual({ path: '/dev/tpmrm0', type: 'CharDevice' });
    const eventLog = volumeFor(spec, agentTpm.event_log_path);
    expect(eventLog.volume.hostPath?.path).toBe('/sys/kernel/security');
    expect(eventLog.mount.readOnly).toBe(true);
    expect(volumeFor(spec, agentTpm.tpm!.work_dir!).mount.name).toBe('tpm-work');

    const agent = only(agentConf['agent'], 'agent');
    const bundle = volumeFor(spec, agent['trust_bundle_path'] as string);
    expect(bundle.volume.configMap?.name).toBe('spire-bundle');
    const notifier = pluginData(plugin(serverConf, 'Notifier', 'k8sbundle'));
    expect(notifier).toMatchObject({ namespace: 'spire', config_map: 'spire-bundle' });
    expect(configData('spire-bundle')).toHaveProperty(String(agent['trust_bundle_path']).split('/').pop()!);
    expect(spec.containers[0]!.env?.map((e) => e.name)).toContain('NODE_NAME');
  });

  it('the demo services reach the agent socket through the same host directory, and run on edge nodes', () => {
    const agentSpec = podSpec(find('DaemonSet', 'spire-agent'));
    const socketPath = only(agentConf['agent'], 'agent')['socket_path'] as string;
    const agentSocketDir = volumeFor(agentSpec, socketPath);
    for (const name of ['greeter-server', 'greeter-client']) {
      const spec = podSpec(find('Deployment', name));
      expect(spec.nodeSelector).toEqual({ 'node-role.kubernetes.io/edge': '' });
      expect(spec.serviceAccountName).toBe(name);
      find('ServiceAccount', name);
      const endpoint = spec.containers[0]!.env?.find((e) => e.name === 'SPIFFE_ENDPOINT_SOCKET')?.value ?? '';
      expect(endpoint).toMatch(/^unix:\/\//);
      const inPod = endpoint.slice('unix://'.length);
      const { mount, volume } = volumeFor(spec, inPod);
      expect(mount.readOnly).toBe(true);
      // Same file on the host: agent's host dir + the socket's path relative to the mount, on both sides.
      expect(join(volume.hostPath!.path, inPod.slice(mount.mountPath.length))).toBe(
        join(agentSocketDir.volume.hostPath!.path, socketPath.slice(agentSocketDir.mount.mountPath.length)),
      );
    }
    const server = podSpec(find('Deployment', 'greeter-server')).containers[0]!.env!;
    const client = podSpec(find('Deployment', 'greeter-client')).containers[0]!.env!;
    const env = (list: typeof server, n: string) => list.find((e) => e.name === n)?.value;
    expect(env(server, 'ALLOWED_CLIENT_ID')).toBe('spiffe://edge.example/ns/demo/sa/greeter-client');
    expect(env(client, 'SERVER_ID')).toBe('spiffe://edge.example/ns/demo/sa/greeter-server');
  });

  it('every plugin_cmd is one of our binaries, copied into the image that runs it', () => {
    const images = readdirSync(join(DEMO, 'images')).map((f) => readFileSync(join(DEMO, 'images', f), 'utf8'));
    for (const conf of [serverConf, agentConf]) {
      for (const decl of plugins(conf).filter((p) => p.body['plugin_cmd'] !== undefined)) {
        const cmd = decl.body['plugin_cmd'] as string;
        expect(dirname(cmd)).toBe('/opt/spire/plugins');
        const binary = cmd.slice('/opt/spire/plugins/'.length);
        expect(existsSync(join(ROOT, 'plugins', `${binary}.ts`)), `plugins/${binary}.ts builds dist/bin/${binary}`).toBe(true);
        expect(images.some((text) => new RegExp(`^COPY .*dist/bin/${binary}\\b.* /opt/spire/plugins/`, 'm').test(text)), `an image copies ${binary}`).toBe(true);
      }
    }
  });

  it("the README's registration entries use the manifests' namespace, service accounts and a tpm:policy node alias", () => {
    const readme = readFileSync(join(DEMO, 'README.md'), 'utf8');
    const entries = [...readme.matchAll(/spire-server entry create((?:[^\n]*\\\n)*[^\n]*)/g)].map((m) => m[1]!.replace(/\\\n/g, ' '));
    const alias = entries.find((e) => /-node\b/.test(e));
    expect(alias).toMatch(/-selector tpm:policy:golden\b/);
    const aliasId = /-spiffeID (\S+)/.exec(alias!)![1];
    const workloads = entries.filter((e) => /-selector k8s:sa:/.test(e));
    expect(workloads.map((e) => /k8s:sa:(\S+)/.exec(e)![1]).sort()).toEqual(['greeter-client', 'greeter-server']);
    for (const entry of workloads) {
      expect(/-parentID (\S+)/.exec(entry)?.[1]).toBe(aliasId);
      expect(entry).toContain('-selector k8s:ns:demo');
      const sa = /k8s:sa:(\S+)/.exec(entry)![1]!;
      expect(find('ServiceAccount', sa).metadata.namespace).toBe('demo');
      expect(/-spiffeID (\S+)/.exec(entry)?.[1]).toBe(`spiffe://edge.example/ns/demo/sa/${sa}`);
    }
  });
});
