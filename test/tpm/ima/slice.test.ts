/** locateImaEntry (the agent's framing walker) against the parser's own entry offsets, binary and ASCII. */
import { describe, expect, it } from 'vitest';
import { locateImaEntry, parseImaLog } from '../../../src/tpm/ima/index.js';
import { synthEntries, toAsciiList, toBinaryList, type SynthEntry } from './synth.js';

const SPECS: SynthEntry[] = [
  { template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' },
  { template: 'ima', path: '/usr/bin/legacy', content: 'legacy' },
  { template: 'ima-sig', path: '/usr/bin/signed', content: 'signed', signature: new Uint8Array([3, 2, 4, 1, 2, 3, 4, 0, 1, 9]) },
  { template: 'ima-buf', path: 'kexec-cmdline', content: 'x', buffer: new TextEncoder().encode('console=ttyS0') },
  { template: 'ima-cgpath', path: '/app/server', content: 'server', cgroup: '/kubepods/pod1/cri-0123' },
  { template: 'ima-ng', path: '/tmp/w', content: 'w', invalidate: true },
];
const entries = synthEntries(SPECS);

describe('locateImaEntry', () => {
  for (const [form, bytes] of [
    ['binary', new Uint8Array(toBinaryList(entries))],
    ['ascii', new TextEncoder().encode(toAsciiList(entries))],
  ] as const) {
    it(`${form}: every entry starts where the parser says, the tail from there parses to the same entries`, () => {
      const parsed = parseImaLog(bytes).entries;
      for (let n = 0; n <= entries.length; n++) {
        const at = locateImaEntry(bytes, n)!;
        expect(at.total).toBe(entries.length);
        expect(at.start).toBe(n < entries.length ? parsed[n]!.offset : bytes.length);
        const tail = parseImaLog(bytes.subarray(at.start)).entries;
        expect(tail.map((e) => e.path)).toEqual(parsed.slice(n).map((e) => e.path));
      }
      expect(locateImaEntry(bytes, entries.length + 1)).toEqual({ total: entries.length, start: undefined });
    });

    it(`${form}: a partial tail is not an entry; the slice keeps it for the parser to report`, () => {
      const cut = bytes.subarray(0, bytes.length - 3);
      const at = locateImaEntry(cut, entries.length - 1)!;
      expect(at).toEqual({ total: entries.length - 1, start: parseImaLog(bytes).entries.at(-1)!.offset });
      const tail = parseImaLog(cut.subarray(at.start));
      expect(tail.entries).toHaveLength(0);
      expect(tail.truncated).toBeDefined();
    });
  }

  it('ASCII: blank lines are not entries and a slice never starts on one', () => {
    const text = toAsciiList(entries).split('\n').join('\n\n');
    const bytes = new TextEncoder().encode(text);
    const at = locateImaEntry(bytes, 2)!;
    expect(at.total).toBe(entries.length);
    expect(String.fromCharCode(bytes[at.start!]!)).toBe('1'); // "10 <hash> …"
    expect(parseImaLog(bytes.subarray(at.start)).entries.map((e) => e.path)).toEqual(entries.slice(2).map((e) => e.path));
  });

  it('framing it does not understand (bad PCR, template name length) yields undefined: the agent then sends the whole list', () => {
    const bad = new Uint8Array(toBinaryList(entries));
    bad.set([0x40, 0, 0, 0], 0);
    expect(locateImaEntry(bad, 1)).toBeUndefined();
    const badName = new Uint8Array(toBinaryList(entries));
    new DataView(badName.buffer).setUint32(24, 99, true);
    expect(locateImaEntry(badName, 1)).toBeUndefined();
    expect(locateImaEntry(new Uint8Array(0), 0)).toEqual({ total: 0, start: 0 });
    expect(locateImaEntry(new Uint8Array(0), 3)).toEqual({ total: 0, start: undefined });
  });
});
