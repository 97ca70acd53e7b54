import { describe, expect, it } from 'vitest';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { deriveSecureBootFacts } from '../../src/tpm/secureboot.js';
import { ascii, buildAgileLog, EFI_GLOBAL_VARIABLE_BYTES, hash, secureBootVariable, uefiVariableData, type SyntheticEvent } from './eventlog-builder.js';
import { sha256SignatureList, separatorEvent as separator, pcr7ConfigEvent as config, IMAGE_DB_GUID } from './eventlog-builder.js';




const pk = config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', sha256SignatureList(1)));
const kek = config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'KEK', sha256SignatureList(2)));
const db = config(uefiVariableData(IMAGE_DB_GUID, 'db', sha256SignatureList(3)));
const authority: SyntheticEvent = { pcr: 7, type: EventType.EV_EFI_VARIABLE_AUTHORITY, data: uefiVariableData(IMAGE_DB_GUID, 'db', new Uint8Array(48).fill(3)) };
/** A well-formed Secure-Boot-on PCR 7: SecureBoot=1, PK, KEK, db, separator, one authority. */
const enabledPcr7 = (): SyntheticEvent[] => [config(secureBootVariable(true)), pk, kek, db, separator(7), authority];

function facts(events: SyntheticEvent[]) {
  const log = parseEventLog(buildAgileLog(events, ['sha256']));
  return deriveSecureBootFacts(replayEventLog(log, { values: computePcrs(log) }));
}

describe('deriveSecureBootFacts (fail closed)', () => {
  it('enabled when the SecureBoot variable is 1, keys are set and one verified an image', () => {
    expect(facts(enabledPcr7())).toMatchObject({ state: 'enabled', reason: '' });
  });

  it.each([
    ['the real SecureBoot event relabelled as EV_EFI_ACTION', (e: SyntheticEvent[]) => [{ ...e[0]!, type: EventType.EV_EFI_ACTION }, ...e.slice(1)], /not an action the PFP defines/],
    ['no separator', (e: SyntheticEvent[]) => e.filter((x) => x.type !== EventType.EV_SEPARATOR), /no EV_SEPARATOR/],
    ['the error separator', (e: SyntheticEvent[]) => e.map((x) => (x.type === EventType.EV_SEPARATOR ? { ...x, data: new Uint8Array(4).fill(0xff) } : x)), /error separator ffffffff/],
    ['the separator relabelled as an action', (e: SyntheticEvent[]) => e.map((x) => (x.type === EventType.EV_SEPARATOR ? { ...x, type: EventType.EV_EFI_ACTION } : x)), /data 00000000 is not an action/],
    ['a configuration variable after the separator', (e: SyntheticEvent[]) => [...e, config(secureBootVariable(true))], /not allowed in PCR 7 after the separator/],
    ['a variable measured twice', (e: SyntheticEvent[]) => [e[0]!, pk, pk, ...e.slice(2)], /PK measured twice/],
    ['a two-byte SecureBoot value', (e: SyntheticEvent[]) => [config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'SecureBoot', Uint8Array.of(1, 1))), ...e.slice(1)], /2 bytes, not 1/],
    ['an empty db', (e: SyntheticEvent[]) => e.map((x) => (x === db ? config(uefiVariableData(IMAGE_DB_GUID, 'db', new Uint8Array(0))) : x)), /db holds no key or hash/],
    ['no authority', (e: SyntheticEvent[]) => e.filter((x) => x !== authority), /no verified EV_EFI_VARIABLE_AUTHORITY/],
    ['an authority whose digest does not cover it, only', (e: SyntheticEvent[]) => e.map((x) => (x === authority ? { ...x, digests: { sha256: hash('sha256', ascii('other')) } } : x)), /no verified EV_EFI_VARIABLE_AUTHORITY/],
    ['an EV_IPL before the separator', (e: SyntheticEvent[]) => [e[0]!, { pcr: 7, type: EventType.EV_IPL, data: ascii('x') }, ...e.slice(1)], /EV_IPL\): not allowed in PCR 7/],
  ])('unknown with %s', (_name, edit, reason) => {
    const sb = facts(edit(enabledPcr7()));
    expect([sb.state, sb.enabled]).toEqual(['unknown', false]);
    expect(sb.reason).toMatch(reason);
  });

  it('"DMA Protection Disabled" is reported and does not change the state', () => {
    const sb = facts([{ pcr: 7, type: EventType.EV_EFI_ACTION, data: ascii('DMA Protection Disabled') }, ...enabledPcr7()]);
    expect([sb.state, sb.dmaProtectionDisabled]).toEqual(['enabled', true]);
  });

  it('disabled when the variable is 0', () => {
    const sb = facts([{ pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(false) }, separator(7)]);
    expect([sb.state, sb.enabled]).toEqual(['disabled', false]);
  });

  it('unknown (not enabled) when the SecureBoot digest does not match its data', () => {
    const sb = facts([
      { pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(true), digests: { sha256: hash('sha256', secureBootVariable(false)) } },
    ]);
    expect([sb.state, sb.enabled]).toEqual(['unknown', false]);
  });

  it('unknown when PCR 7 holds an event type that is not allowed there', () => {
    const sb = facts([
      { pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(true) },
      { pcr: 7, type: EventType.EV_IPL, data: ascii('surprise') },
      separator(7),
    ]);
    expect([sb.state, sb.enabled]).toEqual(['unknown', false]);
    expect(sb.reason).toMatch(/EV_IPL/);
  });

  it('unknown when SecureBoot is measured after the separator or twice', () => {
    const sbVar = { pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(true) };
    expect(facts([separator(7), sbVar]).state).toBe('unknown');
    expect(facts([sbVar, sbVar, separator(7)]).state).toBe('unknown');
  });

  it('unknown when PCR 7 has no verified events (e.g. not quoted)', () => {
    const log = parseEventLog(buildAgileLog([{ pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(true) }], ['sha256']));
    const onlyPcr0 = new Map([['sha256', new Map([[0, new Uint8Array(32)]])]]);
    expect(deriveSecureBootFacts(replayEventLog(log, { values: onlyPcr0 })).state).toBe('unknown');
  });

  it('disabled when UEFI Debug Mode is measured into PCR 7', () => {
    const sb = facts([
      { pcr: 7, type: EventType.EV_EFI_ACTION, data: ascii('UEFI Debug Mode') },
      { pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(true) },
      separator(7),
    ]);
    expect([sb.state, sb.debugMode]).toEqual(['disabled', true]);
  });
});

describe('deriveBootFacts: data-bearing events are used only when their digest covers the data', () => {
  it('a GRUB kernel_cmdline whose digest does not match its text makes the command lines unknown', () => {
    const text = 'kernel_cmdline: /vmlinuz root=/dev/sda1 ro\0';
    const log = parseEventLog(
      buildAgileLog([{ pcr: 8, type: EventType.EV_IPL, data: ascii(text), digests: { sha256: hash('sha256', ascii('/vmlinuz init=/bin/sh')) } }], ['sha256']),
    );
    const bootFacts = deriveBootFacts(replayEventLog(log, { values: computePcrs(log) }));
    expect(bootFacts.kernelCommandLines).toEqual({ known: false, reason: 'event 1 (EV_IPL) on PCR 8: its digest does not cover its text' });
  });

  it('a GRUB kernel_cmdline digested without its NUL is used, NUL kept in `logged`', () => {
    const log = parseEventLog(
      buildAgileLog(
        [{ pcr: 8, type: EventType.EV_IPL, data: ascii('kernel_cmdline: /vmlinuz ro quiet\0'), digests: { sha256: hash('sha256', ascii('/vmlinuz ro quiet')) } }],
        ['sha256'],
      ),
    );
    const lines = deriveBootFacts(replayEventLog(log, { values: computePcrs(log) })).kernelCommandLines;
    const [line] = lines.known ? lines.value : [];
    expect([line!.source, line!.logged, line!.cmdline]).toEqual(['grub', '/vmlinuz ro quiet\0', '/vmlinuz ro quiet']);
  });
});

describe('deriveBootFacts: every event of a fact\'s PCRs counts, whatever its type', () => {
  const derive = (events: SyntheticEvent[]) => {
    const log = parseEventLog(buildAgileLog(events, ['sha256']));
    return deriveBootFacts(replayEventLog(log, { values: computePcrs(log) }));
  };
  const action = (pcr: number, text: string): SyntheticEvent => ({ pcr, type: EventType.EV_EFI_ACTION, data: ascii(text) });
  const image = (type: number, name: string): SyntheticEvent => ({ pcr: 4, type, data: new Uint8Array(8), digests: { sha256: hash('sha256', ascii(name)) } });

  it('PCR 4: known actions and the separator are not images; any other event is, whatever its type', () => {
    const facts = derive([
      action(4, 'Calling EFI Application from Boot Option'),
      separator(4),
      image(EventType.EV_EFI_BOOT_SERVICES_APPLICATION, 'shim'),
      image(EventType.EV_EFI_ACTION, 'relabelled grub'),
      image(0x7fff_0001, 'unknown type'),
    ]);
    expect(facts.efiBootApplications.known && facts.efiBootApplications.value.map((a) => a.sequence)).toEqual([3, 4, 5]);
  });

  it('PCR 4: BOOT ATTEMPTS OMITTED makes the list unknown', () => {
    const facts = derive([{ pcr: 4, type: EventType.EV_OMIT_BOOT_DEVICE_EVENTS, data: ascii('BOOT ATTEMPTS OMITTED') }]);
    expect(facts.efiBootApplications).toEqual({ known: false, reason: 'event 1: the platform omitted boot attempts from PCR 4' });
  });

  it('PCR 8: a non-EV_IPL event makes the command lines unknown (it may be the real one, relabelled)', () => {
    const facts = derive([
      { pcr: 8, type: EventType.EV_IPL, data: ascii('kernel_cmdline: /vmlinuz ro'), digests: { sha256: hash('sha256', ascii('/vmlinuz ro')) } },
      { pcr: 8, type: EventType.EV_EVENT_TAG, data: ascii('kernel_cmdline: /vmlinuz init=/bin/sh'), digests: { sha256: hash('sha256', ascii('/vmlinuz init=/bin/sh')) } },
    ]);
    expect(facts.kernelCommandLines).toEqual({ known: false, reason: 'event 2 (EV_EVENT_TAG) on PCR 8 is not a boot-loader measurement we interpret' });
  });

  it('PCR 9: every EV_IPL / EV_EVENT_TAG is a boot-loader file whatever its name; another type makes the list unknown', () => {
    const file = (type: number, name: string): SyntheticEvent => ({ pcr: 9, type, data: ascii(name), digests: { sha256: hash('sha256', ascii(`${name} bytes`)) } });
    const ok = derive([file(EventType.EV_IPL, '/boot/grub/grub.cfg'), file(EventType.EV_IPL, '/vmlinuz'), file(EventType.EV_EVENT_TAG, 'initrd')]);
    expect(ok.bootLoaderFiles.known && ok.bootLoaderFiles.value.length).toBe(3);
    const bad = derive([file(EventType.EV_IPL, '/vmlinuz'), file(EventType.EV_EFI_ACTION, '/evil')]);
    expect(bad.bootLoaderFiles).toEqual({ known: false, reason: 'event 2 (EV_EFI_ACTION) on PCR 9 is not a file measurement we interpret' });
  });

  it('an event on a boot PCR after ExitBootServices() makes that PCR\'s facts unknown', () => {
    const facts = derive([
      image(EventType.EV_EFI_BOOT_SERVICES_APPLICATION, 'shim'),
      action(5, 'Exit Boot Services Invocation'),
      action(5, 'Exit Boot Services Returned with Success'),
      image(EventType.EV_EFI_BOOT_SERVICES_APPLICATION, 'after boot'),
    ]);
    expect(facts.efiBootApplications).toEqual({ known: false, reason: 'event 4 on PCR 4 was measured after ExitBootServices()' });
  });
});
