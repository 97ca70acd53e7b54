/**
 * `spire-edge-attest policy create`: a golden node's event log becomes a policy file (YAML). Pure: bytes in, text out.
 * The output always re-parses with `parsePolicyFile` (checked before returning). Format: docs/cli.md, "policy create".
 *
 * @module
 */
import { stringify } from 'yaml';
import { createPolicyFromEventLog } from '../policy/create.js';
import { parsePolicyFile, policiesToDocument } from '../policy/policy.js';
import { parseEventLog } from '../tpm/eventlog.js';
import { DEFAULT_PCR_SELECTION, PcrSelection } from '../tpm/pcrs.js';

export const DEFAULT_POLICY_PCRS: readonly number[] = [0, 2, 4, 7];
/** The banks the server quotes by default: a policy pinning any other bank is refused at its Configure. */
export const DEFAULT_POLICY_BANKS: readonly string[] = PcrSelection.parse(DEFAULT_PCR_SELECTION).banks.map((b) => b.hash.name);

export interface PolicyCreateOptions {
  readonly name: string;
  /** PCR indices to pin; default 0, 2, 4, 7. */
  readonly pcrs?: readonly number[];
  /** Banks to pin; default DEFAULT_POLICY_BANKS (those of the server's default pcr_selection). */
  readonly banks?: readonly string[];
}

export function createPolicyCommand(bytes: Uint8Array, options: PolicyCreateOptions): string {
  const log = parseEventLog(bytes);
  const policy = createPolicyFromEventLog(log, {
    name: options.name,
    pcrs: options.pcrs ?? DEFAULT_POLICY_PCRS,
    banks: options.banks ?? DEFAULT_POLICY_BANKS,
  });
  const text =
    '# Measured-boot policy generated from a golden node event log by `spire-edge-attest policy create`.\n' +
    '# Review it: the log itself is unverified; you vouch for the machine it came from.\n' +
    stringify(policiesToDocument([policy]), { lineWidth: 0 });
  parsePolicyFile(text); // the output must be a valid policy file (throws InvalidConfig naming the key otherwise)
  return text;
}
