/**
 * Startup benchmark: for each built plugin, time from exec to the handshake line, time to the
 * Configure reply, and idle RSS after configuration. Prints JSON on stdout.
 *   npm run bench:startup [-- --runs 10]
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { PluginHarness } from '../test/helpers/plugin-harness.js';
import { repoRoot } from '../test/helpers/binaries.js';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 10;

/** Minimal valid configuration per plugin, so Configure exercises the real schema. */
const CONFIGS: Record<string, { type: 'NodeAttestor' | 'WorkloadAttestor'; hcl: string }> = {
  'conformance-nodeattestor': { type: 'NodeAttestor', hcl: '"shared_secret" = "s"\npcrs { index = [0, 7] }' },
  'tpm-server': { type: 'NodeAttestor', hcl: 'ek_hash_allowlist = ["' + '0'.repeat(64) + '"]' },
  'tpm-agent': { type: 'NodeAttestor', hcl: 'tpm_tcti = "swtpm:path=/nonexistent"' },
  'edge-workload': { type: 'WorkloadAttestor', hcl: 'pod_source = "none"' },
};

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return Number(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!.toFixed(2));
}

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

const candidates = [
  ...(existsSync(`${repoRoot}dist/bin`) ? readdirSync(`${repoRoot}dist/bin`).map((f) => `dist/bin/${f}`) : []),
  'dist/test-bin/conformance-nodeattestor',
].filter((f) => CONFIGS[f.split('/').pop()!]);

const results: Record<string, unknown>[] = [];
for (const file of candidates) {
  const name = file.split('/').pop()!;
  const { type, hcl } = CONFIGS[name]!;
  const handshakeMs: number[] = [];
  const configureMs: number[] = [];
  const idleRss: number[] = [];
  let configureError: string | undefined;
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    const h = await PluginHarness.launch({ binary: `${repoRoot}${file}`, type });
    handshakeMs.push(performance.now() - start);
    try {
      await h.init();
      const t = performance.now();
      await h.configure(hcl);
      configureMs.push(performance.now() - t);
    } catch (err) {
      configureError = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 300));
    idleRss.push(rssKiB(h.child.pid!));
    await h.unload();
  }
  results.push({
    plugin: name,
    runs,
    exec_to_handshake_ms: { p50: percentile(handshakeMs, 50), p90: percentile(handshakeMs, 90), max: percentile(handshakeMs, 100) },
    configure_ms: configureMs.length ? { p50: percentile(configureMs, 50), p90: percentile(configureMs, 90) } : null,
    idle_rss_mib: Number((percentile(idleRss, 50) / 1024).toFixed(1)),
    goal_handshake_ms: 300,
    ...(configureError ? { configure_error: configureError } : {}),
  });
}
process.stdout.write(JSON.stringify({ benchmark: 'plugin-startup', node: process.version, results }, null, 2) + '\n');
