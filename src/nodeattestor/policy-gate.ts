/**
 * Applies the configured measured-boot policies to one node's verified boot facts and decides.
 * Fails closed: with policies configured, a node whose event log could not be verified passes none.
 */
import { AttestationRefused, InvalidConfig } from '../errors.js';
import { evaluatePolicies } from '../policy/evaluate.js';
import { MAX_POLICY_FILE_BYTES, parsePolicyFile, type MeasuredBootPolicy } from '../policy/policy.js';
import type { BootFacts } from '../tpm/bootfacts.js';
import type { VerifiedEvents } from '../tpm/replay.js';
import { HashAlg } from '../tpm/alg.js';
import type { PcrSelection } from '../tpm/pcrs.js';
import type { PolicyReport } from './decision-event.js';

export type PolicyMatch = 'any' | 'all' | 'report';

export async function loadPolicies(path: string, readFile: (p: string) => Promise<Uint8Array>): Promise<MeasuredBootPolicy[]> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new InvalidConfig('ERR_CONFIG_POLICY', `tpm server: key "policy_path": cannot read ${path}: ${(err as Error).message}`);
  }
  if (bytes.length > MAX_POLICY_FILE_BYTES) {
    throw new InvalidConfig('ERR_POLICY_INVALID', `tpm server: policy file ${path}: larger than ${MAX_POLICY_FILE_BYTES} bytes`, { fields: { file: path } });
  }
  return parsePolicyFile(Buffer.from(bytes).toString('utf8'), `tpm server: policy file ${path}`);
}

/**
 * Facts come only from events on quoted PCRs, so a rule whose PCRs are not in the selection could
 * never pass (or, worse, would be silently vacuous). Refuse such a configuration at Configure.
 */
export function checkPoliciesAgainstSelection(policies: readonly MeasuredBootPolicy[], selection: PcrSelection): void {
  const quoted = (index: number) => selection.banks.some((bank) => selection.has(bank.hash, index));
  for (const policy of policies) {
    const need: Array<[rule: string, satisfied: boolean, pcrs: string]> = [];
    for (const [bank, values] of policy.pcrs) {
      for (const index of values.keys()) {
        const alg = HashAlg.parse(bank);
        need.push([`pcrs ${bank}:${index}`, selection.has(alg, index), `${bank}:${index}`]);
      }
    }
    if (policy.secureBoot) need.push(['secure_boot', quoted(7), '7']);
    if (policy.bootApplications) need.push(['boot_applications', quoted(4), '4']);
    if (policy.kernels) need.push(['kernels', quoted(9), '9']);
    if (policy.kernelCmdline) need.push(['kernel_cmdline', quoted(8) || quoted(12), '8 or 12']);
    if (policy.bootLoader) need.push(['boot_loader', quoted(8) || quoted(9), '8 or 9']);
    for (const [rule, satisfied, pcrs] of need) {
      if (!satisfied) {
        throw new InvalidConfig(
          'ERR_CONFIG_POLICY',
          `tpm server: policy "${policy.name}" rule ${rule} needs PCR ${pcrs}, which pcr_selection "${selection.toString()}" does not quote`,
        );
      }
    }
  }
}

/** Bounds the audit field: a policy file may hold many policies with many rules. */
const MAX_FAILED_SUMMARY = 4096;

/**
 * Returns the names of the policies the node passed, or throws PERMISSION_DENIED per `match`. `onFailed` receives,
 * in every mode, each failed policy with every rule it failed, e.g.
 * `golden: pcr sha256:7 (observed 0d88…, expected 2f96…), secure_boot (observed disabled …)`: in `report` mode
 * the audit line is all an operator has to decide whether enforcing would be safe.
 * `report`, when given, receives every passed and failed policy before any refusal, so decision events can name them all.
 */
export function enforcePolicies(
  policies: readonly MeasuredBootPolicy[],
  match: PolicyMatch,
  facts: BootFacts | undefined,
  verified: VerifiedEvents | undefined,
  node: string,
  onFailed?: (summary: string) => void,
  report?: PolicyReport,
): string[] {
  if (policies.length === 0) return [];
  if (!facts || !verified) {
    onFailed?.(`${policies.map((p) => p.name).join(', ')}: no verified event log`);
    if (match === 'report') return [];
    throw new AttestationRefused('ERR_POLICY_NO_EVENTLOG', `node ${node}: boot policies are configured but the node sent no event log`, {
      fields: { rule: 'policy requires event log' },
    });
  }
  const results = evaluatePolicies(policies, facts, verified);
  const passed = results.filter((r) => r.passed).map((r) => r.policy);
  const failed = results.filter((r) => !r.passed);
  if (failed.length > 0 && onFailed) {
    const summary = failed
      .map((r) => `${r.policy}: ${r.violations.map((v) => `${v.rule} (${withoutPrefix(v.message, `policy "${v.policy}": ${v.rule}: `)})`).join(', ')}`)
      .join('; ');
    onFailed(summary.length > MAX_FAILED_SUMMARY ? `${summary.slice(0, MAX_FAILED_SUMMARY)}…` : summary);
  }
  if (report) {
    report.passed = passed;
    report.failed = failed.map((r) => ({ policy: r.policy, rules: r.violations.map((v) => v.rule) }));
  }
  if (match === 'report') return passed;
  if (match === 'all' && failed.length > 0) throw failed[0]!.violations[0]!;
  if (match === 'any' && passed.length === 0) {
    if (failed.length === 1) throw failed[0]!.violations[0]!;
    const first = failed.map((r) => r.violations[0]!);
    throw new AttestationRefused(
      'ERR_POLICY_VIOLATION',
      `node ${node}: no boot policy passed: ${first.map((v) => v.message).join('; ')}`,
      { fields: { rule: first.map((v) => `${v.policy}: ${v.rule}`).join('; '), observed: first[0]!.observed } },
    );
  }
  return passed;
}

function withoutPrefix(text: string, prefix: string): string {
  return text.startsWith(prefix) ? text.slice(prefix.length) : text;
}
