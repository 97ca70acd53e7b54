/**
 * Memory benchmark: RSS of every shipped plugin, launched as SPIRE launches it (PluginHarness), in each form we ship:
 *  - `js`:      the bundled dist/bin/<name> under the `node` on PATH (the host's Node);
 *  - `js_sea_node`: the same bundle under the Node the SEAs embed (node_modules/.cache/sea-runtime), no flags;
 *  - `js_sea_node_flags`: the same, with the SEAs' exec args on the command line, so the effects of the runtime, of
 *               the V8 flags and of the single-executable packaging can be told apart;
 *  - `sea`:     dist/sea/linux-<arch>/<name>, with the exec args baked into it (scripts/sea.mjs SEA_EXEC_ARGV).
 * Idle = Init + Configure, then 1 s quiet. From /proc/<pid>/status: VmRSS, RssAnon (heaps: V8, malloc, gRPC buffers),
 * RssFile (mapped code: the node binary's text that was touched). Before each launch the executable's and the
 * script's pages are dropped from the page cache (`dd iflag=nocache`, posix_fadvise DONTNEED on those files only), so
 * every form starts as after a reboot: how a file got into the cache (written by the build, read by a checksum)
 * changes the folio sizes the kernel maps and RssFile by up to 15 MiB otherwise. edge-workload also gets a load phase (Attest calls
 * through gRPC for this process's PID, `--load-calls N`, 32 in flight) and reports VmHWM (peak RSS).
 *   npx tsx bench/memory.ts [--runs 3] [--load-calls 5000]      (run `npm run build` first)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { arch } from 'node:os';
import { join } from 'node:path';
import { ServiceNames } from '../src/plugin/protos.js';
import { repoRoot } from '../test/helpers/binaries.js';
import { PluginHarness } from '../test/helpers/plugin-harness.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) || dflt : dflt;
};
const runs = arg('--runs', 3);
const loadCalls = arg('--load-calls', 5000);
const MiB = 1024;
const GOAL_IDLE_MIB = 64;
const GOAL_LOAD_MIB = 96;

const PLUGINS: Record<string, { type: 'NodeAttestor' | 'WorkloadAttestor'; hcl: string }> = {
  'tpm-server': { type: 'NodeAttestor', hcl: 'ek_hash_allowlist = ["' + '0'.repeat(64) + '"]' },
  'tpm-agent': { type: 'NodeAttestor', hcl: 'tpm_tcti = "swtpm:path=/nonexistent"' },
  'edge-workload': { type: 'WorkloadAttestor', hcl: 'pod_source = "none"' },
};

interface Sample {
  rss: number;
  anon: number;
  file: number;
  hwm: number;
}

function status(pid: number): Sample {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(text)?.[1] ?? NaN);
  return { rss: kib('VmRSS'), anon: kib('RssAnon'), file: kib('RssFile'), hwm: kib('VmHWM') };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mib = (kib: number) => Number((kib / MiB).toFixed(1));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const seaArch = arch() === 'arm64' ? 'arm64' : 'x64';
const { SEA_NODE_VERSION, SEA_EXEC_ARGV } = (await import(join(repoRoot, 'scripts/sea.mjs'))) as {
  SEA_NODE_VERSION: string;
  SEA_EXEC_ARGV: string[];
};
const seaNode = join(repoRoot, `node_modules/.cache/sea-runtime/node-linux-${seaArch}-${SEA_NODE_VERSION}/bin/node`);

interface Form {
  key: string;
  binary: string;
  args: string[];
  runtime: string;
}

function forms(name: string): Form[] {
  const js = join(repoRoot, 'dist/bin', name);
  const sea = join(repoRoot, 'dist/sea', `linux-${seaArch}`, name);
  const out: Form[] = [];
  if (existsSync(js)) out.push({ key: 'js', binary: js, args: [], runtime: `host node ${process.version}` });
  if (existsSync(js) && existsSync(seaNode)) {
    out.push({ key: 'js_sea_node', binary: seaNode, args: [js], runtime: `node v${SEA_NODE_VERSION}, no flags` });
    out.push({ key: 'js_sea_node_flags', binary: seaNode, args: [...SEA_EXEC_ARGV, js], runtime: `node v${SEA_NODE_VERSION} ${SEA_EXEC_ARGV.join(' ')}` });
  }
  if (existsSync(sea)) out.push({ key: 'sea', binary: sea, args: [], runtime: `SEA node v${SEA_NODE_VERSION} + baked exec args` });
  return out;
}

function dropFromPageCache(files: string[]): void {
  for (const f of files) execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
}

async function attestLoad(h: PluginHarness, calls: number): Promise<void> {
  const client = h.client(ServiceNames.workloadAttestor);
  const one = () =>
    new Promise<void>((resolve, reject) => client['Attest']!({ pid: process.pid }, (err: Error | null) => (err ? reject(err) : resolve())));
  let next = 0;
  const worker = async () => {
    while (next++ < calls) await one();
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

const results: Record<string, Record<string, unknown>> = {};
for (const [name, { type, hcl }] of Object.entries(PLUGINS)) {
  results[name] = {};
  for (const form of forms(name)) {
    process.stderr.write(`[memory] ${name} ${form.key}\n`);
    const idle: Sample[] = [];
    const loaded: Sample[] = [];
    for (let i = 0; i < runs; i++) {
      dropFromPageCache([form.binary, ...form.args.filter((a) => !a.startsWith('-'))]);
      const h = await PluginHarness.launch({ binary: form.binary, args: form.args, type });
      try {
        await h.init([]);
        await h.configure(hcl);
        await sleep(1000);
        idle.push(status(h.child.pid!));
        if (type === 'WorkloadAttestor' && loadCalls > 0) {
          await attestLoad(h, loadCalls);
          loaded.push(status(h.child.pid!));
        }
      } finally {
        await h.unload();
      }
    }
    const pick = (xs: Sample[], k: keyof Sample) => mib(median(xs.map((x) => x[k])));
    results[name]![form.key] = {
      runtime: form.runtime,
      idle_rss_mib: pick(idle, 'rss'),
      idle_rss_anon_mib: pick(idle, 'anon'),
      idle_rss_file_mib: pick(idle, 'file'),
      meets_idle_goal: pick(idle, 'rss') <= GOAL_IDLE_MIB,
      ...(loaded.length
        ? {
            load_calls: loadCalls,
            after_load_rss_mib: pick(loaded, 'rss'),
            peak_rss_mib: pick(loaded, 'hwm'),
            meets_load_goal: pick(loaded, 'hwm') <= GOAL_LOAD_MIB,
          }
        : {}),
    };
  }
}

process.stdout.write(
  JSON.stringify({ goal_idle_rss_mib: GOAL_IDLE_MIB, goal_load_peak_rss_mib: GOAL_LOAD_MIB, runs, plugins: results, node_version: process.version }, null, 2) +
    '\n',
);
