/**
 * Measured-boot policy evaluation. Reads only `BootFacts` (derived from `VerifiedEvents`) and the quote-verified PCR
 * values carried by `VerifiedEvents`; anything missing fails closed.
 *
 * Rules, checked in this order per policy (each failure is one {@link PolicyViolation}):
 * `pcr <bank>:<index>`, `secure_boot`, `boot_loader`, `boot_applications`, `kernels`, `kernel_cmdline`.
 * A rule on an unknown fact fails, and so does a list rule with nothing to check.
 *
 * @module
 */
import { AttestationRefused } from '../errors.js';
import { toHex } from '../tpm/bytes.js';
import type { BootFacts, HexDigests } from '../tpm/bootfacts.js';
import { COLLISION_RESISTANT_BANKS } from '../tpm/pcr-integrity.js';
import type { VerifiedEvents } from '../tpm/replay.js';
import type { MeasuredBootPolicy } from './policy.js';

export const ERR_POLICY_VIOLATION = 'ERR_POLICY_VIOLATION';
/** Longest observed value echoed in a violation (command lines can be long). */
const MAX_OBSERVED_LENGTH = 512;

/** A failed rule: AttestationRefused (PERMISSION_DENIED) naming the policy, the rule and the observed value. */
export class PolicyViolation extends AttestationRefused {
  readonly policy: string;
  readonly rule: string;
  readonly observed: string;

  constructor(policy: string, rule: string, observed: string, expected?: string) {
    const shown = observed.length > MAX_OBSERVED_LENGTH ? `${observed.slice(0, MAX_OBSERVED_LENGTH)}…` : observed;
    super(ERR_POLICY_VIOLATION, `policy "${policy}": ${rule}: observed ${shown}${expected === undefined ? '' : `, expected ${expected}`}`, {
      fields: { policy, rule, observed: shown, ...(expected === undefined ? {} : { expected }) },
    });
    this.policy = policy;
    this.rule = rule;
    this.observed = shown;
  }
}

export interface PolicyResult {
  readonly policy: string;
  readonly passed: boolean;
  readonly violations: readonly PolicyViolation[];
}

function digestAllowed(digests: HexDigests, allowed: ReadonlySet<string>): boolean {
  // A SHA-1 match proves nothing: a chosen-prefix collision gives an evil image the digest of an allowed one.
  for (const [bank, hex] of digests) if (COLLISION_RESISTANT_BANKS.has(bank) && allowed.has(hex)) return true;
  return false;
}

function describeDigests(digests: HexDigests): string {
  return [...digests].map(([bank, hex]) => `${bank}:${hex}`).join(' ') || '(no verified digest)';
}

/** Evaluates one policy; returns every violation (empty when it passes). */
export function checkPolicy(policy: MeasuredBootPolicy, facts: BootFacts, verified: VerifiedEvents): PolicyViolation[] {
  const violations: PolicyViolation[] = [];
  const fail = (rule: string, observed: string, expected?: string): void => {
    violations.push(new PolicyViolation(policy.name, rule, observed, expected));
  };

  for (const [bank, values] of policy.pcrs) {
    for (const [index, expected] of [...values].sort(([a], [b]) => a - b)) {
      const quoted = verified.quotedPcrs.get(bank)?.get(index);
      if (quoted === undefined) fail(`pcr ${bank}:${index}`, 'not quoted', expected);
      else if (toHex(quoted) !== expected) fail(`pcr ${bank}:${index}`, toHex(quoted), expected);
    }
  }

  if (policy.secureBoot && !facts.secureBoot.enabled) {
    const reason = facts.secureBoot.reason ? ` (${facts.secureBoot.reason})` : '';
    fail('secure_boot', `${facts.secureBoot.state}${reason}`, 'enabled');
  }

  if (policy.bootLoader === 'grub' && facts.grub === undefined) fail('boot_loader', 'no GRUB measurements found', 'grub');

  // Every rule below fails closed: on an unknown fact, and when there is nothing to check.
  if (policy.bootApplications) {
    const apps = facts.efiBootApplications;
    if (!apps.known) fail('boot_applications', `unknown (${apps.reason})`);
    else if (apps.value.length === 0) fail('boot_applications', 'no verified PCR 4 boot application measurement');
    else {
      for (const app of apps.value) {
        if (!digestAllowed(app.digests, policy.bootApplications)) {
          fail(`boot_applications (event ${app.sequence})`, describeDigests(app.digests));
        }
      }
    }
  }

  if (policy.kernels) {
    const files = facts.bootLoaderFiles;
    if (!files.known) fail('kernels', `unknown (${files.reason})`);
    else if (files.value.length === 0) fail('kernels', 'no verified PCR 9 kernel image measurement');
    else {
      // The file name in the event is not covered by the digest, so every PCR 9 file must be on the list.
      for (const file of files.value) {
        if (!digestAllowed(file.digests, policy.kernels)) fail(`kernels (event ${file.sequence})`, describeDigests(file.digests));
      }
    }
  }

  if (policy.kernelCmdline) {
    const lines = facts.kernelCommandLines;
    if (!lines.known) fail('kernel_cmdline', `unknown (${lines.reason})`);
    else if (lines.value.length === 0) fail('kernel_cmdline', 'no verified kernel command line');
    else {
      for (const line of lines.value) {
        if (!policy.kernelCmdline.some((pattern) => pattern.test(line.cmdline))) {
          fail(`kernel_cmdline (event ${line.sequence})`, JSON.stringify(line.cmdline));
        }
      }
    }
  }

  return violations;
}

/** Evaluates every policy; each result says whether it passed and lists its violations. */
export function evaluatePolicies(
  policies: readonly MeasuredBootPolicy[],
  facts: BootFacts,
  verified: VerifiedEvents,
): PolicyResult[] {
  return policies.map((policy) => {
    const violations = checkPolicy(policy, facts, verified);
    return { policy: policy.name, passed: violations.length === 0, violations };
  });
}

/** Throws the first violation of the named policy (or of the first policy when no name is given). */
export function enforcePolicy(
  policies: readonly MeasuredBootPolicy[],
  facts: BootFacts,
  verified: VerifiedEvents,
  name?: string,
): void {
  const policy = name === undefined ? policies[0] : policies.find((p) => p.name === name);
  if (!policy) throw new PolicyViolation(name ?? '(none)', 'policy', 'no such policy');
  const [first] = checkPolicy(policy, facts, verified);
  if (first) throw first;
}
