import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { inspectEventLog } from '../../src/cli/eventlog-inspect.js';
import { expectError } from '../tpm/expect-error.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/eventlog');
const bytes = (name: string) => readFileSync(join(FIXTURES, name));

describe('inspectEventLog', () => {
  it('JSON: events, replayed PCRs per bank, Secure Boot state (shape of docs/cli.md)', () => {
    const out = inspectEventLog(bytes('tt-event-uefivar.bin'), { json: true });
    expect(out).toMatchObject({ format: 'crypto-agile', banks: ['sha1', 'sha256', 'sha384', 'sha512'], startupLocality: null, eventCount: 2 });
    expect(out.events[0]).toMatchObject({ index: 0, pcr: 0, type: 'EV_NO_ACTION', extended: false, description: 'Spec ID Event03' });
    expect(out.events[1]).toMatchObject({
      index: 1,
      pcr: 7,
      type: 'EV_EFI_VARIABLE_DRIVER_CONFIG',
      extended: true,
      dataSize: 53,
      digests: { sha1: 'd4fdd1f14d4041494deb8fc990c45343d2277d08' },
    });
    expect(out.events[1]!.description).toContain('SecureBoot');
    // Values from the pcrs section of the tpm2_eventlog YAML for this log.
    expect(out.pcrs).toEqual({
      sha1: { '7': '3a1ea200b8fafe60c290e903c5e6443cfef67f04' },
      sha256: { '7': 'e58ada1ba75f2e4722b539824598ad5e10c55f2e4aeab2033f3b0a8ee3f3eca6' },
    });
    // A SecureBoot variable without the PCR 7 separator: the configuration never ended, so the state is not a fact.
    expect(out.secureBoot).toEqual({ state: 'unknown', reason: 'PCR 7 has no EV_SEPARATOR: the Secure Boot configuration never ended' });
    expect(JSON.parse(JSON.stringify(out))).toEqual(out);
  });

  it('reports StartupLocality and a disabled Secure Boot', () => {
    const out = inspectEventLog(bytes('gtt-glinux-alex.bin'), { json: true });
    expect(out.startupLocality).toBe(3);
    expect(out.secureBoot.state).toBe('disabled');
  });

  it('text output names events, PCRs and the Secure Boot state', () => {
    const text = inspectEventLog(bytes('tt-event-uefivar.bin'));
    expect(text).toContain('#1 pcr 7 EV_EFI_VARIABLE_DRIVER_CONFIG');
    expect(text).toContain('sha256:7  e58ada1ba75f2e4722b539824598ad5e10c55f2e4aeab2033f3b0a8ee3f3eca6');
    expect(text).toContain('secure boot: unknown (PCR 7 has no EV_SEPARATOR');
    expect(inspectEventLog(bytes('kl-binary_bios_measurements-secureboot.bin'))).toContain('secure boot: enabled\n');
  });

  it('garbage is MalformedInput', () => {
    expectError(() => inspectEventLog(Uint8Array.of(1, 2, 3)), MalformedInput, 'ERR_EVENTLOG_MALFORMED', GrpcCode.INVALID_ARGUMENT);
  });
});
