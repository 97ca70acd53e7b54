/**
 * Security properties of boot-policy evaluation (src/policy/evaluate.ts), on facts replayed from real event logs:
 *  - a rule on a fact that is unknown, or that has nothing to check, fails: it never passes by default;
 *  - every measured item must be allowed: one unlisted boot application, kernel file or command line fails the
 *    rule even when the others are listed;
 *  - a rule the policy does not have never fails, and a rule it has never passes a node that breaks it;
 *  - a policy passes only with no violation, and enforcement judges the named policy (an unknown name fails).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AttestationRefused, GrpcCode } from '../../src/errors.js';
import { ERR_POLICY_VIOLATION, PolicyViolation, checkPolicy, enforcePolicy, evaluatePolicies } from '../../src/policy/evaluate.js';
import { parsePolicyFile, type MeasuredBootPolicy } from '../../src/policy/policy.js';
import { deriveBootFacts, type BootFacts, type HexDigests } from '../../src/tpm/bootfacts.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { computePcrs, replayEventLog, type VerifiedEvents } from '../../src/tpm/replay.js';
import { expectError } from '../tpm/expect-error.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/eventlog');

/**
 * Facts of a real log replayed against its own PCRs (standing in for a verified quote). `resetQuoted` adds PCRs
 * quoted at their reset value (all zeros) that the log never extends: the facts of those PCRs are then known and
 * empty, which is what a node that measured nothing there shows.
 */
function evidence(name: string, resetQuoted: readonly number[] = []): { verified: VerifiedEvents; facts: BootFacts } {
  const log = parseEventLog(readFileSync(join(FIXTURES, `${name}.bin`)));
  const values = computePcrs(log) as Map<string, Map<number, Uint8Array>>;
  for (const pcrs of values.values()) {
    const size = [...pcrs.values()][0]!.length;
    for (const index of resetQuoted) pcrs.set(index, new Uint8Array(size));
  }
  const verified = replayEventLog(log, { values });
  return { verified, facts: deriveBootFacts(verified) };
}

const policy = (rules: Record<string, unknown>): MeasuredBootPolicy => parsePolicyFile(JSON.stringify({ policies: [{ name: 'p', ...rules }] }))[0]!;
const rulesBroken = (p: MeasuredBootPolicy, e: { verified: VerifiedEvents; facts: BootFacts }) => checkPolicy(p, e.facts, e.verified).map((v) => v.rule);
const known = <T>(fact: { known: true; value: T } | { known: false; reason: string }): T => {
  if (!fact.known) throw new Error(`fixture fact is unknown: ${fact.reason}`);
  return fact.value;
};
// A collision-resistant bank's digest: a SHA-1 digest never allows anything (src/tpm/pcr-integrity.ts).
const anyDigest = (digests: HexDigests): string => digests.get('sha256') ?? digests.get('sha384') ?? [...digests.values()][0]!;

// sb enabled, 3 boot applications, 1 command line, 2 PCR 9 files, GRUB, banks sha1/sha256/sha384
const golden = evidence('gtt-cos-85-amd-sev');
const goldenApps = known(golden.facts.efiBootApplications);
const goldenFiles = known(golden.facts.bootLoaderFiles);
const goldenLines = known(golden.facts.kernelCommandLines);

describe('a rule on an unknown fact, or with nothing to check, fails closed', () => {
  // PCR 4 is not quoted: which applications ran is unknown. PCR 7 is quoted but proves nothing about Secure Boot.
  const unknownApps = evidence('ga-short_no_action_eventlog');
  // PCR 4 quoted and verified, but it measured no application.
  const noApps = evidence('tt-event-uefiaction');
  // Secure Boot on, but PCR 8, 9, 12 are not quoted: command lines and kernels are unknown.
  const unknownKernel = evidence('ga-sb_cert_eventlog');
  // The same node with PCR 8, 9, 12 quoted at their reset value: nothing was measured there.
  const noKernel = evidence('ga-sb_cert_eventlog', [8, 9, 12]);

  it('fixtures show the facts these cases need', () => {
    expect(unknownApps.facts.efiBootApplications.known).toBe(false);
    expect(known(noApps.facts.efiBootApplications)).toEqual([]);
    expect(unknownKernel.facts.bootLoaderFiles.known).toBe(false);
    expect(unknownKernel.facts.kernelCommandLines.known).toBe(false);
    expect(known(noKernel.facts.bootLoaderFiles)).toEqual([]);
    expect(known(noKernel.facts.kernelCommandLines)).toEqual([]);
    expect(noKernel.facts.grub).toBeUndefined();
  });

  it('boot_applications: unknown or none measured fails, even with every digest of the world allowed', () => {
    const allowAll = policy({ boot_applications: goldenApps.flatMap((a) => [...a.digests.values()]) });
    const [u] = checkPolicy(allowAll, unknownApps.facts, unknownApps.verified);
    expect([u?.rule, u?.observed]).toEqual(['boot_applications', expect.stringMatching(/^unknown \(PCR 4 is not quoted/)]);
    const [n] = checkPolicy(allowAll, noApps.facts, noApps.verified);
    expect([n?.rule, n?.observed]).toEqual(['boot_applications', 'no verified PCR 4 boot application measurement']);
    expect(checkPolicy(allowAll, golden.facts, golden.verified)).toEqual([]);
  });

  it('kernels: unknown or none measured fails', () => {
    const allowGolden = policy({ kernels: goldenFiles.map((f) => anyDigest(f.digests)) });
    expect(checkPolicy(allowGolden, unknownKernel.facts, unknownKernel.verified).map((v) => [v.rule, v.observed])).toEqual([
      ['kernels', expect.stringMatching(/^unknown \(PCR 9 is not quoted/)],
    ]);
    expect(checkPolicy(allowGolden, noKernel.facts, noKernel.verified).map((v) => [v.rule, v.observed])).toEqual([
      ['kernels', 'no verified PCR 9 kernel image measurement'],
    ]);
    expect(checkPolicy(allowGolden, golden.facts, golden.verified)).toEqual([]);
  });

  it('kernel_cmdline: unknown or none measured fails, even for a pattern that matches anything', () => {
    const anything = policy({ kernel_cmdline: ['^'] });
    expect(checkPolicy(anything, unknownKernel.facts, unknownKernel.verified).map((v) => [v.rule, v.observed])).toEqual([
      ['kernel_cmdline', expect.stringMatching(/^unknown \(neither PCR 8 nor PCR 12 is quoted/)],
    ]);
    expect(checkPolicy(anything, noKernel.facts, noKernel.verified).map((v) => [v.rule, v.observed])).toEqual([
      ['kernel_cmdline', 'no verified kernel command line'],
    ]);
    expect(checkPolicy(anything, golden.facts, golden.verified)).toEqual([]);
  });

  it('secure_boot: an unknown state fails and says why; a disabled state fails', () => {
    const sb = policy({ secure_boot: true });
    const [u] = checkPolicy(sb, noApps.facts, noApps.verified);
    expect(noApps.facts.secureBoot.state).toBe('unknown');
    expect(u?.rule).toBe('secure_boot');
    expect(u?.observed).toBe(`unknown (${noApps.facts.secureBoot.reason})`);
    expect(u?.message).toMatch(/, expected enabled$/);
    const off = evidence('gtt-ubuntu-2104-no-secure-boot');
    expect(rulesBroken(sb, off)).toEqual(['secure_boot']);
    expect(checkPolicy(sb, golden.facts, golden.verified)).toEqual([]);
  });

  it('secure_boot: a state with no stated reason is shown bare', () => {
    const sb = policy({ secure_boot: true });
    const silent = { ...golden.facts, secureBoot: { ...golden.facts.secureBoot, state: 'disabled', enabled: false, reason: '' } } as BootFacts;
    expect(checkPolicy(sb, silent, golden.verified).map((v) => v.observed)).toEqual(['disabled']);
  });

  it('boot_loader grub: a node with no GRUB measurement fails', () => {
    const grub = policy({ boot_loader: 'grub' });
    expect(checkPolicy(grub, noKernel.facts, noKernel.verified).map((v) => [v.rule, v.observed, v.fields.expected])).toEqual([['boot_loader', 'no GRUB measurements found', 'grub']]);
    expect(checkPolicy(grub, golden.facts, golden.verified)).toEqual([]);
  });

  it('a rule the policy does not have is not judged: a PCR-only policy passes a node whose facts are all unknown', () => {
    const pcr0 = unknownKernel.verified.quotedPcrs.get('sha256')!.get(0)!;
    const only = policy({ pcrs: { sha256: { '0': Buffer.from(pcr0).toString('hex') } } });
    expect(checkPolicy(only, unknownKernel.facts, unknownKernel.verified)).toEqual([]);
    expect(checkPolicy(policy({ boot_loader: 'grub' }), unknownKernel.facts, unknownKernel.verified).map((v) => v.rule)).toEqual(['boot_loader']);
    const offNode = evidence('gtt-ubuntu-2104-no-secure-boot');
    expect(checkPolicy({ ...only, secureBoot: false }, offNode.facts, offNode.verified).map((v) => v.rule)).toEqual(['pcr sha256:0']);
  });
});

describe('every measured item must be allowed', () => {
  it('one unlisted boot application fails the rule, naming its event, while the listed ones pass', () => {
    expect(goldenApps.length).toBeGreaterThan(1);
    const last = goldenApps.at(-1)!;
    const allowed = goldenApps.slice(0, -1).map((a) => anyDigest(a.digests));
    const violations = checkPolicy(policy({ boot_applications: allowed }), golden.facts, golden.verified);
    expect(violations.map((v) => v.rule)).toEqual([`boot_applications (event ${last.sequence})`]);
    // The observed value lists every verified digest of the refused image, bank by bank.
    expect(violations[0]!.observed).toBe([...last.digests].map(([bank, hex]) => `${bank}:${hex}`).join(' '));
    const first = goldenApps[0]!;
    const withoutFirst = checkPolicy(policy({ boot_applications: goldenApps.slice(1).map((a) => anyDigest(a.digests)) }), golden.facts, golden.verified);
    expect(withoutFirst.map((v) => v.rule)).toEqual([`boot_applications (event ${first.sequence})`]);
  });

  it('an application is allowed by its digest in any verified collision-resistant bank, never by its SHA-1 digest', () => {
    for (const bank of ['sha256', 'sha384']) {
      const allowed = goldenApps.map((a) => a.digests.get(bank)!);
      expect(checkPolicy(policy({ boot_applications: allowed }), golden.facts, golden.verified), bank).toEqual([]);
    }
    const bySha1 = checkPolicy(policy({ boot_applications: goldenApps.map((a) => a.digests.get('sha1')!) }), golden.facts, golden.verified);
    expect(bySha1.map((v) => v.rule)).toEqual(goldenApps.map((a) => `boot_applications (event ${a.sequence})`));
  });

  it('an application with no verified digest is never allowed', () => {
    const bare = { ...golden.facts, efiBootApplications: { known: true, value: [{ ...goldenApps[0]!, digests: new Map() }] } } as BootFacts;
    const all = policy({ boot_applications: goldenApps.flatMap((a) => [...a.digests.values()]) });
    expect(checkPolicy(all, bare, golden.verified).map((v) => v.observed)).toEqual(['(no verified digest)']);
  });

  it('one unlisted PCR 9 file fails kernels, whatever its filename hint says', () => {
    expect(goldenFiles.length).toBeGreaterThan(1);
    for (const [i, refused] of goldenFiles.entries()) {
      const allowed = goldenFiles.filter((_, j) => j !== i).map((f) => anyDigest(f.digests));
      const violations = checkPolicy(policy({ kernels: allowed }), golden.facts, golden.verified);
      expect(violations.map((v) => [v.rule, v.observed])).toEqual([
        [`kernels (event ${refused.sequence})`, [...refused.digests].map(([bank, hex]) => `${bank}:${hex}`).join(' ')],
      ]);
    }
  });

  it('every command line must match a pattern: a second, unmatched line fails even when the first matches', () => {
    // This systemd-stub log measures two command lines: both are judged.
    const sdBoot = evidence('tt-event-sd-boot-fedora37');
    const lines = known(sdBoot.facts.kernelCommandLines);
    expect(lines.map((l) => l.source)).toEqual(['systemd-stub', 'systemd-stub']);
    const exactly = (s: string) => `^${s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
    expect(checkPolicy(policy({ kernel_cmdline: [exactly(lines[0]!.cmdline)] }), sdBoot.facts, sdBoot.verified)).toEqual([]);
    // The same node, had its second line said something else: a match of the first does not carry the second.
    const evil = { ...lines[1]!, cmdline: `${lines[1]!.cmdline} init=/bin/sh` };
    const split = { ...sdBoot.facts, kernelCommandLines: { known: true, value: [lines[0]!, evil] } } as BootFacts;
    const onlyFirst = checkPolicy(policy({ kernel_cmdline: [exactly(lines[0]!.cmdline)] }), split, sdBoot.verified);
    expect(onlyFirst.map((v) => [v.rule, v.observed])).toEqual([[`kernel_cmdline (event ${evil.sequence})`, JSON.stringify(evil.cmdline)]]);
    // A line is fine when any one of the patterns matches it.
    expect(checkPolicy(policy({ kernel_cmdline: ['^never$', exactly(evil.cmdline), exactly(lines[0]!.cmdline)] }), split, sdBoot.verified)).toEqual([]);
    expect(checkPolicy(policy({ kernel_cmdline: [exactly(goldenLines[0]!.cmdline)] }), golden.facts, golden.verified)).toEqual([]);
  });
});

describe('PCR rules', () => {
  const sha256 = golden.verified.quotedPcrs.get('sha256')!;
  const hex = (index: number) => Buffer.from(sha256.get(index)!).toString('hex');

  it('each listed PCR must equal the quoted value; a bank the quote does not carry is "not quoted"', () => {
    expect(checkPolicy(policy({ pcrs: { sha256: { '0': hex(0), '7': hex(7) } } }), golden.facts, golden.verified)).toEqual([]);
    const wrong = checkPolicy(policy({ pcrs: { sha256: { '0': hex(0), '7': hex(0) } } }), golden.facts, golden.verified);
    expect(wrong.map((v) => [v.rule, v.observed, v.fields.expected])).toEqual([['pcr sha256:7', hex(7), hex(0)]]);
    const sha512 = checkPolicy(policy({ pcrs: { sha512: { '0': '0'.repeat(128) } } }), golden.facts, golden.verified);
    expect(sha512.map((v) => [v.rule, v.observed])).toEqual([['pcr sha512:0', 'not quoted']]);
  });

  it('violations come in PCR index order whatever order the policy lists them in', () => {
    const unordered: MeasuredBootPolicy = { ...policy({ secure_boot: true }), secureBoot: false, pcrs: new Map([['sha256', new Map([[9, '00'.repeat(32)], [2, '00'.repeat(32)], [4, '00'.repeat(32)]])]]) };
    expect(checkPolicy(unordered, golden.facts, golden.verified).map((v) => v.rule)).toEqual(['pcr sha256:2', 'pcr sha256:4', 'pcr sha256:9']);
    expect(() => enforcePolicy([unordered], golden.facts, golden.verified)).toThrow(expect.objectContaining({ rule: 'pcr sha256:2' }));
  });

  it('every rule is judged: a node breaking several rules gets one violation per rule, in rule order', () => {
    const off = evidence('gtt-ubuntu-2104-no-secure-boot');
    const all = policy({
      pcrs: { sha256: { '7': '00'.repeat(32) } },
      secure_boot: true,
      boot_applications: ['00'.repeat(32)],
      kernels: ['00'.repeat(32)],
      kernel_cmdline: ['^never$'],
    });
    const rules = rulesBroken(all, off).map((r) => r.replace(/ \(event \d+\)$/, ''));
    expect([...new Set(rules)]).toEqual(['pcr sha256:7', 'secure_boot', 'boot_applications', 'kernels', 'kernel_cmdline']);
  });
});

describe('evaluation and enforcement', () => {
  const off = evidence('gtt-ubuntu-2104-no-secure-boot');
  const policies = parsePolicyFile(JSON.stringify({ policies: [{ name: 'strict', secure_boot: true }, { name: 'lax', boot_loader: 'grub' }] }));

  it('a policy passes only with no violation, and each result carries its own violations', () => {
    const results = evaluatePolicies(policies, off.facts, off.verified);
    expect(results.map((r) => [r.policy, r.passed, r.violations.map((v) => v.rule)])).toEqual([
      ['strict', false, ['secure_boot']],
      ['lax', true, []],
    ]);
  });

  it('enforcement judges the named policy, else the first; it throws the violation (PERMISSION_DENIED)', () => {
    expect(() => enforcePolicy(policies, off.facts, off.verified, 'lax')).not.toThrow();
    const e = expectError(() => enforcePolicy(policies, off.facts, off.verified), AttestationRefused, ERR_POLICY_VIOLATION, GrpcCode.PERMISSION_DENIED);
    expect(e).toBeInstanceOf(PolicyViolation);
    expect((e as PolicyViolation).rule).toBe('secure_boot');
    expect(() => enforcePolicy(policies, off.facts, off.verified, 'strict')).toThrow(expect.objectContaining({ policy: 'strict', rule: 'secure_boot' }));
    expect(() => enforcePolicy([...policies].reverse(), off.facts, off.verified)).not.toThrow();
  });

  it('an unknown policy name, or no policy at all, is a violation, never a pass', () => {
    const e = expectError(() => enforcePolicy(policies, off.facts, off.verified, 'missing'), AttestationRefused, ERR_POLICY_VIOLATION, GrpcCode.PERMISSION_DENIED);
    // The code is what audit logs and alerts key on; a violation with nothing expected carries no `expected` field.
    expect(e.code).toBe('ERR_POLICY_VIOLATION');
    expect(e.fields).toStrictEqual({ policy: 'missing', rule: 'policy', observed: 'no such policy' });
    expect(e.message).toBe('policy "missing": policy: observed no such policy');
    expect(() => enforcePolicy([], off.facts, off.verified)).toThrow(expect.objectContaining({ policy: '(none)', rule: 'policy' }));
  });

  it('a violation echoes at most 512 characters of what the node sent', () => {
    const long = 'x'.repeat(600);
    const v = new PolicyViolation('p', 'kernel_cmdline', long, 'a match');
    expect(v.observed).toBe(`${'x'.repeat(512)}…`);
    expect(v.fields).toEqual({ policy: 'p', rule: 'kernel_cmdline', observed: `${'x'.repeat(512)}…`, expected: 'a match' });
    expect(v.message).toBe(`policy "p": kernel_cmdline: observed ${'x'.repeat(512)}…, expected a match`);
    expect(new PolicyViolation('p', 'r', 'x'.repeat(512)).observed).toBe('x'.repeat(512));
  });
});
