/**
 * Attack class: kubelet TLS. The kubelet's secure port is the authenticated pod source; whoever answers on it decides
 * every workload's service account. A man in the middle answers with a certificate from another CA, one for another
 * host name, an expired or not-yet-valid one, or plain HTTP. The shipped edge-workload, configured with
 * `pod_source = "kubelet"` and the kubelet's CA, must use none of their pod lists: no pod selectors, UNAVAILABLE, and
 * a log line naming the TLS failure.
 *
 * Real parts: a real process in a real pod cgroup (cgroup v1 `pids`), real HTTPS and HTTP servers, each serving a pod
 * list that would give that process `sa:cluster-admin`.
 */
import * as grpc from '@grpc/grpc-js';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import { tempDir } from '../workload/helpers.js';
import { attestPid, CGROUP_V1, cgroupfsPath, cgroupProblem, CgroupLab, kubeletCert, labPod, podListJson, type KubeletCert } from './kit.js';

const cg = new CgroupLab();
const victim = labPod('web', 'cluster-admin');
const servers: Array<http.Server | https.Server> = [];
let dir: { path: string; remove(): void };
let pid: number;
let trusted: KubeletCert;
let caPath: string;
let tokenPath: string;

function serve(server: http.Server | https.Server): Promise<number> {
  servers.push(server);
  const body = podListJson([victim]);
  server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}
const httpsKubelet = (cert: KubeletCert) => serve(https.createServer({ key: cert.keyPem, cert: cert.certPem }));

beforeAll(async () => {
  const problem = cgroupProblem([CGROUP_V1]);
  if (problem) throw new Error(`kubelet TLS attacks need real cgroups: ${problem}`);
  dir = tempDir('adv-kubelet-tls-');
  pid = (await cg.processIn({ [CGROUP_V1]: cgroupfsPath(victim) })).pid!;
  trusted = await kubeletCert();
  caPath = join(dir.path, 'kubelet-ca.pem');
  tokenPath = join(dir.path, 'token');
  writeFileSync(caPath, trusted.caPem);
  writeFileSync(tokenPath, 'service-account-token');
}, 60_000);

afterAll(async () => {
  await cg.cleanup();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  dir?.remove();
});

async function kubeletAttestor(port: number, extra: { caPem?: string; serverName?: string } = {}): Promise<PluginHarness> {
  let ca = caPath;
  if (extra.caPem) {
    ca = join(dir.path, `ca-${port}.pem`);
    writeFileSync(ca, extra.caPem);
  }
  return cg.workloadAttestor(
    [
      'pod_source = "kubelet"',
      'kubelet_host = "127.0.0.1"',
      `kubelet_secure_port = ${port}`,
      `kubelet_ca_path = "${ca}"`,
      `kubelet_token_path = "${tokenPath}"`,
      ...(extra.serverName ? [`kubelet_tls_server_name = "${extra.serverName}"`] : []),
      'miss_retry_deadline = "500ms"',
      'request_timeout = "2s"',
    ].join('\n'),
  );
}

/** No selectors; UNAVAILABLE whose message (what SPIRE's agent logs) and the plugin's own log both name the failure. */
async function refusedWith(p: PluginHarness, tlsCode: string): Promise<void> {
  const { selectors, err } = await attestPid(p, pid);
  expect(selectors, 'pod data from an unauthenticated kubelet was used').toBeUndefined();
  expect(err!.code).toBe(grpc.status.UNAVAILABLE);
  const named = `ERR_WORKLOAD_SOURCE_TLS: kubelet https://127.0.0.1:${/:(\d+)\/pods/.exec(p.stderrLines.join('\n'))?.[1]}/pods: TLS verification failed (${tlsCode})`;
  expect(err!.details).toBe(`pod source kubelet has not answered yet (last attempt: ${named})`);
  expect(p.stderrLines.join('\n')).toContain(named);
}

describe('kubelet TLS: no pod data from a kubelet that does not prove itself', () => {
  it("control: the kubelet with the configured CA's certificate for 127.0.0.1 is used", async () => {
    const p = await kubeletAttestor(await httpsKubelet(trusted));
    expect((await attestPid(p, pid)).selectors).toEqual(expect.arrayContaining([`pod-uid:${victim.uid}`, 'sa:cluster-admin', 'pod-source:kubelet']));
  });

  it('a certificate from another CA (a man in the middle): UNAVAILABLE, no selectors', async () => {
    const p = await kubeletAttestor(await httpsKubelet(await kubeletCert()));
    await refusedWith(p, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  it('a certificate from the configured CA for another host name: UNAVAILABLE, no selectors', async () => {
    const other = await kubeletCert({ dns: ['other-node.example'], ips: [] });
    const p = await kubeletAttestor(await httpsKubelet(other), { caPem: other.caPem });
    await refusedWith(p, 'ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('kubelet_tls_server_name edge-node-1, a certificate for edge-node-2: UNAVAILABLE; for edge-node-1: used', async () => {
    const wrong = await kubeletCert({ dns: ['edge-node-2'], ips: [] });
    await refusedWith(await kubeletAttestor(await httpsKubelet(wrong), { caPem: wrong.caPem, serverName: 'edge-node-1' }), 'ERR_TLS_CERT_ALTNAME_INVALID');
    const right = await kubeletCert({ dns: ['edge-node-1'], ips: [] });
    const p = await kubeletAttestor(await httpsKubelet(right), { caPem: right.caPem, serverName: 'edge-node-1' });
    expect((await attestPid(p, pid)).selectors).toContain('sa:cluster-admin');
  });

  it('an expired certificate from the configured CA: UNAVAILABLE, no selectors', async () => {
    const expired = await kubeletCert({ notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) });
    await refusedWith(await kubeletAttestor(await httpsKubelet(expired), { caPem: expired.caPem }), 'CERT_HAS_EXPIRED');
  });

  it('a certificate from the configured CA, not yet valid: UNAVAILABLE, no selectors', async () => {
    const future = await kubeletCert({ notBefore: new Date(Date.now() + 86_400_000), notAfter: new Date(Date.now() + 2 * 86_400_000) });
    await refusedWith(await kubeletAttestor(await httpsKubelet(future), { caPem: future.caPem }), 'CERT_NOT_YET_VALID');
  });

  it('plain HTTP on the secure port: UNAVAILABLE, no selectors', async () => {
    const port = await serve(http.createServer());
    await refusedWith(await kubeletAttestor(port), 'ERR_SSL_WRONG_VERSION_NUMBER');
  });
});
