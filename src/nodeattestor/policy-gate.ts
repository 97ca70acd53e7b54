/**
 * Applies the configured measured-boot policies to one node's verified boot facts and decides.
 * Fails closed: with policies configured, a node whose event log could not be verified passes none.
 */
import { AttestationRefused, InvalidConfig } from '../errors.js';
import { evaluatePolicies } from '../policy/evaluate.js';
import { parsePolicyFile, type MeasuredBootPolicy } from '../policy/policy.js';
import type { BootFacts } from '../tpm/bootfacts.js';
import type { VerifiedEvents } from '../tpm/replay.js';

export type PolicyMatch = 'any' | 'all' | 'report';

export async function loadPolicies(path: string, readFile: (p: string) => Promise<Uint8Array>): Promise<MeasuredBootPolicy[]> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new InvalidConfig('ERR_CONFIG_POLICY', `tpm server: key "policy_path": cannot read ${path}: ${(err as Error).message}`);
  }
  return parsePolicyFile(Buffer.from(bytes).toString('utf8'));
}

/** Returns the names of the policies the node passed, or throws PERMISSION_DENIED per `match`. */
export function enforcePolicies(
  policies: readonly MeasuredBootPolicy[],
  match: PolicyMatch,
  facts: BootFacts | undefined,
  verified: VerifiedEvents | undefined,
  node: string,
): string[] {
  if (policies.length === 0) return [];
  if (!facts || !verified) {
    if (match === 'report') return [];
    throw new AttestationRefused('ERR_POLICY_NO_EVENTLOG', `node ${node}: boot policies are configured but the node sent no event log`, {
      fields: { rule: 'policy requires event log' },
    });
  }
  const results = evaluatePolicies(policies, facts, verified);
  const passed = results.filter((r) => r.passed).map((r) => r.policy);
  if (match === 'report') return passed;
  const failed = results.filter((r) => !r.passed);
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
