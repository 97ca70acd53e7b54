/**
 * Node selectors, all derived from verified data. Values only: SPIRE prefixes the plugin name
 * (`tpm:pub_hash:…`). `pub_hash` matches spire-tpm-plugin, so migrated entries keep working.
 */
import { createHash } from 'node:crypto';
import type { BootFacts } from '../tpm/bootfacts.js';
import { toHex } from '../tpm/bytes.js';
import type { QuotedPcrs } from '../tpm/quote.js';
import type { TrustedEk } from './ek-trust.js';

export interface SelectorInputs {
  readonly ek: TrustedEk;
  readonly quoted: QuotedPcrs;
  /** sha256 PCR indices to export; undefined = every quoted sha256 PCR. */
  readonly selectorPcrs: readonly number[] | undefined;
  readonly facts: BootFacts | undefined;
  readonly passedPolicies: readonly string[];
}

/** What the EK alone proves: its hash and, when the chain verified, its certificate's claims. */
export function ekSelectors(ek: TrustedEk): string[] {
  const out: string[] = [`pub_hash:${ek.pubHash}`];
  const cert = ek.certificate;
  if (cert) {
    if (cert.manufacturer) out.push(`ek_manufacturer:${cert.manufacturer}`);
    if (cert.model) out.push(`ek_model:${cert.model}`);
    if (cert.version) out.push(`ek_version:${cert.version}`);
    if (cert.rootSubjectCn) out.push(`ek_ca:${cert.rootSubjectCn}`);
    if (cert.gce) {
      out.push(`gce_project_id:${cert.gce.projectId}`, `gce_project_number:${cert.gce.projectNumber}`, `gce_zone:${cert.gce.zone}`);
      out.push(`gce_instance_id:${cert.gce.instanceId}`, `gce_instance_name:${cert.gce.instanceName}`);
    }
  }
  return out;
}

export function nodeSelectors(input: SelectorInputs): string[] {
  const out = ekSelectors(input.ek);
  if (input.facts) out.push(`secureboot:${input.facts.secureBoot.enabled ? 'enabled' : 'disabled'}`);
  const bank = input.quoted.bank('sha256');
  const indices = input.selectorPcrs ?? [...bank.keys()];
  for (const index of [...indices].sort((a, b) => a - b)) {
    const value = bank.get(index);
    if (value) out.push(`pcr:sha256:${index}:${toHex(value)}`);
  }
  for (const name of input.passedPolicies) out.push(`policy:${name}`);
  // One selector only when the command line is known and unambiguous: with two different lines, naming either
  // would let a node that booted one claim the other.
  const lines = input.facts?.kernelCommandLines;
  const distinct = lines?.known ? [...new Set(lines.value.map((l) => l.cmdline))] : [];
  if (distinct.length === 1) out.push(`kernel_cmdline_sha256:${createHash('sha256').update(distinct[0]!, 'utf8').digest('hex')}`);
  return [...new Set(out)];
}
