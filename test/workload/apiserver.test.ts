/**
 * The API-server source without @kubernetes/client-node: an HTTPS list with the node field selector, then a
 * watch from the list's resourceVersion. Pods added by watch events are attestable without another list.
 */
import type http from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { json, makePki, startHttps, tempDir, testContext, writeFakeProc, type TestServer } from './helpers.js';

const NEW_CID = '5'.repeat(64);
const NEW_UID = '11111111-2222-3333-4444-555555555555';
let dir: { path: string; remove(): void };
let api: TestServer;
const watchers: http.ServerResponse[] = [];
let lists = 0;

beforeAll(async () => {
  dir = tempDir('wl-api-');
  const pki = await makePki();
  writeFileSync(join(dir.path, 'ca.pem'), pki.caPem);
  writeFileSync(join(dir.path, 'token'), 'api-token');
  const base = JSON.parse(readFileSync(new URL('../fixtures/kubelet/spire-kind_pod_list.json', import.meta.url), 'utf8'));
  base.metadata = { resourceVersion: '100' };
  api = await startHttps(pki, (req, res) => {
    const u = new URL(req.url ?? '/', 'https://x');
    if (req.headers.authorization !== 'Bearer api-token' || u.pathname !== '/api/v1/pods' || u.searchParams.get('fieldSelector') !== 'spec.nodeName=kind-control-plane') {
      return json(res, {}, 403);
    }
    if (u.searchParams.get('watch') === '1') {
      expect(u.searchParams.get('resourceVersion')).toBeTruthy();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      watchers.push(res);
      return;
    }
    lists++;
    json(res, base);
  });
  writeFakeProc(join(dir.path, 'proc'), 20, { cgroup: `0::/kubepods.slice/kubepods-pod${NEW_UID.replaceAll('-', '_')}.slice/cri-containerd-${NEW_CID}.scope\n` });
});

afterAll(async () => {
  for (const w of watchers) w.destroy();
  await api.close();
  dir.remove();
});

async function waitFor(cond: () => boolean): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('apiserver source (list + watch over node:https)', () => {
  it('applies ADDED/DELETED events and re-watches after the server closes the stream', async () => {
    const a = new EdgeWorkloadAttestor(testContext(), { env: {} });
    await a.configure(
      {
        pod_source: 'apiserver',
        node_name: 'kind-control-plane',
        proc_path: join(dir.path, 'proc'),
        miss_retry_deadline: '0s',
        apiserver: [{ url: api.url, ca_path: join(dir.path, 'ca.pem'), token_path: join(dir.path, 'token') }],
      },
      { trustDomain: 'example.org' },
    );
    try {
      await waitFor(() => watchers.length === 1 && a.sourceStatus()!.live);
      const pod = {
        metadata: { uid: NEW_UID, name: 'late-pod', namespace: 'default', resourceVersion: '101' },
        spec: { serviceAccountName: 'late', nodeName: 'kind-control-plane' },
        status: { containerStatuses: [{ name: 'app', containerID: `containerd://${NEW_CID}`, image: 'app:1', imageID: 'app@sha256:' + '2'.repeat(64) }] },
      };
      watchers[0]!.write(JSON.stringify({ type: 'ADDED', object: pod }) + '\n');
      watchers[0]!.write(JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '102' } } }) + '\n');
      await waitFor(() => a.sourceStatus()!.pods === 2);
      const sel = await a.attest(20, new AbortController().signal);
      expect(sel).toEqual(expect.arrayContaining([`pod-uid:${NEW_UID}`, 'sa:late', 'container-name:app', 'pod-source:apiserver', 'runtime:containerd']));
      expect(a.sourceStatus()!.ageMs).toBe(0);
      const listsBefore = lists;
      watchers[0]!.write(JSON.stringify({ type: 'DELETED', object: pod }) + '\n');
      await waitFor(() => a.sourceStatus()!.pods === 1);
      // the server ends the watch: the index watches again from its last resourceVersion
      watchers[0]!.end();
      await waitFor(() => watchers.length === 2);
      expect(lists).toBe(listsBefore);
      const e = await a.attest(20, new AbortController().signal).catch((x) => x);
      expect(e.code).toBe('ERR_WORKLOAD_POD_NOT_FOUND');
    } finally {
      await a.close();
    }
  });
});
