import { describe, expect, it } from 'vitest';
import { AttestationRefused, InvalidConfig } from '../../src/errors.js';
import { MAX_EXCLUDES, evaluateRuntimePolicy, parseRuntimePolicy, runtimePolicyViolation } from '../../src/policy/runtime-policy.js';
import { fileDigest, synthEntries } from '../tpm/ima/synth.js';

const json = (o: unknown) => Buffer.from(JSON.stringify(o));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('runtime policy: reading', () => {
  it('refuses what it cannot apply faithfully, naming it', () => {
    const cases: [unknown, RegExp][] = [
      [{ digests: {}, surprise: 1 }, /unknown key "surprise"/],
      [{ excludes: ['(?P<x>a)'] }, /excludes: not a valid regular expression/],
      [{ excludes: ['(?i)abc'] }, /excludes: not a valid regular expression/],
      [{ excludes: Array(MAX_EXCLUDES + 1).fill('a') }, /excludes must be at most 1024/],
      [{ ima: { dm_policy: { rules: [] } } }, /dm_policy .* not supported/],
      [{ ima: { log_hash_alg: 'md5' } }, /log_hash_alg "md5" is not supported/],
      [{ digests: { '/x': ['nothex'] } }, /"nothex" is not a hex digest/],
      [{ digests: { '/x': 'abc' } }, /must be a list of at most 64 digests/],
      [{ meta: { version: 2 } }, /meta.version 2 is not supported/],
      ['[]', /must be a JSON object/],
    ];
    for (const [policy, message] of cases) {
      const bytes = typeof policy === 'string' ? Buffer.from(policy) : json(policy);
      expect(() => parseRuntimePolicy(bytes, { name: 'p' })).toThrow(InvalidConfig);
      expect(() => parseRuntimePolicy(bytes, { name: 'p' })).toThrow(message);
    }
    expect(() => parseRuntimePolicy(Buffer.from('{'), { name: 'p' })).toThrow(/runtime policy "p": is not JSON/);
  });
});

describe('runtime policy: verdicts', () => {
  const policy = parseRuntimePolicy(
    json({ digests: { '/usr/bin/app': [hex(fileDigest('sha256', 'v1'))], '/usr/bin/tool': [`sha256:${hex(fileDigest('sha256', 't'))}`] }, excludes: ['/var/log/'] }),
    { name: 'edge' },
  );
  it('a violation names the entry, the path, the observed digest and the rule; the error carries them as fields', () => {
    const entries = synthEntries([
      { template: 'ima-ng', path: '/usr/bin/app', content: 'v1' },
      { template: 'ima-ng', path: '/usr/bin/app', content: 'v2' },
      { template: 'ima-cgpath', path: '/usr/bin/unknown', content: 'u', cgroup: '/kubepods/pod1/c1' },
      { template: 'ima-ng', path: '/usr/bin/tool', content: 't', digestAlg: 'sha256' },
      { template: 'ima-ng', path: '/var/log/syslog', content: 'x' },
    ]);
    const { violations, checked } = evaluateRuntimePolicy(entries, { policy });
    expect(checked).toBe(5);
    expect(violations.map((v) => [v.entry, v.path, v.rule])).toEqual([
      [1, '/usr/bin/app', 'digest-not-allowed'],
      [2, '/usr/bin/unknown', 'not-in-policy'],
    ]);
    expect(violations[0]!.digest).toBe(`sha256:${hex(fileDigest('sha256', 'v2'))}`);
    const err = runtimePolicyViolation('edge', violations[0]!);
    expect(err).toBeInstanceOf(AttestationRefused);
    expect(err.message).toContain(violations[0]!.digest);
    expect(err.fields).toMatchObject({ policy: 'edge', entry: 1, path: '/usr/bin/app', rule: 'digest-not-allowed' });
  });
  it('an alg-prefixed policy digest must match the algorithm too; maxViolations bounds the report', () => {
    const sameHexOtherAlg = synthEntries([{ template: 'ima-ng', path: '/usr/bin/tool', digest: fileDigest('sha256', 't'), digestAlg: 'sm3_256' }]);
    expect(evaluateRuntimePolicy(sameHexOtherAlg, { policy }).violations[0]!.rule).toBe('digest-not-allowed');
    const many = synthEntries(Array.from({ length: 50 }, (_, i) => ({ template: 'ima-ng' as const, path: `/x/${i}` })));
    expect(evaluateRuntimePolicy(many, { policy, maxViolations: 3 }).violations).toHaveLength(3);
  });
});
