/**
 * Side by side, in one run, through real SPIRE (the newest install found: see test/helpers/spire.ts):
 *
 *  - workload_api: FetchX509SVID latency (p50/p99) and throughput for a workload on a 110-pod node, with our
 *    `edge-workload` against SPIRE's built-in `k8s` workload attestor. Same spire-server, same SPIRE version, same
 *    fake kubelet (HTTPS, kubelet-format JSON), same pod cgroup; each agent joins with a join token so that the
 *    only difference is the workload attestor. Kubelet bytes per 1,000 fetches for each.
 *  - node_join: agent start → agent SVID on the same swtpm, with our TPM plugins (full attestation: EK chain,
 *    credential activation, quote, event-log replay, boot policy). spiffe/spire-tpm-plugin is the peer we would
 *    pair with, but the Go module proxy serves no version of it; SPIRE's own join_token attestor is given as the
 *    floor (it verifies nothing about the hardware).
 *  - memory: RSS of each of our plugin processes, idle and under the workload load, next to spire-agent's.
 *
 * Prints one JSON object on stdout; progress on stderr. `--fetches N` (default 1000), `--seconds S` (default 5),
 * `--join-runs N` (default 5).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makePod, PodCgroups, startFakeKubelet, type Pod } from '../test/helpers/edge-node.js';
import { simulateMeasuredBoot } from '../test/helpers/measured-boot.js';
import { SpireAgent, SpireServer, spireInstalls, type BuiltinPlugin, type ExternalPlugin } from '../test/helpers/spire.js';
import { startSwtpm } from '../test/helpers/swtpm.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const FETCHES = arg('fetches', 1000);
const SECONDS = arg('seconds', 5);
const JOIN_RUNS = arg('join-runs', 5);
const PODS = 110;
const NODE = 'edge-node-1';
const TD = 'edge.example';
const log = (s: string) => process.stderr.write(`[e2e] ${s}\n`);

function rssKiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Direct children of `pid` with their executable's basename (SPIRE starts each external plugin as a child). */
function children(pid: number): Array<{ pid: number; name: string }> {
  const out: Array<{ pid: number; name: string }> = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== pid) continue;
      const cmdline = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').filter(Boolean);
      // A bundled plugin runs as `node <plugin>`; the script name is the plugin.
      const script = cmdline.find((a) => a.includes('/dist/bin/')) ?? cmdline[0] ?? '';
      out.push({ pid: Number(d), name: script.split('/').pop() ?? script });
    } catch {
      /* exited */
    }
  }
  return out;
}

const mib = (kib: number | undefined) => (kib === undefined ? null : Number((kib / 1024).toFixed(1)));

function memory(agent: SpireAgent): Record<string, number | null> {
  const out: Record<string, number | null> = { 'spire-agent': mib(rssKiB(agent.pid!)) };
  for (const c of children(agent.pid!)) out[c.name] = mib(rssKiB(c.pid));
  return out;
}

function runLoad(cgroups: PodCgroups, pod: Pod, socket: string, env: Record<string, string>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = cgroups.spawn(pod, process.execPath, ['--import', 'tsx', join(root, 'bench/lib/workload-api-load.ts')], {
      cwd: root,
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${socket}`, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('exit', (code) => {
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop()!));
      } catch {
        reject(new Error(`load generator failed (${code}): ${stderr.slice(-2000)}`));
      }
    });
  });
}

/** `spire-server token generate` prints `Token: <uuid>`. */
async function newJoinToken(server: SpireServer): Promise<string> {
  const out = await server.cliOk(['token', 'generate', '-ttl', '600']);
  const m = /Token:\s*(\S+)/.exec(out);
  if (!m) throw new Error(`unexpected token generate output: ${out}`);
  return m[1]!;
}

async function main(): Promise<void> {
  const spire = spireInstalls()[0];
  if (!spire) {
    process.stdout.write(JSON.stringify({ not_run: 'no SPIRE binaries: run npm run spire:install (or set SPIRE_BIN_DIR)' }) + '\n');
    return;
  }
  const work = mkdtempSync(join(tmpdir(), 'bench-e2e-'));
  const cgroups = new PodCgroups();
  const stops: Array<() => Promise<void>> = [];
  try {
    // ---- the node: 110 pods, one workload pod with an entry --------------------------------------------------
    const pods = Array.from({ length: PODS }, (_, i) => makePod({ name: `workload-${i}`, namespace: `ns-${i % 7}`, serviceAccount: `sa-${i % 5}` }, NODE));
    const target = pods[42]!;
    const kubelet = await startFakeKubelet(join(work, 'kubelet'), () => pods);
    stops.push(() => kubelet.close());
    const tpm = await startSwtpm();
    stops.push(() => tpm.stop());
    const bootLog = new Uint8Array(readFileSync(join(root, 'test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin')));
    await simulateMeasuredBoot(tpm.tcti, bootLog);
    writeFileSync(join(work, 'bbm'), bootLog);
    writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);

    const server = await SpireServer.start({
      spire,
      dir: join(work, 'server'),
      trustDomain: TD,
      logLevel: 'WARN',
      plugins: [
        { type: 'NodeAttestor', name: 'join_token', data: {} },
        { type: 'NodeAttestor', name: 'tpm', cmd: join(root, 'dist/bin/tpm-server'), data: { ek_ca_path: [join(work, 'ek-ca.pem')] } },
      ],
    });
    stops.push(() => server.stop());
    log(`SPIRE ${spire.version}: server up`);

    const ourWorkload: ExternalPlugin = {
      type: 'WorkloadAttestor',
      name: 'k8s',
      cmd: join(root, 'dist/bin/edge-workload'),
      data: { pod_source: 'kubelet', kubelet_host: '127.0.0.1', kubelet_secure_port: kubelet.port, kubelet_ca_path: kubelet.caPath, kubelet_token_path: kubelet.tokenPath, node_name: NODE },
    };
    const builtinWorkload: BuiltinPlugin = {
      type: 'WorkloadAttestor',
      name: 'k8s',
      // The built-in plugin reaches the kubelet at https://<node_name>:<port>.
      data: { kubelet_secure_port: kubelet.port, skip_kubelet_verification: true, token_path: kubelet.tokenPath, node_name: '127.0.0.1' },
    };

    const workloadApi: Record<string, unknown> = {};
    const memoryOut: Record<string, unknown> = {};
    for (const [label, plugin] of [['edge-workload', ourWorkload], ['spire-builtin-k8s', builtinWorkload]] as const) {
      const token = await newJoinToken(server);
      const agentId = `spiffe://${TD}/spire/agent/join_token/${token}`;
      await server.createEntry(['-parentID', agentId, '-spiffeID', `spiffe://${TD}/bench/${label}`, '-selector', `k8s:ns:${target.namespace}`, '-selector', `k8s:sa:${target.serviceAccount}`]);
      const agent = await SpireAgent.start({
        spire,
        dir: join(work, `agent-${label}`),
        server,
        logLevel: 'WARN',
        agent: { join_token: token },
        plugins: [{ type: 'NodeAttestor', name: 'join_token', data: {} }, plugin],
      });
      stops.push(() => agent.stop());
      log(`${label}: agent up; waiting for the entry to reach its cache`);
      const deadline = Date.now() + 60_000;
      for (;;) {
        const probe = await runLoad(cgroups, target, agent.socketPath, { SEQUENTIAL: '1' }).catch(() => undefined);
        if (probe && probe['errors'] === 0) break;
        if (Date.now() > deadline) throw new Error(`${label}: the workload never got an SVID: ${JSON.stringify(probe)}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
      const idle = memory(agent);
      kubelet.resetStats();
      log(`${label}: ${FETCHES} sequential fetches`);
      const seq = await runLoad(cgroups, target, agent.socketPath, { SEQUENTIAL: String(FETCHES) });
      const seqKubelet = { requests: kubelet.stats.requests, bytes: kubelet.stats.bytes };
      log(`${label}: ${SECONDS} s at concurrency 8`);
      const loadPromise = runLoad(cgroups, target, agent.socketPath, { CONCURRENCY: '8', DURATION_MS: String(SECONDS * 1000) });
      await new Promise((r) => setTimeout(r, (SECONDS * 1000) / 2));
      const underLoad = memory(agent);
      const thr = await loadPromise;
      workloadApi[label] = {
        ...(seq['sequential'] as object),
        ...(thr['throughput'] as object),
        errors: Number(seq['errors']) + Number(thr['errors']),
        kubelet_requests_per_1000_fetches: Math.round((seqKubelet.requests * 1000) / FETCHES),
        kubelet_bytes_per_1000_fetches: Math.round((seqKubelet.bytes * 1000) / FETCHES),
      };
      memoryOut[label] = { idle_rss_mib: idle, under_load_rss_mib: underLoad };
      await agent.stop();
    }
    const ours = workloadApi['edge-workload'] as { p50_ms: number; p99_ms: number; per_second: number };
    const theirs = workloadApi['spire-builtin-k8s'] as { p50_ms: number; p99_ms: number; per_second: number };
    workloadApi['ratio_builtin_over_ours'] = {
      p50: Number((theirs.p50_ms / ours.p50_ms).toFixed(2)),
      p99: Number((theirs.p99_ms / ours.p99_ms).toFixed(2)),
      throughput_ours_over_builtin: Number((ours.per_second / theirs.per_second).toFixed(2)),
    };

    // ---- node join ---------------------------------------------------------------------------------------------
    const joins: Record<string, number[]> = { 'tpm (ours)': [], join_token: [] };
    for (let run = 0; run < JOIN_RUNS; run++) {
      for (const kind of ['tpm (ours)', 'join_token'] as const) {
        const dir = join(work, `join-${kind === 'join_token' ? 'jt' : 'tpm'}-${run}`);
        let plugins: Array<ExternalPlugin | BuiltinPlugin>;
        let extra: Record<string, string> = {};
        if (kind === 'join_token') {
          const token = await newJoinToken(server);
          plugins = [{ type: 'NodeAttestor', name: 'join_token', data: {} }];
          extra = { join_token: token };
        } else {
          plugins = [{ type: 'NodeAttestor', name: 'tpm', cmd: join(root, 'dist/bin/tpm-agent'), data: { tpm_tcti: tpm.tcti, event_log_path: join(work, 'bbm') } }];
        }
        const t = Date.now();
        const agent = await SpireAgent.start({ spire, dir, server, logLevel: 'INFO', agent: extra, plugins: [...plugins, { type: 'WorkloadAttestor', name: 'unix', data: {} }] });
        const ok = await agent.proc.waitForLog((l) => l.msg === 'Node attestation was successful', 60_000, 'attestation');
        joins[kind]!.push(Date.parse(ok.time) - t);
        await agent.stop();
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const nodeJoin = {
      runs: JOIN_RUNS,
      'tpm (ours)': { median_ms: median(joins['tpm (ours)']!), first_ms: joins['tpm (ours)']![0], all_ms: joins['tpm (ours)'], verifies: ['EK certificate chain', 'credential activation (AK in the EK\'s TPM)', 'quote over a fresh nonce', 'event-log replay', 'boot policy'] },
      join_token: { median_ms: median(joins['join_token']!), all_ms: joins['join_token'], verifies: ['a one-time token (nothing about the hardware)'] },
      'spiffe/spire-tpm-plugin': { not_run: 'the Go module proxy serves no version of github.com/spiffe/spire-tpm-plugin (403 for every version tried)', verifies: ['EK certificate chain or hash', 'credential activation'] },
      note: 'first_ms includes creating and persisting the AK; later runs reuse it. Times from spire-agent process start to its "Node attestation was successful" log line.',
    };

    process.stdout.write(
      JSON.stringify({ spire: spire.version, pods: PODS, fetches: FETCHES, workload_api: workloadApi, node_join: nodeJoin, memory_rss_mib: memoryOut }, null, 2) + '\n',
    );
  } finally {
    await cgroups.cleanup();
    for (const s of stops.reverse()) await s().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
