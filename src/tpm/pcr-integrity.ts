/**
 * Per-PCR preconditions every boot fact shares, from `VerifiedEvents` only.
 *
 * A fact about a PCR holds only if the log accounts for the whole PCR (replay.ts: `explainedPcrs`) and nothing in it
 * was measured after the boot was over. The end of the boot is the ExitBootServices() invocation measured into PCR 5
 * (TCG PC Client PFP §10.4.4, EV_EFI_ACTION "Exit Boot Services Invocation"): after it the firmware's
 * EFI_TCG2_PROTOCOL is gone, so no firmware or boot-loader measurement can follow in PCRs 0–9; an event logged after
 * it there was extended by the running OS (for instance by root, through /dev/tpm0).
 *
 * The invocation is recognised by its digest covering the PFP string, never by the event type (types are not
 * covered by any digest). The order across PCRs is not covered either: a log can move an event before the
 * invocation. That is why this is a second line only; each fact also requires every event of its PCRs to be of an
 * interpreted type (secureboot.ts, bootfacts.ts).
 *
 * @module
 */
import { HashAlg } from './alg.js';
import {
  EXIT_BOOT_SERVICES_INVOCATION,
  EXIT_BOOT_SERVICES_RETURNED,
} from './eventlog-types.js';
import type { VerifiedEvent, VerifiedEvents } from './replay.js';

/** PCR 5: boot-manager configuration, GPT, and the ExitBootServices() actions (TCG PC Client PFP §3.3.4.6). */
export const PCR_BOOT_MANAGER_CONFIG = 5;
/** PFP: ExitBootServices() failed; the firmware may still measure and retry. */
const EXIT_BOOT_SERVICES_FAILED = 'Exit Boot Services Returned with Failure';
/** PCRs whose measurements all happen before ExitBootServices() (firmware 0–7, boot loader 8–9). */
const BOOT_TIME_PCRS: ReadonlySet<number> = new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

/**
 * Banks a fact on data that software on the node chooses may rest on. SHA-1 is not among them: it is collision-broken
 * (SHAttered 2017; chosen-prefix collisions, "SHA-1 is a Shambles" 2020), so root could make a benign and an evil
 * command line, configuration file or image with one SHA-1 digest, boot the evil one and log the benign one. Forging
 * a replay, or data the firmware alone chooses (the Secure Boot variables), still needs a second preimage, which
 * nobody can compute for SHA-1; so the replay and the Secure Boot state do not require these banks.
 */
export const COLLISION_RESISTANT_BANKS: ReadonlySet<string> = new Set(['sha256', 'sha384', 'sha512', 'sm3_256']);

export interface PcrProblemOptions {
  /**
   * The facts on these PCRs read data that the node's software chooses: a PCR with verified events must have
   * replayed in a bank of COLLISION_RESISTANT_BANKS (a SHA-1-only replay, as from a TPM 1.2 log, is a problem).
   */
  readonly collisionResistant?: boolean;
}

/** True when, for every verified bank of `event`, its digest equals H(data). */
export function digestCoversData(event: VerifiedEvent, data: Uint8Array = event.data): boolean {
  if (event.digests.size === 0) return false;
  for (const [bank, digest] of event.digests) {
    const alg = HashAlg.ALL.find((a) => a.name === bank);
    if (!alg) return false;
    const expected = alg.digest(data);
    if (expected.length !== digest.length || !expected.every((b, i) => b === digest[i])) return false;
  }
  return true;
}

/** The event's data as latin1 text when its digest covers it, else undefined. */
export function coveredAscii(event: VerifiedEvent): string | undefined {
  if (!digestCoversData(event)) return undefined;
  let s = '';
  for (const b of event.data) s += String.fromCharCode(b);
  return s;
}

function isExitBootServicesAction(event: VerifiedEvent, ...texts: string[]): boolean {
  if (event.pcrIndex !== PCR_BOOT_MANAGER_CONFIG) return false;
  const text = coveredAscii(event);
  return text !== undefined && texts.includes(text);
}

/**
 * Why each PCR cannot support a fact (empty list: it can). A PCR that is not quoted, or quoted but not accounted for
 * by the log, gets a reason; so does a PCR 0–9 with an event logged after the last ExitBootServices() invocation.
 */
export function pcrProblems(verified: VerifiedEvents, pcrs: readonly number[], options: PcrProblemOptions = {}): Map<number, string[]> {
  const out = new Map<number, string[]>(pcrs.map((pcr) => [pcr, []]));
  for (const pcr of pcrs) {
    if (verified.unexplainedPcrs.has(pcr)) out.get(pcr)!.push(`PCR ${pcr} was extended but the log has no event for it`);
    else if (!verified.explainedPcrs.has(pcr)) out.get(pcr)!.push(`PCR ${pcr} is not quoted in a bank the log carries`);
    else if (options.collisionResistant === true && verified.onPcr(pcr).length > 0) {
      const strong = [...verified.replayedPcrs].some(([bank, values]) => COLLISION_RESISTANT_BANKS.has(bank) && values.has(pcr));
      if (!strong) {
        out.get(pcr)!.push(`PCR ${pcr} is verified only in SHA-1, which is collision-broken: quote a sha256 (or stronger) bank for facts on it`);
      }
    }
  }
  // A failed ExitBootServices() is retried, so the boot ends at the last invocation. One a quirk added (never logged,
  // sequence -1) happened after every logged event, so it puts no logged event after the end.
  const invocations = verified.events.filter((e) => e.quirk === undefined && isExitBootServicesAction(e, EXIT_BOOT_SERVICES_INVOCATION));
  const end = invocations.at(-1);
  if (end === undefined) return out;
  for (const event of verified.events) {
    if (event.sequence <= end.sequence || event.quirk !== undefined) continue;
    if (!BOOT_TIME_PCRS.has(event.pcrIndex) || !out.has(event.pcrIndex)) continue;
    if (isExitBootServicesAction(event, EXIT_BOOT_SERVICES_RETURNED, EXIT_BOOT_SERVICES_FAILED)) continue;
    out.get(event.pcrIndex)!.push(`event ${event.sequence} on PCR ${event.pcrIndex} was measured after ExitBootServices()`);
  }
  return out;
}

/** The problems of `pcrs` as one sentence, or undefined when there are none. */
export function problemsOf(problems: ReadonlyMap<number, readonly string[]>, pcrs: readonly number[]): string | undefined {
  const all = pcrs.flatMap((pcr) => problems.get(pcr) ?? []);
  return all.length > 0 ? all.join('; ') : undefined;
}
