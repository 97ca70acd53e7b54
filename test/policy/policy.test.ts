import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AttestationRefused, GrpcCode, InvalidConfig } from '../../src/errors.js';
import { createPolicyFromEventLog } from '../../src/policy/create.js';
import { ERR_POLICY_VIOLATION, checkPolicy, enforcePolicy, evaluatePolicies } from '../../src/policy/evaluate.js';
import { parsePolicyFile, policiesToDocument } from '../../src/policy/policy.js';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { stringify } from 'yaml';
import { expectError } from '../tpm/expect-error.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/eventlog');
const load = (name: string) => parseEventLog(readFileSync(join(FIXTURES, `${name}.bin`)));

/** Verified events and facts of a fixture, replayed against its own PCRs (stands in for a verified quote). */
function evidence(name: string) {
  const log = load(name);
  const verified = replayEventLog(log, { values: computePcrs(log) });
  return { log, verified, facts: deriveBootFacts(verified) };
}

const invalid = (text: string) => expectError(() => parsePolicyFile(text), InvalidConfig, 'ERR_POLICY_INVALID', GrpcCode.INVALID_ARGUMENT);

describe('parsePolicyFile', () => {
  it('parses YAML and JSON with every rule', () => {
    const yamlText = `
policies:
  - name: golden-node
    pcrs: { sha256: { "7": "${'AB'.repeat(32)}" } }
    secure_boot: true
    boot_applications: ["${'0'.repeat(64)}"]
    kernels: ["${'1'.repeat(40)}"]
    kernel_cmdline: ["^.*ro quiet.*$"]
    boot_loader: grub
  - name: second
    secure_boot: true
`;
    const [p, q] = parsePolicyFile(yamlText);
    expect(p!.pcrs.get('sha256')!.get(7)).toBe('ab'.repeat(32));
    expect([p!.secureBoot, p!.bootLoader, p!.kernelCmdline![0]!.source]).toEqual([true, 'grub', '^.*ro quiet.*$']);
    expect(q!.name).toBe('second');
    expect(parsePolicyFile(JSON.stringify({ policies: [{ name: 'j', secure_boot: true }] }))[0]!.secureBoot).toBe(true);
  });

  it('refuses unknown keys, naming the key', () => {
    expect(invalid('policies: [{ name: a, secureboot: true }]').fields.path).toBe('policies.0.secureboot');
    expect(invalid('policies: [{ name: a }]\nextra: 1').fields.path).toBe('extra');
  });

  it('a top-level typo is reported as the unknown key it is, with the key it was meant to be', () => {
    const e = invalid('policy:\n  - name: a\n    secure_boot: true\n');
    expect(e.fields.path).toBe('policy');
    expect(e.message).toBe('policy file: policy: unknown key "policy" (did you mean "policies"?)');
    expect(invalid('policies: [{ name: a, secureboot: true }]').message).toMatch(/\(did you mean "secure_boot"\?\)$/);
  });

  it('refuses bad digests, banks, PCR indices, regexes, duplicate names, broken YAML', () => {
    invalid('policies: [{ name: a, boot_applications: ["xyz"] }]');
    invalid(`policies: [{ name: a, pcrs: { md5: { "0": "${'0'.repeat(32)}" } } }]`);
    invalid(`policies: [{ name: a, pcrs: { sha256: { "24": "${'0'.repeat(64)}" } } }]`);
    invalid(`policies: [{ name: a, pcrs: { sha256: { "0": "${'0'.repeat(40)}" } } }]`);
    invalid('policies: [{ name: a, kernel_cmdline: ["("] }]');
    invalid('policies: [{ name: a }, { name: a }]');
    invalid('policies: [');
    invalid('policies: []');
  });

  it('refuses a policy with no rules: it would admit every node as policy:<name>', () => {
    expect(invalid('policies: [{ name: lax }]').message).toBe('policy file: policies.0: policy "lax" has no rules');
    expect(invalid('policies: [{ name: lax, secure_boot: false }]').message).toMatch(/has no rules/);
  });

  it('bounds size, depth and aliases, naming the file', () => {
    const named = (text: string) => expectError(() => parsePolicyFile(text, '/etc/spire/p.yaml'), InvalidConfig, 'ERR_POLICY_INVALID', GrpcCode.INVALID_ARGUMENT);
    expect(named(`# ${'x'.repeat(256 * 1024)}\npolicies: [{ name: a, secure_boot: true }]`).message).toMatch(/^\/etc\/spire\/p\.yaml: \(top level\): larger than 262144 bytes$/);
    expect(named(`policies: [{ name: a, secure_boot: true, x: ${'['.repeat(50)}${']'.repeat(50)} }]`).message).toMatch(/nested deeper than 12 levels/);
    expect(named(`policies:\n${'  - '.repeat(40)}x`).message).toMatch(/nested deeper than 12 levels/);
    // Wide indentation is not depth: 8 columns a level still parses.
    const wide = 'policies:\n        - name: w\n          pcrs:\n                  sha256:\n                          "0": "' + '0'.repeat(64) + '"\n';
    expect(parsePolicyFile(wide)[0]!.pcrs.get('sha256')!.get(0)).toBe('0'.repeat(64));
    const laughs = ['a: &a ["lol","lol"]', ...Array.from({ length: 8 }, (_, i) => `${'bcdefghi'[i]}: &${'bcdefghi'[i]} [*${'abcdefgh'[i]},*${'abcdefgh'[i]}]`), 'policies: [{ name: a, secure_boot: true }]'];
    expect(named(laughs.join('\n')).message).toMatch(/^\/etc\/spire\/p\.yaml: not valid YAML\/JSON: .*alias/i);
  });

  it('refuses a tag it does not know, without a raw warning on stderr (a plugin\'s stderr carries hclog JSON only)', async () => {
    const warnings: unknown[] = [];
    const onWarning = (w: unknown) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const err = expectError(() => parsePolicyFile('policies:\n  - name: a\n    secure_boot: !raw:x true\n', 'p.yaml'), InvalidConfig, 'ERR_POLICY_INVALID', GrpcCode.INVALID_ARGUMENT);
      expect(err.message).toMatch(/^p\.yaml: not valid YAML\/JSON: Unresolved tag: !raw:x/);
      // process warnings are delivered on a later tick
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
  });

  it('refuses kernel_cmdline patterns whose matching time can explode', () => {
    const cases: [string, boolean][] = [
      ['^/vmlinuz-[0-9.]+-generic root=UUID=[0-9a-f-]+ ro quiet splash$', true],
      ['^\\(hd0,gpt2\\)/vmlinuz-5\\.14 root=/dev/mapper/rhel ro$', true],
      ['(?:ro|rw)( quiet)?', true],
      ['([ab])*c', true],
      ['(ab){2}', true],
      ['(a+)+$', false],
      ['(a|a)*$', false],
      ['(?:[\\s\\S]{0,1000}){0,1000}x', false],
      ['((ab)?)*', false],
      ['a{1001}', false],
      ['(x)\\1', false],
    ];
    for (const [pattern, safe] of cases) {
      const text = JSON.stringify({ policies: [{ name: 'p', kernel_cmdline: [pattern] }] });
      if (safe) expect(() => parsePolicyFile(text), pattern).not.toThrow();
      else expect(invalid(text).message, pattern).toMatch(/pattern could take unbounded time to match/);
    }
  });
});

describe('evaluatePolicies', () => {
  it('a policy created from a golden node passes for that node', () => {
    const { log, verified, facts } = evidence('gtt-cos-85-amd-sev');
    const policy = createPolicyFromEventLog(log, { name: 'golden-node', pcrs: [0, 2, 4, 7] });
    expect(evaluatePolicies([policy], facts, verified)).toEqual([{ policy: 'golden-node', passed: true, violations: [] }]);
  });

  it('PCR mismatch: PERMISSION_DENIED naming the rule and the observed value', () => {
    const { verified, facts } = evidence('gtt-cos-85-amd-sev');
    const [policy] = parsePolicyFile(`policies: [{ name: golden-node, pcrs: { sha256: { "7": "${'00'.repeat(32)}" } } }]`);
    const err = expectError(() => enforcePolicy([policy!], facts, verified), AttestationRefused, ERR_POLICY_VIOLATION, GrpcCode.PERMISSION_DENIED);
    expect(err.fields).toMatchObject({
      policy: 'golden-node',
      rule: 'pcr sha256:7',
      observed: '3365d7fa2b024c852913c06e04ffbfa6ea5289f743bbf1a76f7ffdf21ed84793',
    });
    expect(err.message).toContain('policy "golden-node": pcr sha256:7');
  });

  it('a PCR the quote does not cover fails', () => {
    const { verified, facts } = evidence('gtt-cos-85-amd-sev');
    const [policy] = parsePolicyFile(`policies: [{ name: p, pcrs: { sha256: { "10": "${'00'.repeat(32)}" } } }]`);
    expect(checkPolicy(policy!, facts, verified).map((v) => [v.rule, v.observed])).toEqual([['pcr sha256:10', 'not quoted']]);
  });

  it('Secure Boot required but off', () => {
    const { verified, facts } = evidence('gtt-ubuntu-2104-no-secure-boot');
    const [policy] = parsePolicyFile('policies: [{ name: sb, secure_boot: true }]');
    const [violation] = checkPolicy(policy!, facts, verified);
    expect([violation!.code, violation!.grpcCode, violation!.rule]).toEqual([ERR_POLICY_VIOLATION, GrpcCode.PERMISSION_DENIED, 'secure_boot']);
    expect(violation!.observed).toMatch(/^disabled/);
  });

  it('boot application not allowed', () => {
    const { log, verified, facts } = evidence('gtt-cos-85-amd-sev');
    const golden = createPolicyFromEventLog(log, { name: 'g', pcrs: [4] });
    const allowed = [...golden.bootApplications!].slice(1); // drop the first (shim) digest
    const [policy] = parsePolicyFile(stringify({ policies: [{ name: 'apps', boot_applications: allowed }] }));
    const violations = checkPolicy(policy!, facts, verified);
    const apps = facts.efiBootApplications.known ? facts.efiBootApplications.value : [];
    expect(violations.map((v) => v.rule)).toEqual([`boot_applications (event ${apps[0]!.sequence})`]);
    expect(violations[0]!.observed).toContain('sha256:dba8d69ffb244496ac8ab2950695d3da539d6ac5ec660fc6b4bdde245284cf23');
  });

  it('kernel command line not matching', () => {
    const { verified, facts } = evidence('gtt-ubuntu-2404-amd-sevsnp');
    const [policy] = parsePolicyFile('policies: [{ name: cmd, kernel_cmdline: ["^.*ro quiet.*$"] }]');
    const violations = checkPolicy(policy!, facts, verified);
    expect(violations).toHaveLength(1);
    expect(violations[0]!.rule).toMatch(/^kernel_cmdline/);
    expect(violations[0]!.observed).toContain('console=ttyS0,115200 panic=-1');
    const [ok] = parsePolicyFile('policies: [{ name: cmd, kernel_cmdline: ["^/vmlinuz-\\\\S+ root=PARTUUID=[0-9a-f-]+ ro console=ttyS0,115200 panic=-1$"] }]');
    expect(checkPolicy(ok!, facts, verified)).toEqual([]);
  });

  it('kernel digests: allowed passes, others and missing kernel measurements fail', () => {
    const { log, verified, facts } = evidence('gtt-cos-85-amd-sev');
    const golden = createPolicyFromEventLog(log, { name: 'g', pcrs: [9] });
    const [allowed] = parsePolicyFile(stringify({ policies: [{ name: 'k', kernels: [...golden.kernels!] }] }));
    expect(checkPolicy(allowed!, facts, verified)).toEqual([]);
    const [other] = parsePolicyFile(stringify({ policies: [{ name: 'k', kernels: ['ab'.repeat(32)] }] }));
    expect(checkPolicy(other!, facts, verified).map((v) => v.rule)[0]).toMatch(/^kernels/);
    const glinux = evidence('gtt-glinux-alex');
    // gtt-glinux-alex has no PCR 9 events: against its own replay PCR 9 is not quoted, so the fact is unknown.
    expect(checkPolicy(other!, glinux.facts, glinux.verified).map((v) => v.observed)).toEqual([
      'unknown (PCR 9 is not quoted in a bank the log carries)',
    ]);
  });

  it('evaluates several policies independently', () => {
    const { verified, facts } = evidence('gtt-ubuntu-2104-no-secure-boot');
    const policies = parsePolicyFile(`policies: [{ name: strict, secure_boot: true }, { name: lax, boot_loader: grub }]`);
    expect(evaluatePolicies(policies, facts, verified).map((r) => [r.policy, r.passed])).toEqual([['strict', false], ['lax', true]]);
  });
});

describe('createPolicyFromEventLog', () => {
  it('round-trips through the policy file format', () => {
    const policy = createPolicyFromEventLog(load('gtt-ubuntu-2404-amd-sevsnp'), { name: 'golden', pcrs: [0, 2, 4, 7] });
    const [reparsed] = parsePolicyFile(stringify(policiesToDocument([policy])));
    expect(policiesToDocument([reparsed!])).toEqual(policiesToDocument([policy]));
    expect(policy.kernelCmdline![0]!.test('/vmlinuz-6.8.0-1010-gcp root=PARTUUID=8270f3c9-b4e4-4345-80ee-5a62db7ebf3f ro console=ttyS0,115200 panic=-1')).toBe(true);
    expect(policy.kernelCmdline![0]!.test('/vmlinuz-6.8.0-1010-gcp root=PARTUUID=8270f3c9-b4e4-4345-80ee-5a62db7ebf3f ro console=ttyS0,115200 panic=-1 init=/bin/sh')).toBe(false);
  });

  it('refuses a PCR the log does not extend', () => {
    expectError(() => createPolicyFromEventLog(load('gtt-cos-85-amd-sev'), { name: 'g', pcrs: [10] }), InvalidConfig, 'ERR_POLICY_CREATE', GrpcCode.INVALID_ARGUMENT);
  });
});
