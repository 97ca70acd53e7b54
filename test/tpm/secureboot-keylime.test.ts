/**
 * Findings of the comparison with Keylime's elchecking (keylime/mba/elchecking/example.py, tests.py): PCR 7 events
 * that Keylime's example policy refuses and that we used to accept. Each now makes the Secure Boot state unknown
 * (fail closed). The comparison itself is recorded in docs/tpm-node-attestor.md ("Checked against Keylime").
 */
import { describe, expect, it } from 'vitest';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { deriveSecureBootFacts } from '../../src/tpm/secureboot.js';
import { buildAgileLog, EFI_GLOBAL_VARIABLE_BYTES, secureBootVariable, uefiVariableData, type SyntheticEvent } from './eventlog-builder.js';
import { sha256SignatureList as signatureList, pcr7ConfigEvent as config, IMAGE_DB_GUID } from './eventlog-builder.js';

/** SHIM_LOCK_GUID 605dab50-e046-4300-abb6-3dd810dd8b23 in EFI_GUID byte order. */
const SHIM_LOCK_GUID = Uint8Array.from([0x50, 0xab, 0x5d, 0x60, 0x46, 0xe0, 0x00, 0x43, 0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23]);
const authority = (guid: Uint8Array, name: string): SyntheticEvent => ({ pcr: 7, type: EventType.EV_EFI_VARIABLE_AUTHORITY, data: uefiVariableData(guid, name, new Uint8Array(48).fill(3)) });
const separator: SyntheticEvent = { pcr: 7, type: EventType.EV_SEPARATOR, data: new Uint8Array(4) };
const keys = [
  config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', signatureList(1))),
  config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'KEK', signatureList(2))),
  config(uefiVariableData(IMAGE_DB_GUID, 'db', signatureList(3))),
];
const pcr7 = (before: SyntheticEvent[], after: SyntheticEvent[]) => [config(secureBootVariable(true)), ...keys, ...before, separator, ...after];
function state(events: SyntheticEvent[]) {
  const log = parseEventLog(buildAgileLog(events, ['sha256']));
  return deriveSecureBootFacts(replayEventLog(log, { values: computePcrs(log) }));
}

describe('PCR 7 authorities: only db and shim\'s (as Keylime\'s elchecking)', () => {
  it.each([
    ['db', [authority(IMAGE_DB_GUID, 'db')]],
    ['vendor_db (shim\'s built-in list)', [authority(IMAGE_DB_GUID, 'vendor_db')]],
    ['shim\'s own certificate, then SbatLevel and MokListTrusted', [authority(SHIM_LOCK_GUID, 'Shim'), authority(SHIM_LOCK_GUID, 'SbatLevel'), authority(SHIM_LOCK_GUID, 'MokListTrusted')]],
    ['a MOK (MokListRT)', [authority(SHIM_LOCK_GUID, 'MokListRT')]],
  ])('control: %s after the separator gives enabled', (_name, after) => {
    expect(state(pcr7([], after))).toMatchObject({ state: 'enabled', reason: '' });
  });

  it.each([
    ['dbx', authority(IMAGE_DB_GUID, 'dbx')],
    ['PK', authority(EFI_GLOBAL_VARIABLE_BYTES, 'PK')],
    ['db under the wrong GUID', authority(EFI_GLOBAL_VARIABLE_BYTES, 'db')],
    ['an unknown shim variable', authority(SHIM_LOCK_GUID, 'MokListX')],
  ])('an authority naming %s makes the state unknown', (name, event) => {
    const facts = state(pcr7([], [authority(IMAGE_DB_GUID, 'db'), event]));
    expect(facts.state, name).toBe('unknown');
    expect(facts.reason).toMatch(/is not db or a shim authority/);
  });

  it('the same before the separator', () => {
    expect(state(pcr7([authority(IMAGE_DB_GUID, 'dbx')], [authority(IMAGE_DB_GUID, 'db')])).reason).toMatch(/authority dbx .* is not db or a shim authority/);
  });

  it('settings are not keys: SbatLevel and MokListTrusted alone do not show a key in use', () => {
    const facts = state(pcr7([], [authority(SHIM_LOCK_GUID, 'SbatLevel'), authority(SHIM_LOCK_GUID, 'MokListTrusted')]));
    expect(facts).toMatchObject({ state: 'unknown', reason: 'Secure Boot is on but no verified EV_EFI_VARIABLE_AUTHORITY shows a key in use' });
  });
});

describe('PCR 7 configuration variables: only the PFP\'s Secure Boot variables (as Keylime\'s elchecking)', () => {
  it('control: dbt and dbr are PFP variables', () => {
    const extra = [config(uefiVariableData(IMAGE_DB_GUID, 'dbt', new Uint8Array(0))), config(uefiVariableData(IMAGE_DB_GUID, 'dbr', new Uint8Array(0)))];
    expect(state(pcr7(extra, [authority(IMAGE_DB_GUID, 'db')])).state).toBe('enabled');
  });

  it.each([
    ['an unknown global variable', uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'AuditMode', Uint8Array.of(0))],
    ['db under the global GUID', uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'db', signatureList(3))],
    ['a shim variable as configuration', uefiVariableData(SHIM_LOCK_GUID, 'MokSBState', Uint8Array.of(0))],
  ])('%s before the separator makes the state unknown', (_name, data) => {
    const facts = state(pcr7([config(data)], [authority(IMAGE_DB_GUID, 'db')]));
    expect(facts).toMatchObject({ state: 'unknown', reason: expect.stringMatching(/is not a Secure Boot configuration variable the PFP measures in PCR 7/) });
  });
});
