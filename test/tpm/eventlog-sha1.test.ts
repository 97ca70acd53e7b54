/**
 * SHA-1 logs from TPM 1.2 machines: the legacy TCG_PCClientPCREvent format (TCG PC Client PFP §10.2.1; the TCG EFI
 * Platform and PC Client Implementation specs for TPM 1.2 use the same event), no Spec ID event, SHA-1 only, written
 * byte by byte here. They parse and replay against a TPM 2.0 quote of the sha1 bank. What SHA-1 can still vouch for
 * is decided in pcr-integrity.ts (COLLISION_RESISTANT_BANKS): the replay and the Secure Boot state (forging either
 * needs a second preimage), never images, command lines or files (a chosen-prefix collision forges those).
 */
import { describe, expect, it } from 'vitest';
import { parsePolicyFile } from '../../src/policy/policy.js';
import { checkPolicy } from '../../src/policy/evaluate.js';
import { createPolicyFromEventLog } from '../../src/policy/create.js';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { toHex } from '../../src/tpm/bytes.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { EventLogReplayFailed, replayEventLog, type PcrBankValues } from '../../src/tpm/replay.js';
import {
  ascii,
  buildAgileLog,
  buildLegacyLog,
  EFI_GLOBAL_VARIABLE_BYTES,
  extend,
  hash,
  secureBootVariable,
  uefiVariableData,
  type Bank,
  type SyntheticEvent,
} from './eventlog-builder.js';
import { sha256SignatureList as signatureList, separatorEvent as separator, pcr7ConfigEvent as config, IMAGE_DB_GUID } from './eventlog-builder.js';

const SHIM = ascii('shim image bytes');
const KERNEL = ascii('vmlinuz bytes');

/** A UEFI boot of a TPM 1.2 machine: Secure Boot on, shim in PCR 4, GRUB's command line and kernel in PCRs 8 and 9. */
const boot = (): SyntheticEvent[] => [
  { pcr: 0, type: EventType.EV_S_CRTM_VERSION, data: ascii('1.02\0') },
  config(secureBootVariable(true)),
  config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', signatureList(1))),
  config(uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'KEK', signatureList(2))),
  config(uefiVariableData(IMAGE_DB_GUID, 'db', signatureList(3))),
  ...[0, 1, 2, 3, 4, 5, 6, 7].map(separator),
  { pcr: 7, type: EventType.EV_EFI_VARIABLE_AUTHORITY, data: uefiVariableData(IMAGE_DB_GUID, 'db', new Uint8Array(48).fill(3)) },
  { pcr: 4, type: EventType.EV_EFI_BOOT_SERVICES_APPLICATION, data: new Uint8Array(32), digests: { sha1: hash('sha1', SHIM), sha256: hash('sha256', SHIM) } },
  { pcr: 8, type: EventType.EV_IPL, data: ascii('kernel_cmdline: /vmlinuz ro quiet\0'), digests: { sha1: hash('sha1', ascii('/vmlinuz ro quiet')), sha256: hash('sha256', ascii('/vmlinuz ro quiet')) } },
  { pcr: 9, type: EventType.EV_IPL, data: ascii('/vmlinuz\0'), digests: { sha1: hash('sha1', KERNEL), sha256: hash('sha256', KERNEL) } },
  { pcr: 5, type: EventType.EV_EFI_ACTION, data: ascii('Exit Boot Services Invocation') },
];

/** What the TPM's banks hold after `events`: computed here from first principles, not by replay.ts. */
function tpmPcrs(events: readonly SyntheticEvent[], banks: readonly Bank[]): PcrBankValues {
  return new Map(
    banks.map((bank) => {
      const values = new Map<number, Uint8Array>();
      for (const e of events) values.set(e.pcr, extend(bank, values.get(e.pcr) ?? new Uint8Array(hash(bank, new Uint8Array(0)).length), e.digests?.[bank] ?? hash(bank, e.data)));
      return [bank, values] as const;
    }),
  );
}

describe('TPM 1.2 SHA-1 log (legacy TCG_PCClientPCREvent format)', () => {
  const log = parseEventLog(buildLegacyLog(boot()));
  const quoted = tpmPcrs(boot(), ['sha1']);

  it('parses without a Spec ID event and replays against the sha1 bank of a TPM 2.0 quote', () => {
    expect([log.format, log.banks, log.specId]).toEqual(['legacy-sha1', ['sha1'], undefined]);
    const verified = replayEventLog(log, { values: quoted });
    expect([...verified.replayedPcrs.get('sha1')!.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(verified.format).toBe('legacy-sha1');
  });

  it('a tampered legacy log does not replay (SHA-1 still protects the replay: forging it needs a second preimage)', () => {
    const events = boot();
    events[1] = config(secureBootVariable(false));
    expect(() => replayEventLog(parseEventLog(buildLegacyLog(events)), { values: quoted })).toThrow(EventLogReplayFailed);
  });

  it('Secure Boot holds from SHA-1 (firmware-chosen data); images, command lines and files are unknown', () => {
    const facts = deriveBootFacts(replayEventLog(log, { values: quoted }));
    expect(facts.secureBoot).toMatchObject({ state: 'enabled', reason: '' });
    for (const [fact, pcr] of [[facts.efiBootApplications, 4], [facts.kernelCommandLines, 8], [facts.bootLoaderFiles, 9]] as const) {
      expect(fact).toEqual({ known: false, reason: expect.stringContaining(`PCR ${pcr} is verified only in SHA-1, which is collision-broken`) });
    }
  });

  it('policies fail closed on SHA-1-only evidence; a pcr rule on a sha1 value and secure_boot still pass', () => {
    const verified = replayEventLog(log, { values: quoted });
    const facts = deriveBootFacts(verified);
    const [policy] = parsePolicyFile(
      JSON.stringify({
        policies: [{
          name: 'tpm12',
          pcrs: { sha1: { '0': toHex(quoted.get('sha1')!.get(0)!) } },
          secure_boot: true,
          boot_applications: [toHex(hash('sha1', SHIM))],
          kernels: [toHex(hash('sha1', KERNEL))],
          kernel_cmdline: ['^/vmlinuz ro quiet$'],
        }],
      }),
    );
    expect(checkPolicy(policy!, facts, verified).map((v) => v.rule)).toEqual(['boot_applications', 'kernels', 'kernel_cmdline']);
    const [pcrOnly] = parsePolicyFile(JSON.stringify({ policies: [{ name: 'pcr', pcrs: { sha1: { '0': toHex(quoted.get('sha1')!.get(0)!) } }, secure_boot: true }] }));
    expect(checkPolicy(pcrOnly!, facts, verified)).toEqual([]);
  });
});

describe('sha1 next to sha256: a SHA-1 digest never satisfies an allowlist', () => {
  const events = boot();
  const log = parseEventLog(buildAgileLog(events, ['sha1', 'sha256']));
  const verified = replayEventLog(log, { values: tpmPcrs(events, ['sha1', 'sha256']) });
  const facts = deriveBootFacts(verified);
  const policy = (digests: { apps: string; kernel: string }) =>
    parsePolicyFile(JSON.stringify({ policies: [{ name: 'p', boot_applications: [digests.apps], kernels: [digests.kernel] }] }))[0]!;

  it('the facts are known (sha256 verified them) and carry both banks', () => {
    expect(facts.efiBootApplications.known && [...facts.efiBootApplications.value[0]!.digests.keys()]).toEqual(['sha1', 'sha256']);
  });

  it('allowlisting the sha256 digests passes; allowlisting only the (collidable) sha1 digests fails', () => {
    expect(checkPolicy(policy({ apps: toHex(hash('sha256', SHIM)), kernel: toHex(hash('sha256', KERNEL)) }), facts, verified)).toEqual([]);
    const violations = checkPolicy(policy({ apps: toHex(hash('sha1', SHIM)), kernel: toHex(hash('sha1', KERNEL)) }), facts, verified);
    expect(violations.map((v) => v.rule)).toEqual(['boot_applications (event 15)', 'kernels (event 17)']);
  });
});

describe('policy create never writes a SHA-1 allowlist entry', () => {
  it('from a sha1 + sha384 log it lists the sha384 digests; from a SHA-1-only log it writes no image or file rule', () => {
    const both = createPolicyFromEventLog(parseEventLog(buildAgileLog(boot().map(({ digests: _d, ...e }) => e), ['sha1', 'sha384'])), { name: 'p', pcrs: [] });
    expect([...both.bootApplications!]).toEqual([toHex(hash('sha384', new Uint8Array(32)))]);
    const sha1Only = createPolicyFromEventLog(parseEventLog(buildLegacyLog(boot())), { name: 'p', pcrs: [] });
    expect([sha1Only.bootApplications, sha1Only.kernels, sha1Only.kernelCmdline, sha1Only.secureBoot]).toEqual([undefined, undefined, undefined, true]);
  });
});

