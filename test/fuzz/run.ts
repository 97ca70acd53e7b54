/**
 * `npm run fuzz [-- options]`: coverage-guided fuzzing of every parser (targets.ts), one target at a time, each
 * in its own worker thread so a hang can be cut off and named.
 *
 *   --seconds N      seconds per target (default 20)
 *   --total N        seconds for the whole run, split evenly across the targets (overrides --seconds)
 *   --targets a,b    only these targets (--list prints them)
 *   --slow-ms N      an input slower than this (twice) is reported as slow (default 1000)
 *   --hang-ms N      a target that makes no progress for this long is stopped; its input is a hang (default 10000)
 *   --seed N         PRNG seed (default: time-based; printed, so a run can be repeated)
 *   --save-corpus    write inputs that found new blocks to test/fuzz/corpus/<target>/
 *   --out DIR        where crashes/, slow/ and corpus/ are written (default test/fuzz)
 *   --heap-mb N      heap limit of the fuzzing thread; running out is a crash (default 1536)
 *   --quiet          no progress lines
 *
 * Crashes and hangs are written to test/fuzz/crashes/<target>/, slow inputs to test/fuzz/slow/<target>/; the
 * replay test (test/fuzz/replay.test.ts) keeps all of them as regression tests. Prints a JSON report on stdout
 * and exits 1 if any target crashed, hung or ran no input at all.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { EngineMessage, EngineParams } from './engine.js';
import { TARGETS } from './targets.js';

export interface TargetReport {
  target: string;
  seconds: number;
  execs: number;
  execsPerSecond: number;
  blocks: number;
  corpus: number;
  newCorpus: number;
  crashes: { signature: string; file: string }[];
  slow: { ms: number; file: string }[];
  hang: string | null;
}

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function arg(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

function save(dir: string, data: Uint8Array, note?: string): string {
  mkdirSync(dir, { recursive: true });
  const name = createHash('sha256').update(data).digest('hex').slice(0, 16);
  const file = join(dir, `${name}.bin`);
  writeFileSync(file, data);
  // Paths relative to the repository, so a saved note reads the same on every checkout.
  if (note !== undefined) writeFileSync(join(dir, `${name}.txt`), `${note.replaceAll(`file://${ROOT}`, '').replaceAll(ROOT, '')}\n`);
  return file;
}

interface RunOptions {
  readonly seconds: number;
  readonly seed: number;
  readonly slowMs: number;
  readonly hangMs: number;
  readonly saveCorpus: boolean;
  readonly quiet: boolean;
  readonly out: string;
  readonly heapMb: number;
}

function emptyReport(target: string, seconds: number): TargetReport {
  return { target, seconds, execs: 0, execsPerSecond: 0, blocks: 0, corpus: 0, newCorpus: 0, crashes: [], slow: [], hang: null };
}

/**
 * Runs `names` in one worker thread, in order. A target that stops making progress for hangMs is a hang: its
 * current input (mirrored in shared memory) is saved, the thread is terminated, and the rest run in a new one.
 */
function runWorker(names: readonly string[], o: RunOptions, reports: Map<string, TargetReport>): Promise<string[]> {
  const capacity = Math.max(...names.map((n) => TARGETS.find((t) => t.name === n)!.maxLen));
  const shared = new SharedArrayBuffer(8 + capacity);
  const header = new Int32Array(shared, 0, 2);
  const params: EngineParams = { targets: names, seconds: o.seconds, seed: o.seed, slowMs: o.slowMs, fuzzDir: HERE, shared };
  const rel = (f: string): string => (f.startsWith(ROOT) ? f.slice(ROOT.length) : f);
  return new Promise((resolve) => {
    // A heap cap makes an input that amplifies memory a reported crash (ERR_WORKER_OUT_OF_MEMORY), not a dead machine.
    const worker = new Worker(new URL('./engine.ts', import.meta.url), { workerData: params, resourceLimits: { maxOldGenerationSizeMb: o.heapMb } });
    let current: string | undefined;
    let armed = false;
    let lastExecs = -1;
    let lastMove = Date.now();
    let settled = false;
    let afterHang: string[] | undefined;
    const finish = (rest: string[]): void => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      resolve(rest);
    };
    const report = (name: string): TargetReport => {
      let r = reports.get(name);
      if (r === undefined) reports.set(name, (r = emptyReport(name, o.seconds)));
      return r;
    };
    const watchdog = setInterval(() => {
      if (!armed || current === undefined) return;
      const n = Atomics.load(header, 0);
      if (n !== lastExecs) {
        lastExecs = n;
        lastMove = Date.now();
        return;
      }
      if (Date.now() - lastMove < o.hangMs) return;
      const input = new Uint8Array(shared, 8, Atomics.load(header, 1)).slice();
      const r = report(current);
      r.hang = rel(save(join(o.out, 'crashes', current), input, `hang: no progress for ${o.hangMs} ms`));
      process.stderr.write(`  ${current}: HANG, saved ${r.hang}\n`);
      // 'exit' may fire before terminate() resolves (it does on Node 22): it must carry on with the rest too.
      afterHang = names.slice(names.indexOf(current) + 1);
      void worker.terminate().then(() => finish(afterHang ?? []));
    }, 200);
    worker.on('message', (m: EngineMessage) => {
      const r = report(m.target);
      if (m.t === 'ready') {
        current = m.target;
        armed = true;
        lastMove = Date.now();
      } else if (m.t === 'progress') {
        Object.assign(r, { execs: m.execs, blocks: m.blocks, corpus: m.corpus });
        if (!o.quiet) process.stderr.write(`  ${m.target}: ${m.execs} execs, ${m.blocks} blocks, corpus ${m.corpus}\n`);
      } else if (m.t === 'new') {
        r.newCorpus++;
        if (o.saveCorpus) save(join(o.out, 'corpus', m.target), m.data);
      } else if (m.t === 'crash') {
        const signature = m.signature.replaceAll(ROOT, '');
        const file = m.target === '' ? '' : rel(save(join(o.out, 'crashes', m.target), m.data, `${signature}\n\n${m.detail}`));
        (m.target === '' ? report(current ?? names[0]!) : r).crashes.push({ signature, file });
        process.stderr.write(`  ${m.target}: CRASH ${signature}\n    saved ${file}\n`);
      } else if (m.t === 'slow') {
        const file = rel(save(join(o.out, 'slow', m.target), m.data, `slow: ${m.ms} ms of CPU`));
        r.slow.push({ ms: m.ms, file });
        process.stderr.write(`  ${m.target}: SLOW ${m.ms} ms, saved ${file}\n`);
      } else {
        armed = false;
        Object.assign(r, { execs: m.execs, blocks: m.blocks, corpus: m.corpus, execsPerSecond: Math.round(m.execs / o.seconds) });
        process.stderr.write(`${m.target}: ${r.execs} execs (${r.execsPerSecond}/s), ${r.blocks} blocks, ${r.crashes.length} crashes, ${r.slow.length} slow\n`);
      }
    });
    worker.on('error', (err) => {
      // The thread died (out of memory, a stack overflow outside the parse): the input it was on is the finding.
      const name = current ?? names[0]!;
      const input = new Uint8Array(shared, 8, Atomics.load(header, 1)).slice();
      const signature = `worker died: ${err.message}`;
      report(name).crashes.push({ signature, file: rel(save(join(o.out, 'crashes', name), input, `${signature}\n\n${err.stack ?? ''}`)) });
      process.stderr.write(`  ${name}: CRASH ${signature}\n`);
      finish(current === undefined ? [] : names.slice(names.indexOf(current) + 1));
    });
    worker.on('exit', () => finish(afterHang ?? []));
  });
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes('--list')) {
    for (const t of TARGETS) process.stdout.write(`${t.name}\n`);
    return 0;
  }
  const only = arg(argv, '--targets')?.split(',').filter(Boolean);
  const unknown = only?.filter((n) => !TARGETS.some((t) => t.name === n)) ?? [];
  if (unknown.length > 0) {
    process.stderr.write(`unknown fuzz target(s): ${unknown.join(', ')}; --list prints them\n`);
    return 2;
  }
  const selected = TARGETS.filter((t) => only === undefined || only.includes(t.name)).map((t) => t.name);
  const total = arg(argv, '--total');
  const seconds = total !== undefined ? Number(total) / selected.length : Number(arg(argv, '--seconds') ?? 20);
  const slowMs = Number(arg(argv, '--slow-ms') ?? 1000);
  const hangMs = Number(arg(argv, '--hang-ms') ?? 10_000);
  const seed = Number(arg(argv, '--seed') ?? Date.now() % 0x7fffffff);
  if (![seconds, slowMs, hangMs, seed].every(Number.isFinite) || seconds <= 0) {
    process.stderr.write('--seconds/--total/--slow-ms/--hang-ms/--seed take positive numbers\n');
    return 2;
  }
  const quiet = argv.includes('--quiet');
  process.stderr.write(`fuzzing ${selected.length} targets for ${seconds.toFixed(1)} s each (seed ${seed})\n`);
  const byName = new Map<string, TargetReport>();
  const options: RunOptions = { seconds, seed, slowMs, hangMs, saveCorpus: argv.includes('--save-corpus'), quiet, out: resolve(arg(argv, '--out') ?? HERE), heapMb: Number(arg(argv, '--heap-mb') ?? 1536) };
  for (let rest: string[] = selected; rest.length > 0; ) rest = await runWorker(rest, options, byName);
  const reports = selected.map((n) => byName.get(n) ?? emptyReport(n, seconds));
  const totals = {
    targets: reports.length,
    execs: reports.reduce((a, r) => a + r.execs, 0),
    blocks: reports.reduce((a, r) => a + r.blocks, 0),
    crashes: reports.reduce((a, r) => a + r.crashes.length, 0),
    slow: reports.reduce((a, r) => a + r.slow.length, 0),
    hangs: reports.filter((r) => r.hang !== null).length,
    idle: reports.filter((r) => r.execs === 0 && r.hang === null && r.crashes.length === 0).map((r) => r.target),
  };
  process.stdout.write(`${JSON.stringify({ seed, secondsPerTarget: seconds, totals, targets: reports }, null, 2)}\n`);
  return totals.crashes + totals.hangs + totals.idle.length > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
