import { describe, expect, it } from 'vitest';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { deriveSecureBootFacts } from '../../src/tpm/secureboot.js';
import { ascii, buildAgileLog, hash, secureBootVariable, type SyntheticEvent } from './eventlog-builder.js';

const separator = (pcr: number): SyntheticEvent => ({ pcr, type: EventType.EV_SEPARATOR, data: new Uint8Array(4) });

function facts(events: SyntheticEvent[]) {
  const log = parseEventLog(buildAgileLog(events, ['sha256']));
  return deriveSecureBootFacts(replayEventLog(log, { values: computePcrs(log) }));
}

describe('deriveSecureBootFacts (fail closed)', () => {
  it('enabled when the SecureBoot variable is 1 and its digest covers its data', () => {
    expect(facts([{ pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(true) }, separator(7)]).state).toBe('enabled');
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
