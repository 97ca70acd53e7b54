/**
 * Event-log replay: the step that turns an {@link UnverifiedEventLog} into {@link VerifiedEvents}.
 *
 * What it proves: the events it returns are exactly the logged events on PCRs whose per-bank replay
 * (PCR := H(PCR || digest), TPM 2.0 Part 1 §17 "PCR extend") equals a PCR value the caller passed in.
 * What it does NOT prove:
 * - anything about the PCR values themselves. They prove nothing until a verified quote covers them; callers must pass
 *   only values returned by `verifyQuote` (`QuotedPcrs`), never values the agent reported on its own;
 * - event types or event data: the TPM extends only digests. Consumers (secureboot.ts, bootfacts.ts) must check that a
 *   digest equals the hash of the data before trusting data;
 * - PCRs the log does not extend (e.g. PCR 10 for IMA, 17–22 for DRTM) or banks this project cannot hash: those quoted
 *   values are kept (`quotedPcrs`) but no event is verified through them. Exception: PCRs 0–9 are written only through
 *   the firmware log (firmware 0–7, boot loader 8–9), so a quoted PCR 0–9 that is not at its reset value must be
 *   replayed by the log, in every bank the log carries, or the replay fails. Other quoted PCRs the log leaves
 *   unexplained are listed in `unexplainedPcrs`, so facts that depend on them are unknown;
 * - digests in banks that were not quoted: a verified event only exposes the digests of banks that replayed.
 *
 * A strict replay comes first; the named quirks of eventlog-quirks.ts are tried only after it failed, on a copy, and
 * the ones used are reported.
 *
 * @module
 */
import { AttestationRefused } from '../errors.js';
import { HashAlg } from './alg.js';
import { toHex } from './bytes.js';
import { MAX_PCR_INDEX, type EventLogFormat, type UnverifiedEventLog } from './eventlog.js';
import { EVENT_LOG_QUIRKS, type EventLogQuirk, type ReplayEvent } from './eventlog-quirks.js';
import { EventType } from './eventlog-types.js';

export const ERR_EVENTLOG_REPLAY = 'ERR_EVENTLOG_REPLAY';
/**
 * PCRs that only the firmware event log writes (TCG PC Client PFP §3.3.4: 0–7 firmware; 8–9 the boot loader's,
 * which GRUB and systemd-boot extend through EFI_TCG2_PROTOCOL and so log there). A quoted value of one of these that
 * the log does not replay means events were hidden from the log.
 */
export const PCRS_ONLY_THE_FIRMWARE_LOG_WRITES: ReadonlySet<number> = new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

/** PCR values per bank (`sha256`, ...) and PCR index. */
export type PcrBankValues = ReadonlyMap<string, ReadonlyMap<number, Uint8Array>>;

/**
 * Quote-verified PCR values, structurally: either `{ values }` or anything with `bank(name)` such as `QuotedPcrs`
 * from quote.ts. Callers MUST pass only values a verified quote covers.
 */
export type QuotedPcrValues =
  | { readonly values: PcrBankValues }
  | { bank(name: string): ReadonlyMap<number, Uint8Array> };

/** One PCR whose replay did not match its quoted value. */
export interface PcrMismatch {
  readonly bank: string;
  readonly index: number;
  /** Quoted (expected) value, hex. */
  readonly quoted: string;
  /** Value the log replays to, hex. */
  readonly replayed: string;
}

/** The replay did not match: AttestationRefused (PERMISSION_DENIED) listing every mismatched PCR. */
export class EventLogReplayFailed extends AttestationRefused {
  readonly invalidPcrs: readonly PcrMismatch[];
  constructor(invalidPcrs: readonly PcrMismatch[]) {
    const list = invalidPcrs.map((m) => `${m.bank}:${m.index} (quoted ${m.quoted}, replayed ${m.replayed})`);
    super(ERR_EVENTLOG_REPLAY, `event log does not replay to the quoted PCRs: ${list.join('; ')}`, {
      fields: {
        rule: 'eventlog replay',
        pcrs: invalidPcrs.map((m) => `${m.bank}:${m.index}`).join(','),
        ...Object.fromEntries(invalidPcrs.flatMap((m) => [[`${m.bank}:${m.index}.quoted`, m.quoted], [`${m.bank}:${m.index}.replayed`, m.replayed]])),
      },
    });
    this.invalidPcrs = invalidPcrs;
  }
}

/** An event whose PCR replayed to a quoted value in at least one bank. */
export interface VerifiedEvent {
  /** Position in the log; -1 for an event a quirk added. */
  readonly sequence: number;
  readonly pcrIndex: number;
  /** Event type: NOT covered by the digest (a hint, see module doc). */
  readonly type: number;
  /** Digests of the banks whose replay of this PCR matched the quote (only those). */
  readonly digests: ReadonlyMap<string, Uint8Array>;
  /** Event data: NOT covered by the digest unless a consumer checks it. */
  readonly data: Uint8Array;
  /** Id of the quirk that added this (never logged) event. */
  readonly quirk?: string;
}

export interface AppliedQuirk {
  readonly id: string;
  readonly pcrIndex: number;
  readonly description: string;
}

const VERIFIED_EVENTS_TOKEN = Symbol('VerifiedEvents.create');

/**
 * Events whose replay matched quote-verified PCRs. Only `replayEventLog` can create one (a module-private token and a
 * `#private` field keep literals and other modules out), so policy code taking `VerifiedEvents` cannot run on
 * unverified data.
 */
export class VerifiedEvents {
  readonly #events: readonly VerifiedEvent[];
  readonly format: EventLogFormat;
  /** Every PCR value the caller passed in (copied), including ones the log does not extend. */
  readonly quotedPcrs: PcrBankValues;
  /** The quoted PCRs the log replayed to, per bank. */
  readonly replayedPcrs: PcrBankValues;
  /** Quirks needed to make the replay match (empty when the strict replay matched). */
  readonly appliedQuirks: readonly AppliedQuirk[];
  /**
   * Quoted PCRs (outside PCRS_ONLY_THE_FIRMWARE_LOG_WRITES) that are not at their reset value but that the log does not
   * extend in a bank it carries: something the log does not show changed them, so no fact may rest on them.
   */
  readonly unexplainedPcrs: ReadonlySet<number>;
  /**
   * Quoted PCRs the log fully accounts for in at least one bank it carries: replayed to the quoted value, or never
   * extended and quoted at the reset value. A fact may rest only on these.
   */
  readonly explainedPcrs: ReadonlySet<number>;

  /** @internal */
  constructor(
    token: symbol,
    init: {
      events: readonly VerifiedEvent[];
      format: EventLogFormat;
      quotedPcrs: PcrBankValues;
      replayedPcrs: PcrBankValues;
      appliedQuirks: readonly AppliedQuirk[];
      unexplainedPcrs: ReadonlySet<number>;
      explainedPcrs: ReadonlySet<number>;
    },
  ) {
    if (token !== VERIFIED_EVENTS_TOKEN) throw new TypeError('VerifiedEvents can only be created by replayEventLog');
    this.#events = Object.freeze([...init.events]);
    this.format = init.format;
    this.quotedPcrs = init.quotedPcrs;
    this.replayedPcrs = init.replayedPcrs;
    this.appliedQuirks = Object.freeze([...init.appliedQuirks]);
    this.unexplainedPcrs = new Set(init.unexplainedPcrs);
    this.explainedPcrs = new Set(init.explainedPcrs);
    Object.freeze(this);
  }

  /** Verified events in log order (quirk-added events last within their PCR). */
  get events(): readonly VerifiedEvent[] {
    return this.#events;
  }

  /** Verified events on one PCR. */
  onPcr(index: number): VerifiedEvent[] {
    return this.#events.filter((e) => e.pcrIndex === index);
  }

  static isVerifiedEvents(value: unknown): value is VerifiedEvents {
    return typeof value === 'object' && value !== null && #events in value;
  }
}

/** True for events the firmware extended: not EV_NO_ACTION, and on a real PCR (0xFFFFFFFF and >23 are skipped). */
export function isExtendedEvent(event: { type: number; pcrIndex: number }): boolean {
  return event.type !== EventType.EV_NO_ACTION && event.pcrIndex <= MAX_PCR_INDEX;
}

/**
 * Initial value of a PCR before the first extend. PCR 0 starts at 0…03 when the log's StartupLocality event says the
 * TPM was started from locality 3, and 0…04 for an H-CRTM start (TCG PC Client PFP §10.4.5.3); all else starts at 0.
 */
function initialPcrValue(alg: HashAlg, index: number, startupLocality: number | undefined): Uint8Array {
  const value = alg.zero();
  if (index === 0 && (startupLocality === 3 || startupLocality === 4)) value[value.length - 1] = startupLocality;
  return value;
}

/**
 * Value of a PCR at TPM reset (TPM 2.0 Part 1 §17.5; PC Client PTP: PCRs 17–22 reset to all ones, the rest to zero).
 * PCR 0 may also start at 0…03 or 0…04 (see initialPcrValue), which only a log can say.
 */
function isResetValue(index: number, value: Uint8Array): boolean {
  const fill = index >= 17 && index <= 22 ? 0xff : 0x00;
  return value.every((b) => b === fill);
}

/** Replays events per bank; only PCRs that at least one event extends (in that bank) get a value. */
function replayEvents(events: readonly ReplayEvent[], banks: readonly string[], startupLocality: number | undefined): PcrBankValues {
  const result = new Map<string, Map<number, Uint8Array>>();
  for (const bank of banks) {
    const alg = HashAlg.ALL.find((a) => a.name === bank);
    if (!alg) continue; // a bank this project cannot hash (sizes known from the Spec ID event only)
    const pcrs = new Map<number, Uint8Array>();
    for (const event of events) {
      if (!isExtendedEvent(event)) continue;
      const digest = event.digests.get(bank);
      if (!digest) continue;
      const current = pcrs.get(event.pcrIndex) ?? initialPcrValue(alg, event.pcrIndex, startupLocality);
      pcrs.set(event.pcrIndex, alg.digest(current, digest));
    }
    if (pcrs.size > 0) result.set(bank, pcrs);
  }
  return result;
}

/**
 * Offline replay for tools (CLI, policy creation): the values the log's digests extend to, per bank and PCR.
 * Makes no trust claim.
 */
export function computePcrs(log: UnverifiedEventLog): PcrBankValues {
  return replayEvents(log.untrustedEvents, log.banks, log.startupLocality);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function copyQuoted(quoted: QuotedPcrValues, banks: readonly string[]): PcrBankValues {
  const source: [string, ReadonlyMap<number, Uint8Array>][] =
    'values' in quoted ? [...quoted.values] : banks.map((bank) => [bank, quoted.bank(bank)]);
  const out = new Map<string, Map<number, Uint8Array>>();
  for (const [bank, values] of source) {
    if (values.size === 0) continue;
    out.set(bank, new Map([...values].map(([index, value]) => [index, Uint8Array.from(value)])));
  }
  return out;
}

interface Comparison {
  readonly mismatches: PcrMismatch[];
  /** Per bank, the PCR indices whose replay matched. */
  readonly matched: Map<string, Map<number, Uint8Array>>;
  /** Quoted PCRs outside PCRS_ONLY_THE_FIRMWARE_LOG_WRITES that the log leaves at odds with their reset value. */
  readonly unexplained: Set<number>;
  /** Quoted PCRs replayed, or quoted at reset with no event, in some bank the log carries. */
  readonly explained: Set<number>;
}

function compare(replayed: PcrBankValues, quoted: PcrBankValues, logBanks: readonly string[]): Comparison {
  const mismatches: PcrMismatch[] = [];
  const matched = new Map<string, Map<number, Uint8Array>>();
  const unexplained = new Set<number>();
  const explained = new Set<number>();
  for (const [bank, quotedValues] of quoted) {
    // A bank the log does not carry (or cannot be hashed here) explains nothing and is not compared.
    if (!logBanks.includes(bank) || !HashAlg.ALL.some((a) => a.name === bank)) continue;
    const replayedBank = replayed.get(bank);
    for (const [index, value] of [...quotedValues].sort(([a], [b]) => a - b)) {
      const replayedValue = replayedBank?.get(index);
      if (replayedValue === undefined) {
        if (isResetValue(index, value)) {
          explained.add(index); // never extended, and the log agrees
          continue;
        }
        // Extended, yet the log shows no event for it: the log hides what was measured there.
        if (PCRS_ONLY_THE_FIRMWARE_LOG_WRITES.has(index)) {
          mismatches.push({ bank, index, quoted: toHex(value), replayed: `${toHex(new Uint8Array(value.length))} (no events)` });
        } else {
          unexplained.add(index);
        }
        continue;
      }
      if (bytesEqual(replayedValue, value)) {
        if (!matched.has(bank)) matched.set(bank, new Map());
        matched.get(bank)!.set(index, value);
        explained.add(index);
      } else {
        mismatches.push({ bank, index, quoted: toHex(value), replayed: toHex(replayedValue) });
      }
    }
  }
  for (const index of unexplained) explained.delete(index);
  return { mismatches, matched, unexplained, explained };
}

function verifiedEventsOf(events: readonly ReplayEvent[], matched: Map<string, Map<number, Uint8Array>>): VerifiedEvent[] {
  const out: VerifiedEvent[] = [];
  for (const event of events) {
    if (!isExtendedEvent(event)) continue;
    const digests = new Map<string, Uint8Array>();
    for (const [bank, digest] of event.digests) {
      if (matched.get(bank)?.has(event.pcrIndex)) digests.set(bank, digest);
    }
    if (digests.size === 0) continue;
    out.push({
      sequence: event.sequence,
      pcrIndex: event.pcrIndex,
      type: event.type,
      digests,
      data: event.data,
      ...(event.quirk === undefined ? {} : { quirk: event.quirk }),
    });
  }
  return out;
}

export interface ReplayOptions {
  /** Quirks to try after a strict failure (default: all of EVENT_LOG_QUIRKS; pass [] for strict only). */
  readonly quirks?: readonly EventLogQuirk[];
}

/**
 * Replays `log` per bank and compares each PCR it extends with `quoted` (which MUST come from a verified quote).
 * Returns the events on matching PCRs, or throws {@link EventLogReplayFailed} (`AttestationRefused`,
 * code ERR_EVENTLOG_REPLAY) naming every mismatched PCR as `bank:index` with quoted and replayed values.
 */
export function replayEventLog(log: UnverifiedEventLog, quoted: QuotedPcrValues, options: ReplayOptions = {}): VerifiedEvents {
  const quotedPcrs = copyQuoted(quoted, log.banks);
  const strict = compare(replayEvents(log.untrustedEvents, log.banks, log.startupLocality), quotedPcrs, log.banks);
  const finish = (events: readonly ReplayEvent[], result: Comparison, appliedQuirks: AppliedQuirk[]): VerifiedEvents =>
    new VerifiedEvents(VERIFIED_EVENTS_TOKEN, {
      events: verifiedEventsOf(events, result.matched),
      format: log.format,
      quotedPcrs,
      replayedPcrs: result.matched,
      appliedQuirks,
      unexplainedPcrs: result.unexplained,
      explainedPcrs: result.explained,
    });
  if (strict.mismatches.length === 0) return finish(log.untrustedEvents, strict, []);

  const failingPcrs = new Set(strict.mismatches.map((m) => m.index));
  for (const quirk of options.quirks ?? EVENT_LOG_QUIRKS) {
    if (!failingPcrs.has(quirk.pcrIndex)) continue;
    const events = quirk.apply([...log.untrustedEvents], log.banks);
    if (!events) continue;
    const retried = compare(replayEvents(events, log.banks, log.startupLocality), quotedPcrs, log.banks);
    if (retried.mismatches.length === 0) {
      return finish(events, retried, [{ id: quirk.id, pcrIndex: quirk.pcrIndex, description: quirk.description }]);
    }
  }
  throw new EventLogReplayFailed(strict.mismatches);
}
