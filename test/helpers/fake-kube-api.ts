/**
 * A real HTTPS server implementing the few Kubernetes API paths the revoker and the enrolment watcher use, with
 * real-format JSON (Node, PodList, Status, Eviction) and bearer-token auth, recording every call:
 *
 *   GET   /api/v1/nodes/{name}                         read a Node
 *   GET   /api/v1/nodes?labelSelector=k=v              list Nodes by one label
 *   PATCH /api/v1/nodes/{name}                         merge patch (application/merge-patch+json); a
 *                                                      metadata.resourceVersion in the body is a precondition (409)
 *   GET   /api/v1/pods?fieldSelector=spec.nodeName=N   list pods on a node
 *   POST  /api/v1/namespaces/{ns}/pods/{name}/eviction  evict (the pod disappears from the lists)
 *   DELETE /api/v1/namespaces/{ns}/pods/{name}           delete; a DeleteOptions preconditions.uid that differs is 409
 *
 * `down = true` answers every request 503 (an API server outage as clients see it through a load balancer).
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { makePki, startHttps, type TestServer } from '../workload/helpers.js';

export interface KubeCall {
  readonly method: string;
  readonly path: string;
  readonly query: Record<string, string>;
  readonly contentType?: string;
  readonly body?: unknown;
  readonly status: number;
}

export interface FakeNode {
  metadata: { name: string; uid: string; resourceVersion: string; creationTimestamp: string; labels: Record<string, string>; annotations: Record<string, string> };
  spec: { podCIDR: string; podCIDRs: string[]; providerID?: string; taints?: Array<{ key: string; value?: string; effect: string; timeAdded?: string }> };
  status: unknown;
}

export interface FakeKubeApi {
  readonly server: TestServer;
  readonly url: string;
  readonly kubeconfigPath: string;
  readonly calls: KubeCall[];
  readonly nodes: Map<string, FakeNode>;
  /** Pod JSON objects (metadata/spec/status, as from makePod) currently in the cluster. */
  pods: Array<{ metadata: { name: string; namespace: string }; spec: { nodeName?: string } } & Record<string, unknown>>;
  down: boolean;
  addNode(name: string, labels?: Record<string, string>): FakeNode;
  close(): Promise<void>;
}

const TOKEN = 'revoker-service-account-token';
let rv = 1000;

function status(res: ServerResponse, code: number, reason: string, message: string): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
}

function send(res: ServerResponse, body: unknown, code = 200): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** RFC 7386 merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export async function startFakeKubeApi(dir: string): Promise<FakeKubeApi> {
  const pki = await makePki();
  const nodes = new Map<string, FakeNode>();
  const calls: KubeCall[] = [];
  const api: Partial<FakeKubeApi> & { pods: FakeKubeApi['pods']; down: boolean } = { pods: [], down: false };

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    let raw = '';
    req.setEncoding('utf8').on('data', (d: string) => (raw += d));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'https://kube.invalid');
      const query = Object.fromEntries(url.searchParams.entries());
      let body: unknown;
      try {
        body = raw ? JSON.parse(raw) : undefined;
      } catch {
        body = raw;
      }
      const record = (code: number) => calls.push({ method: req.method ?? '', path: url.pathname, query, contentType: req.headers['content-type'], body, status: code });
      if (api.down) {
        record(503);
        return status(res, 503, 'ServiceUnavailable', 'the server is currently unable to handle the request');
      }
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        record(401);
        return status(res, 401, 'Unauthorized', 'Unauthorized');
      }
      const nodeMatch = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname);
      const evictMatch = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/eviction$/.exec(url.pathname);
      if (req.method === 'GET' && url.pathname === '/api/v1/nodes') {
        const [k, v] = (query['labelSelector'] ?? '').split('=');
        const items = [...nodes.values()].filter((n) => !k || n.metadata.labels[k] === v);
        record(200);
        return send(res, { kind: 'NodeList', apiVersion: 'v1', metadata: { resourceVersion: String(rv) }, items });
      }
      if (nodeMatch && (req.method === 'GET' || req.method === 'PATCH')) {
        const node = nodes.get(decodeURIComponent(nodeMatch[1]!));
        if (!node) {
          record(404);
          return status(res, 404, 'NotFound', `nodes "${nodeMatch[1]}" not found`);
        }
        if (req.method === 'GET') {
          record(200);
          return send(res, { kind: 'Node', apiVersion: 'v1', ...node });
        }
        if (req.headers['content-type'] !== 'application/merge-patch+json') {
          record(415);
          return status(res, 415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json`);
        }
        const want = (body as { metadata?: { resourceVersion?: string } })?.metadata?.resourceVersion;
        if (want !== undefined && want !== node.metadata.resourceVersion) {
          record(409);
          return status(res, 409, 'Conflict', `Operation cannot be fulfilled on nodes "${node.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`);
        }
        const patched = mergePatch(node, body) as FakeNode;
        patched.metadata.resourceVersion = String(++rv);
        nodes.set(node.metadata.name, patched);
        record(200);
        return send(res, { kind: 'Node', apiVersion: 'v1', ...patched });
      }
      if (req.method === 'GET' && url.pathname === '/api/v1/pods') {
        const m = /^spec\.nodeName=(.+)$/.exec(query['fieldSelector'] ?? '');
        const items = api.pods.filter((p) => !m || p.spec.nodeName === m[1]);
        record(200);
        return send(res, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(rv) }, items });
      }
      const podMatch = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'DELETE' && podMatch) {
        const [, ns, name] = podMatch;
        const i = api.pods.findIndex((p) => p.metadata.namespace === ns && p.metadata.name === name);
        if (i < 0) {
          record(404);
          return status(res, 404, 'NotFound', `pods "${name}" not found`);
        }
        const pod = api.pods[i]!;
        const wantUid = (body as { preconditions?: { uid?: string } } | undefined)?.preconditions?.uid;
        const uid = (pod.metadata as { uid?: string }).uid;
        if (wantUid !== undefined && wantUid !== uid) {
          record(409);
          return status(res, 409, 'Conflict', `Precondition failed: UID in precondition: ${wantUid}, UID in object meta: ${uid}`);
        }
        api.pods.splice(i, 1);
        rv++;
        record(200);
        return send(res, { kind: 'Pod', apiVersion: 'v1', ...pod });
      }
      if (req.method === 'POST' && evictMatch) {
        const [, ns, name] = evictMatch;
        const i = api.pods.findIndex((p) => p.metadata.namespace === ns && p.metadata.name === name);
        const eviction = body as { kind?: string; apiVersion?: string; metadata?: { name?: string } };
        if (eviction?.kind !== 'Eviction' || eviction.apiVersion !== 'policy/v1' || eviction.metadata?.name !== name) {
          record(400);
          return status(res, 400, 'BadRequest', 'expected a policy/v1 Eviction naming the pod');
        }
        if (i < 0) {
          record(404);
          return status(res, 404, 'NotFound', `pods "${name}" not found`);
        }
        api.pods.splice(i, 1);
        rv++;
        record(201);
        return send(res, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 }, 201);
      }
      record(404);
      status(res, 404, 'NotFound', `the server could not find the requested resource (${req.method} ${url.pathname})`);
    });
  };
  const server = await startHttps(pki, handler);
  const kubeconfigPath = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfigPath,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'edge', cluster: { server: `https://127.0.0.1:${server.port}`, 'certificate-authority-data': Buffer.from(pki.caPem).toString('base64') } }],
      users: [{ name: 'revoker', user: { token: TOKEN } }],
      contexts: [{ name: 'edge', context: { cluster: 'edge', user: 'revoker' } }],
      'current-context': 'edge',
    }),
  );
  const out: FakeKubeApi = Object.assign(api, {
    server,
    url: `https://127.0.0.1:${server.port}`,
    kubeconfigPath,
    calls,
    nodes,
    addNode(name: string, labels: Record<string, string> = {}): FakeNode {
      const node: FakeNode = {
        metadata: {
          name,
          uid: randomUUID(),
          resourceVersion: String(++rv),
          creationTimestamp: '2026-12-01T08:00:00Z',
          labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'node-role.kubernetes.io/edge': '', ...labels },
          annotations: { 'node.alpha.kubernetes.io/ttl': '0' },
        },
        spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] },
        status: {
          conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastHeartbeatTime: '2026-12-01T08:00:00Z', lastTransitionTime: '2026-12-01T08:00:00Z' }],
          nodeInfo: { kubeletVersion: 'v1.31.4', osImage: 'Ubuntu 24.04 LTS', architecture: 'arm64', operatingSystem: 'linux', containerRuntimeVersion: 'containerd://1.7.24' },
        },
      };
      nodes.set(name, node);
      return node;
    },
    close: () => server.close(),
  }) as FakeKubeApi;
  return out;
}
