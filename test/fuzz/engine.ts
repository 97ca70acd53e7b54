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
  readonly target: string;
  readonly seconds: number;
  readonly seed: number;
  readonly slowMs: number;
  /** Directories whose files are extra seeds (the kept corpus and crashes of this target). */
  readonly seedDirs: readonly string[];
  /** [execs, length] as Int32 then the input bytes (capacity = the target's maxLen). */
  readonly shared: SharedArrayBuffer;
}

export type EngineMessage =
  | { t: 'progress'; execs: number; blocks: number; corpus: number }
  | { t: 'new'; data: Uint8Array }
  | { t: 'crash'; data: Uint8Array; signature: string; detail: string }
  | { t: 'slow'; data: Uint8Array; ms: number }
  | { t: 'done'; execs: number; blocks: number; corpus: number; seeds: number };

const MAX_CORPUS = 4096;
/** Inputs run between two coverage takes. */
const BATCH = 16;

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

async function main(p: EngineParams): Promise<void> {
  // Libraries' process warnings (yaml's unresolved tags) would flood the report; they are not findings.
  process.emitWarning = () => undefined;
  const post = (m: EngineMessage): void => parentPort!.postMessage(m);
  const target = targetByName(p.target);
  const header = new Int32Array(p.shared, 0, 2);
  const mirror = new Uint8Array(p.shared, 8);
  const rng = new Rng(p.seed);
  const coverage = new CoverageTracker();
  const seeds = [...target.seeds(), ...p.seedDirs.flatMap(readDir)].map((s) => (s.length > target.maxLen ? s.subarray(0, target.maxLen) : s));
  if (seeds.length === 0) seeds.push(new Uint8Array(0));
  const corpus: Uint8Array[] = [];
  const seenCrashes = new Set<string>();
  let execs = 0;

  /** Runs one input; reports a crash; leaves the coverage counters for the caller to collect. */
  const exec = async (data: Uint8Array): Promise<number> => {
    mirror.set(data.subarray(0, mirror.length));
    Atomics.store(header, 1, Math.min(data.length, mirror.length));
    Atomics.add(header, 0, 1);
    const t0 = performance.now();
    const outcome = await classify(target.run, data);
    const ms = performance.now() - t0;
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

  coverage.start();
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
  while (performance.now() < deadline) {
    const batch: Uint8Array[] = [];
    for (let i = 0; i < BATCH; i++) {
      const parent = rng.chance(3) && corpus.length > 16 ? corpus[corpus.length - 1 - rng.below(16)]! : corpus[rng.below(corpus.length)]!;
      const input = mutate(parent, ctx);
      batch.push(input);
      await checkSlow(input, await exec(input));
    }
    if (coverage.collect(false) > 0) {
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
  coverage.stop();
  post({ t: 'done', execs, blocks: coverage.blocks, corpus: corpus.length, seeds: seeds.length });
}

if (parentPort !== null && workerData !== null) {
  void main(workerData as EngineParams).catch((err: unknown) => {
    parentPort!.postMessage({ t: 'crash', data: new Uint8Array(0), signature: `harness: ${String(err)}`, detail: err instanceof Error ? (err.stack ?? '') : String(err) });
    process.exit(1);
  });
}
