/**
 * npm run demo: attest a simulated edge node end to end.
 *
 * With real SPIRE (binaries in .cache/spire from `npm run spire:install`, in SPIRE_BIN_DIR or on PATH; built once
 * here when Go is installed) an unmodified spire-server and spire-agent load our plugins and the demo shows the
 * agent SVID, a workload SVID, an mTLS exchange between two edge services, a rotation that re-attests, and a boot
 * change that loses the identity (see demoRealSpire below).
 *
 * Without SPIRE and Go it falls back to the embedded host, which drives the plugins the way SPIRE does:
 *  1. installs swtpm + tpm2-tools if missing (Debian, as root) and builds the plugin binaries;
 *  2. provisions a software TPM with an EK certificate from a local CA, and "boots" it by extending a
 *     real firmware event log (Secure Boot on) into its PCRs;
 *  3. turns the golden log into a measured-boot policy;
 *  4. launches dist/bin/tpm-server and dist/bin/tpm-agent as SPIRE would (go-plugin handshake, broker,
 *     Init, Configure) and relays an attestation: agent ID and selectors;
 *  5. re-attests (what every SVID rotation does), then changes the boot and re-attests: refused;
 *  6. attests a process in a kubelet-shaped cgroup through dist/bin/edge-workload against a local
 *     kubelet-format pod list.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const root = new URL('..', import.meta.url).pathname;
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (n: number, s: string) => console.log(`\n${bold(`[${n}] ${s}`)}`);
const info = (s: string) => console.log(`    ${s}`);

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function ensureTools(): void {
  if (have('swtpm') && have('swtpm_setup') && have('tpm2_quote')) return;
  if (process.getuid?.() !== 0) {
    throw new Error('swtpm and tpm2-tools are missing: install them with `sudo apt-get install swtpm swtpm-tools tpm2-tools`');
  }
  info('installing swtpm, swtpm-tools and tpm2-tools with apt-get (one time)…');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'swtpm', 'swtpm-tools', 'tpm2-tools', 'libtss2-tcti-swtpm0'], {
    stdio: 'inherit',
    env,
  });
}

async function main(): Promise<void> {
  const t0 = performance.now();
  step(1, 'Tools and plugin binaries');
  ensureTools();
  // --no-build: the binaries are already built (the demo test runs beside other tests that use them).
  if (!process.argv.includes('--no-build')) execFileSync(process.execPath, [join(root, 'scripts/build.mjs'), '--quiet'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const checksums = JSON.parse(readFileSync(join(root, 'dist/checksums.json'), 'utf8')) as { file: string; sha256: string }[];
  // Only the plugins get a plugin_checksum (not the CLI next to them in dist/bin, nor the test plugins).
  const plugins = new Set(readdirSync(join(root, 'plugins')).filter((f) => f.endsWith('.ts')).map((f) => `dist/bin/${f.slice(0, -3)}`));
  for (const c of checksums.filter((c) => plugins.has(c.file))) info(`${c.file.padEnd(32)} plugin_checksum = "${c.sha256}"`);

  const spire = await findOrBuildSpire();
  if (spire) {
    const { demoRealSpire } = await import('./demo-spire.js');
    await demoRealSpire(spire, { step, info, bold });
  } else {
    await demoEmbeddedHost();
  }
  console.log(`\n${bold('Done')} in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
}

/** SPIRE binaries already here, or built once from tools/spire when Go is installed; undefined otherwise. */
async function findOrBuildSpire(): Promise<import('../test/helpers/spire.js').SpireInstall | undefined> {
  const { spireInstalls, resetSpireInstalls } = await import('../test/helpers/spire.js');
  const found = spireInstalls()[0];
  if (found) {
    info(`real SPIRE ${found.version} (${found.source}): ${found.server}`);
    return found;
  }
  if (!have('go')) {
    info('no SPIRE binaries and no Go: using the embedded SPIRE host. For real SPIRE: install Go ≥ 1.26 and run `npm run spire:install` (or set SPIRE_BIN_DIR).');
    return undefined;
  }
  info('no SPIRE binaries yet: building the newest pinned SPIRE once with Go (a few minutes; progress below)…');
  execFileSync(process.execPath, [join(root, 'scripts/spire-install.mjs'), '--newest'], { stdio: ['ignore', 'inherit', 'inherit'] });
  resetSpireInstalls();
  return spireInstalls()[0];
}

async function demoEmbeddedHost(): Promise<void> {
  // Test helpers double as a small SPIRE host emulator; imported after the build so they find the binaries.
  const { startSwtpm, extendPcrs } = await import('../test/helpers/swtpm.js');
  const { simulateMeasuredBoot, pcrEvent2Sha256 } = await import('../test/helpers/measured-boot.js');
  const { PluginHarness } = await import('../test/helpers/plugin-harness.js');
  const { relayAttestation } = await import('../test/helpers/spire-relay.js');
  const { createPolicyCommand } = await import('../src/cli/policy-create.js');
  const { ServiceNames } = await import('../src/plugin/protos.js');

  const work = mkdtempSync(join(tmpdir(), 'edge-demo-'));
  const harnesses: Array<Awaited<ReturnType<typeof PluginHarness.launch>>> = [];
  const cleanups: Array<() => Promise<void> | void> = [];
  try {
    step(2, 'A simulated edge node: software TPM with a manufacturer-style EK certificate, measured boot');
    const tpm = await startSwtpm();
    cleanups.push(() => tpm.stop());
    const logBytes = new Uint8Array(readFileSync(join(root, 'test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin')));
    const extended = await simulateMeasuredBoot(tpm.tcti, logBytes);
    const logPath = join(work, 'binary_bios_measurements');
    writeFileSync(logPath, logBytes);
    writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
    info(`swtpm at ${tpm.tcti}; ${extended} digests from a real UEFI event log (Secure Boot on) extended into its PCRs`);

    step(3, 'Golden node → measured-boot policy (spire-edge-attest policy create)');
    const policyPath = join(work, 'policy.yaml');
    writeFileSync(policyPath, createPolicyCommand(logBytes, { pcrs: [0, 2, 4, 7], name: 'golden' }));
    info(`policy "golden": PCRs 0,2,4,7, secure boot, boot applications, kernel, kernel command line → ${policyPath}`);

    step(4, 'SPIRE loads the plugins (go-plugin handshake, broker, Init, Configure) and attests the node');
    const launch = async (name: string, type: 'NodeAttestor' | 'WorkloadAttestor', hcl: string) => {
      const h = await PluginHarness.launch({ binary: join(root, 'dist/bin', name), type });
      harnesses.push(h);
      await h.init();
      await h.configure(hcl, 'edge.example');
      info(`${name}: handshake "${h.handshakeLine}"`);
      return h;
    };
    const server = await launch('tpm-server', 'NodeAttestor', `ek_ca_path = "${join(work, 'ek-ca.pem')}"\npolicy_path = "${policyPath}"`);
    const agent = await launch('tpm-agent', 'NodeAttestor', `tpm_tcti = "${tpm.tcti}"\nevent_log_path = "${logPath}"\nek_kind = "rsa"`);
    let t = performance.now();
    const first = await relayAttestation(agent, server);
    info(`attested in ${(performance.now() - t).toFixed(0)} ms (first run creates and persists the AK)`);
    info(`agent ID: ${bold(first.attributes.spiffe_id)}`);
    for (const s of first.attributes.selector_values) info(`  selector tpm:${s}`);
    info(`can_reattest: ${first.attributes.can_reattest}`);

    step(5, 'SVID rotation: every rotation re-attests, so the node must prove its boot again');
    t = performance.now();
    const again = await relayAttestation(agent, server);
    info(`re-attested in ${(performance.now() - t).toFixed(0)} ms → same ID: ${again.attributes.spiffe_id === first.attributes.spiffe_id}`);
    info('an attacker changes the boot chain: a new boot application is measured into PCR 4…');
    const data = Buffer.from('evil-bootkit.efi');
    const digest = createHash('sha256').update(data).digest();
    await extendPcrs(tpm.tcti, [{ pcr: 4, bank: 'sha256', digestHex: digest.toString('hex') }]);
    writeFileSync(logPath, Buffer.concat([logBytes, pcrEvent2Sha256(4, 0x80000003, digest, data)]));
    const refused = await relayAttestation(agent, server).then(
      () => undefined,
      (err: { code: number; details: string }) => err,
    );
    if (!refused) throw new Error('the tampered node was attested: this must never happen');
    info(`next rotation refused: ${bold(`PERMISSION_DENIED`)} — ${refused.details}`);
    info('SPIRE does not retry PERMISSION_DENIED: the agent loses its identity when its SVID expires.');

    step(6, 'Workload attestation: PID → container → pod, from a kubelet-shaped cgroup and a kubelet pod list');
    await demoWorkload(launch, cleanups, ServiceNames.workloadAttestor);
  } finally {
    for (const h of harnesses) await h.kill();
    for (const c of cleanups.reverse()) await c();
    rmSync(work, { recursive: true, force: true });
  }
}

async function demoWorkload(
  launch: (name: string, type: 'NodeAttestor' | 'WorkloadAttestor', hcl: string) => Promise<{ unary<T>(s: string, m: string, r: object): Promise<T> }>,
  cleanups: Array<() => Promise<void> | void>,
  service: string,
): Promise<void> {
  const v1 = '/sys/fs/cgroup/pids';
  const podUid = randomUUID();
  const containerId = createHash('sha256').update(podUid).digest('hex');
  const dir = join(v1, 'kubepods', 'besteffort', `pod${podUid}`, containerId);
  // Every level this demo creates is removed again, deepest first; levels that existed before are left alone.
  const levels = [join(v1, 'kubepods'), join(v1, 'kubepods', 'besteffort'), join(v1, 'kubepods', 'besteffort', `pod${podUid}`), dir];
  const created = levels.filter((d) => !existsSync(d)).reverse();
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    info(`skipped: cannot create a cgroup under ${v1} (${(err as Error).message}); run as root on a machine with cgroup v1 pids mounted`);
    return;
  }
  const child = spawn('sleep', ['300'], { stdio: 'ignore' });
  await new Promise((r) => child.once('spawn', r));
  cleanups.push(() => {
    child.kill('SIGKILL');
    for (const d of created) {
      for (let i = 0; i < 20 && existsSync(d); i++) {
        try {
          rmdirSync(d);
        } catch {
          spawnSync('sleep', ['0.05']);
        }
      }
    }
  });
  writeFileSync(join(dir, 'cgroup.procs'), String(child.pid));
  const podList = {
    kind: 'PodList',
    apiVersion: 'v1',
    items: [
      {
        metadata: { name: 'sensor-gateway-7d9f', namespace: 'edge', uid: podUid, labels: { app: 'sensor-gateway' }, ownerReferences: [{ kind: 'ReplicaSet', name: 'sensor-gateway-7d9f', uid: randomUUID() }] },
        spec: { nodeName: 'edge-node-1', serviceAccountName: 'sensor', containers: [{ name: 'gateway', image: 'registry.local/sensor-gateway:1.4' }] },
        status: {
          phase: 'Running',
          containerStatuses: [
            { name: 'gateway', containerID: `containerd://${containerId}`, image: 'registry.local/sensor-gateway:1.4', imageID: `registry.local/sensor-gateway@sha256:${'ab'.repeat(32)}`, ready: true },
          ],
        },
      },
    ],
  };
  const kubelet = createServer((req, res) => {
    res.writeHead(req.url === '/pods' ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(podList));
  });
  await new Promise<void>((r) => kubelet.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => kubelet.close(() => r())));
  const port = (kubelet.address() as { port: number }).port;
  info(`process ${child.pid} placed in ${dir}; kubelet read-only endpoint on 127.0.0.1:${port}`);
  const wl = await launch('edge-workload', 'WorkloadAttestor', `pod_source = "kubelet"\nkubelet_host = "127.0.0.1"\nkubelet_read_only_port = ${port}\nnode_name = "edge-node-1"`);
  const res = await wl.unary<{ selector_values: string[] }>(service, 'Attest', { pid: child.pid });
  for (const s of res.selector_values) info(`  selector k8s:${s}`);
  const own = await wl.unary<{ selector_values: string[] }>(service, 'Attest', { pid: process.pid });
  info(`the agent's own PID (not in a container): ${own.selector_values.length} selectors`);
}

main().catch((err: unknown) => {
  console.error(`\ndemo failed: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
