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
 *   --quiet          no progress lines
 *
 * Crashes and hangs are written to test/fuzz/crashes/<target>/, slow inputs to test/fuzz/slow/<target>/; the
 * replay test (test/fuzz/replay.test.ts) keeps all of them as regression tests. Prints a JSON report on stdout
 * and exits 1 if any target crashed or hung.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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

function runTarget(name: string, seconds: number, seed: number, slowMs: number, hangMs: number, saveCorpus: boolean, quiet: boolean): Promise<TargetReport> {
  const target = TARGETS.find((t) => t.name === name)!;
  const shared = new SharedArrayBuffer(8 + target.maxLen);
  const header = new Int32Array(shared, 0, 2);
  const corpusDir = join(HERE, 'corpus', name);
  const crashDir = join(HERE, 'crashes', name);
  const params: EngineParams = { target: name, seconds, seed, slowMs, seedDirs: [corpusDir, crashDir, join(HERE, 'slow', name)], shared };
  const report: TargetReport = { target: name, seconds, execs: 0, execsPerSecond: 0, blocks: 0, corpus: 0, newCorpus: 0, crashes: [], slow: [], hang: null };
  const rel = (f: string): string => f.slice(ROOT.length);
  return new Promise((resolve) => {
    const worker = new Worker(new URL('./engine.ts', import.meta.url), { workerData: params });
    let lastExecs = -1;
    let lastMove = Date.now();
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      report.execsPerSecond = Math.round(report.execs / Math.max(seconds, 0.001));
      resolve(report);
    };
    const watchdog = setInterval(() => {
      const n = Atomics.load(header, 0);
      if (n !== lastExecs) {
        lastExecs = n;
        lastMove = Date.now();
        return;
      }
      if (Date.now() - lastMove < hangMs) return;
      const len = Atomics.load(header, 1);
      const input = new Uint8Array(shared, 8, len).slice();
      report.hang = rel(save(crashDir, input, `hang: no progress for ${hangMs} ms`));
      void worker.terminate().then(finish);
    }, 200);
    worker.on('message', (m: EngineMessage) => {
      if (m.t === 'progress') {
        Object.assign(report, { execs: m.execs, blocks: m.blocks, corpus: m.corpus });
        if (!quiet) process.stderr.write(`  ${name}: ${m.execs} execs, ${m.blocks} blocks, corpus ${m.corpus}\n`);
      } else if (m.t === 'new') {
        report.newCorpus++;
        if (saveCorpus) save(corpusDir, m.data);
      } else if (m.t === 'crash') {
        const file = rel(save(crashDir, m.data, `${m.signature}\n\n${m.detail}`));
        report.crashes.push({ signature: m.signature, file });
        process.stderr.write(`  ${name}: CRASH ${m.signature}\n    saved ${file}\n`);
      } else if (m.t === 'slow') {
        const file = rel(save(join(HERE, 'slow', name), m.data, `slow: ${m.ms} ms`));
        report.slow.push({ ms: m.ms, file });
        process.stderr.write(`  ${name}: SLOW ${m.ms} ms, saved ${file}\n`);
      } else {
        Object.assign(report, { execs: m.execs, blocks: m.blocks, corpus: m.corpus });
      }
    });
    worker.on('error', (err) => {
      report.crashes.push({ signature: `worker error: ${err.message}`, file: '' });
      finish();
    });
    worker.on('exit', finish);
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
  const reports: TargetReport[] = [];
  for (const name of selected) {
    const r = await runTarget(name, seconds, seed, slowMs, hangMs, argv.includes('--save-corpus'), quiet);
    reports.push(r);
    process.stderr.write(`${name}: ${r.execs} execs (${r.execsPerSecond}/s), ${r.blocks} blocks, ${r.crashes.length} crashes, ${r.slow.length} slow${r.hang ? ', HANG' : ''}\n`);
  }
  const totals = {
    targets: reports.length,
    execs: reports.reduce((a, r) => a + r.execs, 0),
    blocks: reports.reduce((a, r) => a + r.blocks, 0),
    crashes: reports.reduce((a, r) => a + r.crashes.length, 0),
    slow: reports.reduce((a, r) => a + r.slow.length, 0),
    hangs: reports.filter((r) => r.hang !== null).length,
  };
  process.stdout.write(`${JSON.stringify({ seed, secondsPerTarget: seconds, totals, targets: reports }, null, 2)}\n`);
  return totals.crashes + totals.hangs > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
