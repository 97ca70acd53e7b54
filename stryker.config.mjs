// Mutation testing of the security core (`npm run mutate`). Only in-process tests
// see mutants: the sandbox holds instrumented sources, and tests that drive
// dist/bin binaries run bundles built from unmutated code.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  plugins: ['@stryker-mutator/vitest-runner'],
  vitest: { configFile: 'vitest.config.ts', related: true },
  coverageAnalysis: 'perTest',
  // Hooks (beforeAll) that derive facts make most mutants "hybrid" (static and per-test coverage); without this every
  // such mutant runs all related tests, binary-driven ones included (hours per file on two cores). With it hybrid
  // mutants run the tests that cover them, and only pure static mutants (module-level constants) are Ignored;
  // scripts/mutate.mjs reports those per file and docs/security.md lists them.
  ignoreStatic: true,
  // Two cores: one test-runner process leaves room for the TPM simulators tests start.
  concurrency: 1,
  timeoutMS: 30_000,
  reporters: ['clear-text', 'progress', 'json'],
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 90, low: 90, break: null },
  tempDirName: '.stryker-tmp',
  ignorePatterns: ['.cache', 'reports', 'coverage', '.tmp'],
  mutate: [
    'src/tpm/replay.ts',
    'src/tpm/secureboot.ts',
    'src/tpm/bootfacts.ts',
    'src/tpm/quote.ts',
    'src/tpm/activation.ts',
    'src/nodeattestor/server.ts',
    'src/workload/cgroup.ts',
    'src/workload/procfs.ts',
    'src/policy/evaluate.ts',
  ],
};
