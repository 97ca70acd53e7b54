/**
 * Data-driven: every stated expectation of every IMA item in test/fixtures/ima (copied from the shared corpus with
 * `.source.json` provenance sidecars). Each `it` names the item and the expectation it checks.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidConfig, MalformedInput } from '../../../src/errors.js';
import {
  ImaKeyring,
  formatImaAsciiLine,
  parseImaAsciiLog,
  parseImaBinaryLog,
  parseImaLog,
  replayIma,
  verifyTemplateHashes,
  type ImaEntry,
} from '../../../src/tpm/ima/index.js';
import { detectFileDigestAlg, evaluateRuntimePolicy, parseRuntimePolicy, publicKeyFromPem, type RuntimePolicy } from '../../../src/policy/runtime-policy.js';

const FIXTURES = join(import.meta.dirname, '../../fixtures/ima');
const read = (f: string): Buffer => readFileSync(join(FIXTURES, f));
const expectation = (id: string): any => JSON.parse(read(`${id}.expected.json`).toString('utf8'));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('corpus ima: provenance', () => {
  it('every fixture file has a sidecar whose sha256 and size match', () => {
    const items = readdirSync(FIXTURES).filter((f) => f.endsWith('.expected.json'));
    expect(items.length).toBe(12);
    for (const f of items) {
      for (const file of JSON.parse(read(f).toString('utf8')).files as { file: string; sha256: string; size: number }[]) {
        const data = read(file.file);
        const side = JSON.parse(read(`${file.file}.source.json`).toString('utf8'));
        expect(createHash('sha256').update(data).digest('hex')).toBe(file.sha256);
        expect(side.sha256).toBe(file.sha256);
        expect(data.length).toBe(file.size);
      }
    }
  });
});

describe.each(['sha1', 'sha256', 'sha384', 'sha512', 'sm3_256'])('corpus ima: kl-ima-log-%s', (alg) => {
  const id = `kl-ima-log-${alg}`;
  const exp = expectation(id).expected;
  it('accepted: parses, template hashes verify (zero ones are invalidated entries)', () => {
    const log = parseImaLog(read(`${id}.ascii`));
    expect(exp.accepted).toBe(true);
    expect(log.entries.map((e) => e.path)).toEqual(['boot_aggregate', '/data']);
    expect(log.truncated).toBeUndefined();
    expect(() => verifyTemplateHashes(log.entries)).not.toThrow();
  });
  it('detected_digest_algorithm', () => {
    const log = parseImaLog(read(`${id}.ascii`));
    expect(detectFileDigestAlg(log.entries)).toBe(exp.detected_digest_algorithm);
    if (alg === 'sm3_256') expect(log.entries[1]!.templateHashAlg).toBe('sm3_256');
  });
});

describe('corpus ima: tss binary lists', () => {
  for (const id of ['tss-sml-ima-ng-sha1', 'tss-sml-ima-sha1']) {
    const exp = expectation(id).expected;
    it(`${id}: entries (name, template_hash_sha1), entry_count, parses_with_template_hash_check, stray trailing byte`, () => {
      const data = read(`${id}.bin`);
      const log = parseImaBinaryLog(data);
      expect(log.entries.map((e) => ({ template_hash_sha1: hex(e.templateHash), name: e.path }))).toEqual(exp.entries);
      expect(log.entries.length).toBe(exp.entry_count);
      expect(log.entries.every((e) => e.pcr === exp.pcr)).toBe(true);
      expect(exp.parses_with_template_hash_check).toBe(true);
      expect(() => verifyTemplateHashes(log.entries)).not.toThrow();
      expect(log.truncated).toEqual({ offset: data.length - 1, bytes: 1 });
      expect(log.consumed).toBe(data.length - 1);
      expect(new Set(log.entries.map((e) => e.template))).toEqual(new Set(expectation(id).observed_by_collector.templates));
    });
  }
});

describe('corpus ima: rk-ima-entry-vectors', () => {
  const vectors = JSON.parse(read('rk-ima-entry-vectors.json').toString('utf8')) as any[];
  for (const v of vectors.filter((x) => !x.error)) {
    it(`${v.test}: parses, path, kernel template data, template hash`, () => {
      const [entry] = parseImaAsciiLog(`${v.line}\n`).entries;
      expect(entry!.template).toBe(v.template_name);
      expect(entry!.path).toBe(v.path);
      expect(hex(entry!.templateData)).toBe(v.kernel_template_data_hex_recomputed_by_collector);
      expect(() => verifyTemplateHashes([entry!])).not.toThrow();
      expect(formatImaAsciiLine(entry!)).toBe(v.line);
    });
  }
  it('test_unrecognized_template: rejected with unrecognized template "ima-unknown"', () => {
    const v = vectors.find((x) => x.error)!;
    expect(() => parseImaAsciiLog(`${v.line}\n`)).toThrow(MalformedInput);
    expect(() => parseImaAsciiLog(`${v.line}\n`)).toThrow(v.error);
  });
});

describe('corpus ima: rk-ima_log and rk-ascii_runtime_measurements', () => {
  it('rk-ima_log: parses, entry_count_gt 0, round trip equals the file', () => {
    const exp = expectation('rk-ima_log').expected;
    const text = read('rk-ima_log.txt').toString('utf8');
    const log = parseImaAsciiLog(text);
    expect(exp.parses).toBe(true);
    expect(log.entries.length).toBeGreaterThan(exp.entry_count_gt);
    expect(log.entries.map((e) => `${formatImaAsciiLine(e)}\n`).join('')).toBe(text);
    verifyTemplateHashes(log.entries);
  });
  it('rk-ascii_runtime_measurements (collector observation): 826 ima-ng entries, no template hash mismatch', () => {
    const observed = expectation('rk-ascii_runtime_measurements').observed_by_collector;
    const log = parseImaAsciiLog(read('rk-ascii_runtime_measurements.ascii'));
    expect(log.entries.length).toBe(observed.entries);
    expect(log.entries.every((e) => e.template === 'ima-ng')).toBe(true);
    expect(() => verifyTemplateHashes(log.entries)).not.toThrow();
  });
});

describe('corpus ima: kl-runtime-policy', () => {
  const exp = expectation('kl-runtime-policy').expected;
  const key = publicKeyFromPem(read('kl-runtime-policy/runtime-policy-pubkey.pub'), 'key');
  it('runtime-policy-test.json: sha256, meta, digests, keyrings', () => {
    const e = exp['runtime-policy-test.json'];
    const bytes = read('kl-runtime-policy/runtime-policy-test.json');
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(e.sha256);
    const p = parseRuntimePolicy(bytes, { sha256: e.sha256 });
    expect(p.meta.version).toBe(e['meta.version']);
    expect(p.generator).toBe(e['meta.generator']);
    expect(p.digests.size).toBe(e.digests_count);
    expect([...p.digests.get('/boot/grub2/i386-pc/testload.mod')!][0]).toBe(e['digests["/boot/grub2/i386-pc/testload.mod"][0]']);
    expect(p.keyrings.size).toBe(e.keyrings_count);
    expect([...p.keyrings.get('.ima')!][0]).toBe(e['keyrings[".ima"][0]']);
  });
  it('runtime-policy-test.json: a wrong checksum is rejected ("Checksum of runtime policy does not match")', () => {
    const wrong = Object.keys(exp['runtime-policy-test.json']).find((k) => k.startsWith('checksum '))!;
    const bytes = read('kl-runtime-policy/runtime-policy-test.json');
    expect(() => parseRuntimePolicy(bytes, { sha256: wrong.split(' ')[1]! })).toThrow(InvalidConfig);
    expect(() => parseRuntimePolicy(bytes, { sha256: wrong.split(' ')[1]! })).toThrow('Checksum of runtime policy does not match');
  });
  it('runtime-policy-test-signed.json: sha256, DSSE signature valid with the key, payloadType, payload digests', () => {
    const e = exp['runtime-policy-test-signed.json'];
    const bytes = read('kl-runtime-policy/runtime-policy-test-signed.json');
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(e.sha256);
    expect(JSON.parse(bytes.toString('utf8')).payloadType).toBe(e.payloadType);
    const p = parseRuntimePolicy(bytes, { verificationKeys: [key] });
    expect(p.signed).toBe(true);
    expect(p.digests.size).toBe(e.payload_digests_count);
    // fails closed: no key configured, a different key, a tampered payload, an unsigned policy when a key is set
    expect(() => parseRuntimePolicy(bytes)).toThrow(/no verification key/);
    const other = publicKeyFromPem(read('kl-ima-verification/secp256k1pub.pem'), 'other');
    expect(() => parseRuntimePolicy(bytes, { verificationKeys: [other] })).toThrow(/does not verify/);
    const env = JSON.parse(bytes.toString('utf8'));
    const payload = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8'));
    payload.digests['/usr/bin/evil'] = ['00'.repeat(32)];
    env.payload = Buffer.from(JSON.stringify(payload)).toString('base64');
    expect(() => parseRuntimePolicy(Buffer.from(JSON.stringify(env)), { verificationKeys: [key] })).toThrow(/does not verify/);
    expect(() => parseRuntimePolicy(read('kl-runtime-policy/runtime-policy-test.json'), { verificationKeys: [key] })).toThrow(/not signed/);
  });
});

describe('corpus ima: kl-ima-verification cases', () => {
  const item = expectation('kl-ima-verification');
  const dir = 'kl-ima-verification';
  const lines = (f: string): string[] => read(`${dir}/${f}`).toString('utf8').split('\n').filter((l) => l !== '').map((l) => `${l}\n`);
  // The source's bad-signature log is not in the corpus: it is a signatures.ascii line whose header length is wrong.
  const badSignature = (): string[] => {
    const line = lines('signatures.ascii')[0]!.trimEnd();
    return [`${line.slice(0, -2)}\n`];
  };
  const logOf = (spec: string): readonly ImaEntry[] => {
    const parts = spec.split(' + ');
    const text = parts
      .flatMap((p) => {
        const m = /^(\S+)(?: line (\d+))?$/.exec(p)!;
        if (m[1] === 'bad-signature.ascii') return badSignature();
        const all = lines(m[1]!);
        return m[2] ? [all[Number(m[2]) - 1]!] : all;
      })
      .join('');
    return parseImaAsciiLog(text).entries;
  };
  const policyOf = (spec: string | null): RuntimePolicy | undefined => {
    if (spec === null) return undefined;
    if (spec.startsWith('EMPTY')) return parseRuntimePolicy(Buffer.from(JSON.stringify({ meta: { version: 1 }, digests: {}, excludes: [], keyrings: {}, ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null } })));
    return parseRuntimePolicy(read(`${dir}/${spec}`), { name: spec });
  };
  const keyringOf = (keys: string[]): ImaKeyring | undefined => {
    if (keys.length === 0) return undefined;
    const ring = new ImaKeyring();
    for (const k of keys.filter((k) => !k.startsWith('('))) ring.addEncoded(read(`${dir}/${k}`), k);
    return ring;
  };
  const cases: [number, any][] = item.expected.cases.map((c: any, i: number) => [i, c]);
  it.each(cases)('case %i: %j', (_i: number, c: any) => {
    let entries: readonly ImaEntry[];
    try {
      entries = logOf(c.log);
    } catch (err) {
      // a line Keylime cannot parse fails the attestation
      expect(c.result).toBe('fail');
      throw err;
    }
    verifyTemplateHashes(entries.filter((e) => e.signature === undefined || !c.log.startsWith('bad-signature')));
    const verdict = evaluateRuntimePolicy(entries, { policy: policyOf(c.policy), keyring: keyringOf(c.keys) });
    if (c.result === 'fail') expect(verdict.violations.length).toBeGreaterThan(0);
    else expect(verdict.violations).toEqual([]);
    if (c.log === 'keyrings.ascii') expect(verdict.keysAdded).toHaveLength(1);
  });
  it('iterative_pcr10_sha1: PCR 10 after each line of measurements.ascii', () => {
    const entries = logOf('measurements.ascii');
    const after = item.expected.iterative_pcr10_sha1['after_each_line_of_measurements.ascii'] as string[];
    after.forEach((value, i) => expect(hex(replayIma(entries.slice(0, i + 1), ['sha1']).get('sha1')!)).toBe(value));
  });
});
