/**
 * Boot facts hold only when every event of their PCRs reads as what it claims, and what it claims is exactly what was
 * measured. The log is the attacker's: types, data and order outside a PCR's hash chain are theirs to choose. Each
 * test builds such a log and checks the fact is unknown (or, for PCR 4, that the hidden image is still listed), and
 * that the facts a verifier reports name exactly what was measured.
 */
import { describe, expect, it } from 'vitest';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { computePcrs, replayEventLog, type PcrBankValues } from '../../src/tpm/replay.js';
import { ascii, buildAgileLog, hash, type Bank, type SyntheticEvent } from './eventlog-builder.js';

function derive(events: readonly SyntheticEvent[], banks: readonly Bank[] = ['sha256'], quote?: (computed: PcrBankValues) => PcrBankValues) {
  const log = parseEventLog(buildAgileLog(events, banks));
  const computed = computePcrs(log);
  return deriveBootFacts(replayEventLog(log, { values: quote ? quote(computed) : computed }));
}

const utf16 = (text: string) => new Uint8Array(Buffer.from(text, 'utf16le'));
/** A GRUB PCR 8 string: GRUB digests the text after the prefix, without its NUL. */
const grub = (prefix: string, text: string, digested = text): SyntheticEvent => ({
  pcr: 8,
  type: EventType.EV_IPL,
  data: new Uint8Array([...ascii(prefix), ...new TextEncoder().encode(`${text}\0`)]),
  digests: { sha256: hash('sha256', new TextEncoder().encode(digested)) },
});
const systemdBoot = (text: string, pcr = 8): SyntheticEvent => ({ pcr, type: EventType.EV_IPL, data: utf16(text) });
const image = (data: Uint8Array, name: string, type: number = EventType.EV_EFI_BOOT_SERVICES_APPLICATION): SyntheticEvent => ({
  pcr: 4,
  type,
  data,
  digests: { sha256: hash('sha256', ascii(`authenticode of ${name}`)) },
});
const covered = (pcr: number, type: number, data: Uint8Array): SyntheticEvent => ({ pcr, type, data });
const lines = (facts: ReturnType<typeof derive>) => (facts.kernelCommandLines.known ? facts.kernelCommandLines.value : facts.kernelCommandLines.reason);
const sources = (facts: ReturnType<typeof derive>) => (facts.kernelCommandLines.known ? facts.kernelCommandLines.value.map((l) => l.source) : facts.kernelCommandLines.reason);
const apps = (facts: ReturnType<typeof derive>) =>
  facts.efiBootApplications.known ? facts.efiBootApplications.value.map((a) => a.sequence) : facts.efiBootApplications.reason;

describe('PCR 4: an image cannot be hidden by what the log says about it', () => {
  it('an image whose data reads 00000000 or a PFP action string is still an image (its digest is not of that text)', () => {
    const facts = derive([
      image(new Uint8Array(4), 'shim'),
      image(ascii('Calling EFI Application from Boot Option'), 'grub', EventType.EV_EFI_ACTION),
      image(ascii('BOOT ATTEMPTS OMITTED'), 'kernel', EventType.EV_OMIT_BOOT_DEVICE_EVENTS),
    ]);
    expect(apps(facts)).toEqual([1, 2, 3]);
    expect(facts.efiBootApplications.known && facts.efiBootApplications.value[0]!.digests).toEqual(
      new Map([['sha256', Buffer.from(hash('sha256', ascii('authenticode of shim'))).toString('hex')]]),
    );
  });

  it('only the two PFP action strings and the four-byte zero separator, digested as such, are not images', () => {
    const facts = derive([
      covered(4, EventType.EV_EFI_ACTION, ascii('Calling EFI Application from Boot Option')),
      covered(4, EventType.EV_EFI_ACTION, ascii('Returning from EFI Application from Boot Option')),
      covered(4, EventType.EV_SEPARATOR, new Uint8Array(4)),
      covered(4, EventType.EV_EFI_ACTION, ascii('Some other action')),
      covered(4, EventType.EV_SEPARATOR, new Uint8Array(8)),
      covered(4, EventType.EV_SEPARATOR, Uint8Array.of(0, 0, 0, 1)),
      covered(4, EventType.EV_SEPARATOR, Uint8Array.of(1, 2, 3, 4)),
    ]);
    expect(apps(facts)).toEqual([4, 5, 6, 7]);
  });
});

describe('PCR 8: a command line is known only when every event is a measurement we interpret, digested as measured', () => {
  it('GRUB kernel_cmdline and grub_cmd strings: exact text, UTF-8 or latin1, trailing NULs dropped for matching', () => {
    const invalidUtf8: SyntheticEvent = {
      pcr: 8,
      type: EventType.EV_IPL,
      data: new Uint8Array([...ascii('grub_cmd: echo '), 0xff, 0]),
      digests: { sha256: hash('sha256', new Uint8Array([...ascii('echo '), 0xff])) },
    };
    const facts = derive([grub('grub_cmd: ', 'set root=hd0'), grub('kernel_cmdline: ', '/vmlinuz ro lang=é'), invalidUtf8]);
    expect(lines(facts)).toEqual([{ source: 'grub', pcrIndex: 8, sequence: 2, logged: '/vmlinuz ro lang=é\0', cmdline: '/vmlinuz ro lang=é' }]);
    expect(facts.grub).toEqual({ commands: ['grub_cmd: set root=hd0', 'kernel_cmdline: /vmlinuz ro lang=é', 'grub_cmd: echo \u00ff'], files: [] });
  });

  it('"grub_cmd: linux" stands in for the command line only when GRUB logged no kernel_cmdline', () => {
    const linux = grub('grub_cmd: ', 'linux /vmlinuz root=/dev/sda1 ro');
    expect(lines(derive([linux]))).toEqual([
      { source: 'grub-linux-command', pcrIndex: 8, sequence: 1, logged: '/vmlinuz root=/dev/sda1 ro\0', cmdline: '/vmlinuz root=/dev/sda1 ro' },
    ]);
    expect(sources(derive([linux, grub('kernel_cmdline: ', '/vmlinuz ro')]))).toEqual(['grub']);
    // A systemd-boot line is not GRUB's kernel_cmdline: the linux command still counts.
    expect(sources(derive([systemdBoot('ro quiet'), linux]))).toEqual(['systemd-boot', 'grub-linux-command']);
    expect(sources(derive([grub('kernel_cmdline: ', '/vmlinuz ro'), systemdBoot('ro quiet'), linux]))).toEqual(['grub', 'systemd-boot']);
  });

  it('systemd-boot UTF-16LE command lines, also shorter than any GRUB prefix; only trailing NULs are dropped', () => {
    expect(lines(derive([systemdBoot('ro'), systemdBoot('a\0b\0\0')]))).toEqual([
      { source: 'systemd-boot', pcrIndex: 8, sequence: 1, logged: 'ro', cmdline: 'ro' },
      { source: 'systemd-boot', pcrIndex: 8, sequence: 2, logged: 'a\0b\0\0', cmdline: 'a\0b' },
    ]);
  });

  it.each([
    ['the logged text has a character the digest does not cover', [grub('kernel_cmdline: ', '/vmlinuz ro quiet', '/vmlinuz ro quie')]],
    [
      'the logged text (no NUL) has a last character the digest does not cover',
      [{ pcr: 8, type: EventType.EV_IPL, data: ascii('kernel_cmdline: /vmlinuz ro quiet'), digests: { sha256: hash('sha256', ascii('/vmlinuz ro quie')) } }],
    ],
    ['the digest covers the whole event, prefix included', [{ ...grub('kernel_cmdline: ', '/vmlinuz ro'), digests: { sha256: hash('sha256', ascii('kernel_cmdline: /vmlinuz ro\0')) } }]],
    ['a bare GRUB prefix digested as data', [{ pcr: 8, type: EventType.EV_IPL, data: ascii('grub_cmd: ') }]],
    ['an odd-length line that is neither GRUB nor UTF-16', [{ pcr: 8, type: EventType.EV_IPL, data: ascii('odd') }]],
    ['a lone UTF-16 surrogate', [{ pcr: 8, type: EventType.EV_IPL, data: Uint8Array.of(0x00, 0xd8) }]],
    ['a systemd-boot line whose digest is of another line', [{ ...systemdBoot('ro quiet'), digests: { sha256: hash('sha256', utf16('init=/bin/sh')) } }]],
  ])('unknown when %s', (_name, events) => {
    expect(lines(derive(events as SyntheticEvent[]))).toMatch(/^event 1 \(EV_IPL\) on PCR 8: its digest does not cover its text$/);
  });

  it('every problem is named', () => {
    const bad = { ...systemdBoot('ro'), digests: { sha256: hash('sha256', ascii('x')) } };
    expect(lines(derive([bad, bad]))).toBe('event 1 (EV_IPL) on PCR 8: its digest does not cover its text; event 2 (EV_IPL) on PCR 8: its digest does not cover its text');
  });
});

describe('PCR 12: only systemd-stub command lines', () => {
  it('known, in log order with PCR 8 lines', () => {
    const facts = derive([systemdBoot('stub one', 12), grub('kernel_cmdline: ', '/vmlinuz ro'), systemdBoot('stub two', 12)]);
    expect(lines(facts)).toEqual([
      { source: 'systemd-stub', pcrIndex: 12, sequence: 1, logged: 'stub one', cmdline: 'stub one' },
      { source: 'grub', pcrIndex: 8, sequence: 2, logged: '/vmlinuz ro\0', cmdline: '/vmlinuz ro' },
      { source: 'systemd-stub', pcrIndex: 12, sequence: 3, logged: 'stub two', cmdline: 'stub two' },
    ]);
  });

  it('unknown for another type, or a digest that does not cover the line; every problem named', () => {
    const relabelled = { ...systemdBoot('init=/bin/sh', 12), type: EventType.EV_EVENT_TAG };
    const uncovered = { ...systemdBoot('ro', 12), digests: { sha256: hash('sha256', ascii('x')) } };
    expect(lines(derive([grub('kernel_cmdline: ', '/vmlinuz ro'), relabelled, uncovered]))).toBe(
      'event 2 (EV_EVENT_TAG) on PCR 12 is not a command line whose digest covers it; event 3 (EV_IPL) on PCR 12 is not a command line whose digest covers it',
    );
  });

  it('a clean PCR 12 adds nothing to a PCR 8 problem', () => {
    const relabelled = { ...grub('kernel_cmdline: ', '/vmlinuz ro'), type: EventType.EV_EVENT_TAG };
    expect(lines(derive([relabelled, systemdBoot('ro', 12)]))).toBe('event 1 (EV_EVENT_TAG) on PCR 8 is not a boot-loader measurement we interpret');
  });

  it('PCR 8 and PCR 12 problems are both named', () => {
    const relabelled = { ...grub('kernel_cmdline: ', '/vmlinuz ro'), type: EventType.EV_EVENT_TAG };
    const uncovered = { ...systemdBoot('ro', 12), digests: { sha256: hash('sha256', ascii('x')) } };
    expect(lines(derive([relabelled, uncovered]))).toBe(
      'event 1 (EV_EVENT_TAG) on PCR 8 is not a boot-loader measurement we interpret; event 2 (EV_IPL) on PCR 12 is not a command line whose digest covers it',
    );
  });
});

describe('command lines need a quoted PCR 8 or 12', () => {
  it('unknown when neither is quoted, even with a clean log', () => {
    const facts = derive([grub('kernel_cmdline: ', '/vmlinuz ro'), covered(0, EventType.EV_POST_CODE, ascii('fw'))], ['sha256'], (computed) =>
      new Map([['sha256', new Map([[0, computed.get('sha256')!.get(0)!]])]]),
    );
    expect(lines(facts)).toBe('neither PCR 8 nor PCR 12 is quoted');
  });

  it('PCR 8 quoted in one bank of two is quoted', () => {
    const facts = derive([grub('kernel_cmdline: ', '/vmlinuz ro'), covered(0, EventType.EV_POST_CODE, ascii('fw'))], ['sha1', 'sha256'], (computed) =>
      new Map([
        ['sha1', new Map([[0, computed.get('sha1')!.get(0)!]])],
        ['sha256', new Map([[0, computed.get('sha256')!.get(0)!], [8, computed.get('sha256')!.get(8)!]])],
      ]),
    );
    expect(lines(facts)).toEqual([{ source: 'grub', pcrIndex: 8, sequence: 1, logged: '/vmlinuz ro\0', cmdline: '/vmlinuz ro' }]);
  });
});

describe('PCR 9 files and the GRUB summary', () => {
  const file = (type: number, name: string): SyntheticEvent => ({ pcr: 9, type, data: ascii(`${name}\0`), digests: { sha256: hash('sha256', ascii(`${name} bytes`)) } });

  it('GRUB facts exist when GRUB measured files only, or commands only, and not otherwise', () => {
    const filesOnly = derive([file(EventType.EV_IPL, '/boot/vmlinuz'), file(EventType.EV_EVENT_TAG, 'initrd')]);
    expect(filesOnly.grub?.commands).toEqual([]);
    expect(filesOnly.grub?.files.map((f) => [f.sequence, f.filenameHint])).toEqual([[1, '/boot/vmlinuz']]);
    expect(filesOnly.bootLoaderFiles.known && filesOnly.bootLoaderFiles.value.map((f) => f.filenameHint)).toEqual(['/boot/vmlinuz', 'initrd']);
    expect(derive([grub('grub_cmd: ', 'set x=1')]).grub).toEqual({ commands: ['grub_cmd: set x=1'], files: [] });
    expect(derive([systemdBoot('ro')]).grub).toBeUndefined();
  });

  it('every wrongly typed PCR 9 event is named', () => {
    const facts = derive([file(EventType.EV_EFI_ACTION, '/evil'), file(EventType.EV_POST_CODE, '/evil2')]);
    expect(facts.bootLoaderFiles).toEqual({
      known: false,
      reason: 'event 1 (EV_EFI_ACTION) on PCR 9 is not a file measurement we interpret; event 2 (EV_POST_CODE) on PCR 9 is not a file measurement we interpret',
    });
  });
});

describe('separators of PCRs 0-7', () => {
  it('listed when their digest covers their data; error separators flagged; others not listed', () => {
    const facts = derive([
      covered(0, EventType.EV_SEPARATOR, new Uint8Array(4)),
      covered(7, EventType.EV_SEPARATOR, new Uint8Array(4).fill(0xff)),
      covered(1, EventType.EV_SEPARATOR, Uint8Array.of(0, 0, 0, 1)),
      covered(8, EventType.EV_SEPARATOR, new Uint8Array(4)),
      { pcr: 2, type: EventType.EV_SEPARATOR, data: new Uint8Array(4), digests: { sha256: hash('sha256', ascii('x')) } },
      covered(3, EventType.EV_POST_CODE, new Uint8Array(4)),
    ]);
    expect(facts.separators).toEqual([
      { pcrIndex: 0, sequence: 1, error: false },
      { pcrIndex: 7, sequence: 2, error: true },
      { pcrIndex: 1, sequence: 3, error: true },
    ]);
  });
});
