/**
 * Runtime policies made by the real Keylime tool (`keylime-policy create runtime`, Keylime 7.14.3 in
 * .cache/venv-keylime): we read its JSON and reach the same verdicts as Keylime's own verifier code on the same logs.
 * Under CI=true a missing tool fails; elsewhere the suite is skipped with a note.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';
import { evaluateRuntimePolicy, parseRuntimePolicy, type RuntimePolicy } from '../../src/policy/runtime-policy.js';
import { parseImaAsciiLog } from '../../src/tpm/ima/index.js';
import { synthEntries, toAsciiList, type SynthEntry } from '../tpm/ima/synth.js';

const VENV = join(repoRoot, '.cache/venv-keylime/bin');
const TOOL = join(VENV, 'keylime-policy');
const available = existsSync(TOOL);
const INSTALL = 'apt-get install -y python3-gpg python3-venv && /usr/bin/python3 -m venv --system-site-packages .cache/venv-keylime && .cache/venv-keylime/bin/pip install -r test/tpm/ima/keylime-requirements.txt';
if (!available && process.env['CI'] !== 'true') process.stderr.write(`[keylime-compat] skipped: ${TOOL} missing (${INSTALL})\n`);

describe.runIf(available || process.env['CI'] === 'true')('Keylime runtime policies (keylime-policy create runtime)', () => {
  let dir: string;
  let policyJson: string;
  let policy: RuntimePolicy;
  const files: Record<string, string> = { '/usr/bin/app': 'app v1\n', '/usr/lib/libapp.so': 'lib\n', '/etc/app.conf': 'port=1\n' };
  const base: SynthEntry[] = [{ template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' }];
  const measured = (extra: SynthEntry[] = []): SynthEntry[] => [
    ...base,
    ...Object.entries(files).map(([path, content]): SynthEntry => ({ template: 'ima-ng', path, content, digestAlg: 'sha256' })),
    ...extra,
  ];

  beforeAll(() => {
    if (!available) throw new Error(`keylime-policy is missing (CI=true): install with ${INSTALL}`);
    dir = mkdtempSync(join(tmpdir(), 'keylime-compat-'));
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(join(dir, 'root', path, '..'), { recursive: true });
      writeFileSync(join(dir, 'root', path), content);
    }
    // The log given to the tool adds a file outside the tree (its digest comes from the log) and the boot aggregate.
    writeFileSync(join(dir, 'tool.log'), toAsciiList(synthEntries([...base, { template: 'ima-ng', path: '/var/lib/only-in-log', content: 'x', digestAlg: 'sha256' }])));
    writeFileSync(join(dir, 'excludes'), '^/tmp/.*\n/var/log/.*\n');
    execFileSync(TOOL, ['create', 'runtime', '--rootfs', join(dir, 'root'), '--algo', 'sha256', '-m', join(dir, 'tool.log'), '-e', join(dir, 'excludes'), '-o', join(dir, 'policy.json')], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 60_000,
    });
    policyJson = join(dir, 'policy.json');
    policy = parseRuntimePolicy(readFileSync(policyJson), { name: 'keylime-made' });
  }, 90_000);
  afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));

  function keylimeVerdict(log: string): { ok: boolean; events: string[] } {
    const logPath = join(dir, `log-${Math.random().toString(36).slice(2)}.ascii`);
    writeFileSync(logPath, log);
    const out = execFileSync(join(VENV, 'python'), [join(repoRoot, 'test/tpm/ima/keylime_verdict.py'), policyJson, logPath], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    return JSON.parse(out.toString('utf8').trim().split('\n').pop()!);
  }

  it('reads the tool output: every tree file and the log-only file, the excludes, the settings', () => {
    expect([...policy.digests.keys()].sort()).toEqual(['/etc/app.conf', '/usr/bin/app', '/usr/lib/libapp.so', '/var/lib/only-in-log', 'boot_aggregate']);
    expect([...policy.excludes].sort()).toEqual(['/var/log/.*', '^/tmp/.*']);
    expect(policy.logHashAlg).toBe('sha1');
    expect(policy.meta.version).toBe(1);
  });

  const scenarios: { name: string; entries: () => SynthEntry[]; pass: boolean; rule?: string; path?: string }[] = [
    { name: 'every file as measured from the tree', entries: () => measured(), pass: true },
    { name: 'ima-sig entries without signatures, same files', entries: () => measured().map((e) => ({ ...e, template: e.path === 'boot_aggregate' ? 'ima-ng' : 'ima-sig' })), pass: true },
    { name: 'a tampered executable', entries: () => measured([{ template: 'ima-ng', path: '/usr/bin/app', content: 'app TAMPERED\n', digestAlg: 'sha256' }]), pass: false, rule: 'digest-not-allowed', path: '/usr/bin/app' },
    { name: 'a file the policy does not know', entries: () => measured([{ template: 'ima-ng', path: '/opt/new', content: 'new', digestAlg: 'sha256' }]), pass: false, rule: 'not-in-policy', path: '/opt/new' },
    { name: 'unknown files under excluded paths', entries: () => measured([{ template: 'ima-ng', path: '/tmp/scratch', content: 'a' }, { template: 'ima-ng', path: '/var/log/x.log', content: 'b' }]), pass: true },
    { name: 'an exclude is anchored at the start (re.match): /data/tmp/x is not excluded', entries: () => measured([{ template: 'ima-ng', path: '/data/tmp/x', content: 'a' }]), pass: false, rule: 'not-in-policy', path: '/data/tmp/x' },
    { name: 'the same path measured with a sha1 digest (algorithm differs)', entries: () => measured([{ template: 'ima-ng', path: '/etc/app.conf', content: 'port=1\n', digestAlg: 'sha1' }]), pass: false, rule: 'digest-not-allowed', path: '/etc/app.conf' },
    { name: 'the file only in the tool\'s log', entries: () => measured([{ template: 'ima-ng', path: '/var/lib/only-in-log', content: 'x', digestAlg: 'sha256' }]), pass: true },
  ];
  it.each(scenarios)('same verdict as Keylime: $name', (s) => {
    const text = toAsciiList(synthEntries(s.entries()));
    const ours = evaluateRuntimePolicy(parseImaAsciiLog(text).entries, { policy });
    const theirs = keylimeVerdict(text);
    expect(theirs.ok).toBe(s.pass);
    expect(ours.violations.length === 0).toBe(theirs.ok);
    if (!s.pass) {
      const v = ours.violations[0]!;
      expect(v.rule).toBe(s.rule);
      expect(v.path).toBe(s.path);
      expect(v.message).toContain(v.digest);
      expect(v.digest).toMatch(/^(sha1|sha256):[0-9a-f]+$/);
    }
  });
});
