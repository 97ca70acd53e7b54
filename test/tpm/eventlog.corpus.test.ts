/**
 * Data-driven: every stated expectation of every event-log item in test/fixtures/eventlog (copied from the shared
 * corpus with `.source.json` provenance sidecars). Each `it` names the expectation key it checks.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AttestationRefused, GrpcCode } from '../../src/errors.js';
import { parsePolicyFile } from '../../src/policy/policy.js';
import { checkPolicy } from '../../src/policy/evaluate.js';
import { createPolicyFromEventLog } from '../../src/policy/create.js';
import { COLLISION_RESISTANT_BANKS } from '../../src/tpm/pcr-integrity.js';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { parseEventLog, type UnverifiedEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { EventLogReplayFailed, computePcrs, replayEventLog, type PcrBankValues } from '../../src/tpm/replay.js';
import { toHex } from '../../src/tpm/bytes.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/eventlog');

type PcrJson = Record<string, Record<string, string>>;
interface Item {
  id: string;
  files: { file: string; sha256: string }[];
  expected: Record<string, any> | null;
  observed_by_collector?: { event_count_including_first?: number; pcrs_extended?: number[] };
}

const items: Item[] = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.expected.json'))
  .sort()
  .map((f) => JSON.parse(readFileSync(join(FIXTURES, f), 'utf8')) as Item);

function logFileOf(item: Item): string {
  return item.files.map((f) => f.file).find((f) => f.endsWith('.bin'))!;
}
function loadLog(item: Item): UnverifiedEventLog {
  return parseEventLog(readFileSync(join(FIXTURES, logFileOf(item))));
}
function toValues(pcrs: PcrJson): PcrBankValues {
  return new Map(
    Object.entries(pcrs).map(([bank, values]) => [bank, new Map(Object.entries(values).map(([i, hex]) => [Number(i), Buffer.from(hex, 'hex')]))]),
  );
}
function toJson(values: PcrBankValues): PcrJson {
  return Object.fromEntries([...values].map(([bank, m]) => [bank, Object.fromEntries([...m].map(([i, v]) => [String(i), toHex(v)]))]));
}

/** The `pcrs:` section of tpm2_eventlog YAML output ("  sha1:" then "    7  : 0x<hex>"). */
function tpm2EventlogYamlPcrs(text: string): PcrJson {
  const section = text.slice(text.lastIndexOf('\npcrs:\n'));
  const out: PcrJson = {};
  let bank = '';
  for (const line of section.split('\n').slice(2)) {
    const bankMatch = /^ {2}(\w+):\s*$/.exec(line);
    const valueMatch = /^ {4}(\d+)\s*: 0x([0-9a-fA-F]+)\s*$/.exec(line);
    if (bankMatch) out[(bank = bankMatch[1]!)] = {};
    else if (valueMatch && bank) out[bank]![valueMatch[1]!] = valueMatch[2]!.toLowerCase();
  }
  return out;
}

/** Subject CNs of the certificates go-tpm-tools names in its Secure Boot expectations. */
const KNOWN_CERT_CN: Record<string, string> = {
  MS_THIRD_PARTY_UEFI_CA_2011: 'CN=Microsoft Corporation UEFI CA 2011',
  MS_WINDOWS_PROD_PCA_2011: 'CN=Microsoft Windows Production PCA 2011',
  MS_THIRD_PARTY_KEK_CA_2011: 'CN=Microsoft Corporation KEK CA 2011',
};

it('every corpus event-log item has been copied with its provenance sidecar', () => {
  expect(items.length).toBe(28);
  for (const item of items) {
    for (const file of item.files.filter((f) => !f.file.endsWith('.b64'))) {
      const bytes = readFileSync(join(FIXTURES, file.file));
      expect(createHash('sha256').update(bytes).digest('hex'), file.file).toBe(file.sha256);
      const sidecar = JSON.parse(readFileSync(join(FIXTURES, `${file.file}.source.json`), 'utf8'));
      expect(sidecar.sha256).toBe(file.sha256);
      expect(sidecar.license).toMatch(/^(Apache-2.0|BSD-2-Clause|BSD-3-Clause)$/);
    }
  }
});

describe.each(items.map((item) => [item.id, item] as const))('%s', (_id, item) => {
  const expected = item.expected ?? {};

  it('parses (expected.parses, or no source expectation: must still parse)', () => {
    const log = loadLog(item);
    expect(log.trust).toBe('unverified');
    if (item.observed_by_collector?.event_count_including_first !== undefined) {
      expect(log.untrustedEvents.length).toBe(item.observed_by_collector.event_count_including_first);
    }
  });

  if (expected.pcrs) {
    it('replays to the source PCR values (expected.pcrs)', () => {
      const log = loadLog(item);
      const verified = replayEventLog(log, { values: toValues(expected.pcrs) });
      expect(verified.appliedQuirks).toEqual([]);
      // Every PCR the log extends in a quoted bank was checked and matched.
      for (const bank of Object.keys(expected.pcrs)) {
        const extended = [...(computePcrs(log).get(bank)?.keys() ?? [])].filter((i) => String(i) in expected.pcrs[bank]);
        expect([...(verified.replayedPcrs.get(bank)?.keys() ?? [])].sort((a, b) => a - b)).toEqual(extended.sort((a, b) => a - b));
      }
    });
  }

  if (expected.tpm2_tools?.pcrs) {
    it('computed PCRs equal the pcrs section of the expected tpm2_eventlog YAML (expected.tpm2_tools)', () => {
      const computed = toJson(computePcrs(loadLog(item)));
      expect(computed).toEqual(expected.tpm2_tools.pcrs);
      const yamlText = readFileSync(join(FIXTURES, expected.tpm2_tools.expected_yaml), 'utf8');
      expect(computed).toEqual(tpm2EventlogYamlPcrs(yamlText));
    });
  }

  if (expected.against_bad_pcrs) {
    it('fails against the bogus PCRs (expected.against_bad_pcrs)', () => {
      let thrown: unknown;
      try {
        replayEventLog(loadLog(item), { values: toValues(expected.against_bad_pcrs.pcrs) });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(EventLogReplayFailed);
      expect((thrown as AttestationRefused).code).toBe('ERR_EVENTLOG_REPLAY');
      expect((thrown as AttestationRefused).grpcCode).toBe(GrpcCode.PERMISSION_DENIED);
      expect((thrown as EventLogReplayFailed).invalidPcrs.map((m) => `${m.bank}:${m.index}`)).toEqual(['sha1:0']);
    });
  }

  if (expected.efi_boot_services_application_digests_in_order) {
    it('EFI boot-application digests in order (expected.efi_boot_services_application_digests_in_order)', () => {
      const log = loadLog(item);
      const quoted = expected.pcrs ? toValues(expected.pcrs) : undefined;
      for (const [bank, digests] of Object.entries(expected.efi_boot_services_application_digests_in_order as Record<string, string[]>)) {
        // Banks the source gives PCRs for are checked against those; others (sha384) against the log's own replay.
        // Every bank is passed: PCR 4 facts need a collision-resistant bank, SHA-1 alone leaves them unknown.
        const values = new Map([...computePcrs(log), ...(quoted ?? new Map())]);
        const facts = deriveBootFacts(replayEventLog(log, { values }));
        if (!log.banks.some((b) => COLLISION_RESISTANT_BANKS.has(b))) {
          // A SHA-1-only log (TPM 1.2 style): the images are there, but SHA-1 cannot vouch for them.
          expect(facts.efiBootApplications).toEqual({ known: false, reason: expect.stringMatching(/PCR 4 is verified only in SHA-1/) });
          continue;
        }
        expect(facts.efiBootApplications.known ? facts.efiBootApplications.value.map((a) => a.digests.get(bank)) : facts.efiBootApplications, bank).toEqual(digests);
      }
    });
  }

  if (expected.linux_kernel_command_line !== undefined) {
    it('kernel command line (expected.linux_kernel_command_line)', () => {
      const facts = deriveBootFacts(replayEventLog(loadLog(item), { values: toValues(expected.pcrs) }));
      const grubLines = (facts.kernelCommandLines.known ? facts.kernelCommandLines.value : []).filter((c) => c.source === 'grub');
      expect(grubLines.map((c) => c.logged)).toEqual([expected.linux_kernel_command_line]);
    });
  }

  if (expected.grub_commands_measured !== undefined || expected.grub_files_measured_count !== undefined) {
    it('GRUB measurements (expected.grub_commands_measured / grub_files_measured_count)', () => {
      const facts = deriveBootFacts(replayEventLog(loadLog(item), { values: toValues(expected.pcrs) }));
      expect(facts.grub).toBeDefined();
      if (expected.grub_commands_measured) expect(facts.grub!.commands.length).toBeGreaterThan(0);
      if (expected.grub_files_measured_count !== undefined) expect(facts.grub!.files.length).toBe(expected.grub_files_measured_count);
    });
  }

  if (expected.loader_option_in_source_test === 'GRUB') {
    it('GRUB state is found when the source test asks for the GRUB loader (expected.loader_option_in_source_test)', () => {
      const log = loadLog(item);
      const verified = replayEventLog(log, { values: toValues(expected.pcrs) });
      const [policy] = parsePolicyFile('policies: [{ name: needs-grub, boot_loader: grub }]');
      expect(checkPolicy(policy!, deriveBootFacts(verified), verified)).toEqual([]);
    });
  }

  if (expected.with_grub_loader?.fails) {
    it('fails when a GRUB loader is required (expected.with_grub_loader)', () => {
      const log = loadLog(item);
      const verified = replayEventLog(log, { values: toValues(expected.pcrs) });
      const [policy] = parsePolicyFile('policies: [{ name: needs-grub, boot_loader: grub }]');
      const violations = checkPolicy(policy!, deriveBootFacts(verified), verified);
      expect(violations.map((v) => [v.code, v.grpcCode, v.rule])).toEqual([['ERR_POLICY_VIOLATION', GrpcCode.PERMISSION_DENIED, 'boot_loader']]);
      expect(violations[0]!.observed).toContain(expected.with_grub_loader.error_contains);
    });
  }

  const secureBootEnabled = expected.secure_boot_enabled;
  if (secureBootEnabled !== undefined) {
    it(`Secure Boot ${secureBootEnabled ? 'enabled' : 'disabled'} (expected.secure_boot_enabled)`, () => {
      const log = loadLog(item);
      const values = expected.pcrs ? toValues(expected.pcrs) : computePcrs(log);
      const facts = deriveBootFacts(replayEventLog(log, { values }));
      expect(facts.secureBoot.state).toBe(secureBootEnabled ? 'enabled' : 'disabled');
      expect(facts.secureBoot.enabled).toBe(secureBootEnabled);
    });
  }

  if (expected.create_mb_policy) {
    it('golden-node policy records the Secure Boot state (expected.create_mb_policy)', () => {
      // keylime refuses to create a policy for a Secure-Boot-disabled log without -i; here the created policy simply
      // does not require Secure Boot, and a Secure-Boot-requiring policy refuses this log.
      const log = loadLog(item);
      const policy = createPolicyFromEventLog(log, { name: 'golden', pcrs: [0, 7] });
      expect(policy.secureBoot).toBe(expected.secure_boot_enabled);
      const verified = replayEventLog(log, { values: computePcrs(log) });
      const [requireSb] = parsePolicyFile('policies: [{ name: sb, secure_boot: true }]');
      const violations = checkPolicy(requireSb!, deriveBootFacts(verified), verified);
      expect(violations.map((v) => v.rule)).toEqual(expected.secure_boot_enabled ? [] : ['secure_boot']);
    });
  }

  const parseSecureBootOk = expected.ParseSecurebootState_ok ?? expected.go_attestation?.ParseSecurebootState_ok;
  if (parseSecureBootOk) {
    it('Secure Boot state derives without an unknown event (ParseSecurebootState_ok)', () => {
      const log = loadLog(item);
      const facts = deriveBootFacts(replayEventLog(log, { values: computePcrs(log) }));
      expect(facts.secureBoot.state).not.toBe('unknown');
      expect(facts.secureBoot.reason).not.toMatch(/not allowed/);
    });
  }

  if (expected.secure_boot_post_separator_authority_count !== undefined) {
    it('Secure Boot authorities after the separator (expected.secure_boot_post_separator_authority_count)', () => {
      const facts = deriveBootFacts(replayEventLog(loadLog(item), { values: toValues(expected.pcrs) }));
      expect(facts.secureBoot.postSeparatorAuthorities.length).toBe(expected.secure_boot_post_separator_authority_count);
    });
  }

  if (expected.secure_boot?.db_contains) {
    it('Secure Boot databases (expected.secure_boot)', () => {
      const facts = deriveBootFacts(replayEventLog(loadLog(item), { values: toValues(expected.pcrs) }));
      const sb = expected.secure_boot;
      const subjects = (db: typeof facts.secureBoot.db) => db!.certificates.map((c) => c.subject ?? '');
      for (const name of sb.db_contains as string[]) {
        expect(subjects(facts.secureBoot.db).some((s) => s.endsWith(KNOWN_CERT_CN[name]!)), name).toBe(true);
      }
      expect(facts.secureBoot.db!.sha256Hashes.length).toBe(sb.db_hashes);
      for (const name of sb.kek as string[]) {
        expect(subjects(facts.secureBoot.kek).some((s) => s.endsWith(KNOWN_CERT_CN[name]!)), name).toBe(true);
      }
      // GCE_DEFAULT_PK: the source compares against its own copy of GCE's PK; we check there is exactly that one PK.
      expect(facts.secureBoot.pk!.certificates.length).toBe((sb.pk as string[]).length);
      expect(facts.secureBoot.pk!.dataVerified).toBe(true);
    });
  }

  if (expected.events_in_sequence_order) {
    it('events are in sequence order (expected.events_in_sequence_order)', () => {
      const verified = replayEventLog(loadLog(item), { values: toValues(expected.pcrs) });
      const sequences = verified.events.map((e) => e.sequence);
      expect(sequences).toEqual([...sequences].sort((a, b) => a - b));
    });
  }

  if (expected.parses_with_digest_check || expected.tpm2_tss_fapi?.parses_with_digest_check) {
    it('digests of data-hashed events match their data (parses_with_digest_check)', () => {
      const dataHashed = new Set<number>([EventType.EV_SEPARATOR, EventType.EV_EFI_ACTION, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG]);
      for (const event of loadLog(item).untrustedEvents) {
        if (!dataHashed.has(event.type)) continue;
        for (const [bank, digest] of event.digests) {
          expect(toHex(new Uint8Array(createHash(bank).update(event.data).digest())), `event ${event.sequence} ${bank}`).toBe(toHex(digest));
        }
      }
    });
  }

  if (expected.keylime_bootlog_parse_sha256_failure === false) {
    it('replays the sha256 bank (expected.keylime_bootlog_parse_sha256_failure: false)', () => {
      const log = loadLog(item);
      expect(computePcrs(log).get('sha256')?.size).toBeGreaterThan(0);
      expect(() => replayEventLog(log, { values: computePcrs(log) })).not.toThrow();
    });
  }

  if (item.id === 'ga-windows_gcp_shielded_vm') {
    it('the dump JSON PCRs are the expected PCRs and the log replays to them (verify_against_pcrs)', () => {
      const dump = JSON.parse(readFileSync(join(FIXTURES, 'ga-windows_gcp_shielded_vm.json'), 'utf8'));
      const sha1 = Object.fromEntries(
        (dump.Log.PCRs as { Index: number; Digest: string; DigestAlg: number }[])
          .filter((p) => p.DigestAlg === 3)
          .map((p) => [String(p.Index), Buffer.from(p.Digest, 'base64').toString('hex')]),
      );
      expect(sha1).toEqual(expected.pcrs.sha1);
      expect(Buffer.from(dump.Log.Raw, 'base64').equals(readFileSync(join(FIXTURES, 'ga-windows_gcp_shielded_vm.log.bin')))).toBe(true);
      expect(() => replayEventLog(loadLog(item), { values: toValues({ sha1 }) })).not.toThrow();
    });
  }

  if (item.id === 'tss-specid-vendordata') {
    it('Spec ID event with 4 bytes of vendorInfo', () => {
      const log = loadLog(item);
      expect(log.format).toBe('crypto-agile');
      expect(toHex(log.specId!.vendorInfo)).toBe('deadbeef');
      expect(log.specId!.algorithms.map((a) => [a.bank, a.digestSize])).toEqual([['sha1', 20], ['sha256', 32]]);
    });
  }

  if (item.id === 'ga-short_no_action_eventlog') {
    it('a short non-Spec-ID EV_NO_ACTION log parses as legacy with its StartupLocality and extends nothing', () => {
      const log = loadLog(item);
      expect(log.format).toBe('legacy-sha1');
      expect(log.startupLocality).toBe(3);
      expect(computePcrs(log).size).toBe(0);
    });
  }
});
