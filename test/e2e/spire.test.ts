/**
 * Real SPIRE end to end: an unmodified spire-server and spire-agent (each pinned version) load our plugin
 * binaries through plugin_cmd + plugin_checksum and issue SVIDs only after TPM attestation passes.
 *
 * One edge node per SPIRE version: a swtpm whose PCRs were extended with a real UEFI event log (Secure Boot on),
 * a boot policy made from that log with `spire-edge-attest policy create`, pods as real cgroups with real
 * processes, and a kubelet that is a real HTTPS server. A second swtpm node, booted from another firmware's log,
 * must fail the policy. Tests in a version's block run in order and share that node (the last one changes
 * its boot).
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { jsonLines } from '../helpers/child-output.js';
import { makePod, PodCgroups, startFakeKubelet, type FakeKubelet, type Pod } from '../helpers/edge-node.js';
import { pcrEvent2Sha256, simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { ekPubHash, freePort, NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest, type SpireInstall, type SpireLogLine } from '../helpers/spire.js';
import { extendPcrs, startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const GOLDEN_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const OTHER_LOG = `${repoRoot}test/fixtures/eventlog/gtt-ubuntu-2104-no-secure-boot.bin`;
const TD = 'edge.example';
const NODE_NAME = 'edge-node-1';
const EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003;
/** Agent SVIDs this short make SPIRE's agent re-attest every few seconds (it rotates at about half-life). */
const AGENT_TTL_S = 20;
const WORKLOAD_TTL_S = 16;

const installs = spireUnderTest();

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs a command to completion and returns its exit code and output. */
function runChild(child: ReturnType<typeof spawn>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function spiffeIdOfPem(pem: string): string {
  const san = new X509Certificate(pem).subjectAltName ?? '';
  return san.split(', ').find((s) => s.startsWith('URI:'))!.slice(4);
}

const ourPluginLine = (l: SpireLogLine) => l['external'] === true && typeof l['subsystem_name'] === 'string' && /^(tpm|k8s)\.(tpm-server|tpm-agent|edge-workload)$/.test(l['subsystem_name'] as string);

if (installs.length === 0) {
  describe('real SPIRE end to end', () => {
    it('runs against every pinned SPIRE version', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(installs.map((spire) => [spire.version, spire] as [string, SpireInstall]))('real SPIRE %s', (_version, spire) => {
  let work: string;
  let tpmA: SwtpmHandle;
  let tpmB: SwtpmHandle;
  let server: SpireServer;
  let agent: SpireAgent;
  let kubelet: FakeKubelet;
  const cgroups = new PodCgroups();
  const stoppers: Array<() => Promise<void>> = [];
  let goldenLogPath: string;
  let agentId: string;
  const pods: Record<'sensor' | 'other' | 'unregistered' | 'greeterServer' | 'greeterClient' | 'intruder', Pod> = {
    sensor: makePod({ name: 'sensor-gateway', namespace: 'edge', serviceAccount: 'sensor' }, NODE_NAME),
    other: makePod({ name: 'camera-relay', namespace: 'edge', serviceAccount: 'camera' }, NODE_NAME),
    unregistered: makePod({ name: 'debug-shell', namespace: 'edge', serviceAccount: 'default' }, NODE_NAME),
    greeterServer: makePod({ name: 'greeter-server', namespace: 'demo', serviceAccount: 'greeter-server' }, NODE_NAME),
    greeterClient: makePod({ name: 'greeter-client', namespace: 'demo', serviceAccount: 'greeter-client' }, NODE_NAME),
    intruder: makePod({ name: 'intruder', namespace: 'demo', serviceAccount: 'intruder' }, NODE_NAME),
  };
  const idOf = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

  function tpmAgentPlugin(tpm: SwtpmHandle, logPath: string) {
    return { type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-agent'), data: { tpm_tcti: tpm.tcti, event_log_path: logPath, log_level: 'debug' } };
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), `e2e-${spire.version}-`));
    [tpmA, tpmB] = await Promise.all([startSwtpm(), startSwtpm()]);
    stoppers.push(() => tpmA.stop(), () => tpmB.stop());
    const golden = new Uint8Array(readFileSync(GOLDEN_LOG));
    const other = new Uint8Array(readFileSync(OTHER_LOG));
    await Promise.all([simulateMeasuredBoot(tpmA.tcti, golden), simulateMeasuredBoot(tpmB.tcti, other)]);
    goldenLogPath = join(work, 'node-a-bios_measurements');
    writeFileSync(goldenLogPath, golden);
    writeFileSync(join(work, 'node-b-bios_measurements'), other);
    writeFileSync(join(work, 'ek-ca.pem'), tpmA.rootCaPem + tpmA.intermediateCaPem);
    // The operator's step: the golden node's log becomes the boot policy, with the shipped CLI.
    execFileSync(builtPlugin('spire-edge-attest'), ['policy', 'create', '--from-eventlog', GOLDEN_LOG, '--pcrs', '0,2,4,7', '--name', 'golden', '--out', join(work, 'policy.yaml')]);

    kubelet = await startFakeKubelet(join(work, 'kubelet'), () => Object.values(pods));
    stoppers.push(() => kubelet.close());

    server = await SpireServer.start({
      spire,
      dir: join(work, 'server'),
      trustDomain: TD,
      agentTtl: `${AGENT_TTL_S}s`,
      defaultX509SvidTtl: `${WORKLOAD_TTL_S}s`,
      plugins: [
        {
          type: 'NodeAttestor',
          name: 'tpm',
          cmd: builtPlugin('tpm-server'),
          data: { ek_ca_path: [join(work, 'ek-ca.pem')], policy_path: join(work, 'policy.yaml'), log_level: 'debug' },
        },
      ],
    });
    stoppers.push(() => server.stop());
    agent = await SpireAgent.start({
      spire,
      dir: join(work, 'agent-a'),
      server,
      plugins: [
        tpmAgentPlugin(tpmA, goldenLogPath),
        {
          type: 'WorkloadAttestor',
          name: 'k8s',
          cmd: builtPlugin('edge-workload'),
          data: {
            pod_source: 'kubelet',
            kubelet_host: '127.0.0.1',
            kubelet_secure_port: kubelet.port,
            kubelet_ca_path: kubelet.caPath,
            kubelet_token_path: kubelet.tokenPath,
            node_name: NODE_NAME,
            log_level: 'debug',
          },
        },
      ],
    });
    stoppers.push(() => agent.stop());
    agentId = `spiffe://${TD}/spire/agent/tpm/${ekPubHash(tpmA.ekCertRsaDer)}`;
  }, 180_000);

  afterAll(async () => {
    await cgroups.cleanup();
    for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  // ---- 1. node attestation -----------------------------------------------------------------------------------

  it('issues the agent an SVID for spiffe://<td>/spire/agent/tpm/<pub_hash>, listed with our selectors', async () => {
    const listed = (await server.agents()).find((a) => `spiffe://${a.id.trust_domain}${a.id.path}` === agentId);
    expect(listed, `agent list: ${JSON.stringify(await server.agents())}`).toBeDefined();
    expect(listed!.attestation_type).toBe('tpm');
    const selectors = listed!.selectors.map((s) => `${s.type}:${s.value}`);
    expect(selectors).toEqual(
      expect.arrayContaining([`tpm:pub_hash:${ekPubHash(tpmA.ekCertRsaDer)}`, 'tpm:policy:golden', 'tpm:secureboot:enabled']),
    );
    expect(selectors.some((s) => /^tpm:ek_ca:|^tpm:pcr:sha256:7:/.test(s))).toBe(true);
    expect(listed!.can_reattest).toBe(true);
  });

  it("the agent's SVID chains to the server's bundle", async () => {
    // The agent keeps its SVID and the bundle in data_dir; SPIRE's own bundle is what the server publishes.
    const bundle = new X509Certificate(await server.bundlePem());
    const attested = agent.logs.find((l) => l.msg === 'Node attestation was successful');
    expect(attested?.['spiffe_id']).toBe(agentId);
    const listed = (await server.agents()).find((a) => `spiffe://${a.id.trust_domain}${a.id.path}` === agentId)!;
    expect(listed.x509svid_serial_number).toMatch(/^\d+$/);
    expect(bundle.ca).toBe(true);
    expect(bundle.subjectAltName).toContain(`spiffe://${TD}`);
    // The agent persists its SVID chain in data_dir/agent-data.json (DER, base64 as Go's encoding/json writes []byte).
    const stored = JSON.parse(readFileSync(join(work, 'agent-a', 'data', 'agent-data.json'), 'utf8')) as { svid: string[] };
    const svidDer = Buffer.from(stored.svid[0]!, 'base64');
    const svid = new X509Certificate(svidDer);
    expect(svid.subjectAltName).toBe(`URI:${agentId}`);
    expect(svid.verify(bundle.publicKey)).toBe(true);
    expect(BigInt(`0x${svid.serialNumber}`).toString()).toBe(listed.x509svid_serial_number);
  });

  // ---- 2. registration by TPM selectors ----------------------------------------------------------------------

  const goldenAlias = `spiffe://${TD}/edge/nodes/golden`;
  const otherAlias = `spiffe://${TD}/edge/nodes/no-secure-boot`;

  it('registers a node alias by tpm:policy:golden + tpm:secureboot:enabled, with workload entries under it', async () => {
    await server.createEntry(['-node', '-spiffeID', goldenAlias, '-selector', 'tpm:policy:golden', '-selector', 'tpm:secureboot:enabled']);
    // An alias the golden node does not match: its entries must never reach it.
    await server.createEntry(['-node', '-spiffeID', otherAlias, '-selector', 'tpm:secureboot:disabled']);
    const workloads: Array<[Pod, string]> = [
      [pods.sensor, goldenAlias],
      [pods.other, goldenAlias],
      [pods.greeterServer, goldenAlias],
      [pods.greeterClient, goldenAlias],
      [pods.intruder, goldenAlias],
      [pods.unregistered, otherAlias],
    ];
    for (const [pod, parent] of workloads) {
      await server.createEntry([
        '-parentID', parent,
        '-spiffeID', idOf(pod.namespace, pod.serviceAccount),
        '-selector', `k8s:ns:${pod.namespace}`,
        '-selector', `k8s:sa:${pod.serviceAccount}`,
        '-x509SVIDTTL', String(WORKLOAD_TTL_S),
      ]);
    }
    const shown = await server.cliOk(['entry', 'show', '-parentID', goldenAlias, '-output', 'json']);
    expect((JSON.parse(shown) as { entries: unknown[] }).entries).toHaveLength(5);
  });

  it('a second node that fails the boot policy gets no agent SVID, so no alias and no workload SVIDs', async () => {
    const refusals = server.proc.countFrom((l) => l.msg === 'Attestation decision' && l['outcome'] === 'refused');
    const nodeB = await SpireAgent.start({
      spire,
      dir: join(work, 'agent-b'),
      server,
      waitReady: false,
      plugins: [tpmAgentPlugin(tpmB, join(work, 'node-b-bios_measurements')), { type: 'WorkloadAttestor', name: 'unix', data: {} }],
    });
    stoppers.push(() => nodeB.stop());
    const exit = await Promise.race([nodeB.proc.exited, sleep(60_000).then(() => undefined)]);
    expect(exit, 'spire-agent B should give up after a refused attestation').toBeDefined();
    expect(exit!.code).not.toBe(0);
    const refused = refusals().find((l) => l['ek_hash'] === ekPubHash(tpmB.ekCertRsaDer));
    expect(refused, server.proc.tail()).toBeDefined();
    expect(refused!.level).toBe('warning');
    expect(refused!['rule']).toEqual(expect.any(String));
    expect(nodeB.logs.some((l) => l.level === 'error' && /PermissionDenied|permission denied/i.test(JSON.stringify(l)))).toBe(true);
    const ids = (await server.agents()).map((a) => a.id.path);
    expect(ids).toEqual([`/spire/agent/tpm/${ekPubHash(tpmA.ekCertRsaDer)}`]);
  });

  // ---- 3. workload SVIDs ------------------------------------------------------------------------------------

  /** `spire-agent api fetch x509 -write` from inside the pod, retried while the agent's entry cache catches up. */
  async function fetchWithSpireCli(pod: Pod, deadlineMs = 30_000): Promise<{ code: number | null; out: string; stderr: string }> {
    const out = join(work, `svid-${pod.name}`);
    mkdirSync(out, { recursive: true });
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      const r = await runChild(cgroups.spawn(pod, spire.agent, ['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-write', out, '-timeout', '5s']));
      if (r.code === 0 || Date.now() > deadline) return { code: r.code, out, stderr: r.stderr + r.stdout };
      await sleep(500);
    }
  }

  /** Our TypeScript Workload API client, run as a process inside the pod. */
  async function fetchWithOurClient(pod: Pod, timeoutMs = 20_000): Promise<{ ok: boolean; spiffeId?: string; code?: number | string; certChainPem?: string; bundlePem?: string }> {
    const child = cgroups.spawn(pod, process.execPath, ['--import', 'tsx', join(repoRoot, 'test/helpers/workload-fetch.ts')], {
      cwd: repoRoot,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}`, FETCH_TIMEOUT_MS: String(timeoutMs) },
    });
    const r = await runChild(child);
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line);
    } catch {
      throw new Error(`workload-fetch printed no result (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
  }

  it('a process in a pod fetches its X.509-SVID over the Workload API: spire-agent api fetch x509 and our client', async () => {
    const cli = await fetchWithSpireCli(pods.sensor);
    expect(cli.code, cli.stderr).toBe(0);
    const svidPem = readFileSync(join(cli.out, 'svid.0.pem'), 'utf8');
    expect(spiffeIdOfPem(svidPem)).toBe(idOf('edge', 'sensor'));
    const bundle = new X509Certificate(readFileSync(join(cli.out, 'bundle.0.pem'), 'utf8'));
    expect(new X509Certificate(svidPem).verify(bundle.publicKey)).toBe(true);

    const ours = await fetchWithOurClient(pods.sensor);
    expect(ours).toMatchObject({ ok: true, spiffeId: idOf('edge', 'sensor') });
  });

  it('a process in another pod gets its own ID, and one in an unaliased pod gets none', async () => {
    const other = await fetchWithOurClient(pods.other);
    expect(other).toMatchObject({ ok: true, spiffeId: idOf('edge', 'camera') });
    // Its entry exists, but under an alias the golden node does not match: PERMISSION_DENIED (no identity issued).
    const none = await fetchWithOurClient(pods.unregistered, 6_000);
    expect(none.ok).toBe(false);
    expect(none.code).toBe(7);
  });

  it("processes outside pods, the agent's own among them, get no container selectors", async () => {
    // Our plugin logs every PID it attests at debug; SPIRE's agent calls its own Workload API for health checks.
    const notContainer = (pid: number | undefined) => (l: SpireLogLine) => ourPluginLine(l) && l.msg === 'not in a container: no selectors' && l['pid'] === pid;
    await agent.proc.waitForLog(notContainer(agent.pid), 60_000, "our plugin's log for the agent's own PID");
    const host = await runChild(spawn(spire.agent, ['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-timeout', '3s'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(host.code).not.toBe(0);
    const attested = agent.logs.filter((l) => l.msg === 'PID attested to have selectors');
    const hostLine = attested.find((l) => !JSON.stringify(l['selectors'] ?? '').includes('k8s'));
    expect(hostLine, 'a host PID attested without k8s selectors').toBeDefined();
    const sensorLine = attested.find((l) => JSON.stringify(l['selectors'] ?? '').includes('sa:sensor'));
    expect(sensorLine, 'the sensor pod attested with k8s selectors').toBeDefined();
  });

  // ---- 7. mTLS between two edge services ---------------------------------------------------------------------

  it('two kubeedge-demo mTLS services talk across a workload SVID rotation; a third workload with the wrong ID is refused', async () => {
    const port = await freePort();
    const main = join(repoRoot, 'kubeedge-demo/mtls/main.ts');
    const env = { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}` };
    const serverProc = cgroups.spawn(pods.greeterServer, process.execPath, ['--import', 'tsx', main], {
      cwd: repoRoot,
      env: { ...env, ROLE: 'server', PORT: String(port), ALLOWED_CLIENT_ID: idOf('demo', 'greeter-client') },
    });
    const serverLog = jsonLines(serverProc);
    const clientEnv = { ...env, ROLE: 'client', SERVER_URL: `https://127.0.0.1:${port}/`, SERVER_ID: idOf('demo', 'greeter-server'), INTERVAL_MS: '1000' };
    const clientProc = cgroups.spawn(pods.greeterClient, process.execPath, ['--import', 'tsx', main], { cwd: repoRoot, env: clientEnv });
    const clientLog = jsonLines(clientProc);
    const intruderProc = cgroups.spawn(pods.intruder, process.execPath, ['--import', 'tsx', main], { cwd: repoRoot, env: clientEnv });
    const intruderLog = jsonLines(intruderProc);

    const responses = () => clientLog.filter((l) => l['message'] === 'response');
    const deadline = Date.now() + 4 * WORKLOAD_TTL_S * 1000;
    while (new Set(responses().map((r) => r['serverSerial'])).size < 2 && Date.now() < deadline) await sleep(500);
    const serials = new Set(responses().map((r) => r['serverSerial']));
    expect(serials.size, `server SVID serials seen by the client: ${[...serials].join(', ')}\n${JSON.stringify(serverLog.slice(-5))}`).toBeGreaterThanOrEqual(2);
    for (const r of responses()) {
      expect(r['status']).toBe(200);
      expect(r['server']).toBe(idOf('demo', 'greeter-server'));
    }
    // After the first success, no request failed: rotation did not interrupt the conversation.
    const firstOk = clientLog.findIndex((l) => l['message'] === 'response');
    expect(clientLog.slice(firstOk).filter((l) => l['message'] === 'request failed')).toEqual([]);
    // The server's own SVID rotated too (it logged a second update).
    expect(serverLog.filter((l) => l['message'] === 'X.509-SVID updated').length).toBeGreaterThanOrEqual(2);

    // The intruder holds a valid SVID of this trust domain, yet the server refuses its ID.
    expect(intruderLog.some((l) => l['message'] === 'X.509-SVID updated' && l['spiffe_id'] === idOf('demo', 'intruder'))).toBe(true);
    // The TLS handshake completes (both SVIDs chain to the bundle); authorization by SPIFFE ID answers 403.
    const intruderAnswers = intruderLog.filter((l) => l['message'] === 'response');
    expect(intruderAnswers.length).toBeGreaterThan(0);
    for (const r of intruderAnswers) {
      expect(r['status']).toBe(403);
      expect(String(r['body'])).toContain(`${idOf('demo', 'intruder')} is not allowed`);
    }
    for (const p of [serverProc, clientProc, intruderProc]) p.kill('SIGTERM');
  }, 120_000);

  // ---- 4. rotation is re-attestation -------------------------------------------------------------------------

  it('rotation re-attests: a new attestation decision in our audit log and a new agent SVID serial', async () => {
    const before = (await server.agents())[0]!.x509svid_serial_number;
    const decisions = server.proc.countFrom((l) => l.msg === 'Attestation decision' && l['agent_id'] === agentId && l['outcome'] === 'accepted');
    await agent.proc.waitForLog((l) => l.msg === 'Successfully reattested node', 3 * AGENT_TTL_S * 1000, 're-attestation', true);
    expect(decisions().length).toBeGreaterThanOrEqual(1);
    expect(decisions()[0]!.level).toBe('info');
    let after = before;
    for (let i = 0; i < 50 && after === before; i++) {
      after = (await server.agents())[0]!.x509svid_serial_number;
      if (after === before) await sleep(200);
    }
    expect(after).not.toBe(before);
    // The agent never used the renew path.
    expect(agent.logs.some((l) => /Successfully rotated agent SVID/.test(l.msg))).toBe(false);
  }, 120_000);

  // ---- 8. our log lines in SPIRE's log -------------------------------------------------------------------------

  it("our plugins' log lines appear in SPIRE's own log with their level and fields, never raw", () => {
    const ours = [...server.logs, ...agent.logs].filter(ourPluginLine);
    expect(ours.length).toBeGreaterThan(5);
    for (const l of ours) {
      expect(['debug', 'info', 'warning', 'error']).toContain(l.level);
      expect(l.msg).not.toMatch(/^\s*[{[]/); // a JSON line go-plugin could not parse is logged raw
      expect(l['plugin_type']).toMatch(/^(NodeAttestor|WorkloadAttestor)$/);
    }
    const decision = server.logs.find((l) => ourPluginLine(l) && l.msg === 'Attestation decision' && l['outcome'] === 'accepted');
    expect(decision).toMatchObject({ level: 'info', plugin_name: 'tpm', agent_id: agentId, ek_hash: ekPubHash(tpmA.ekCertRsaDer) });
    expect(agent.logs.some((l) => ourPluginLine(l) && l.level === 'debug' && l.msg === 'workload attested')).toBe(true);
    // go-plugin logs stderr lines that are not hclog JSON at debug under "plugin" with the raw text; none are ours.
    const rawFromPlugins = [...server.logs, ...agent.logs].filter((l) => l['external'] === true && /^\{|"@message"/.test(l.msg));
    expect(rawFromPlugins).toEqual([]);
    expect([...server.proc.raw, ...agent.proc.raw]).toEqual([]);
  });

  // ---- 5. drift loses the identity (changes the node: last) --------------------------------------------------

  it('a boot change is refused at the next re-attestation; the agent SVID is not renewed and workloads lose their SVIDs', async () => {
    // A workload that keeps its Workload API stream open through the whole episode, as a real service does.
    const watcher = cgroups.spawn(pods.sensor, process.execPath, ['--import', 'tsx', join(repoRoot, 'test/helpers/workload-fetch.ts')], {
      cwd: repoRoot,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}`, FETCH_MODE: 'watch' },
    });
    const events = jsonLines(watcher) as unknown as Array<{ at: number; event: string; serial?: string; notAfter?: string; code?: number }>;
    while (!events.some((e) => e.event === 'update')) await sleep(200);

    const t0 = Date.now();
    const refused = server.proc.countFrom((l) => l.msg === 'Attestation decision' && l['agent_id'] === agentId && l['outcome'] === 'refused');
    // A new boot application is measured into PCR 4 (covered by the golden policy) and logged as firmware would.
    const data = Buffer.from('\\EFI\\evil\\bootkit.efi');
    const digest = createHash('sha256').update(data).digest();
    await extendPcrs(tpmA.tcti, [{ pcr: 4, bank: 'sha256', digestHex: digest.toString('hex') }]);
    writeFileSync(goldenLogPath, Buffer.concat([readFileSync(goldenLogPath), pcrEvent2Sha256(4, EV_EFI_BOOT_SERVICES_APPLICATION, digest, data)]));
    const lastGood = (await server.agents())[0]!;
    const svidExpiry = Number(lastGood.x509svid_expires_at) * 1000;

    const refusal = await server.proc.waitForLog((l) => refused().includes(l), 3 * AGENT_TTL_S * 1000, 'refused re-attestation');
    const tRefused = Date.now();
    expect(refusal.level).toBe('warning');
    expect(refusal['rule']).toEqual(expect.any(String));
    expect(String(refusal['reason'])).toMatch(/pcr|policy|boot/i);
    await agent.proc.waitForLog((l) => l.level === 'error' && /Could not reattest agent/.test(l.msg) && Date.parse(l.time) >= t0, 30_000, 'agent error');

    // SPIRE's agent keeps retrying with backoff while its SVID is valid, then gives up (exits) once it has expired.
    const exit = await Promise.race([agent.proc.exited, sleep(Math.max(0, svidExpiry - Date.now()) + 30_000).then(() => undefined)]);
    const tAgentDone = Date.now();
    expect(exit, 'the agent exits once its SVID has expired and re-attestation keeps failing').toBeDefined();
    expect(exit!.code).not.toBe(0);
    expect(tAgentDone).toBeGreaterThanOrEqual(svidExpiry - 1000);
    const afterList = (await server.agents())[0]!;
    expect(afterList.x509svid_serial_number).toBe(lastGood.x509svid_serial_number); // never renewed

    // Workloads: no SVID was issued after the agent SVID expired, and the last one issued expires by
    // agent-SVID expiry + one workload TTL. A fresh fetch now fails.
    await sleep(500);
    watcher.kill('SIGTERM');
    const updates = events.filter((e) => e.event === 'update');
    const issuedAfterRefusal = updates.filter((e) => e.at > tRefused);
    for (const u of updates) expect(u.at).toBeLessThanOrEqual(svidExpiry + 1000);
    const lastNotAfter = Math.max(...updates.map((u) => Date.parse(u.notAfter!)));
    expect(lastNotAfter).toBeLessThanOrEqual(svidExpiry + WORKLOAD_TTL_S * 1000 + 1000);
    const late = await fetchWithOurClient(pods.sensor, 5_000);
    expect(late.ok).toBe(false);

    const timeline = {
      spire: spire.version,
      agent_ttl_s: AGENT_TTL_S,
      workload_ttl_s: WORKLOAD_TTL_S,
      drift_to_refusal_ms: tRefused - t0,
      drift_to_agent_svid_expiry_ms: svidExpiry - t0,
      agent_exit: { code: exit!.code, after_drift_ms: tAgentDone - t0 },
      workload_svids_issued_after_refusal: issuedAfterRefusal.length,
      drift_to_last_workload_svid_expiry_ms: lastNotAfter - t0,
      workload_fetch_after_agent_exit: `refused (${late.code})`,
      agent_reattest_errors: agent.logs.filter((l) => /Could not reattest agent/.test(l.msg)).length,
    };
    process.stderr.write(`drift timeline ${JSON.stringify(timeline)}\n`);
  }, 180_000);
});

