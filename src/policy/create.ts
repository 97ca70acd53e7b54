/**
 * Golden-node policy creation (offline, for the CLI): the log of a machine the operator trusts becomes a policy.
 * The log is replayed against its own computed PCRs, which proves nothing about the machine; the operator vouches
 * for it. The result uses the same rules as policy.ts and round-trips through `parsePolicyFile`.
 *
 * @module
 */
import { InvalidConfig } from '../errors.js';
import { toHex } from '../tpm/bytes.js';
import { deriveBootFacts, type HexDigests } from '../tpm/bootfacts.js';
import { COLLISION_RESISTANT_BANKS } from '../tpm/pcr-integrity.js';
import type { UnverifiedEventLog } from '../tpm/eventlog.js';
import { computePcrs, replayEventLog } from '../tpm/replay.js';
import type { MeasuredBootPolicy } from './policy.js';

export const ERR_POLICY_CREATE = 'ERR_POLICY_CREATE';

export interface CreatePolicyOptions {
  /** PCR indices to pin (each must be extended by the log). */
  readonly pcrs: readonly number[];
  readonly name: string;
  /**
   * Banks to pin the PCRs in (e.g. `["sha256"]`). Default: every bank the log replays. A server refuses a policy
   * that pins a bank its `pcr_selection` does not quote, so callers should pass the banks the server quotes.
   */
  readonly banks?: readonly string[];
}

/** Escapes regular-expression syntax characters (identity escapes valid in `u` mode). */
export function escapeRegExp(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
}

/** Preferred digest for allow-lists: SHA-256 when present, else the first collision-resistant bank (never SHA-1, which no allowlist entry matches). */
function preferredDigest(digests: HexDigests): string | undefined {
  return digests.get('sha256') ?? [...digests].find(([bank]) => COLLISION_RESISTANT_BANKS.has(bank))?.[1];
}

/** Builds a policy from a golden node's event log. */
export function createPolicyFromEventLog(log: UnverifiedEventLog, options: CreatePolicyOptions): MeasuredBootPolicy {
  const computed = computePcrs(log);
  const verified = replayEventLog(log, { values: computed }, { quirks: [] });
  const facts = deriveBootFacts(verified);

  const logBanks = [...computed.keys()];
  const banks = options.banks ? [...new Set(options.banks)] : logBanks;
  for (const bank of banks) {
    if (!computed.has(bank)) {
      throw new InvalidConfig(
        ERR_POLICY_CREATE,
        `policy create: the event log has no ${bank} bank (it has ${logBanks.join(', ') || 'none'}); choose banks the log replays`,
        { fields: { bank } },
      );
    }
  }
  const pcrs = new Map<string, Map<number, string>>();
  for (const index of [...new Set(options.pcrs)].sort((a, b) => a - b)) {
    if (!Number.isInteger(index) || index < 0 || index > 23) {
      throw new InvalidConfig(ERR_POLICY_CREATE, `policy create: PCR index ${index} is not 0..23`, { fields: { pcr: index } });
    }
    let found = false;
    for (const bank of banks) {
      const value = computed.get(bank)!.get(index);
      if (value === undefined) continue;
      found = true;
      if (!pcrs.has(bank)) pcrs.set(bank, new Map());
      pcrs.get(bank)!.set(index, toHex(value));
    }
    if (!found) {
      throw new InvalidConfig(ERR_POLICY_CREATE, `policy create: PCR ${index} is not extended by the event log in ${banks.join(', ')}`, {
        fields: { pcr: index },
      });
    }
  }

  // A fact the golden log leaves unknown gives no rule (a rule on it could never pass).
  const bootApplications = new Set<string>();
  for (const app of facts.efiBootApplications.known ? facts.efiBootApplications.value : []) {
    const digest = preferredDigest(app.digests);
    if (digest) bootApplications.add(digest);
  }
  const kernels = new Set<string>();
  for (const file of facts.bootLoaderFiles.known ? facts.bootLoaderFiles.value : []) {
    const digest = preferredDigest(file.digests);
    if (digest) kernels.add(digest);
  }
  const cmdlines = [...new Set((facts.kernelCommandLines.known ? facts.kernelCommandLines.value : []).map((c) => c.cmdline))];

  return {
    name: options.name,
    pcrs,
    secureBoot: facts.secureBoot.enabled,
    bootApplications: bootApplications.size > 0 ? bootApplications : undefined,
    kernels: kernels.size > 0 ? kernels : undefined,
    kernelCmdline: cmdlines.length > 0 ? cmdlines.map((c) => new RegExp(`^${escapeRegExp(c)}$`, 'u')) : undefined,
    bootLoader: facts.grub ? 'grub' : undefined,
  };
}
