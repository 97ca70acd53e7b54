// Mutation testing of the security core (`npm run mutate`, scripts/mutate.mjs). Only in-process tests
// see mutants: the sandbox holds instrumented sources, and tests that drive
// dist/bin binaries run bundles built from unmutated code (docs/security.md#mutation-testing).

/**
 * Test files that run for a mutated file (`--testFiles`); a file not listed runs every related test. Fewer tests can
 * only kill fewer mutants, so a score measured with these is a lower bound of the whole suite's. Listed files keep
 * the run fast on two cores: related tests include the in-process swtpm suites, whose per-file setup boots a TPM for
 * every mutant they cover.
 */
export const mutationTests = {
  'src/tpm/secureboot.ts': ['test/tpm/secureboot.test.ts', 'test/tpm/secureboot-forgery.test.ts', 'test/tpm/uefi-variables.test.ts'],
  'src/tpm/bootfacts.ts': ['test/tpm/secureboot.test.ts', 'test/tpm/bootfacts-interpretation.test.ts', 'test/tpm/eventlog.corpus.test.ts', 'test/policy/policy.test.ts'],
  'src/tpm/replay.ts': [
    'test/tpm/replay.test.ts',
    'test/tpm/replay-accounting.test.ts',
    'test/tpm/secureboot.test.ts',
    'test/tpm/eventlog.corpus.test.ts',
    'test/tpm/eventlog.prop.test.ts',
    'test/tpm/eventlog.test.ts',
    'test/policy/policy.test.ts',
  ],
  // The in-process tests only: the swtpm suites' beforeAll hooks would re-run for every mutant (hours per file).
  'src/tpm/quote.ts': ['test/tpm/quote.test.ts', 'test/tpm/quote-refusals-explain-the-check.test.ts'],
  'src/tpm/activation.ts': [
    'test/tpm/activation.test.ts',
    'test/tpm/activation-binds-only-sound-keys.test.ts',
    'test/nodeattestor/server-refuses-forged-evidence.test.ts',
  ],
  'src/nodeattestor/server.ts': [
    'test/nodeattestor/server-audits-every-decision.test.ts',
    'test/nodeattestor/server-boot-facts-per-node.test.ts',
    'test/nodeattestor/server-challenge-lifetime.test.ts',
    'test/nodeattestor/server-config-fails-closed.test.ts',
    'test/nodeattestor/server-refuses-forged-evidence.test.ts',
    'test/nodeattestor/server-ima-refuses-what-pcr10-does-not-show.test.ts',
    'test/nodeattestor/server-trusts-only-verified-ek-chains.test.ts',
    'test/nodeattestor/server-admits-legacy-agents-only-as-legacy.test.ts',
    'test/nodeattestor/server-admits-only-approved-nodes.test.ts',
  ],
};

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
  // scripts/mutate.mjs gives each file's run its own report.
  jsonReporter: { fileName: process.env.MUTATE_REPORT ?? 'reports/mutation/mutation.json' },
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
