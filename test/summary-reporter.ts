/**
 * Prints one plain closing line, "tests: N passed, N failed, N skipped", so CI logs that only
 * understand that form can read the result (vitest's own summary is kept as well). Tests that skipped
 * themselves with a note (`ctx.skip('not run: …')`, e.g. the real-SPIRE suites on a machine without SPIRE)
 * are listed loudly above it, so a run that did not exercise them never reads as complete.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const notRun = new Map<string, number>();
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const result = test.result();
        if (result.state === 'passed') passed++;
        else if (result.state === 'failed') failed++;
        else {
          skipped++;
          if (result.state === 'skipped' && result.note) {
            const key = `${mod.moduleId.replace(/^.*\/test\//, 'test/')}: ${result.note}`;
            notRun.set(key, (notRun.get(key) ?? 0) + 1);
          }
        }
      }
      if (mod.state() === 'failed' && [...mod.children.allTests()].length === 0) failed++;
    }
    for (const [what, n] of notRun) process.stdout.write(`\n!!! NOT RUN (${n} test${n === 1 ? '' : 's'}) ${what}`);
    // The closing line keeps its plain form (CI reads it); the NOT RUN lines above it say what was skipped.
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
