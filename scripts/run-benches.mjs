#!/usr/bin/env node
/**
 * `npm run bench`: builds, runs every bench/*.ts with `npx tsx` one after the other, and prints ONE combined JSON
 * document on stdout:
 *
 *   { "benchmarks": { "startup": …, "memory": …, "tpm_attestation": …, "workload": … }, "machine": { node, cpus, platform, … } }
 *
 * Each bench prints one JSON object on stdout and its progress on stderr (passed through to our stderr). A bench
 * that fails (non-zero exit, timeout, or stdout that is not one JSON document) appears as { "error": "…" } and the
 * script exits 1. Build output goes to stderr so stdout stays one JSON document.
 *
 *   npm run bench [-- --only startup,tpm-attestation] [-- --runs N]   (other arguments are passed to every bench)
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { arch, cpus, loadavg, platform, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ORDER = ['startup', 'memory', 'tpm-attestation', 'workload', 'ima', 'e2e'];
const BENCH_TIMEOUT_MS = 20 * 60_000;

const argv = process.argv.slice(2);
let only;
const passThrough = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--only') only = new Set(String(argv[++i] ?? '').split(',').filter(Boolean));
  else passThrough.push(argv[i]);
}

const log = (msg) => process.stderr.write(`[bench] ${msg}\n`);
const round2 = (x) => Number(x.toFixed(2));

/** Runs a command with stdout captured (or sent to stderr) and stderr passed through; kills its process group on timeout. */
function run(cmd, args, { captureStdout, timeoutMs }) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: root,
      stdio: ['ignore', captureStdout ? 'pipe' : 2, 2],
      detached: true, // own process group, so a timeout also stops npx → tsx → node and their children
    });
    let stdout = '';
    child.stdout?.setEncoding('utf8').on('data', (d) => (stdout += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, error: err.message, timedOut });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, timedOut });
    });
  });
}

function benchFiles() {
  const dir = join(root, 'bench');
  const names = existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
        .map((f) => f.slice(0, -3))
    : [];
  const rank = (n) => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).filter((n) => !only || only.has(n));
}

const machine = {
  node: process.version,
  cpus: cpus().length,
  cpu_model: cpus()[0]?.model ?? 'unknown',
  platform: platform(),
  arch: arch(),
  kernel: release(),
  total_mem_mib: Math.round(totalmem() / 2 ** 20),
  loadavg_start: loadavg().map(round2),
};
const started = Date.now();
const benchmarks = {};
let failed = false;

log('building (node scripts/build.mjs --quiet)');
const build = await run(process.execPath, ['scripts/build.mjs', '--quiet'], { captureStdout: false, timeoutMs: 10 * 60_000 });
const buildError =
  build.error ?? (build.timedOut ? 'build timed out' : build.code !== 0 ? `build failed (exit ${build.code ?? build.signal})` : undefined);

for (const name of benchFiles()) {
  const key = name.replace(/-/g, '_');
  if (buildError) {
    benchmarks[key] = { error: `not run: ${buildError}` };
    failed = true;
    continue;
  }
  log(`running bench/${name}.ts`);
  const t = Date.now();
  const r = await run('npx', ['tsx', `bench/${name}.ts`, ...passThrough], { captureStdout: true, timeoutMs: BENCH_TIMEOUT_MS });
  const seconds = round2((Date.now() - t) / 1000);
  let error;
  if (r.error) error = `could not start: ${r.error}`;
  else if (r.timedOut) error = `timed out after ${BENCH_TIMEOUT_MS / 1000} s`;
  else if (r.code !== 0) error = `exited with ${r.code ?? r.signal}`;
  let result;
  if (!error) {
    try {
      result = JSON.parse(r.stdout);
      if (typeof result !== 'object' || result === null || Array.isArray(result)) error = 'stdout is not a JSON object';
    } catch (err) {
      error = `stdout is not one JSON document: ${err.message}`;
    }
  }
  if (error) {
    failed = true;
    const tail = r.stdout.trim().slice(-500);
    benchmarks[key] = { error, ...(tail ? { stdout_tail: tail } : {}), seconds };
    log(`bench/${name}.ts FAILED: ${error}`);
  } else {
    benchmarks[key] = result;
    log(`bench/${name}.ts done in ${seconds} s`);
  }
}

const doc = {
  benchmarks,
  machine: { ...machine, loadavg_end: loadavg().map(round2) },
  ...(buildError ? { build_error: buildError } : {}),
  total_seconds: round2((Date.now() - started) / 1000),
};
process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
process.exitCode = failed ? 1 : 0;
