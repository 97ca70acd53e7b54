/**
 * Nested SPIRE with TPM at both levels, and disconnected operation, on real SPIRE:
 *
 *   cloud spire-server (root CA, tpm-server)
 *     └─ edge gateway spire-agent (swtpm A, tpm-agent, edge-workload)
 *          └─ edge spire-server in a pod on that node (UpstreamAuthority "spire" through agent A, tpm-server)
 *               ├─ edge spire-agent B (swtpm B) ── pod greeter-server
 *               └─ edge spire-agent C (swtpm C) ── pod greeter-client
 *
 * Workload SVIDs chain leaf → edge intermediate → cloud root, and the two edge workloads talk mTLS. Then the cloud
 * goes away (and the edge nodes' kubelets with it): the edge server keeps issuing and rotating SVIDs, edge agents
 * keep re-attesting to it with our TPM plugin, and edge-workload keeps answering from its pod snapshot, until the
 * edge intermediate expires. The cloud comes back and the edge re-joins by itself (agents that exited are started
 * again, as their supervisor would).
 */
import { type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloudServer, EDGE_SERVER_WORKLOAD, edgeAgent, edgeServer, gatewayAgent, TRUST_DOMAIN, type AgentParams, type ServerParams } from '../../kubeedge-demo/topology.js';
import { repoRoot } from '../helpers/binaries.js';
import { jsonLines } from '../helpers/child-output.js';
import { makePod, PodCgroups, startFakeKubelet, type FakeKubelet, type Pod } from '../helpers/edge-node.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { ekPubHash, freePort, NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest, type SpireLogLine } from '../helpers/spire.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';
import { agentRoleOptions, serverRoleOptions } from '../helpers/topology.js';

const GOLDEN_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const TD = TRUST_DOMAIN;
/** The edge server's CA lifetime: the longest the edge can run without the cloud. Short, so the test sees the end. */
const EDGE_CA_TTL_S = 60;
const EDGE_SVID_TTL_S = 10;
const EDGE_AGENT_TTL_S = 20;
const installs = spireUnderTest();
const targets = process.env['SPIRE_TOPOLOGY_ALL'] ? installs : installs.slice(0, 1);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function pemChain(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map((c) => new X509Certificate(c));
}

if (targets.length === 0) {
  describe('nested SPIRE at the edge', () => {
    it('runs on real SPIRE', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(targets.map((s) => [s.version, s] as const))('nested SPIRE at the edge, SPIRE %s', (_v, spire) => {
  let work: string;
  let cloud: SpireServer;
  let edge: SpireServer;
  let gateway: SpireAgent;
  const edgeAgents: SpireAgent[] = [];
  const kubelets: FakeKubelet[] = [];
  const tpms: SwtpmHandle[] = [];
  const cgroups = new PodCgroups();
  const stops: Array<() => Promise<void>> = [];
  const edgeServerPod = makePod({ name: 'spire-server', namespace: EDGE_SERVER_WORKLOAD.namespace, serviceAccount: EDGE_SERVER_WORKLOAD.serviceAccount }, 'edge-gw');
  const greeterServer = makePod({ name: 'greeter-server', namespace: 'demo', serviceAccount: 'greeter-server' }, 'edge-b');
  const greeterClient = makePod({ name: 'greeter-client', namespace: 'demo', serviceAccount: 'greeter-client' }, 'edge-c');
  const idOf = (p: Pod) => `spiffe://${TD}/ns/${p.namespace}/sa/${p.serviceAccount}`;
  let mtls: { server: ChildProcess; client: ChildProcess; clientLog: Array<Record<string, unknown>>; serverLog: Array<Record<string, unknown>> };
  let cloudRootPem: string;

  // The roles of kubeedge-demo/topology.ts (what the manifests deploy), with temp paths, loopback ports, short TTLs.
  const serverParams = (dir: string, ttl: ServerParams['ttl']): ServerParams => ({ dataDir: join(dir, 'data'), ekCaPaths: [join(work, 'ek-ca.pem')], policyPath: join(work, 'policy.yaml'), ttl });
  const agentParams = (tpm: SwtpmHandle, k: FakeKubelet, node: string): AgentParams => {
    const tpmWorkDir = join(work, `tpm-work-${node}`);
    mkdirSync(tpmWorkDir, { recursive: true });
    return {
      tpmTcti: tpm.tcti,
      eventLogPath: join(work, 'bbm'),
      tpmWorkDir,
      podSource: { kind: 'kubelet', host: '127.0.0.1', securePort: k.port, caPath: k.caPath, tokenPath: k.tokenPath },
      nodeName: { name: node },
      maxStaleness: '1h',
    };
  };

  async function fetchSvid(pod: Pod, agent: SpireAgent, timeoutMs = 20_000): Promise<{ ok: boolean; spiffeId?: string; certChainPem?: string; bundlePem?: string; code?: number }> {
    const child = cgroups.spawn(pod, process.execPath, ['--import', 'tsx', join(repoRoot, 'test/helpers/workload-fetch.ts')], {
      cwd: repoRoot,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}`, FETCH_TIMEOUT_MS: String(timeoutMs) },
    });
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    await new Promise((r) => child.once('exit', r));
    return JSON.parse(out.trim().split('\n').pop() ?? '{}');
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'e2e-nested-'));
    tpms.push(...(await Promise.all([startSwtpm(), startSwtpm(), startSwtpm()])));
    stops.push(...tpms.map((t) => () => t.stop()));
    const log = new Uint8Array(readFileSync(GOLDEN_LOG));
    await Promise.all(tpms.map((t) => simulateMeasuredBoot(t.tcti, log)));
    writeFileSync(join(work, 'bbm'), log);
    writeFileSync(join(work, 'ek-ca.pem'), tpms[0]!.rootCaPem + tpms[0]!.intermediateCaPem);
    const { createPolicyCommand } = await import('../../src/cli/policy-create.js');
    writeFileSync(join(work, 'policy.yaml'), createPolicyCommand(log, { pcrs: [0, 2, 4, 7], name: 'golden' }));
    for (const pods of [[edgeServerPod], [greeterServer], [greeterClient]]) {
      const k = await startFakeKubelet(join(work, `kubelet-${pods[0]!.name}`), () => pods);
      kubelets.push(k);
      stops.push(() => k.close());
    }

    // ---- cloud ----
    const cloudDir = join(work, 'cloud');
    cloud = await SpireServer.start({ spire, dir: cloudDir, ...serverRoleOptions(cloudServer(serverParams(cloudDir, { ca: '24h', agent: '10m', svid: '1h' }))) });
    stops.push(() => cloud.stop());
    cloudRootPem = await cloud.bundlePem();
    gateway = await SpireAgent.start({ spire, dir: join(work, 'gateway'), server: cloud, ...agentRoleOptions(gatewayAgent(agentParams(tpms[0]!, kubelets[0]!, 'edge-gw'))) });
    stops.push(() => gateway.stop());
    const gatewayId = `spiffe://${TD}/spire/agent/tpm/${ekPubHash(tpms[0]!.ekCertRsaDer)}`;
    await cloud.createEntry(['-parentID', gatewayId, '-spiffeID', `spiffe://${TD}${EDGE_SERVER_WORKLOAD.spiffeIdPath}`, '-selector', `k8s:ns:${EDGE_SERVER_WORKLOAD.namespace}`, '-selector', `k8s:sa:${EDGE_SERVER_WORKLOAD.serviceAccount}`, '-downstream']);
    // The downstream entry must reach the gateway's cache before the edge server asks for its CA.
    for (let i = 0; i < 60 && !(await fetchSvid(edgeServerPod, gateway, 3000)).ok; i++) await sleep(500);

    // ---- edge server, in a pod on the gateway node ----
    const edgePort = await freePort();
    const edgeDir = join(work, 'edge');
    edge = await SpireServer.start({
      spire,
      dir: edgeDir,
      port: edgePort,
      launch: (cmd, args, opts) => cgroups.spawn(edgeServerPod, cmd, args, opts),
      ...serverRoleOptions(
        edgeServer({
          ...serverParams(edgeDir, { ca: `${EDGE_CA_TTL_S}s`, agent: `${EDGE_AGENT_TTL_S}s`, svid: `${EDGE_SVID_TTL_S}s` }),
          upstream: { address: '127.0.0.1', port: cloud.port },
          gatewayAgentSocket: gateway.socketPath,
        }),
      ),
    });
    stops.push(() => edge.stop());

    // ---- edge agents B and C, and their workloads ----
    for (const [i, pod, node] of [[1, greeterServer, 'edge-b'], [2, greeterClient, 'edge-c']] as const) {
      const a = await SpireAgent.start({ spire, dir: join(work, `edge-agent-${node}`), server: edge, ...agentRoleOptions(edgeAgent(agentParams(tpms[i]!, kubelets[i]!, node))) });
      edgeAgents.push(a);
      stops.push(() => a.stop());
      const agentId = `spiffe://${TD}/spire/agent/tpm/${ekPubHash(tpms[i]!.ekCertRsaDer)}`;
      await edge.createEntry(['-parentID', agentId, '-spiffeID', idOf(pod), '-selector', `k8s:ns:${pod.namespace}`, '-selector', `k8s:sa:${pod.serviceAccount}`, '-x509SVIDTTL', String(EDGE_SVID_TTL_S)]);
    }
  }, 240_000);

  afterAll(async () => {
    mtls?.server.kill('SIGTERM');
    mtls?.client.kill('SIGTERM');
    await cgroups.cleanup();
    for (const s of stops.reverse()) await s().catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('edge agents are attested by the edge server with our TPM plugin; the edge server got its CA through the gateway agent', async () => {
    const agents = await edge.agents();
    expect(agents.map((a) => a.id.path).sort()).toEqual(tpms.slice(1).map((t) => `/spire/agent/tpm/${ekPubHash(t.ekCertRsaDer)}`).sort());
    for (const a of agents) expect(a.selectors.map((s) => `${s.type}:${s.value}`)).toContain('tpm:policy:golden');
    // The cloud never saw them: only the gateway is attested there.
    expect((await cloud.agents()).map((a) => a.id.path)).toEqual([`/spire/agent/tpm/${ekPubHash(tpms[0]!.ekCertRsaDer)}`]);
  });

  it('workload SVIDs chain leaf → edge intermediate → cloud root', async () => {
    const r = await fetchSvid(greeterServer, edgeAgents[0]!, 30_000);
    expect(r).toMatchObject({ ok: true, spiffeId: idOf(greeterServer) });
    const chain = pemChain(r.certChainPem!);
    expect(chain.length).toBeGreaterThanOrEqual(2);
    const [leaf, intermediate] = chain as [X509Certificate, X509Certificate];
    expect(intermediate.ca).toBe(true);
    expect(leaf.verify(intermediate.publicKey)).toBe(true);
    const roots = pemChain(cloudRootPem);
    expect(roots.some((root) => intermediate.verify(root.publicKey))).toBe(true);
    // The workload's bundle is the cloud root: nested servers share the trust domain's roots.
    expect(pemChain(r.bundlePem!).map((c) => c.fingerprint256)).toEqual(expect.arrayContaining(roots.map((c) => c.fingerprint256)));
  });

  it('two edge workloads on two edge nodes talk mTLS', async () => {
    const port = await freePort();
    const main = join(repoRoot, 'kubeedge-demo/mtls/main.ts');
    const server = cgroups.spawn(greeterServer, process.execPath, ['--import', 'tsx', main], {
      cwd: repoRoot,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${edgeAgents[0]!.socketPath}`, ROLE: 'server', PORT: String(port), ALLOWED_CLIENT_ID: idOf(greeterClient) },
    });
    const client = cgroups.spawn(greeterClient, process.execPath, ['--import', 'tsx', main], {
      cwd: repoRoot,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${edgeAgents[1]!.socketPath}`, ROLE: 'client', SERVER_URL: `https://127.0.0.1:${port}/`, SERVER_ID: idOf(greeterServer), INTERVAL_MS: '1000' },
    });
    mtls = { server, client, clientLog: jsonLines(client), serverLog: jsonLines(server) };
    for (let i = 0; i < 60 && !mtls.clientLog.some((l) => l['message'] === 'response'); i++) await sleep(500);
    const ok = mtls.clientLog.find((l) => l['message'] === 'response');
    expect(ok, JSON.stringify(mtls.clientLog.slice(-3))).toMatchObject({ status: 200, server: idOf(greeterServer) });
  });

  it('disconnected: the edge keeps issuing, rotating and re-attesting until its intermediate expires; then the cloud comes back and the edge re-joins', async () => {
    const intermediateOf = async () => pemChain((await fetchSvid(greeterServer, edgeAgents[0]!, 30_000)).certChainPem ?? '')[1];
    const before = await intermediateOf();
    const caExpiry = Date.parse(before!.validTo);
    // Cut the cloud, and the edge nodes' pod sources with it (edged/MetaServer down).
    const tCut = Date.now();
    await cloud.stop();
    await kubelets[1]!.close();
    await kubelets[2]!.close();
    const decisionsOffline = edge.proc.countFrom((l: SpireLogLine) => l.msg === 'Attestation decision' && l['outcome'] === 'accepted');

    // Offline: keep watching rotations seen by the mTLS client, fresh workload attestations (from the snapshot).
    const freshFetches: Array<{ at: number; ok: boolean }> = [];
    const edgeAgentsExited: number[] = [];
    const deadline = caExpiry + 20_000;
    while (Date.now() < deadline) {
      const r = await fetchSvid(greeterClient, edgeAgents[1]!, 4_000).catch(() => ({ ok: false }));
      freshFetches.push({ at: Date.now(), ok: r.ok });
      for (const [i, a] of edgeAgents.entries()) if (!a.proc.running && !edgeAgentsExited.includes(i)) edgeAgentsExited.push(i);
      await sleep(2_000);
    }
    const okOffline = freshFetches.filter((f) => f.ok);
    const lastOk = Math.max(...okOffline.map((f) => f.at));
    const responses = mtls.clientLog.filter((l) => l['message'] === 'response' && (l['at'] as number) > tCut);
    const serverSerialsOffline = new Set(responses.map((r) => r['serverSerial']));
    // The edge kept working offline: re-attestations with our TPM plugin, new workload SVIDs, fresh attestations
    // from edge-workload's snapshot with the kubelets gone, mTLS across rotations.
    expect(decisionsOffline().length).toBeGreaterThanOrEqual(2);
    expect(okOffline.length).toBeGreaterThan(2);
    expect(serverSerialsOffline.size).toBeGreaterThanOrEqual(2);
    // ... until the edge intermediate expired: after that nothing new is issued.
    expect(lastOk).toBeLessThanOrEqual(caExpiry + 5_000);
    expect(freshFetches.filter((f) => f.at > caExpiry + 5_000).every((f) => !f.ok)).toBe(true);

    // ---- the cloud comes back (same data and keys), the kubelets too ----
    const tBack = Date.now();
    await cloud.restart();
    for (const i of [1, 2]) {
      const k = await startFakeKubelet(join(work, `kubelet-${i}-back`), () => [[greeterServer], [greeterClient]][i - 1]!);
      kubelets[i] = k;
      stops.push(() => k.close());
    }
    // The kubelets came back on new ports: point the plugins at them (a restart is what a config change means).
    // Agents that exited are started again, as their supervisor would; nobody touches the edge server.
    for (const [i, a] of edgeAgents.entries()) {
      const conf = readFileSync(a.configPath, 'utf8').replace(/kubelet_secure_port = \d+/, `kubelet_secure_port = ${kubelets[i + 1]!.port}`).replace(/kubelet_ca_path = "[^"]+"/, `kubelet_ca_path = "${kubelets[i + 1]!.caPath}"`).replace(/kubelet_token_path = "[^"]+"/, `kubelet_token_path = "${kubelets[i + 1]!.tokenPath}"`);
      writeFileSync(a.configPath, conf);
    }
    let rejoined: X509Certificate | undefined;
    for (let i = 0; i < 90 && !rejoined; i++) {
      for (const a of edgeAgents) if (!a.proc.running) await a.restart(false).catch(() => undefined);
      const r = await fetchSvid(greeterServer, edgeAgents[0]!, 4_000).catch(() => ({ ok: false, certChainPem: undefined }));
      const inter = r.ok ? pemChain(r.certChainPem ?? '')[1] : undefined;
      if (inter && inter.serialNumber !== before!.serialNumber && Date.parse(inter.validTo) > Date.now()) rejoined = inter;
      else await sleep(1_000);
    }
    expect(rejoined, 'a new edge intermediate from the cloud after it came back').toBeDefined();
    expect(pemChain(cloudRootPem).some((root) => rejoined!.verify(root.publicKey))).toBe(true);
    const window = {
      spire: spire.version,
      edge_ca_ttl_s: EDGE_CA_TTL_S,
      edge_svid_ttl_s: EDGE_SVID_TTL_S,
      edge_agent_ttl_s: EDGE_AGENT_TTL_S,
      intermediate_left_at_cut_s: Math.round((caExpiry - tCut) / 1000),
      offline_window_s: Math.round((lastOk - tCut) / 1000),
      reattestations_offline: decisionsOffline().length,
      server_svid_rotations_seen_offline: serverSerialsOffline.size,
      edge_agents_exited_offline: edgeAgentsExited.length,
      rejoin_after_cloud_back_s: Math.round((Date.now() - tBack) / 1000),
    };
    process.stderr.write(`offline window ${JSON.stringify(window)}\n`);
  }, 420_000);
});
