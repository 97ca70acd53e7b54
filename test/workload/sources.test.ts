/**
 * Pod sources against real HTTP(S) servers with a test CA (verification on), serving the corpus kubelet JSON:
 * kubelet secure port (token or client certificate), read-only port, KubeEdge edged and MetaServer, auto
 * probing, the corpus selector expectations end to end, and the source going down.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { kubeletSource } from '../../src/workload/kubelet.js';
import { metaServerSource } from '../../src/workload/metaserver.js';
import { FIXTURES, json, makePki, sorted, spirePart, startHttp, startHttps, tempDir, testContext, writeFakeProc, type TestPki, type TestServer, rejection } from './helpers.js';

/** The agent runs in the corpus's kind node container (SPIRE's kind fixtures assume an agent on that node). */
const KIND_NODE_SELF = '0::/docker/93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26/system.slice/spire-agent.service\n';

const KUBELET = join(FIXTURES, 'kubelet');
const CG = join(FIXTURES, 'cgroup');
const podList = readFileSync(join(KUBELET, 'spire-pod_list.json'), 'utf8');
const kindPodList = readFileSync(join(KUBELET, 'spire-kind_pod_list.json'), 'utf8');
const notRunning = readFileSync(join(KUBELET, 'spire-pod_list_not_running.json'), 'utf8');
const side = (dir: string, id: string): any => JSON.parse(readFileSync(join(dir, `${id}.source.json`), 'utf8')).asserts;
const core = { trustDomain: 'example.org' };
const TOKEN = 'test-sa-token';

/** PIDs of the fake procfs tree, each with a corpus cgroup file. */
const PIDS: Record<string, number> = {
  'spire-cgroups_pid_in_pod': 101,
  'spire-systemd_cgroups_pid_in_pod': 102,
  'spire-cgroups_init_pid_in_pod': 103,
  'spire-cgroups_pid_not_in_pod': 104,
  'spire-cgroups_pid_in_kind_pod': 105,
};

let pki: TestPki;
let wrongPki: TestPki;
let dir: { path: string; remove(): void };
let proc: string;
let body = podList;
let kubelet: TestServer;
let kubeletMtls: TestServer;
let readOnly: TestServer;
let metaserver: TestServer;
let edged: TestServer;

const f = (name: string): string => join(dir.path, name);

beforeAll(async () => {
  pki = await makePki();
  wrongPki = await makePki();
  dir = tempDir();
  writeFileSync(f('ca.pem'), pki.caPem);
  writeFileSync(f('wrong-ca.pem'), wrongPki.caPem);
  writeFileSync(f('token'), TOKEN + '\n');
  writeFileSync(f('client.pem'), pki.clientCertPem);
  writeFileSync(f('client-key.pem'), pki.clientKeyPem);
  proc = f('proc');
  for (const [id, pid] of Object.entries(PIDS)) writeFakeProc(proc, pid, { cgroup: readFileSync(join(CG, `${id}.txt`), 'utf8') });

  kubelet = await startHttps(pki, (req, res) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return json(res, { kind: 'Status', code: 401 }, 401);
    if (req.url !== '/pods') return json(res, {}, 404);
    json(res, body);
  });
  kubeletMtls = await startHttps(
    pki,
    (req, res) => {
      const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
      if (!(req.socket as import('node:tls').TLSSocket).authorized || !peer?.subject) return json(res, {}, 401);
      json(res, podList);
    },
    true,
  );
  readOnly = await startHttp((req, res) => (req.url === '/pods' ? json(res, podList) : json(res, {}, 404)));
  edged = await startHttp((req, res) => (req.url === '/pods' ? json(res, kindPodList) : json(res, {}, 404)));
  metaserver = await startHttps(pki, (req, res) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return json(res, {}, 401);
    const u = new URL(req.url ?? '/', 'https://x');
    if (u.pathname !== '/api/v1/pods' || u.searchParams.get('fieldSelector') !== 'spec.nodeName=k8s-node-1') return json(res, {}, 400);
    json(res, podList);
  });
});

afterAll(async () => {
  await Promise.all([kubelet, kubeletMtls, readOnly, edged, metaserver].map((s) => s?.close()));
  dir?.remove();
});

function kubeletConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    pod_source: 'kubelet',
    node_name: 'k8s-node-1',
    proc_path: proc,
    kubelet_host: '127.0.0.1',
    kubelet_secure_port: kubelet.port,
    kubelet_ca_path: f('ca.pem'),
    kubelet_token_path: f('token'),
    ...extra,
  };
}

async function withAttestor<T>(cfg: Record<string, unknown>, fn: (a: EdgeWorkloadAttestor, ctx: ReturnType<typeof testContext>) => Promise<T>): Promise<T> {
  const ctx = testContext();
  const a = new EdgeWorkloadAttestor(ctx, { env: {}, selfCgroup: KIND_NODE_SELF });
  await a.configure(cfg, core);
  try {
    return await fn(a, ctx);
  } finally {
    await a.close();
  }
}

const signal = (): AbortSignal => new AbortController().signal;

describe('kubelet secure port (token, CA verification on): corpus selectors', () => {
  for (const id of ['spire-cgroups_pid_in_pod', 'spire-systemd_cgroups_pid_in_pod', 'spire-cgroups_init_pid_in_pod', 'spire-cgroups_pid_not_in_pod']) {
    it(id, async () => {
      const want = side(CG, id);
      await withAttestor(kubeletConfig(), async (a) => {
        const got = await a.attest(PIDS[id]!, signal());
        expect(spirePart(got)).toEqual(sorted(want.selectors));
        if (want.in_pod) {
          expect(got).toContain(`container-id:${want.container_id}`);
          expect(got).toContain('runtime:docker');
          expect(got).toContain('pod-source:kubelet');
        } else {
          expect(got).toEqual([]);
        }
      });
    });
  }

  it('spire-pod_list: every pod_with_selectors expectation', async () => {
    const want = side(KUBELET, 'spire-pod_list');
    await withAttestor(kubeletConfig(), async (a) => {
      for (const p of want.pods_with_selectors) {
        const pid = p.container_id === '34a2062fd26c805aa8cf814cdfe479322b791f80afb9ea4db02d50375df14b41' ? PIDS['spire-cgroups_init_pid_in_pod']! : PIDS['spire-cgroups_pid_in_pod']!;
        expect(spirePart(await a.attest(pid, signal()))).toEqual(sorted(p.selectors));
      }
    });
  });

  it('the request carries the bearer token and the index is reused (no fetch per attestation)', async () => {
    const before = kubelet.requests.length;
    await withAttestor(kubeletConfig(), async (a) => {
      for (let i = 0; i < 50; i++) await a.attest(101, signal());
      expect(a.sourceStatus()?.fetches).toBe(1);
    });
    const reqs = kubelet.requests.slice(before);
    expect(reqs).toHaveLength(1);
    expect(reqs[0]!.auth).toBe(`Bearer ${TOKEN}`);
  });

  it('a wrong CA is refused (TLS verification stays on)', async () => {
    const src = kubeletSource({ host: '127.0.0.1', securePort: kubelet.port, readOnlyPort: 0, caPath: f('wrong-ca.pem'), tokenPath: f('token'), skipVerification: false, timeoutMs: 5000, maxBodyBytes: 1 << 24 });
    const e = await rejection(src.list(signal()));
    src.close();
    expect(e.code).toBe('ERR_WORKLOAD_SOURCE_TLS');
    expect(e.grpcCode).toBe(GrpcCode.UNAVAILABLE);
    // and through the attestor: no snapshot, a clear UNAVAILABLE
    await withAttestor(kubeletConfig({ kubelet_ca_path: f('wrong-ca.pem') }), async (a) => {
      const err = await rejection(a.attest(101, signal()));
      expect(err.code).toBe('ERR_WORKLOAD_NO_SNAPSHOT');
      expect(err.grpcCode).toBe(GrpcCode.UNAVAILABLE);
      expect(a.sourceStatus()?.lastError).toMatch(/ERR_WORKLOAD_SOURCE_TLS/);
    });
  });

  it('skipping verification must be explicit and works only when asked', async () => {
    await withAttestor(kubeletConfig({ kubelet_ca_path: f('wrong-ca.pem'), kubelet_skip_verification: true }), async (a) => {
      expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
    });
  });

  it('a missing token is refused by the server (HTTP 401)', async () => {
    const src = kubeletSource({ host: '127.0.0.1', securePort: kubelet.port, readOnlyPort: 0, caPath: f('ca.pem'), skipVerification: false, timeoutMs: 5000, maxBodyBytes: 1 << 24 });
    const e = await rejection(src.list(signal()));
    src.close();
    expect(e.code).toBe('ERR_WORKLOAD_SOURCE_HTTP_STATUS');
  });

  it('an X.509 client certificate authenticates instead of the token', async () => {
    await withAttestor(
      kubeletConfig({ kubelet_secure_port: kubeletMtls.port, kubelet_client_cert_path: f('client.pem'), kubelet_client_key_path: f('client-key.pem') }),
      async (a) => {
        expect(await a.attest(101, signal())).toContain('pod-uid:2c48913c-b29f-11e7-9350-020968147796');
      },
    );
    expect(kubeletMtls.requests.at(-1)!.clientCert).toBe(true);
    expect(kubeletMtls.requests.at(-1)!.auth).toBeUndefined();
  });

  it('a body over max_pod_list_bytes is refused', async () => {
    await withAttestor(kubeletConfig({ max_pod_list_bytes: 1000 }), async (a) => {
      expect(a.sourceStatus()?.lastError).toMatch(/ERR_WORKLOAD_SOURCE_TOO_LARGE/);
    });
  });
});

describe('spire-pod_list_not_running', () => {
  it('container not running: retried until the deadline, then DEADLINE_EXCEEDED', async () => {
    body = notRunning;
    try {
      await withAttestor(kubeletConfig({ miss_retry_deadline: '300ms' }), async (a) => {
        const before = kubelet.requests.length;
        const e = await rejection(a.attest(101, signal()));
        expect(e.code).toBe('ERR_WORKLOAD_POD_NOT_FOUND');
        expect(e.grpcCode).toBe(GrpcCode.DEADLINE_EXCEEDED);
        expect(kubelet.requests.length - before).toBeGreaterThanOrEqual(1);
      });
    } finally {
      body = podList;
    }
  });
  it('with disable_container_selectors the pod is matched by UID: exactly the stated pod selectors', async () => {
    const want = side(KUBELET, 'spire-pod_list_not_running');
    body = notRunning;
    try {
      await withAttestor(kubeletConfig({ disable_container_selectors: true }), async (a) => {
        expect(spirePart(await a.attest(101, signal()))).toEqual(sorted(want.pod_selectors_when_container_selectors_disabled));
      });
    } finally {
      body = podList;
    }
  });
});

describe('KubeEdge sources', () => {
  it('edged read-only endpoint (kind pod list, containerd)', async () => {
    const want = side(KUBELET, 'spire-kind_pod_list').pods_with_selectors[0];
    await withAttestor({ pod_source: 'edged', proc_path: proc, edged_port: edged.port }, async (a) => {
      const got = await a.attest(PIDS['spire-cgroups_pid_in_kind_pod']!, signal());
      expect(spirePart(got)).toEqual(sorted(want.selectors));
      expect(got).toContain('runtime:containerd');
      expect(got).toContain('pod-source:edged');
    });
  });
  it('spire-cgroups_pid_in_kind_pod selectors (corpus cgroup item)', async () => {
    const want = side(CG, 'spire-cgroups_pid_in_kind_pod');
    await withAttestor({ pod_source: 'edged', proc_path: proc, edged_port: edged.port }, async (a) => {
      expect(spirePart(await a.attest(105, signal()))).toEqual(sorted(want.selectors));
    });
  });
  it('MetaServer over https with a token and the node field selector', async () => {
    await withAttestor(
      { pod_source: 'metaserver', node_name: 'k8s-node-1', proc_path: proc, metaserver: [{ url: metaserver.url, token_path: f('token'), ca_path: f('ca.pem') }] },
      async (a) => {
        const got = await a.attest(101, signal());
        expect(got).toContain('pod-source:metaserver');
        expect(spirePart(got)).toEqual(sorted(side(CG, 'spire-cgroups_pid_in_pod').selectors));
      },
    );
    expect(metaserver.requests.at(-1)!.path).toBe('/api/v1/pods?fieldSelector=spec.nodeName%3Dk8s-node-1');
  });
  it('MetaServer with a wrong CA is refused', async () => {
    const src = metaServerSource({ url: metaserver.url, nodeName: 'k8s-node-1', tokenPath: f('token'), caPath: f('wrong-ca.pem'), skipVerification: false, timeoutMs: 5000, maxBodyBytes: 1 << 24 });
    const e = await rejection(src.list(signal()));
    src.close();
    expect(e.code).toBe('ERR_WORKLOAD_SOURCE_TLS');
  });
  it('kubelet read-only port (HCL1 block form)', async () => {
    await withAttestor({ pod_source: 'kubelet', proc_path: proc, kubelet: [{ host: '127.0.0.1', read_only_port: readOnly.port }] }, async (a) => {
      expect(await a.attest(102, signal())).toContain('container-name:blog');
    });
  });
});

describe('auto probing', () => {
  it('skips sources that do not answer and picks edged', async () => {
    const closed = await startHttp(() => undefined);
    const deadPort = closed.port;
    await closed.close();
    await withAttestor(
      { pod_source: 'auto', proc_path: proc, kubelet_token_path: f('no-such-token'), kubelet_read_only_port: deadPort, edged_port: edged.port },
      async (a, ctx) => {
        expect(a.sourceStatus()?.source).toBe('edged');
        expect(await a.attest(105, signal())).toContain('pod-source:edged');
        expect(ctx.log.lines.some((l) => l.message === 'pod source selected')).toBe(true);
      },
    );
  });
  it('prefers the kubelet secure port when a token is present', async () => {
    await withAttestor(
      { pod_source: 'auto', proc_path: proc, kubelet_host: '127.0.0.1', kubelet_secure_port: kubelet.port, kubelet_ca_path: f('ca.pem'), kubelet_token_path: f('token'), edged_port: edged.port },
      async (a) => {
        expect(a.sourceStatus()?.source).toBe('kubelet');
      },
    );
  });
  it('nothing answers yet: Configure still succeeds (SPIRE would not start otherwise), containers fail closed until a source answers', async () => {
    let up = false;
    const late = await startHttp((req, res) => (up && req.url === '/pods' ? json(res, kindPodList) : json(res, { message: 'starting' }, 503)));
    const ctx = testContext();
    const a = new EdgeWorkloadAttestor(ctx, { env: {}, selfCgroup: KIND_NODE_SELF, probeTimeoutMs: 500 });
    try {
      await a.configure({ pod_source: 'auto', proc_path: proc, kubelet_token_path: f('none'), edged_port: late.port, miss_retry_deadline: '300ms' }, core);
      expect(ctx.log.lines.some((l) => l.level === 'warn' && /no pod source answered yet/.test(l.message))).toBe(true);
      // A host process needs no pod data.
      expect(await a.attest(104, signal())).toEqual([]);
      // A container process cannot be attested without pod data: no selectors are invented.
      const e = await rejection(a.attest(105, signal()));
      expect([GrpcCode.UNAVAILABLE, GrpcCode.DEADLINE_EXCEEDED]).toContain(e.grpcCode);
      // edged comes up: the next miss re-probes, picks it and finds the pod.
      up = true;
      expect(await a.attest(105, signal())).toContain('pod-source:edged');
      expect(a.sourceStatus()?.source).toBe('edged');
    } finally {
      await a.close();
      await late.close();
    }
  });
});

describe("SPIRE's k8s attestor keys, against real kubelet-shaped servers", () => {
  // Only SPIRE's keys (plus proc_path, which SPIRE has no need for); no pod_source: auto, kubelet first.
  const spire = (extra: Record<string, unknown>): Record<string, unknown> => ({ proc_path: proc, kubelet_secure_port: kubelet.port, kubelet_ca_path: f('ca.pem'), ...extra });

  it('token_path and kubelet_ca_path: the secure port with the bearer token, verified', async () => {
    await withAttestor(spire({ token_path: f('token') }), async (a) => {
      expect(a.sourceStatus()?.source).toBe('kubelet');
      expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
    });
  });

  it('certificate_path and private_key_path: X.509 client authentication', async () => {
    await withAttestor(
      spire({ kubelet_secure_port: kubeletMtls.port, certificate_path: f('client.pem'), private_key_path: f('client-key.pem'), token_path: f('no-such-token') }),
      async (a) => {
        expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
      },
    );
  });

  it('use_anonymous_authentication: no token and no client certificate are sent', async () => {
    const seen: (string | undefined)[] = [];
    const anonymous = await startHttps(pki, (req, res) => {
      seen.push(req.headers.authorization);
      json(res, podList);
    });
    try {
      await withAttestor({ proc_path: proc, kubelet_secure_port: anonymous.port, kubelet_ca_path: f('ca.pem'), use_anonymous_authentication: true }, async (a) => {
        expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
      });
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((h) => h === undefined)).toBe(true);
    } finally {
      await anonymous.close();
    }
  });

  it('skip_kubelet_verification: a kubelet certificate from another CA is accepted (and refused without it)', async () => {
    await withAttestor(spire({ token_path: f('token'), kubelet_ca_path: f('wrong-ca.pem'), skip_kubelet_verification: true }), async (a) => {
      expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
    });
    await withAttestor(spire({ token_path: f('token'), kubelet_ca_path: f('wrong-ca.pem'), miss_retry_deadline: '0s' }), async (a) => {
      expect((await rejection(a.attest(101, signal()))).grpcCode).toBe(GrpcCode.UNAVAILABLE);
    });
  });

  it('max_poll_attempts x poll_retry_interval bounds the wait for a container, one pod-list request per interval', async () => {
    writeFakeProc(proc, 160, { cgroup: '0::/kubepods/besteffort/pod99999999-b29f-11e7-9350-020968147796/' + 'c'.repeat(64) + '\n' });
    await withAttestor(spire({ token_path: f('token'), max_poll_attempts: 4, poll_retry_interval: '150ms', poll_interval: '1h', max_staleness: '2h' }), async (a) => {
      const before = kubelet.requests.length;
      const started = performance.now();
      const e = await rejection(a.attest(160, signal()));
      const took = performance.now() - started;
      expect(e.code).toBe('ERR_WORKLOAD_POD_NOT_FOUND');
      expect(took).toBeGreaterThanOrEqual(500);
      expect(took).toBeLessThan(3000);
      const requests = kubelet.requests.length - before;
      expect(requests).toBeGreaterThanOrEqual(2);
      expect(requests).toBeLessThanOrEqual(5);
    });
  });

  it('verbose_container_locator_logs logs what the locator saw; reload_interval is logged as ignored, with why', async () => {
    await withAttestor(spire({ token_path: f('token'), verbose_container_locator_logs: true, reload_interval: '1m' }), async (a, ctx) => {
      await a.attest(101, signal());
      const line = ctx.log.lines.find((l) => l.message === 'container locator')!;
      expect(line.fields).toMatchObject({ pid: 101, pod_uid: expect.any(String), container_id: expect.stringMatching(/^[0-9a-f]{64}$/) });
      expect(String(line.fields?.['cgroup'])).toMatch(/kubepods/);
      expect(ctx.log.lines.some((l) => /setting "reload_interval" is accepted and ignored: .*read from disk at every request/.test(l.message))).toBe(true);
    });
  });
});

describe('logs say what is going on', () => {
  it('auto with nothing answering: "probing", never "serving the last snapshot" without one', async () => {
    const down = await startHttp((_req, res) => json(res, { message: 'starting' }, 503));
    const ctx = testContext();
    const a = new EdgeWorkloadAttestor(ctx, { env: {}, selfCgroup: KIND_NODE_SELF, probeTimeoutMs: 300 });
    try {
      await a.configure({ pod_source: 'auto', proc_path: proc, kubelet_token_path: f('none'), edged_port: down.port, poll_interval: '100ms' }, core);
      await waitFor(() => ctx.log.lines.filter((l) => l.level === 'warn').length >= 2);
      const configured = ctx.log.lines.find((l) => l.message === 'workload attestor configured')!;
      expect(configured.fields?.['pod_source']).toBe('auto (probing)');
      expect(ctx.log.lines.some((l) => /serving the last snapshot/.test(l.message))).toBe(false);
      expect(ctx.log.lines.some((l) => 'snapshot_age_ms' in (l.fields ?? {}))).toBe(false);
      expect(ctx.log.lines.some((l) => /no pod source answered yet; pods cannot be attested until one does/.test(l.message))).toBe(true);
    } finally {
      await a.close();
      await down.close();
    }
  });

  it('a source that is down before its first answer: "no pod snapshot yet"', async () => {
    const closed = await startHttp(() => undefined);
    await closed.close();
    await withAttestor({ pod_source: 'edged', proc_path: proc, edged_port: closed.port }, async (_a, ctx) => {
      const warn = ctx.log.lines.find((l) => l.level === 'warn')!;
      expect(warn.message).toBe('pod source unreachable; no pod snapshot yet, pods cannot be attested until it answers');
      expect(warn.fields?.['snapshot_age_ms']).toBeUndefined();
    });
  });

  it.each([
    ['token', { kubelet_token_path: '/nonexistent/sa/token' }, /cannot read the service account token \/nonexistent\/sa\/token: no such file \(ENOENT\)/],
    ['CA bundle', { kubelet_ca_path: '/nonexistent/sa/ca.crt' }, /cannot read the CA bundle \/nonexistent\/sa\/ca\.crt: no such file \(ENOENT\)/],
  ])('an unreadable %s is named, with its path, in the log and the error', async (_what, extra, message) => {
    await withAttestor(kubeletConfig({ ...extra, miss_retry_deadline: '0s' }), async (a, ctx) => {
      expect(ctx.log.lines.some((l) => message.test(String(l.fields?.['error'] ?? '')))).toBe(true);
      expect(a.sourceStatus()?.lastError).toMatch(message);
      const e = await rejection(a.attest(101, signal()));
      expect(e.grpcCode).toBe(GrpcCode.UNAVAILABLE);
      expect(String(e.fields?.['last_error'] ?? e.message)).toMatch(message);
    });
  });
});

describe('the source going down', () => {
  it('serves the last snapshot (logging its age), then fails clearly past max_staleness', async () => {
    let up = true;
    const flaky = await startHttps(pki, (req, res) => {
      if (!up) {
        req.socket.destroy();
        return;
      }
      json(res, podList);
    });
    try {
      await withAttestor(
        kubeletConfig({ kubelet_secure_port: flaky.port, poll_interval: '100ms', max_staleness: '600ms', miss_retry_deadline: '0s' }),
        async (a, ctx) => {
          expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
          up = false;
          // wait until a poll has failed, then the cached answer is still served
          await waitFor(() => a.sourceStatus()?.lastError !== undefined);
          expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
          expect(a.sourceStatus()!.ageMs).toBeGreaterThan(0);
          expect(ctx.log.lines.some((l) => l.level === 'warn' && l.fields?.['snapshot_age_ms'] !== undefined)).toBe(true);
          // past max_staleness: a clear error
          await waitFor(() => (a.sourceStatus()!.ageMs ?? 0) > 600);
          const e = await rejection(a.attest(101, signal()));
          expect(e.code).toBe('ERR_WORKLOAD_SNAPSHOT_STALE');
          expect(e.grpcCode).toBe(GrpcCode.UNAVAILABLE);
          // and it recovers when the source comes back
          up = true;
          await waitFor(() => a.sourceStatus()?.lastError === undefined);
          expect(await a.attest(101, signal())).toContain('pod-name:blog-24ck7');
        },
      );
    } finally {
      await flaky.close();
    }
  });

  it('concurrent misses share one refresh (single-flight)', async () => {
    writeFakeProc(proc, 150, { cgroup: '0::/kubepods/besteffort/pod99999999-b29f-11e7-9350-020968147796/' + 'e'.repeat(64) + '\n' });
    await withAttestor(kubeletConfig({ miss_retry_deadline: '0s', poll_interval: '1h', max_staleness: '2h' }), async (a) => {
      const before = kubelet.requests.length;
      const results = await Promise.allSettled(Array.from({ length: 50 }, () => a.attest(150, signal())));
      expect(results.map((r) => (r.status === 'rejected' ? (r.reason as any).code : 'ok'))).toEqual(Array(50).fill('ERR_WORKLOAD_POD_NOT_FOUND'));
      expect(kubelet.requests.length - before).toBe(1);
    });
  });

  it('a miss that appears on refresh is found without waiting for the poll', async () => {
    const cid = 'f'.repeat(64);
    writeFakeProc(proc, 151, { cgroup: `0::/kubepods/besteffort/pod2c48913c-b29f-11e7-9350-020968147796/${cid}\n` });
    const list = JSON.parse(podList);
    await withAttestor(kubeletConfig({ poll_interval: '1h', max_staleness: '2h' }), async (a) => {
      const blog = list.items.find((p: any) => p.metadata.name === 'blog-24ck7');
      blog.status.containerStatuses.push({ name: 'late', containerID: `containerd://${cid}`, image: 'late:1', imageID: 'late@sha256:' + '1'.repeat(64) });
      body = JSON.stringify(list);
      try {
        const got = await a.attest(151, signal());
        expect(got).toContain('container-name:late');
        expect(got).toContain('runtime:containerd');
      } finally {
        body = podList;
      }
    });
  });

  it('honours cancellation while waiting for a pod', async () => {
    writeFakeProc(proc, 152, { cgroup: '0::/kubepods/besteffort/pod99999999-b29f-11e7-9350-020968147796/' + 'd'.repeat(64) + '\n' });
    await withAttestor(kubeletConfig({ miss_retry_deadline: '30s' }), async (a) => {
      const ac = new AbortController();
      const p = a.attest(152, ac.signal);
      setTimeout(() => ac.abort(), 100);
      const e = await rejection(p);
      expect(e.grpcCode).toBe(GrpcCode.CANCELLED);
    });
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 25));
  }
}
