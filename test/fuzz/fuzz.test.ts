/**
 * The CI pass of the fuzzer (`npm run fuzz` for a few seconds in all), and a self-test proving the harness
 * catches what it claims to: an untyped exception is a crash, an input that never returns is a hang, both are
 * saved, and the run exits non-zero. The 10-minute run is `npm run fuzz -- --total 600` (docs/security.md).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { TargetReport } from './run.js';
import { TARGETS } from './targets.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** Seconds for the whole CI pass, split across the targets (FUZZ_CI_SECONDS overrides). */
const CI_TOTAL_SECONDS = Number(process.env['FUZZ_CI_SECONDS'] ?? 20);
const out = mkdtempSync(join(tmpdir(), 'fuzz-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

interface Report {
  totals: { crashes: number; hangs: number; slow: number; execs: number; idle: string[] };
  targets: TargetReport[];
}

function fuzz(args: string[], env: Record<string, string> = {}): { status: number | null; report: Report; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/run.ts', '--quiet', '--out', out, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 170_000,
  });
  let report: Report;
  try {
    report = JSON.parse(r.stdout) as Report;
  } catch {
    throw new Error(`fuzzer printed no JSON report (status ${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  return { status: r.status, report, stderr: r.stderr };
}

describe('npm run fuzz', () => {
  it('self-test: a TypeError is a crash, an endless input a hang, running out of heap a crash; all saved; exit 1', () => {
    const { status, report } = fuzz(['--targets', 'selftest-crash,selftest-hang,selftest-oom', '--seconds', '1', '--hang-ms', '2000', '--heap-mb', '64'], { FUZZ_SELF_TEST: '1' });
    expect(status).toBe(1);
    const byName = new Map(report.targets.map((t) => [t.target, t]));
    expect(byName.get('selftest-crash')!.crashes[0]!.signature).toMatch(/^TypeError: /);
    expect(existsSync(byName.get('selftest-crash')!.crashes[0]!.file)).toBe(true);
    expect(byName.get('selftest-hang')!.hang).not.toBeNull();
    expect(readdirSync(join(out, 'crashes', 'selftest-hang')).some((n) => n.endsWith('.bin'))).toBe(true);
    expect(byName.get('selftest-oom')!.crashes[0]!.signature).toMatch(/^worker died: .*memory/i);
    expect(existsSync(byName.get('selftest-oom')!.crashes[0]!.file)).toBe(true);
  }, 60_000);

  it(`every target, ${CI_TOTAL_SECONDS} s in all: no crash, no hang, every target ran`, () => {
    const { status, report, stderr } = fuzz(['--total', String(CI_TOTAL_SECONDS)]);
    const findings = report.targets.filter((t) => t.crashes.length > 0 || t.hang !== null).map((t) => ({ target: t.target, crashes: t.crashes, hang: t.hang }));
    expect(findings, stderr).toEqual([]);
    expect(report.totals.idle).toEqual([]);
    expect(report.targets.map((t) => t.target)).toEqual(TARGETS.map((t) => t.name));
    for (const t of report.targets) expect(t.blocks, t.target).toBeGreaterThan(0);
    expect(status).toBe(0);
  }, 180_000);
});
