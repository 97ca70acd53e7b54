/**
 * `ns-label:<k>:<v>` (SPIRE k8s `enable_namespace_labels`): namespace labels from the API server or MetaServer,
 * over real HTTPS serving real-format PodList and NamespaceList JSON, cached like pods.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { parseConfig } from '../../src/workload/config.js';
import { decodeNamespaceList } from '../../src/workload/namespace-labels.js';
import { json, makePki, rejection, startHttps, tempDir, testContext, writeFakeProc, type TestServer } from './helpers.js';

const POD_UID = 'a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80';
const CID = '09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6';
const NODE = 'kind-control-plane';
const PODS = JSON.parse(readFileSync(new URL('../fixtures/kubelet/spire-kind_pod_list.json', import.meta.url), 'utf8'));
const NAMESPACES_FIXTURE = readFileSync(new URL('../fixtures/kubelet/namespace_list.json', import.meta.url), 'utf8');

let dir: { path: string; remove(): void };
let api: TestServer;
/** What the server answers for /api/v1/namespaces; tests change it. */
let namespaces: { status: number; body: unknown };

beforeAll(async () => {
  dir = tempDir('wl-nslabels-');
  const pki = await makePki();
  writeFileSync(join(dir.path, 'ca.pem'), pki.caPem);
  writeFileSync(join(dir.path, 'token'), 'api-token');
  api = await startHttps(pki, (req, res) => {
    const u = new URL(req.url ?? '/', 'https://x');
    if (req.headers.authorization !== 'Bearer api-token') return json(res, { kind: 'Status', code: 401 }, 401);
    if (u.pathname === '/api/v1/pods' && u.searchParams.get('fieldSelector') === `spec.nodeName=${NODE}` && !u.searchParams.has('watch')) return json(res, PODS);
    if (u.pathname === '/api/v1/namespaces' && u.search === '') return json(res, namespaces.body, namespaces.status);
    if (u.searchParams.has('watch')) return json(res, { kind: 'Status', code: 405 }, 405); // MetaServer-style: no watch
    json(res, { kind: 'Status', code: 404 }, 404);
  });
  writeFakeProc(join(dir.path, 'proc'), 20, { cgroup: `0::/kubepods.slice/kubepods-pod${POD_UID.replaceAll('-', '_')}.slice/cri-containerd-${CID}.scope\n` });
});

afterAll(async () => {
  await api.close();
  dir.remove();
});

const nsRequests = () => api.requests.filter((r) => r.path === '/api/v1/namespaces').length;

function config(source: 'apiserver' | 'metaserver', extra: Record<string, unknown> = {}): Record<string, unknown> {
  const endpoint =
    source === 'apiserver'
      ? { apiserver: [{ url: api.url, ca_path: join(dir.path, 'ca.pem'), token_path: join(dir.path, 'token') }] }
      : { metaserver: [{ url: api.url, ca_path: join(dir.path, 'ca.pem'), token_path: join(dir.path, 'token') }] };
  return { pod_source: source, node_name: NODE, proc_path: join(dir.path, 'proc'), miss_retry_deadline: '0s', enable_namespace_labels: true, ...endpoint, ...extra };
}

async function withAttestor<T>(raw: Record<string, unknown>, fn: (a: EdgeWorkloadAttestor) => Promise<T>): Promise<T> {
  const a = new EdgeWorkloadAttestor(testContext(), { env: {} });
  await a.configure(raw, { trustDomain: 'example.org' });
  try {
    return await fn(a);
  } finally {
    await a.close();
  }
}

const attest = (a: EdgeWorkloadAttestor) => a.attest(20, new AbortController().signal);
const nsLabels = (selectors: readonly string[]) => selectors.filter((s) => s.startsWith('ns-label:')).sort();

describe('ns-label selectors', () => {
  it('from the API server: every label of the pod namespace, from a cache (no request per attestation)', async () => {
    namespaces = { status: 200, body: JSON.parse(NAMESPACES_FIXTURE) };
    await withAttestor(config('apiserver'), async (a) => {
      const before = nsRequests();
      const first = await attest(a);
      const second = await attest(a);
      expect(nsLabels(first)).toEqual(['ns-label:env:prod', 'ns-label:kubernetes.io/metadata.name:default', 'ns-label:team:payments']);
      expect(first).toContain('ns:default');
      expect(nsLabels(second)).toEqual(nsLabels(first));
      expect(nsRequests() - before).toBe(0); // both answered from the list made at Configure
    });
  });

  it('from MetaServer, and a label change shows up after the next poll', async () => {
    namespaces = { status: 200, body: JSON.parse(NAMESPACES_FIXTURE) };
    await withAttestor(config('metaserver', { poll_interval: '100ms' }), async (a) => {
      expect(nsLabels(await attest(a))).toContain('ns-label:team:payments');
      const changed = JSON.parse(NAMESPACES_FIXTURE);
      changed.items[0].metadata.labels = { 'kubernetes.io/metadata.name': 'default', team: 'ledger' };
      namespaces = { status: 200, body: changed };
      const seen = nsRequests();
      const end = Date.now() + 5_000;
      while (nsRequests() < seen + 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
      expect(nsLabels(await attest(a))).toEqual(['ns-label:kubernetes.io/metadata.name:default', 'ns-label:team:ledger']);
      expect((await attest(a)).find((s) => s.startsWith('pod-source:'))).toBe('pod-source:metaserver');
    });
  });

  it('a namespace without labels gives no ns-label selector, and labels are off unless enabled', async () => {
    const body = JSON.parse(NAMESPACES_FIXTURE);
    body.items[0].metadata.labels = undefined;
    namespaces = { status: 200, body };
    await withAttestor(config('apiserver'), async (a) => expect(nsLabels(await attest(a))).toEqual([]));
    namespaces = { status: 200, body: JSON.parse(NAMESPACES_FIXTURE) };
    const before = nsRequests();
    await withAttestor(config('apiserver', { enable_namespace_labels: false }), async (a) => expect(nsLabels(await attest(a))).toEqual([]));
    expect(nsRequests()).toBe(before);
  });

  it('fails closed: no pod selectors without the namespace labels (RBAC refused, namespace missing, malformed list)', async () => {
    namespaces = { status: 403, body: { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Forbidden', code: 403 } };
    await withAttestor(config('apiserver'), async (a) => {
      const err = await rejection(attest(a));
      expect({ code: err.code, grpc: err.grpcCode }).toEqual({ code: 'ERR_WORKLOAD_NO_SNAPSHOT', grpc: 14 });
      expect(err.message).toMatch(/namespace labels: apiserver has not answered yet/);
    });
    const without = JSON.parse(NAMESPACES_FIXTURE);
    without.items = without.items.filter((n: { metadata: { name: string } }) => n.metadata.name !== 'default');
    namespaces = { status: 200, body: without };
    await withAttestor(config('apiserver'), async (a) => {
      const before = nsRequests();
      const err = await rejection(attest(a));
      expect(err.code).toBe('ERR_WORKLOAD_NAMESPACE_NOT_FOUND');
      expect(err.message).toMatch(/namespace default is not in the namespace list/);
      expect(nsRequests() - before).toBeLessThanOrEqual(1); // one refresh for the miss, at most
    });
    namespaces = { status: 200, body: { kind: 'PodList', items: [] } };
    await withAttestor(config('apiserver'), async (a) => expect((await rejection(attest(a))).code).toBe('ERR_WORKLOAD_NO_SNAPSHOT'));
  });

  it('decodes the real NamespaceList format and refuses malformed ones', () => {
    const m = decodeNamespaceList(JSON.parse(NAMESPACES_FIXTURE));
    expect([...m.keys()]).toEqual(['default', 'kube-system', 'spire']);
    expect(m.get('spire')).toEqual({});
    expect(() => decodeNamespaceList({ kind: 'NamespaceList', items: [{ metadata: { name: 'x', labels: { a: 1 } } }] })).toThrow(/labels\.a is not a string/);
    expect(() => decodeNamespaceList({ kind: 'NamespaceList', items: [{ metadata: {} }] })).toThrow(/items\[0\] has no metadata.name/);
  });

  it('config: picks the namespace source and refuses contradictions', () => {
    expect(parseConfig({ enable_namespace_labels: true }, {}).namespaceLabels).toEqual({ source: 'metaserver' });
    expect(parseConfig({ enable_namespace_labels: true }, { KUBERNETES_SERVICE_HOST: '10.0.0.1' }).namespaceLabels).toEqual({ source: 'apiserver' });
    expect(parseConfig({ pod_source: 'metaserver', node_name: 'n', enable_namespace_labels: true }, { KUBERNETES_SERVICE_HOST: '10.0.0.1' }).namespaceLabels).toEqual({ source: 'metaserver' });
    expect(parseConfig({}, {}).namespaceLabels).toBeUndefined();
    expect(() => parseConfig({ namespace_label_source: 'apiserver' }, {})).toThrow(/only means something with enable_namespace_labels/);
    expect(() => parseConfig({ enable_namespace_labels: true, namespace_label_source: 'apiserver' }, {})).toThrow(/need apiserver_url/);
  });
});
