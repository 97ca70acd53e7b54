/**
 * Regression tests from the fuzzer: every saved crash, hang and slow input (test/fuzz/crashes|slow/<target>/),
 * every kept corpus input (test/fuzz/corpus/<target>/) and every target's seeds are replayed through the target,
 * and each must parse or be refused with one of our typed errors, within the slow-input bound.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TARGETS } from './targets.js';
import { classify, describeCrash } from './typed.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
/** The fuzzer's slow bound is 1 s; replay allows more for a loaded CI machine and a cold first run. */
const REPLAY_BOUND_MS = 3_000;

function saved(kind: 'crashes' | 'slow' | 'corpus', target: string): { file: string; data: Uint8Array }[] {
  const dir = join(HERE, kind, target);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => n.endsWith('.bin'))
    .sort()
    .map((n) => ({ file: `${kind}/${target}/${n}`, data: new Uint8Array(readFileSync(join(dir, n))) }));
}

describe('fuzz regressions: saved inputs and seeds get typed answers', () => {
  it('every saved input belongs to a known target', () => {
    for (const kind of ['crashes', 'slow', 'corpus']) {
      const dir = join(HERE, kind);
      if (!existsSync(dir)) continue;
      for (const t of readdirSync(dir)) expect(TARGETS.map((x) => x.name), `${kind}/${t}`).toContain(t);
    }
  });

  it('the crashes the fuzzer found are kept', () => {
    expect(saved('crashes', 'workload-docker-inspect').length).toBeGreaterThan(0);
    expect(saved('crashes', 'workload-pod-watch').length).toBeGreaterThan(0);
  });

  for (const target of TARGETS) {
    it(target.name, async () => {
      const inputs = [
        ...target.seeds().map((data, i) => ({ file: `seed #${i}`, data: data.subarray(0, target.maxLen) })),
        ...saved('crashes', target.name),
        ...saved('slow', target.name),
        ...saved('corpus', target.name),
      ];
      const failures: string[] = [];
      for (const { file, data } of inputs) {
        const t0 = performance.now();
        const outcome = await classify(target.run, data.subarray(0, target.maxLen));
        const ms = performance.now() - t0;
        if (outcome.kind === 'crash') failures.push(`${file}: ${describeCrash(outcome.error).signature}`);
        else if (ms > REPLAY_BOUND_MS) failures.push(`${file}: took ${Math.round(ms)} ms`);
      }
      expect(failures, `${target.name}: untyped errors or slow inputs`).toEqual([]);
    });
  }
});
