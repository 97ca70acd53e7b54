/**
 * Coverage feedback from V8's own block coverage, read through node:inspector in the fuzzing thread
 * (Profiler.startPreciseCoverage with callCount: true, detailed: true). Each takePreciseCoverage returns the
 * functions that ran since the last take, with their block ranges and counts, and resets the counters.
 * (Binary mode, callCount: false, is cheaper but reports a function only the first time it is covered, so a block
 * covered later inside it, or by the next target, would go unseen.)
 *
 * V8 reports a nested range only where its count differs from its parent's, so a block that becomes covered may
 * simply disappear from the report. A block is therefore learnt the first time it shows up uncovered (count 0), and
 * it counts as covered once a later run of its function no longer reports it, or anything around it, uncovered.
 * Functions count as one block each. Only src/ and node_modules/ are tracked, not the harness or Node.
 */
import { Session } from 'node:inspector';

interface CoverageRange {
  startOffset: number;
  endOffset: number;
  count: number;
}
interface FunctionCoverage {
  ranges: CoverageRange[];
}
interface ScriptCoverage {
  url: string;
  functions: FunctionCoverage[];
}

function tracked(url: string): boolean {
  if (!url.startsWith('file://')) return false;
  if (url.includes('/test/fuzz/') || url.includes('/node_modules/tsx/') || url.includes('/node_modules/esbuild/')) return false;
  return url.includes('/src/') || url.includes('/node_modules/');
}

interface FunctionState {
  /** Uncovered-range key → whether some run has covered it since. */
  readonly blocks: Map<string, boolean>;
}

export class CoverageTracker {
  readonly #session = new Session();
  readonly #functions = new Map<string, FunctionState>();
  #covered = 0;

  start(): void {
    this.#session.connect();
    this.#post('Profiler.enable');
    this.#post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
    this.collect(); // drop what loading the modules ran
  }

  /** Forgets what was covered (the next target starts from nothing); the session stays. */
  reset(): void {
    this.collect(false);
    this.#functions.clear();
    this.#covered = 0;
  }

  stop(): void {
    this.#post('Profiler.stopPreciseCoverage');
    this.#session.disconnect();
  }

  /** Blocks covered so far (functions entered plus inner blocks seen run). */
  get blocks(): number {
    return this.#covered;
  }

  /**
   * Reads and resets the counters; returns how many blocks the runs since the last call covered for the first
   * time. With `commit` false nothing is recorded: the engine asks this of a batch of runs (one take costs far
   * more than one parse), then replays the batch one input at a time only when the batch found something.
   */
  collect(commit = true): number {
    const result = this.#post('Profiler.takePreciseCoverage') as { result: ScriptCoverage[] } | undefined;
    if (result === undefined) return 0;
    let fresh = 0;
    for (const script of result.result) {
      if (!tracked(script.url)) continue;
      for (const fn of script.functions) {
        const top = fn.ranges[0];
        if (top === undefined || top.count === 0) continue;
        const key = `${script.url}#${top.startOffset}`;
        let state = this.#functions.get(key);
        if (state === undefined) {
          fresh++;
          if (!commit) continue;
          state = { blocks: new Map() };
          this.#functions.set(key, state);
        }
        const uncoveredNow: CoverageRange[] = [];
        for (let i = 1; i < fn.ranges.length; i++) {
          const r = fn.ranges[i]!;
          if (r.count !== 0) continue;
          uncoveredNow.push(r);
          const k = `${r.startOffset}:${r.endOffset}`;
          if (commit && !state.blocks.has(k)) state.blocks.set(k, false);
        }
        for (const [k, seen] of state.blocks) {
          if (seen) continue;
          // Not reported is not proof of running: an enclosing range may be the one reported uncovered.
          const [start, end] = k.split(':').map(Number) as [number, number];
          if (uncoveredNow.some((r) => r.startOffset <= start && end <= r.endOffset)) continue;
          if (commit) state.blocks.set(k, true);
          fresh++;
        }
      }
    }
    if (commit) this.#covered += fresh;
    return fresh;
  }

  #post(method: string, params: object = {}): unknown {
    // The same-thread session answers synchronously; the callback has run when post returns.
    let out: unknown;
    let failure: Error | null = null;
    this.#session.post(method, params, (err, res) => {
      failure = err;
      out = res;
    });
    if (failure) throw failure;
    return out;
  }
}
