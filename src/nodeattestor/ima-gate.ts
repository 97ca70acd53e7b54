/**
 * Node-level IMA runtime integrity for the tpm server attestor. The agent sends the IMA measurement list
 * (`ima_log_path`); the server verifies it against PCR 10 in the same quote (the list may run past the quote: only
 * the quoted prefix counts), checks the verified entries against the node's Keylime-compatible runtime policy, and
 * emits selectors. A violation refuses the node (PERMISSION_DENIED) naming the entry, path, digest and rule.
 *
 * Re-attestation is incremental: the challenge carries the entry offset the server has verified for this node
 * (ImaStateStore, ima-state.ts), the agent sends the entries from there, and the server replays them from the stored
 * PCR 10 to the quoted one (offerImaOffset, checkNodeIma); when it cannot, it asks for the whole list in a second
 * challenge.
 *
 * Selectors (values under the plugin's `tpm` type, so entries use `tpm:ima:…`):
 *  - `ima:entries:<n>`: n measurement-list entries verified against the quoted PCR 10 (earlier increments included);
 *  - `ima:policy:<name>`: every verified entry is allowed by the runtime policy `<name>`.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { AttestationRefused, InvalidConfig, MalformedInput } from '../errors.js';
import type { Logger } from '../plugin/types.js';
import { evaluateRuntimePolicy, parseRuntimePolicy, publicKeyFromPem, runtimePolicyViolation, type RuntimePolicy } from '../policy/runtime-policy.js';
import { IMA_PCR, ImaKeyring, parseImaLog, verifyImaAgainstPcr, type ImaBankValues, type ImaEntry, type ImaHashName } from '../tpm/ima/index.js';
import { ImaStateStore, type NodeImaState } from './ima-state.js';
import { MAX_IMA_LIST_BYTES, decodeImaResendResponse, encodeImaResend } from './wire.js';
import { concatBytes } from '../tpm/bytes.js';
import { locateImaEntry } from '../tpm/ima/slice.js';
import type { PcrSelection } from '../tpm/pcrs.js';
import type { QuotedPcrs } from '../tpm/quote.js';

/** Server configuration keys for IMA (merged into the tpm server schema). */
export const imaConfigShape = {
  /** Keylime runtime policy JSON (plain, or DSSE-signed when ima_policy_verification_key_path is set). */
  ima_policy_path: z.string().min(1).optional(),
  /** Name used in the `ima:policy:<name>` selector. */
  ima_policy_name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).default('runtime'),
  /** Expected sha256 of the policy file. */
  ima_policy_sha256: z.string().regex(/^[0-9a-fA-F]{64}$/).optional(),
  /** PEM public key the DSSE envelope must verify with. */
  ima_policy_verification_key_path: z.string().min(1).optional(),
  /** PEM public keys or X.509 certificates IMA file signatures (ima-sig) are checked against. */
  ima_signing_key_paths: z.array(z.string().min(1)).max(64).optional(),
  /** Nodes whose IMA state (verified offset, PCR 10) is kept for incremental re-attestation; least recent evicted. */
  ima_state_max_nodes: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Directory the IMA state is persisted in across restarts (created 0700); memory only when unset. */
  ima_state_dir: z.string().min(1).optional(),
} as const;

export interface ImaConfig {
  readonly ima_policy_path?: string | undefined;
  readonly ima_policy_name: string;
  readonly ima_policy_sha256?: string | undefined;
  readonly ima_policy_verification_key_path?: string | undefined;
  readonly ima_signing_key_paths?: readonly string[] | undefined;
  readonly ima_state_max_nodes?: number | undefined;
  readonly ima_state_dir?: string | undefined;
}

export interface ImaGate {
  readonly policy: RuntimePolicy | undefined;
  readonly keyring: ImaKeyring | undefined;
  /** Quoted banks PCR 10 is verified in. */
  readonly banks: readonly ImaHashName[];
  /** sha256 (hex) of everything a verdict depends on (policy bytes and name, signing keys): state from another basis is not reused. */
  readonly basis: string;
  /** Per-node state for incremental re-attestation. */
  readonly state: ImaStateStore;
}

/** Loads the policy and keys; undefined when PCR 10 is not quoted and no policy is set (IMA is then ignored). */
export async function loadImaGate(
  config: ImaConfig,
  selection: PcrSelection,
  readFile: (p: string) => Promise<Uint8Array>,
  log: Logger,
): Promise<ImaGate | undefined> {
  const banks = selection.banks.filter((b) => b.indices.includes(IMA_PCR)).map((b) => b.hash.name as ImaHashName);
  const state = () => new ImaStateStore({ maxNodes: config.ima_state_max_nodes ?? 10_000, dir: config.ima_state_dir, log });
  const basis = createHash('sha256').update(`v1|${config.ima_policy_name}|`);
  if (!config.ima_policy_path) {
    if (config.ima_signing_key_paths || config.ima_policy_verification_key_path) {
      throw new InvalidConfig('ERR_CONFIG_INVALID', 'tpm server: IMA keys are set but ima_policy_path is not');
    }
    return banks.length ? { policy: undefined, keyring: undefined, banks, basis: basis.update('no policy').digest('hex'), state: state() } : undefined;
  }
  if (banks.length === 0) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: ima_policy_path needs PCR ${IMA_PCR} in pcr_selection (e.g. "sha256:0,1,2,3,4,5,6,7,8,9,10")`);
  }
  const read = async (path: string, key: string): Promise<Uint8Array> => {
    try {
      return await readFile(path);
    } catch (err) {
      throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "${key}": cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const verificationKeys = config.ima_policy_verification_key_path
    ? [publicKeyFromPem(await read(config.ima_policy_verification_key_path, 'ima_policy_verification_key_path'), 'ima_policy_verification_key_path')]
    : undefined;
  const policy = parseRuntimePolicy(await read(config.ima_policy_path, 'ima_policy_path'), {
    name: config.ima_policy_name,
    ...(config.ima_policy_sha256 ? { sha256: config.ima_policy_sha256 } : {}),
    ...(verificationKeys ? { verificationKeys } : {}),
  });
  basis.update(`policy ${policy.sha256}|`);
  let keyring: ImaKeyring | undefined;
  if (config.ima_signing_key_paths) {
    keyring = new ImaKeyring();
    for (const path of config.ima_signing_key_paths) {
      const bytes = await read(path, 'ima_signing_key_paths');
      if (!keyring.addEncoded(bytes, path)) {
        throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "ima_signing_key_paths": ${path} is not a public key or certificate`);
      }
      basis.update(`key ${createHash('sha256').update(bytes).digest('hex')}|`);
    }
  }
  return { policy, keyring, banks, basis: basis.digest('hex'), state: state() };
}

/** What the server offered the agent before its quote: the state the increment must continue (undefined: whole list). */
export interface ImaOffer {
  readonly base: NodeImaState | undefined;
}

/** The entry offset to put in the challenge: the node's verified offset when its state was judged by today's policy. */
export async function offerImaOffset(gate: ImaGate, agentId: string): Promise<ImaOffer> {
  const base = await gate.state.get(agentId);
  if (!base) return { base: undefined };
  const sameBanks = base.pcr.size === gate.banks.length && gate.banks.every((b) => base.pcr.has(b));
  if (base.basis !== gate.basis || !sameBanks || base.offset === 0) return { base: undefined }; // re-judge every entry
  return { base };
}

export interface NodeImaEvidence {
  /** The list (or its tail from `offset`) the agent sent. */
  readonly log: Uint8Array | undefined;
  /** Index of the first entry in `log` (response ima_offset; 0 = the whole list). */
  readonly offset: number;
  /** The agent's count of complete entries in its whole list; absent from agents that cannot send increments. */
  readonly total: number | undefined;
}

export interface NodeImaContext {
  readonly node: string;
  readonly agentId: string;
  readonly now: Date;
  readonly audit: Record<string, string | number | boolean | undefined>;
  /** Asks the agent (a second challenge on the same stream) for its whole list; resolves with the response bytes. */
  readonly resend: (request: Uint8Array) => Promise<Uint8Array>;
}

const prefixed = (node: string, err: AttestationRefused): AttestationRefused =>
  new AttestationRefused(err.code, `node ${node}: ${err.message}`, { fields: err.fields, cause: err });

/** An increment that cannot be judged from the stored state; the whole list can. */
class StaleIncrement extends Error {}

interface VerifiedList {
  /** Entries verified from the start of the node's list (earlier increments included). */
  readonly total: number;
  readonly learntKeys: readonly Uint8Array[];
}

/**
 * Verifies the node's IMA list, or the increment since its stored state, against PCR 10 in this quote and the runtime
 * policy; returns the selectors and advances the node's state. An increment that does not continue the stored state
 * (the TPM was reset or restarted since, or the stored PCR 10 does not lead to the quoted one) is never accepted: the
 * state is dropped and the agent asked, in a second challenge, for its whole list, which is then verified from the
 * start. A violation keeps the state where it was: the violating entry is judged again (and refused again) at every
 * attestation.
 */
export async function checkNodeIma(gate: ImaGate, offer: ImaOffer, sent: NodeImaEvidence, quoted: QuotedPcrs, ctx: NodeImaContext): Promise<string[]> {
  const { node, agentId, audit } = ctx;
  let evidence = sent;
  if (!evidence.log) {
    if (!gate.policy) return [];
    throw new AttestationRefused('ERR_IMA_LOG_MISSING', `node ${node}: no IMA log was sent and runtime policy "${gate.policy.name}" is set`, {
      fields: { rule: 'ima_policy_path' },
    });
  }
  const offered = offer.base?.offset ?? 0;
  if (evidence.offset !== 0 && evidence.offset !== offered) {
    throw new MalformedInput('ERR_WIRE_FIELD', `challenge response: field "ima_offset": ${evidence.offset} is neither 0 (the whole list) nor the offered ${offered}`);
  }
  const base = evidence.offset === 0 ? undefined : offer.base!;
  audit['ima_offset'] = evidence.offset;
  audit['ima_total'] = evidence.total;
  const pcr10: ImaBankValues = new Map(gate.banks.map((b) => [b, quoted.get(b, IMA_PCR)!] as const).filter(([, v]) => v !== undefined));

  let result: VerifiedList;
  let total = evidence.total;
  evidence = await gatherChunks(evidence, ctx);
  try {
    if (base && (base.resetCount !== quoted.clockInfo.resetCount || base.restartCount !== quoted.clockInfo.restartCount)) {
      throw new StaleIncrement(
        `the TPM was reset or restarted (resetCount ${base.resetCount}→${quoted.clockInfo.resetCount}, restartCount ${base.restartCount}→${quoted.clockInfo.restartCount}) since IMA entries 0..${base.offset - 1} were verified`,
      );
    }
    result = verifyList(gate, base, evidence, pcr10, node, audit);
  } catch (err) {
    if (!(err instanceof StaleIncrement)) throw err;
    await gate.state.drop(agentId, err.message);
    audit['ima_resend'] = err.message;
    const full = decodeImaResendResponse(await ctx.resend(encodeImaResend()));
    if ((full.ima_offset ?? 0) !== 0) throw new MalformedInput('ERR_WIRE_FIELD', `IMA resend response: field "ima_offset": ${full.ima_offset}, but the whole list (from 0) was asked for`);
    total = full.ima_total;
    audit['ima_total'] = total;
    const gathered = await gatherChunks({ log: full.ima_log, offset: 0, total }, ctx);
    try {
      result = verifyList(gate, undefined, gathered, pcr10, node, audit);
    } catch (again) {
      if (again instanceof AttestationRefused) {
        throw new AttestationRefused(again.code, `${again.message} (the whole list, resent because ${err.message})`, { fields: again.fields, cause: again });
      }
      throw again;
    }
  }
  if (total !== undefined) {
    // Only agents that report ima_total can send increments: for others the state would only cost memory.
    await gate.state.put({
      agentId,
      offset: result.total,
      pcr: new Map(pcr10),
      resetCount: quoted.clockInfo.resetCount,
      restartCount: quoted.clockInfo.restartCount,
      basis: gate.basis,
      learntKeys: result.learntKeys,
      fullVerifiedAt: base && !audit['ima_resend'] ? base.fullVerifiedAt : ctx.now,
      updatedAt: ctx.now,
    });
  }
  const selectors = [`ima:entries:${result.total}`];
  if (gate.policy) selectors.push(`ima:policy:${gate.policy.name}`);
  return selectors;
}

/** Most chunks one attestation asks for (with MAX_IMA_LIST_BYTES, this also bounds the time an agent can hold a stream). */
export const MAX_IMA_CHUNKS = 64;

/**
 * A list longer than one message (ima_total past the entries sent) is fetched chunk by chunk on the same stream, each
 * within nonce_ttl, up to MAX_IMA_LIST_BYTES and MAX_IMA_CHUNKS; the chunks are then verified as one list. Only the
 * framing is read here (to know where the next chunk starts): verifyList parses and judges every byte.
 */
async function gatherChunks(first: NodeImaEvidence, ctx: NodeImaContext): Promise<NodeImaEvidence> {
  if (!first.log || first.total === undefined) return first;
  const count = (b: Uint8Array): number | undefined => locateImaEntry(b, 0)?.total;
  let have = count(first.log);
  if (have === undefined) return first; // framing the walker does not know: verifyList reports it
  have += first.offset;
  if (have >= first.total) return first;
  const chunks = [first.log];
  let bytes = first.log.length;
  for (let round = 1; have < first.total; round++) {
    if (round > MAX_IMA_CHUNKS) {
      throw new MalformedInput('ERR_IMA_LOG_TOO_LARGE', `node ${ctx.node}: IMA list of ${first.total} entries needs more than ${MAX_IMA_CHUNKS} chunks (${have} entries received)`);
    }
    const r = decodeImaResendResponse(await ctx.resend(encodeImaResend(have)));
    if ((r.ima_offset ?? 0) !== have) {
      throw new MalformedInput('ERR_WIRE_FIELD', `IMA chunk ${round}: field "ima_offset": ${r.ima_offset ?? 0}, but entries from ${have} were asked for`);
    }
    const n = count(r.ima_log);
    if (!n) throw new MalformedInput('ERR_WIRE_FIELD', `IMA chunk ${round} (from entry ${have}): no complete entry, though ima_total said ${first.total}`);
    bytes += r.ima_log.length;
    if (bytes > MAX_IMA_LIST_BYTES) {
      throw new MalformedInput('ERR_IMA_LOG_TOO_LARGE', `node ${ctx.node}: IMA list larger than ${MAX_IMA_LIST_BYTES} bytes (${have} entries received)`);
    }
    chunks.push(r.ima_log);
    have += n;
  }
  ctx.audit['ima_chunks'] = chunks.length;
  return { log: concatBytes(...chunks), offset: first.offset, total: have };
}

/** Replays `evidence` (from `base`, or from zeros) to the quoted PCR 10 and judges the new entries by the policy. */
function verifyList(gate: ImaGate, base: NodeImaState | undefined, evidence: NodeImaEvidence, pcr10: ImaBankValues, node: string, audit: NodeImaContext['audit']): VerifiedList {
  const parsed = parseImaLog(evidence.log!);
  audit['ima_entries_sent'] = parsed.entries.length;
  if (evidence.total !== undefined && evidence.total !== evidence.offset + parsed.entries.length) {
    throw new MalformedInput(
      'ERR_WIRE_FIELD',
      `challenge response: field "ima_total": ${evidence.total} entries, but the list sent from entry ${evidence.offset} holds ${parsed.entries.length} complete entries`,
    );
  }
  // The kernel's entry numbers, so a refusal names the entry as the node's own list numbers it.
  const entries = evidence.offset === 0 ? parsed.entries : parsed.entries.map((e) => ({ ...e, index: e.index + evidence.offset }));
  let verified;
  try {
    ({ verified } = verifyImaAgainstPcr(entries, pcr10, base ? { initial: base.pcr } : {}));
  } catch (err) {
    if (!(err instanceof AttestationRefused)) throw err;
    if (base) throw new StaleIncrement(`IMA entries from ${base.offset}, replayed from the PCR 10 stored at ${base.updatedAt.toISOString()}, do not lead to the quoted PCR 10 (${err.message})`);
    throw prefixed(node, err);
  }
  const learnt: Uint8Array[] = [...(base?.learntKeys ?? [])];
  if (gate.policy || gate.keyring) {
    let keyring = gate.keyring;
    if (keyring && learnt.length) {
      keyring = keyring.clone();
      for (const k of learnt) keyring.addEncoded(k, 'IMA state');
    }
    const verdict = evaluateRuntimePolicy(verified, { ...(gate.policy ? { policy: gate.policy } : {}), ...(keyring ? { keyring } : {}), maxViolations: 1 });
    const [first] = verdict.violations;
    if (first) {
      const err = runtimePolicyViolation(gate.policy?.name ?? 'none', first);
      throw new AttestationRefused(err.code, `node ${node}: ${err.message}`, { fields: err.fields });
    }
    if (verdict.keysAdded.length) learnt.push(...learntKeyBuffers(verified, verdict.keysAdded));
  }
  audit['ima_entries_verified'] = verified.length;
  return { total: (base?.offset ?? 0) + verified.length, learntKeys: learnt };
}

/** The encoded keys of the ima-buf keyring entries whose key ids the policy check added to the keyring. */
function learntKeyBuffers(entries: readonly ImaEntry[], keyIds: readonly string[]): Uint8Array[] {
  const wanted = new Set(keyIds);
  const out: Uint8Array[] = [];
  for (const e of entries) {
    if (e.template !== 'ima-buf' || !e.buffer) continue;
    const key = new ImaKeyring().addEncoded(e.buffer, 'ima-buf');
    if (key && wanted.has(key.keyId.toString(16).padStart(8, '0'))) out.push(new Uint8Array(e.buffer));
  }
  return out;
}
