import { createHash, generateKeyPairSync, getHashes, sign as signOneShot } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AttestationRefused, MalformedInput } from '../../../src/errors.js';
import {
  ImaKeyring,
  MAX_IMA_TEMPLATE_DATA,
  imaDigest,
  parseImaAsciiLog,
  parseImaBinaryLog,
  parseImaLog,
  replayIma,
  sm3,
  verifyImaAgainstPcr,
  verifyImaSignature,
  verifyTemplateHashes,
} from '../../../src/tpm/ima/index.js';
import { verifyEcdsaDigest } from '../../../src/tpm/ima/ecdsa.js';
import { expectedPcr10, synthEntries, toAsciiList, toBinaryList, type SynthEntry } from './synth.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const SPECS: SynthEntry[] = [
  { template: 'ima-ng', path: 'boot_aggregate', digestAlg: 'sha256' },
  { template: 'ima', path: '/init' },
  { template: 'ima-ng', path: '/usr/bin/bash', digestAlg: 'sha512' },
  { template: 'ima-sig', path: '/usr/bin/with space', digestAlg: 'sha384' },
  { template: 'ima-buf', path: 'kexec-cmdline', buffer: Buffer.from('root=/dev/sda1 ro') },
  { template: 'ima-cgpath', path: '/app/server', cgroup: '/kubepods/besteffort/pod1234/cri-containerd-abcd' },
  { template: 'ima-dep-cgn', path: '/app/worker', digestAlg: 'sm3_256', cgroup: 'cri-containerd-abcd.scope' },
  { template: 'ima-ng', path: '/etc/changed-while-open', invalidate: true },
];

describe('SM3 (own implementation, GB/T 32905 examples)', () => {
  it('hashes "abc" and the 64-byte example to the standard values, and agrees with OpenSSL when present', () => {
    expect(hex(sm3(Buffer.from('abc')))).toBe('66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0');
    expect(hex(sm3(Buffer.from('abcd'.repeat(16))))).toBe('debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732');
    if (getHashes().includes('sm3')) {
      for (const n of [0, 55, 56, 63, 64, 65, 1000]) {
        const data = Buffer.alloc(n, n & 0xff);
        expect(hex(sm3(data))).toBe(createHash('sm3').update(data).digest('hex'));
      }
    }
  });
});

describe('IMA lists: all six templates, binary and ASCII', () => {
  const entries = synthEntries(SPECS);
  it('binary: parses every template back to the same fields and template data', () => {
    const log = parseImaBinaryLog(toBinaryList(entries));
    expect(log.truncated).toBeUndefined();
    expect(log.entries.map((e) => [e.template, e.path, e.digestAlg, hex(e.digest), e.cgroup, e.invalidated])).toEqual(
      entries.map((e) => [e.template, e.path, e.digestAlg, hex(e.digest), e.cgroup, e.invalidated]),
    );
    expect(log.entries.map((e) => hex(e.templateData))).toEqual(entries.map((e) => hex(e.templateData)));
    verifyTemplateHashes(log.entries);
  });
  it('ASCII: the same, including a path with a space and an empty ima-sig signature', () => {
    const log = parseImaLog(Buffer.from(toAsciiList(entries)));
    expect(log.format).toBe('ascii');
    expect(log.entries.map((e) => [e.template, e.path, e.dependencies, e.cgroup])).toEqual(entries.map((e) => [e.template, e.path, e.dependencies, e.cgroup]));
    verifyTemplateHashes(log.entries);
  });
  it('replays into PCR 10 per bank (sha1, sha256), invalidated entries extending all ones', () => {
    const pcr = replayIma(entries, ['sha1', 'sha256']);
    expect(hex(pcr.get('sha1')!)).toBe(expectedPcr10(entries, 'sha1'));
    expect(hex(pcr.get('sha256')!)).toBe(expectedPcr10(entries, 'sha256'));
    const withoutFF = expectedPcr10(entries.map((e) => ({ ...e, invalidated: false })), 'sha1');
    expect(hex(pcr.get('sha1')!)).not.toBe(withoutFF);
  });
  it('verifies against the quoted PCR 10, and leaves entries after the quote pending', () => {
    const quoted = new Map([['sha256', replayIma(entries.slice(0, 5), ['sha256']).get('sha256')!]] as const);
    const result = verifyImaAgainstPcr(entries, quoted);
    expect(result.verified).toHaveLength(5);
    expect(result.pending.map((e) => e.path)).toEqual(entries.slice(5).map((e) => e.path));
    // incremental: the rest from the stored PCR value
    const rest = verifyImaAgainstPcr(entries.slice(5), new Map([['sha256', replayIma(entries, ['sha256']).get('sha256')!]]), { initial: result.pcr });
    expect(rest.verified).toHaveLength(3);
    expect(rest.pending).toHaveLength(0);
  });
});

describe('IMA lists: tampering and damage are refused', () => {
  const entries = synthEntries(SPECS.slice(0, 6));
  const quoted = new Map([['sha1', replayIma(entries, ['sha1']).get('sha1')!]] as const);
  it('a tampered file digest (template hash left as logged) fails the template hash check, naming the entry', () => {
    const text = toAsciiList(entries).replace(entries[2]!.digest.length ? hex(entries[2]!.digest) : 'x', '00'.repeat(64));
    const log = parseImaAsciiLog(text);
    expect(() => verifyTemplateHashes(log.entries)).toThrow(/IMA entry 2 \(ima-ng "\/usr\/bin\/bash"\)/);
    expect(() => verifyImaAgainstPcr(log.entries, quoted)).toThrow(AttestationRefused);
  });
  it('a tampered entry whose template hash is also recomputed does not replay to the quote', () => {
    const forged = synthEntries([...SPECS.slice(0, 2), { ...SPECS[2]!, content: 'evil' }, ...SPECS.slice(3, 6)]);
    expect(() => verifyImaAgainstPcr(forged, quoted)).toThrow(/does not replay to the quoted PCR 10: sha1 replays to/);
  });
  it('a reordered log does not replay to the quote', () => {
    const reordered = [entries[1]!, entries[0]!, ...entries.slice(2)];
    expect(() => verifyImaAgainstPcr(reordered, quoted)).toThrow(/does not replay/);
  });
  it('a truncated binary list: complete entries parse, the partial tail is reported, and fewer entries verify', () => {
    const bin = toBinaryList(entries);
    for (const cut of [1, 7, 30]) {
      const log = parseImaBinaryLog(bin.subarray(0, bin.length - cut));
      expect(log.entries).toHaveLength(entries.length - 1);
      expect(log.truncated!.offset + log.truncated!.bytes).toBe(bin.length - cut);
      expect(() => verifyImaAgainstPcr(log.entries, quoted)).toThrow(/does not replay/);
    }
  });
  it('a truncated ASCII list: the unterminated last line is the tail', () => {
    const text = toAsciiList(entries);
    const log = parseImaAsciiLog(text.slice(0, -10));
    expect(log.entries).toHaveLength(entries.length - 1);
    expect(log.truncated!.bytes).toBeGreaterThan(0);
  });
  it('a log that does not match PCR 10 at all', () => {
    expect(() => verifyImaAgainstPcr(entries, new Map([['sha1', Buffer.alloc(20, 7)]]))).toThrow(/does not replay/);
  });
  it('an entry on another PCR is refused (nothing anchors it)', () => {
    const other = synthEntries([SPECS[0]!, { ...SPECS[1]!, pcr: 11 }]);
    expect(() => verifyImaAgainstPcr(other, new Map([['sha1', replayIma(other, ['sha1']).get('sha1')!]]))).toThrow(/extends PCR 11/);
  });
  it('sizes are bounded and bad fields are MalformedInput with the offset', () => {
    const bin = toBinaryList(entries.slice(0, 1));
    const big = Buffer.from(bin);
    big.writeUInt32LE(MAX_IMA_TEMPLATE_DATA + 1, 4 + 20 + 4 + 6);
    expect(() => parseImaBinaryLog(big)).toThrow(/template data length .* exceeds/);
    const badName = Buffer.from(bin);
    badName.writeUInt32LE(1000, 24);
    expect(() => parseImaBinaryLog(badName)).toThrow(/IMA entry 0 at offset 0: template name length 1000/);
    expect(() => parseImaAsciiLog('10 abcd ima-ng md4:00 /x\n')).toThrow(MalformedInput);
    expect(() => parseImaAsciiLog('99 ' + '00'.repeat(20) + ' ima-ng sha1:' + '00'.repeat(20) + ' /x\n')).toThrow(/PCR index/);
    expect(() => parseImaAsciiLog('10 ' + '00'.repeat(20) + ' ima-ng sha1:' + '00'.repeat(19) + ' /x\n')).toThrow(/sha1 file digest has 19 bytes/);
  });
});

describe('ima-sig signatures (v2) and ECDSA over digests', () => {
  it('RSA and P-256/P-384 signatures over the file digest verify with the right key only', () => {
    const digest = imaDigest('sha256', Buffer.from('file content'));
    const ring = new ImaKeyring();
    for (const opts of [{ type: 'rsa', modulusLength: 2048 }, { type: 'ec', namedCurve: 'P-256' }, { type: 'ec', namedCurve: 'P-384' }] as const) {
      const { publicKey, privateKey } = opts.type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: opts.namedCurve });
      const key = ring.add(publicKey, opts.type);
      // Node signs data, not digests: sign the content with sha256 so the signed digest is `digest`.
      const raw = signOneShot('sha256', Buffer.from('file content'), privateKey);
      const header = Buffer.alloc(9);
      header.writeUInt8(3, 0);
      header.writeUInt8(2, 1);
      header.writeUInt8(4, 2);
      header.writeUInt32BE(key.keyId, 3);
      header.writeUInt16BE(raw.length, 7);
      const sig = Buffer.concat([header, raw]);
      expect(verifyImaSignature(sig, digest, 'sha256', ring)).toEqual({ ok: true, keyId: key.keyId });
      expect(verifyImaSignature(sig, imaDigest('sha256', Buffer.from('other')), 'sha256', ring).ok).toBe(false);
      expect(verifyImaSignature(sig, digest, 'sha256', new ImaKeyring()).ok).toBe(false);
      const flipped = Buffer.from(sig);
      flipped[flipped.length - 5]! ^= 1;
      expect(verifyImaSignature(flipped, digest, 'sha256', ring).ok).toBe(false);
    }
  });
  it('ECDSA rejects out-of-range and malformed signatures', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const x = Buffer.from(jwk.x!, 'base64url');
    const y = Buffer.from(jwk.y!, 'base64url');
    expect(verifyEcdsaDigest('P-256', x, y, Buffer.alloc(32), Buffer.from('3006020100020100', 'hex'))).toBe(false);
    expect(verifyEcdsaDigest('P-256', x, y, Buffer.alloc(32), Buffer.from('30', 'hex'))).toBe(false);
    expect(verifyEcdsaDigest('P-521', x, y, Buffer.alloc(32), Buffer.from('3006020101020101', 'hex'))).toBe(false);
  });
});
