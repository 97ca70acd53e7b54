/**
 * `secureboot:enabled` holds only when PCR 7 proves it: the platform's own SecureBoot variable, measured once before
 * the separator, with keys in force and in use. Each test builds the PCR 7 a forger (or a broken firmware) would
 * produce and checks that the state is not `enabled`, and says why.
 */
import { describe, expect, it } from 'vitest';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { deriveSecureBootFacts } from '../../src/tpm/secureboot.js';
import { ascii, buildAgileLog, EFI_GLOBAL_VARIABLE_BYTES, hash, secureBootVariable, uefiVariableData, type SyntheticEvent } from './eventlog-builder.js';
import { CERT_DER, RSA2048_GUID, SHA256_GUID, X509_GUID, signatureList } from './uefi-builder.js';

const IMAGE_DB_GUID = Uint8Array.from([0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f]);
const IMAGE_DB_GUID_TEXT = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';
const VENDOR_GUID = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);

const config = (guid: Uint8Array, name: string, value: Uint8Array): SyntheticEvent => ({
  pcr: 7,
  type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
  data: uefiVariableData(guid, name, value),
});
const sha256List = (fill: number) => signatureList(SHA256_GUID, [new Uint8Array(32).fill(fill)]);
const separator = (data: Uint8Array = new Uint8Array(4)): SyntheticEvent => ({ pcr: 7, type: EventType.EV_SEPARATOR, data });
const action = (pcr: number, text: string): SyntheticEvent => ({ pcr, type: EventType.EV_EFI_ACTION, data: ascii(text) });
/** An authority event: the db entry (owner GUID ‖ certificate) that verified an image. */
const authority = (value: Uint8Array = new Uint8Array([...new Uint8Array(16).fill(0x77), ...CERT_DER])): SyntheticEvent => ({
  pcr: 7,
  type: EventType.EV_EFI_VARIABLE_AUTHORITY,
  data: uefiVariableData(IMAGE_DB_GUID, 'db', value),
});

const secureBootOn: SyntheticEvent = { pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: secureBootVariable(true) };
const pk = config(EFI_GLOBAL_VARIABLE_BYTES, 'PK', sha256List(1));
const kek = config(EFI_GLOBAL_VARIABLE_BYTES, 'KEK', sha256List(2));
const db = config(IMAGE_DB_GUID, 'db', sha256List(3));
const dbx = config(IMAGE_DB_GUID, 'dbx', sha256List(4));
const keys = [pk, kek, db, dbx];
const golden = (): SyntheticEvent[] => [secureBootOn, ...keys, separator(), authority()];

function facts(events: readonly SyntheticEvent[]) {
  const log = parseEventLog(buildAgileLog(events, ['sha256']));
  return deriveSecureBootFacts(replayEventLog(log, { values: computePcrs(log) }));
}

function expectNotEnabled(events: readonly SyntheticEvent[], reason: RegExp) {
  const sb = facts(events);
  expect([sb.state, sb.enabled]).toEqual(['unknown', false]);
  expect(sb.reason).toMatch(reason);
  return sb;
}

describe('Secure Boot enabled: what the golden PCR 7 reports', () => {
  it('state, keys, the authority with its certificate, no debug or DMA flags', () => {
    const sb = facts(golden());
    expect(sb).toMatchObject({ state: 'enabled', enabled: true, reason: '', separatorSeen: true, debugMode: false, dmaProtectionDisabled: false });
    for (const [name, fill, d] of [['PK', 1, sb.pk], ['KEK', 2, sb.kek], ['db', 3, sb.db], ['dbx', 4, sb.dbx]] as const) {
      expect(d).toMatchObject({ name, present: true, dataVerified: true, sha256Hashes: [fill.toString(16).padStart(2, '0').repeat(32)] });
    }
    expect(sb.postSeparatorAuthorities).toHaveLength(1);
    const [auth] = sb.postSeparatorAuthorities;
    expect(auth).toMatchObject({ sequence: 7, variableName: 'db', variableGuid: IMAGE_DB_GUID_TEXT, dataVerified: true });
    expect(auth!.certificate?.subject).toBe('C=US, O=Microsoft Corporation, CN=Microsoft Pluton Policy CA A');
    expect(auth!.certificate?.owner).toBe('77777777-7777-7777-7777-777777777777');
  });

  it('an authority that is not a certificate is listed without one, and derivation never throws on it', () => {
    for (const value of [Uint8Array.of(1, 2, 3, 4), new Uint8Array(16), new Uint8Array(40).fill(9)]) {
      const sb = facts([secureBootOn, ...keys, separator(), authority(value)]);
      expect(sb.state).toBe('enabled');
      expect(sb.postSeparatorAuthorities.map((a) => a.certificate)).toEqual([undefined]);
    }
    const junk: SyntheticEvent = { pcr: 7, type: EventType.EV_EFI_VARIABLE_AUTHORITY, data: ascii('not a UEFI_VARIABLE_DATA') };
    const sb = facts([secureBootOn, ...keys, separator(), authority(), junk]);
    expect(sb.postSeparatorAuthorities[1]).toEqual({ sequence: 8, variableName: undefined, variableGuid: undefined, dataVerified: true, certificate: undefined });
  });

  it('an authority measured before the separator (a driver verified at boot) shows a key in use; counts add up', () => {
    expect(facts([secureBootOn, ...keys, authority(), separator()]).state).toBe('enabled');
    expect(facts([secureBootOn, ...keys, authority(), separator(), authority()]).state).toBe('enabled');
  });

  it('SPDM device policy and authority events are allowed before the separator', () => {
    const spdm = (type: number): SyntheticEvent => ({ pcr: 7, type, data: ascii('spdm') });
    const sb = facts([secureBootOn, ...keys, spdm(EventType.EV_EFI_SPDM_DEVICE_POLICY), spdm(EventType.EV_EFI_SPDM_DEVICE_AUTHORITY), separator(), authority()]);
    expect([sb.state, sb.reason]).toEqual(['enabled', '']);
  });

  it('any kind of signature counts as a key: certificates, hashes and other types', () => {
    const mixedPk = config(EFI_GLOBAL_VARIABLE_BYTES, 'PK', new Uint8Array([...signatureList(X509_GUID, [CERT_DER]), ...sha256List(1)]));
    const mixedKek = config(EFI_GLOBAL_VARIABLE_BYTES, 'KEK', new Uint8Array([...sha256List(2), ...signatureList(RSA2048_GUID, [new Uint8Array(256)])]));
    expect(facts([secureBootOn, mixedPk, mixedKek, db, separator(), authority()]).state).toBe('enabled');
  });

  it('a variable that only shares a name with db under another GUID does not supply the keys: PCR 7 is then unknown', () => {
    // Keylime's elchecking refuses configuration variables outside the PFP list, and so do we (fail closed).
    const globalDb = config(EFI_GLOBAL_VARIABLE_BYTES, 'db', new Uint8Array(0));
    const sb = facts([secureBootOn, globalDb, ...keys, separator(), authority()]);
    expect([sb.state, sb.enabled]).toEqual(['unknown', false]);
    expect(sb.reason).toMatch(/db \(8be4df61-93ca-11d2-aa0d-00e098032b8c\) is not a Secure Boot configuration variable/);
  });
});

describe('Secure Boot is not enabled when PCR 7 does not prove it', () => {
  it('the log shows SecureBoot=1 but the digest measured SecureBoot=0 (the real event, data rewritten)', () => {
    const forged = { ...secureBootOn, digests: { sha256: hash('sha256', secureBootVariable(false)) } };
    expectNotEnabled([forged, ...keys, separator(), authority()], /event 1 \(EV_EFI_VARIABLE_DRIVER_CONFIG\): its digest does not cover its data/);
  });

  it.each([
    ['00000001', Uint8Array.of(0, 0, 0, 1)],
    ['0000000000000000', new Uint8Array(8)],
  ])('a separator with data %s is an error separator', (hex, data) => {
    expectNotEnabled([secureBootOn, ...keys, separator(data), authority()], new RegExp(`error separator ${hex}`));
  });

  it('a second separator', () => {
    expectNotEnabled([...golden(), separator()], /event 8 \(EV_SEPARATOR\): second EV_SEPARATOR in PCR 7/);
  });

  it('a SecureBoot variable under a vendor GUID is not the platform\'s Secure Boot state', () => {
    const vendorSecureBoot = config(VENDOR_GUID, 'SecureBoot', Uint8Array.of(1));
    expectNotEnabled([vendorSecureBoot, ...keys, separator(), authority()], /SecureBoot variable not measured/);
  });

  it('PK under another GUID does not stand in for an empty PK (setup mode)', () => {
    const fakePk = config(IMAGE_DB_GUID, 'PK', sha256List(9));
    const emptyPk = config(EFI_GLOBAL_VARIABLE_BYTES, 'PK', new Uint8Array(0));
    const sb = expectNotEnabled([secureBootOn, fakePk, emptyPk, kek, db, separator(), authority()], /PK \(d719b2cb-3d3a-4596-a3bc-dad00e67656f\) is not a Secure Boot configuration variable/);
    expect(sb.enabled).toBe(false);
  });

  it('only an SPDM device authority after the separator: no key was shown in use', () => {
    const spdm: SyntheticEvent = { pcr: 7, type: EventType.EV_EFI_SPDM_DEVICE_AUTHORITY, data: authority().data };
    const sb = expectNotEnabled([secureBootOn, ...keys, separator(), spdm], /no verified EV_EFI_VARIABLE_AUTHORITY shows a key in use/);
    expect(sb.postSeparatorAuthorities).toEqual([]);
  });

  it('an authority before the separator that is not a UEFI_VARIABLE_DATA', () => {
    const junk: SyntheticEvent = { pcr: 7, type: EventType.EV_EFI_VARIABLE_AUTHORITY, data: ascii('junk') };
    expectNotEnabled([secureBootOn, ...keys, junk, separator()], /event 6 \(EV_EFI_VARIABLE_AUTHORITY\): UEFI_VARIABLE_DATA does not parse/);
  });

  it('a configuration variable that is not a UEFI_VARIABLE_DATA', () => {
    const junk: SyntheticEvent = { pcr: 7, type: EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data: ascii('SecureBoot=1') };
    expectNotEnabled([secureBootOn, junk, ...keys, separator(), authority()], /event 2 \(EV_EFI_VARIABLE_DRIVER_CONFIG\): UEFI_VARIABLE_DATA does not parse/);
  });

  it('a PCR 7 event measured after ExitBootServices() (extended by the running OS)', () => {
    const events = [
      ...golden(),
      action(5, 'Exit Boot Services Invocation'),
      action(5, 'Exit Boot Services Returned with Success'),
      authority(),
    ];
    expectNotEnabled(events, /event 10 on PCR 7 was measured after ExitBootServices\(\)/);
  });

  it('PCR 7 quoted at its reset value with no events says nothing: unknown, not disabled', () => {
    const log = parseEventLog(buildAgileLog([{ pcr: 0, type: EventType.EV_POST_CODE, data: ascii('firmware') }], ['sha256']));
    const values = new Map([['sha256', new Map([...computePcrs(log).get('sha256')!, [7, new Uint8Array(32)]])]]);
    const sb = deriveSecureBootFacts(replayEventLog(log, { values }));
    expect([sb.state, sb.reason]).toEqual(['unknown', 'no verified PCR 7 events']);
  });

  it('no SecureBoot variable at all', () => {
    expectNotEnabled([...keys, separator(), authority()], /^SecureBoot variable not measured$/);
  });

  it('the SecureBoot variable measured twice', () => {
    expectNotEnabled([secureBootOn, secureBootOn, ...keys, separator(), authority()], /SecureBoot measured twice; SecureBoot variable measured more than once$/);
  });

  it('an action the PFP does not define for PCR 7 is named in the reason', () => {
    expectNotEnabled([action(7, 'Hello'), ...golden()], /event 1 \(EV_EFI_ACTION\): "Hello" is not an action the PFP defines for PCR 7/);
  });

  it('every problem is reported, and only those: an error separator with Secure Boot on and no keys', () => {
    const sb = facts([secureBootOn, separator(new Uint8Array(4).fill(0xff)), authority()]);
    expect([sb.state, sb.reason]).toEqual([
      'unknown',
      'event 2 (EV_SEPARATOR): error separator ffffffff (the firmware reported a failure); PCR 7 has no EV_SEPARATOR: the Secure Boot configuration never ended',
    ]);
  });
});

describe('Secure Boot disabled says why', () => {
  it('UEFI Debug Mode', () => {
    const sb = facts([action(7, 'UEFI Debug Mode'), ...golden()]);
    expect([sb.state, sb.enabled, sb.reason, sb.debugMode, sb.dmaProtectionDisabled]).toEqual(['disabled', false, 'UEFI Debug Mode measured into PCR 7', true, false]);
  });

  it('the variable is 0, or absent (zero-length data)', () => {
    const off = facts([config(EFI_GLOBAL_VARIABLE_BYTES, 'SecureBoot', Uint8Array.of(0)), ...keys, separator()]);
    expect([off.state, off.reason]).toEqual(['disabled', 'SecureBoot variable is 00']);
    const absent = facts([config(EFI_GLOBAL_VARIABLE_BYTES, 'SecureBoot', new Uint8Array(0)), separator()]);
    expect([absent.state, absent.reason]).toEqual(['disabled', 'SecureBoot variable is absent']);
  });
});
