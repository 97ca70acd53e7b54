/**
 * The demo on real SPIRE: an unmodified spire-server and spire-agent load our plugin binaries by plugin_cmd and
 * plugin_checksum, exactly as in test/e2e/spire.test.ts (same helpers, same configs).
 *
 *  2. a software TPM with a manufacturer-style EK certificate is "booted" from a real UEFI event log;
 *  3. the golden log becomes the boot policy (spire-edge-attest policy create);
 *  4. spire-server (tpm-server) and spire-agent (tpm-agent, edge-workload) start: the agent SVID is issued;
 *  5. a node alias by TPM selectors and workload entries; a process in a pod fetches its workload SVID;
 *  6. two edge services talk mTLS with their SVIDs, authorizing each other by SPIFFE ID;
 *  7. the agent SVID rotates, which re-attests the node;
 *  8. the boot chain changes: the next re-attestation is refused and the node loses its identity.
 */
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePod, PodCgroups, startFakeKubelet } from '../test/helpers/edge-node.js';
import { pcrEvent2Sha256, simulateMeasuredBoot } from '../test/helpers/measured-boot.js';
import { jsonLines } from '../test/helpers/child-output.js';
import { ekPubHash, freePort, SpireAgent, SpireServer, type SpireInstall } from '../test/helpers/spire.js';
import { extendPcrs, startSwtpm } from '../test/helpers/swtpm.js';

interface Out {
  step(n: number, s: string): void;
  info(s: string): void;
  bold(s: string): string;
}

const root = new URL('..', import.meta.url).pathname;
const TD = 'edge.example';
const NODE = 'edge-node-1';

function serialOf(pem: string): string {
  return BigInt(`0x${new X509Certificate(pem).serialNumber}`).toString();
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function demoRealSpire(spire: SpireInstall, { step, info, bold }: Out): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'edge-demo-'));
  const cgroups = new PodCgroups();
  const stops: Array<() => Promise<void>> = [];
  try {
    step(2, 'A simulated edge node: software TPM with a manufacturer-style EK certificate, measured boot');
    const tpm = await startSwtpm();
    stops.push(() => tpm.stop());
    const logSrc = join(root, 'test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin');
    const log = new Uint8Array(readFileSync(logSrc));
    const extended = await simulateMeasuredBoot(tpm.tcti, log);
    const logPath = join(work, 'binary_bios_measurements');
    writeFileSync(logPath, log);
    writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
    info(`swtpm at ${tpm.tcti}; ${extended} digests from a real UEFI event log (Secure Boot on) extended into its PCRs`);

    step(3, 'Golden node → measured-boot policy (spire-edge-attest policy create)');
    const policyPath = join(work, 'policy.yaml');
    execFileSync(join(root, 'dist/bin/spire-edge-attest'), ['policy', 'create', '--from-eventlog', logSrc, '--pcrs', '0,2,4,7', '--name', 'golden', '--out', policyPath], { stdio: 'ignore' });
    info(`policy "golden": PCRs 0,2,4,7, Secure Boot, boot applications, kernel, command line → ${policyPath}`);

    step(4, `Real SPIRE ${spire.version}: spire-server with tpm-server, spire-agent with tpm-agent and edge-workload`);
    const pods = {
      sensor: makePod({ name: 'sensor-gateway', namespace: 'edge', serviceAccount: 'sensor' }, NODE),
      greeterServer: makePod({ name: 'greeter-server', namespace: 'demo', serviceAccount: 'greeter-server' }, NODE),
      greeterClient: makePod({ name: 'greeter-client', namespace: 'demo', serviceAccount: 'greeter-client' }, NODE),
    };
    const kubelet = await startFakeKubelet(join(work, 'kubelet'), () => Object.values(pods));
    stops.push(() => kubelet.close());
    const server = await SpireServer.start({
      spire,
      dir: join(work, 'server'),
      trustDomain: TD,
      logLevel: 'INFO',
      agentTtl: '20s',
      defaultX509SvidTtl: '20s',
      plugins: [{ type: 'NodeAttestor', name: 'tpm', cmd: join(root, 'dist/bin/tpm-server'), data: { ek_ca_path: [join(work, 'ek-ca.pem')], policy_path: policyPath } }],
    });
    stops.push(() => server.stop());
    info(`spire-server listening on 127.0.0.1:${server.port}, admin socket ${server.socketPath}`);
    const started = Date.now();
    const agent = await SpireAgent.start({
      spire,
      dir: join(work, 'agent'),
      server,
      logLevel: 'INFO',
      plugins: [
        { type: 'NodeAttestor', name: 'tpm', cmd: join(root, 'dist/bin/tpm-agent'), data: { tpm_tcti: tpm.tcti, event_log_path: logPath } },
        {
          type: 'WorkloadAttestor',
          name: 'k8s',
          cmd: join(root, 'dist/bin/edge-workload'),
          data: { pod_source: 'kubelet', kubelet_host: '127.0.0.1', kubelet_secure_port: kubelet.port, kubelet_ca_path: kubelet.caPath, kubelet_token_path: kubelet.tokenPath, node_name: NODE },
        },
      ],
    });
    stops.push(() => agent.stop());
    const agentId = `spiffe://${TD}/spire/agent/tpm/${ekPubHash(tpm.ekCertRsaDer)}`;
    const listed = (await server.agents())[0]!;
    info(`agent attested in ${Date.now() - started} ms (agent start → agent SVID, AK created on first run)`);
    info(`agent SVID: ${bold(`spiffe://${listed.id.trust_domain}${listed.id.path}`)}`);
    info(`  serial ${listed.x509svid_serial_number}, expires ${new Date(Number(listed.x509svid_expires_at) * 1000).toISOString()}`);
    for (const sel of listed.selectors.filter((s) => !s.value.startsWith('pcr:'))) info(`  selector ${sel.type}:${sel.value}`);
    info(`  (+ ${listed.selectors.filter((s) => s.value.startsWith('pcr:')).length} tpm:pcr:… selectors)`);
    if (`spiffe://${listed.id.trust_domain}${listed.id.path}` !== agentId) throw new Error(`unexpected agent ID ${listed.id.path}`);

    step(5, 'Registration by TPM selectors, then a workload SVID for a process in a pod');
    const alias = `spiffe://${TD}/edge/nodes/golden`;
    await server.createEntry(['-node', '-spiffeID', alias, '-selector', 'tpm:policy:golden', '-selector', 'tpm:secureboot:enabled']);
    info(`node alias ${alias} ← tpm:policy:golden + tpm:secureboot:enabled`);
    for (const pod of Object.values(pods)) {
      const id = `spiffe://${TD}/ns/${pod.namespace}/sa/${pod.serviceAccount}`;
      await server.createEntry(['-parentID', alias, '-spiffeID', id, '-selector', `k8s:ns:${pod.namespace}`, '-selector', `k8s:sa:${pod.serviceAccount}`, '-x509SVIDTTL', '20']);
      info(`workload entry ${id} ← k8s:ns:${pod.namespace} + k8s:sa:${pod.serviceAccount}`);
    }
    const svidDir = join(work, 'svid');
    mkdirSync(svidDir);
    const fetched = await waitFor('the workload SVID', 30_000, async () => {
      const child = cgroups.spawn(pods.sensor, spire.agent, ['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-write', svidDir, '-timeout', '5s']);
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      return code === 0 ? readFileSync(join(svidDir, 'svid.0.pem'), 'utf8') : undefined;
    });
    const leaf = new X509Certificate(fetched);
    info(`process in pod ${pods.sensor.namespace}/${pods.sensor.name} (cgroup ${cgroups.dirOf(pods.sensor)})`);
    info(`  spire-agent api fetch x509 → ${bold(leaf.subjectAltName!.replace('URI:', ''))}, serial ${serialOf(fetched)}, expires ${leaf.validTo}`);

    step(6, 'mTLS between two edge services (kubeedge-demo/mtls), each authorizing the other by SPIFFE ID');
    const port = await freePort();
    const main = join(root, 'kubeedge-demo/mtls/main.ts');
    const env = { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}` };
    const srv = cgroups.spawn(pods.greeterServer, process.execPath, ['--import', 'tsx', main], {
      cwd: root,
      env: { ...env, ROLE: 'server', PORT: String(port), ALLOWED_CLIENT_ID: `spiffe://${TD}/ns/demo/sa/greeter-client` },
    });
    const cli = cgroups.spawn(pods.greeterClient, process.execPath, ['--import', 'tsx', main], {
      cwd: root,
      env: { ...env, ROLE: 'client', SERVER_URL: `https://127.0.0.1:${port}/`, SERVER_ID: `spiffe://${TD}/ns/demo/sa/greeter-server`, INTERVAL_MS: '1000' },
    });
    void jsonLines(srv);
    const clientLog = jsonLines(cli);
    const first = await waitFor('an mTLS response', 30_000, () => clientLog.find((l) => l['message'] === 'response'));
    info(`greeter-client → greeter-server: HTTP ${first['status']}, server ${first['server']}`);
    info(`  body: ${String(first['body']).trim()}`);

    step(7, 'Rotation: the agent SVID is renewed by re-attesting the node (TPM quote + event log again)');
    const decisions = server.proc.countFrom((l) => l.msg === 'Attestation decision' && l['agent_id'] === agentId);
    await agent.proc.waitForLog((l) => l.msg === 'Successfully reattested node', 60_000, 're-attestation', true);
    const after = await waitFor('a new agent SVID serial', 10_000, async () => {
      const a = (await server.agents())[0]!;
      return a.x509svid_serial_number !== listed.x509svid_serial_number ? a : undefined;
    });
    info(`re-attested: decision "${decisions()[0]?.['outcome']}" in tpm-server's audit log; new agent SVID serial ${after.x509svid_serial_number}`);
    const serials = new Set(clientLog.filter((l) => l['message'] === 'response').map((l) => l['serverSerial']));
    info(`mTLS still talking: ${clientLog.filter((l) => l['message'] === 'response').length} responses, ${serials.size} server SVID serial(s) seen so far`);

    step(8, 'An attacker changes the boot chain: a new boot application is measured into PCR 4');
    const data = Buffer.from('\\EFI\\evil\\bootkit.efi');
    const digest = createHash('sha256').update(data).digest();
    await extendPcrs(tpm.tcti, [{ pcr: 4, bank: 'sha256', digestHex: digest.toString('hex') }]);
    writeFileSync(logPath, Buffer.concat([log, pcrEvent2Sha256(4, 0x80000003, digest, data)]));
    const tDrift = Date.now();
    const refusal = await server.proc.waitForLog((l) => l.msg === 'Attestation decision' && l['outcome'] === 'refused', 60_000, 'the refusal', true);
    info(`next re-attestation ${bold('refused')} after ${Date.now() - tDrift} ms: rule ${refusal['rule']}: ${refusal['reason']}`);
    const expires = Number(after.x509svid_expires_at) * 1000;
    info(`the agent SVID is not renewed; it expires at ${new Date(expires).toISOString()} (waiting for SPIRE to act)…`);
    const exit = await Promise.race([agent.proc.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), Math.max(0, expires - Date.now()) + 30_000))]);
    const crashed = agent.logs.find((l) => l.msg === 'Agent crashed');
    info(`spire-agent ${exit ? `exited (code ${exit.code})` : 'is still running'} ${Math.round((Date.now() - tDrift) / 1000)} s after the change: ${String(crashed?.['error'] ?? '')}`);
    info('workloads get no fresh SVIDs from now on; the ones already issued run out within one workload TTL (20 s here).');
    info('(SPIRE cannot revoke issued SVIDs: keep edge TTLs short. See docs/spire-compatibility.md for the measured timeline.)');
    for (const p of [srv, cli]) p.kill('SIGTERM');
  } finally {
    const removed = await cgroups.cleanup();
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
    info(`cleaned up: processes stopped, ${removed.length} cgroup directories removed (${removed.filter((d) => /\/pod[^/]+$/.test(d)).join(', ')})`);
  }
}

