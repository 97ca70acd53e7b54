/**
 * The fuzzing loop for one target, run in a worker thread by test/fuzz/run.ts. It keeps a corpus of inputs that
 * reached new blocks (coverage.ts), mutates corpus entries (mutate.ts), and reports to the parent thread:
 * new corpus entries, crashes (any exception that is not one of our typed errors), and slow inputs.
 * The input being run is mirrored into shared memory first, so the parent can name it if the thread hangs.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { CoverageTracker } from './coverage.js';
import { mutate, Rng, type MutationContext } from './mutate.js';
import { targetByName } from './targets.js';
import { classify, describeCrash } from './typed.js';

export interface EngineParams {
  /** Run one after the other in this thread (modules and test keys load once). */
  readonly targets: readonly string[];
  readonly seconds: number;
  readonly seed: number;
  readonly slowMs: number;
  /** Directory holding corpus/, crashes/ and slow/ (each by target): their files are extra seeds. */
  readonly fuzzDir: string;
  /** [execs, length] as Int32 then the input bytes (capacity = the largest maxLen). */
  readonly shared: SharedArrayBuffer;
}

export type EngineMessage = { target: string } & (
  | { t: 'ready' }
  | { t: 'progress'; execs: number; blocks: number; corpus: number }
  | { t: 'new'; data: Uint8Array }
  | { t: 'crash'; data: Uint8Array; signature: string; detail: string }
  | { t: 'slow'; data: Uint8Array; ms: number }
  | { t: 'done'; execs: number; blocks: number; corpus: number; seeds: number }
);

/**
 * CPU time of this thread in ms where Node has it (a loaded machine must not make inputs look slow), else
 * wall-clock time.
 */
const threadCpuMs: () => number = (() => {
  const f = (process as unknown as { threadCpuUsage?: () => { user: number; system: number } }).threadCpuUsage;
  if (typeof f !== 'function') return () => performance.now();
  return () => {
    const u = f.call(process);
    return (u.user + u.system) / 1000;
  };
})();

const MAX_CORPUS = 4096;
/** Inputs run between two coverage takes: from MIN_BATCH, doubling while a batch finds nothing. */
const MIN_BATCH = 8;
const MAX_BATCH = 256;

function readDir(dir: string): Uint8Array[] {
  try {
    return readdirSync(dir)
      .filter((n) => n.endsWith('.bin'))
      .sort()
      .map((n) => new Uint8Array(readFileSync(join(dir, n))));
  } catch {
    return [];
  }
}

async function fuzzOne(p: EngineParams, name: string, coverage: CoverageTracker): Promise<void> {
  type Body = EngineMessage extends infer M ? (M extends { target: string } ? Omit<M, 'target'> : never) : never;
  const post = (m: Body): void => parentPort!.postMessage({ ...m, target: name });
  const target = targetByName(name);
  const header = new Int32Array(p.shared, 0, 2);
  const mirror = new Uint8Array(p.shared, 8);
  const rng = new Rng(p.seed);
  const seeds = [...target.seeds(), ...['corpus', 'crashes', 'slow'].map((d) => readDir(join(p.fuzzDir, d, name))).flat()].map((s) => (s.length > target.maxLen ? s.subarray(0, target.maxLen) : s));
  if (seeds.length === 0) seeds.push(new Uint8Array(0));
  const corpus: Uint8Array[] = [];
  const seenCrashes = new Set<string>();
  let execs = 0;

  /** Runs one input; reports a crash; leaves the coverage counters for the caller to collect. */
  const exec = async (data: Uint8Array): Promise<number> => {
    mirror.set(data.subarray(0, mirror.length));
    Atomics.store(header, 1, Math.min(data.length, mirror.length));
    Atomics.add(header, 0, 1);
    const t0 = threadCpuMs();
    const outcome = await classify(target.run, data);
    const ms = threadCpuMs() - t0;
    execs++;
    if (outcome.kind === 'crash') {
      const { signature, detail } = describeCrash(outcome.error);
      if (!seenCrashes.has(signature)) {
        seenCrashes.add(signature);
        post({ t: 'crash', data: Uint8Array.from(data), signature, detail });
      }
    }
    return ms;
  };
  const runOne = async (data: Uint8Array): Promise<{ fresh: number; ms: number }> => {
    const ms = await exec(data);
    return { fresh: coverage.collect(), ms };
  };

  const checkSlow = async (data: Uint8Array, ms: number): Promise<void> => {
    if (ms < p.slowMs) return;
    // The first run of a path pays for compiling it: only an input slow twice is reported.
    const again = await exec(data);
    if (again >= p.slowMs) post({ t: 'slow', data: Uint8Array.from(data), ms: Math.round(Math.min(ms, again)) });
  };

  coverage.reset();
  post({ t: 'ready' });
  await classify(target.run, seeds[0]!); // load lazily imported modules before timing anything
  coverage.collect();
  for (const s of seeds) {
    const { fresh, ms } = await runOne(s);
    await checkSlow(s, ms);
    if (fresh > 0 || corpus.length === 0) corpus.push(s);
  }

  const ctx: MutationContext = {
    rng,
    maxLen: target.maxLen,
    other: () => corpus[rng.below(corpus.length)]!,
    dictionary: (target.dictionary ?? []).map((d) => Buffer.from(d, 'latin1')),
  };
  const deadline = performance.now() + p.seconds * 1000;
  let nextProgress = performance.now() + 1000;
  let batchSize = MIN_BATCH;
  while (performance.now() < deadline) {
    const batch: Uint8Array[] = [];
    for (let i = 0; i < batchSize; i++) {
      const parent = rng.chance(3) && corpus.length > 16 ? corpus[corpus.length - 1 - rng.below(16)]! : corpus[rng.below(corpus.length)]!;
      const input = mutate(parent, ctx);
      batch.push(input);
      await checkSlow(input, await exec(input));
    }
    const found = coverage.collect(false) > 0;
    // Takes are costly: batches grow while nothing new turns up, and shrink again when something does.
    batchSize = found ? MIN_BATCH : Math.min(batchSize * 2, MAX_BATCH);
    if (found) {
      for (const input of batch) {
        const { fresh } = await runOne(input);
        if (fresh > 0 && corpus.length < MAX_CORPUS) {
          const kept = Uint8Array.from(input);
          corpus.push(kept);
          post({ t: 'new', data: kept });
        }
      }
    }
    if (performance.now() >= nextProgress) {
      nextProgress += 1000;
      post({ t: 'progress', execs, blocks: coverage.blocks, corpus: corpus.length });
    }
  }
  post({ t: 'done', execs, blocks: coverage.blocks, corpus: corpus.length, seeds: seeds.length });
}

async function main(p: EngineParams): Promise<void> {
  // Libraries' process warnings (yaml's unresolved tags) would flood the report; they are not findings.
  process.emitWarning = () => undefined;
  // One session for the thread: restarting V8's precise coverage between targets loses the block counters.
  const coverage = new CoverageTracker();
  coverage.start();
  for (const name of p.targets) await fuzzOne(p, name, coverage);
  coverage.stop();
}

if (parentPort !== null && workerData !== null) {
  void main(workerData as EngineParams).catch((err: unknown) => {
    parentPort!.postMessage({ target: '', t: 'crash', data: new Uint8Array(0), signature: `harness: ${String(err)}`, detail: err instanceof Error ? (err.stack ?? '') : String(err) });
    process.exit(1);
  });
}
