/**
 * `spire-edge-attest policy check`: an offline dry run of measured-boot policies against an event log. The log is
 * replayed against its own computed PCR values (`computePcrs`), so nothing is verified: no TPM quote stands behind the
 * values, and a node whose log passes here can still be refused at attestation (and the other way round if its PCRs
 * differ). It answers "would this policy file accept a node that booted like this log says?". Pure: bytes and text
 * in, a JSON-ready object or text out. JSON shape: docs/cli.md, "policy check".
 *
 * @module
 */
import { InvalidConfig } from '../errors.js';
import { evaluatePolicies } from '../policy/evaluate.js';
import { parsePolicyFile } from '../policy/policy.js';
import { deriveBootFacts } from '../tpm/bootfacts.js';
import { parseEventLog } from '../tpm/eventlog.js';
import { computePcrs, replayEventLog, type PcrBankValues } from '../tpm/replay.js';
import { DEFAULT_PCR_SELECTION, PcrSelection } from '../tpm/pcrs.js';
import { checkPoliciesAgainstSelection } from '../nodeattestor/policy-gate.js';

export type PolicyMatchMode = 'any' | 'all';

export interface PolicyCheckOptions {
  /**
   * The PCRs treated as quoted, like the server's `pcr_selection`: tpm2-tools syntax (`sha256:0,1,7+sha1:0`) or bare
   * indices (`0,2,4,7`) for every bank of the log. Default: the server's default `pcr_selection`
   * (DEFAULT_PCR_SELECTION), so that this never passes a policy the default server would refuse.
   */
  readonly pcrs?: string;
  /** Like the server's `policy_match`: `any` (default) passes when one policy passes, `all` when every one does. */
  readonly match?: PolicyMatchMode;
}

export interface PolicyCheckViolation {
  readonly rule: string;
  readonly observed: string;
  readonly expected?: string;
  readonly message: string;
}

export interface PolicyCheckResult {
  /** Always true, always false: a reminder for scripts that this is an offline, unverified dry run. */
  readonly offline: true;
  readonly verified: false;
  /** The PCRs treated as quoted, tpm2-tools syntax. */
  readonly pcrs: string;
  readonly match: PolicyMatchMode;
  /** The verdict under `match`; false too when the server would refuse the policy file at Configure. */
  readonly passed: boolean;
  /** Present when a server with this pcr_selection refuses the policy file at Configure: the server's message. */
  readonly configure_error?: string;
  readonly policies: readonly {
    readonly name: string;
    readonly passed: boolean;
    readonly violations: readonly PolicyCheckViolation[];
  }[];
}

export const OFFLINE_NOTICE =
  'offline dry run (unverified): the event log is replayed against its own PCR values; no TPM quote verifies them';

/** The PCRs a server with `spec` as its pcr_selection quotes from a node whose log has `logBanks`. */
function selectionFor(spec: string, logBanks: readonly string[]): PcrSelection {
  const trimmed = spec.trim();
  if (/^\d{1,2}(,\d{1,2})*$/.test(trimmed)) {
    const indices = trimmed.split(',').map(Number);
    const bad = indices.find((i) => i > 23);
    if (bad !== undefined) throw new InvalidConfig('ERR_CLI_PCRS', `--pcrs: PCR index ${bad} is not 0..23`);
    if (logBanks.length === 0) throw new InvalidConfig('ERR_CLI_PCRS', '--pcrs: the event log replays no PCR bank');
    return PcrSelection.parse(logBanks.map((bank) => `${bank}:${trimmed}`).join('+'));
  }
  try {
    return PcrSelection.parse(trimmed);
  } catch (err) {
    throw new InvalidConfig('ERR_CLI_PCRS', `--pcrs: ${(err as Error).message} (use "0,2,4,7" or "sha256:0,2,4,7")`);
  }
}

function selectPcrs(computed: PcrBankValues, selection: PcrSelection): PcrBankValues {
  const wanted = (bank: string, index: number) => selection.banks.some((b) => b.hash.name === bank && b.indices.includes(index));
  const out = new Map<string, Map<number, Uint8Array>>();
  for (const [bank, values] of computed) {
    const kept = new Map([...values].filter(([index]) => wanted(bank, index)));
    if (kept.size > 0) out.set(bank, kept);
  }
  return out;
}

function selectionText(values: PcrBankValues): string {
  return (
    [...values]
      .map(([bank, v]) => `${bank}:${[...v.keys()].sort((a, b) => a - b).join(',')}`)
      .join('+') || '(none)'
  );
}

/** Evaluates every policy in `policyText` against the log; throws on an unparsable log or policy file. */
export function checkPoliciesOffline(policyText: string, logBytes: Uint8Array, options: PolicyCheckOptions = {}): PolicyCheckResult {
  const policies = parsePolicyFile(policyText);
  const log = parseEventLog(logBytes);
  const computed = computePcrs(log);
  const selection = selectionFor(options.pcrs ?? DEFAULT_PCR_SELECTION, [...computed.keys()]);
  // The server's Configure refuses a policy that needs PCRs its selection does not quote: say so, never PASS.
  let configureError: string | undefined;
  try {
    checkPoliciesAgainstSelection(policies, selection);
  } catch (err) {
    configureError = (err as Error).message;
  }
  const quoted = selectPcrs(computed, selection);
  // Strict replay (no quirks): the values come from this very log, so it always matches.
  const verified = replayEventLog(log, { values: quoted }, { quirks: [] });
  const facts = deriveBootFacts(verified);
  const results = evaluatePolicies(policies, facts, verified);
  const match = options.match ?? 'any';
  return {
    offline: true,
    verified: false,
    pcrs: selectionText(quoted),
    match,
    passed: configureError === undefined && (match === 'all' ? results.every((r) => r.passed) : results.some((r) => r.passed)),
    ...(configureError !== undefined ? { configure_error: configureError } : {}),
    policies: results.map((r) => ({
      name: r.policy,
      passed: r.passed,
      violations: r.violations.map((v) => {
        const expected = v.fields['expected'];
        return {
          rule: v.rule,
          observed: v.observed,
          ...(typeof expected === 'string' ? { expected } : {}),
          message: v.message,
        };
      }),
    })),
  };
}

/** Human-readable report; scripts should use the JSON object instead. */
export function formatPolicyCheck(result: PolicyCheckResult): string {
  const lines = [`${OFFLINE_NOTICE}.`, `PCRs treated as quoted: ${result.pcrs}`, ''];
  for (const p of result.policies) {
    lines.push(`${p.passed ? 'PASS' : 'FAIL'} ${p.name}`);
    for (const v of p.violations) {
      lines.push(`  - ${v.rule}: observed ${v.observed}${v.expected === undefined ? '' : `, expected ${v.expected}`}`);
    }
  }
  if (result.configure_error !== undefined) {
    lines.push('', `the server would refuse this policy file at Configure: ${result.configure_error}`);
  }
  const verdict = result.passed ? 'pass' : 'fail';
  lines.push('', `result (policy_match = ${result.match}): ${verdict} (offline, unverified)`);
  return `${lines.join('\n')}\n`;
}
