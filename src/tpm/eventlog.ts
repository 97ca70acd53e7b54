/**
 * TCG PC Client event-log parser (TCG PC Client Platform Firmware Profile, §10 "Event Logging").
 *
 * Parsing grants no trust. `parseEventLog` turns bytes into an {@link UnverifiedEventLog}; nothing in it is proven
 * until `replayEventLog` (replay.ts) has matched it against quote-verified PCR values. Event types and event data are
 * never covered by the PCR digests at all (only the digests are), so even a replayed log's types and data are hints
 * unless a consumer checks that a digest equals the hash of the data (secureboot.ts, bootfacts.ts).
 *
 * Two formats (all integers little-endian):
 * - crypto-agile: a first TCG_PCClientPCREvent (SHA-1 format) of type EV_NO_ACTION whose data is a
 *   TCG_EfiSpecIDEvent "Spec ID Event03" listing the algorithms and digest sizes, then TCG_PCR_EVENT2 entries each
 *   carrying a TPML_DIGEST_VALUES.
 * - legacy SHA-1: TCG_PCClientPCREvent (TCG_PCR_EVENT) entries only.
 *
 * Hostile lengths are compared with the bytes that remain before anything is read, and capped by named maxima.
 *
 * @module
 */
import { MalformedInput } from '../errors.js';
import {
  EventType,
  SPEC_ID_EVENT03_SIGNATURE,
  STARTUP_LOCALITY_SIGNATURE,
} from './eventlog-types.js';
import { HashAlg } from './alg.js';
import { BytesReader } from './bytes.js';

/** Most events a log may hold (real firmware logs hold ~20–200; this bounds memory and time). */
export const MAX_EVENTS = 16_384;
/** Largest event data accepted (the biggest real events, db/dbx variables, are tens of KB). */
export const MAX_EVENT_DATA = 1 << 20;
/** Most algorithms a Spec ID event may list (TPM 2.0 Part 2 HASH_COUNT is far below this). */
export const MAX_SPEC_ID_ALGORITHMS = 16;
/** Largest digest size accepted for an algorithm listed in the Spec ID event. */
export const MAX_DIGEST_SIZE = 128;
/** TCG PC Client PFP: an event on this PCR index is informational and never extended. */
export const PCR_INDEX_NOT_EXTENDED = 0xffffffff;
/** Highest PCR index a TPM 2.0 PC Client platform implements. */
export const MAX_PCR_INDEX = 23;

const SHA1_DIGEST_SIZE = 20;
/** TCG_PCClientPCREvent header: pcrIndex u32, eventType u32, digest[20], eventSize u32. */
const LEGACY_EVENT_HEADER_SIZE = 4 + 4 + SHA1_DIGEST_SIZE + 4;

export type EventLogFormat = 'crypto-agile' | 'legacy-sha1';

/** One algorithm from the TCG_EfiSpecIDEvent (TCG PC Client PFP §10.4.5.1, TCG_EfiSpecIdEventAlgorithmSize). */
export interface SpecIdAlgorithm {
  /** TPM_ALG_ID. */
  readonly algorithmId: number;
  /** Bank name: `sha1`, `sha256`, ... or `alg_0x…` for an algorithm this project does not know. */
  readonly bank: string;
  readonly digestSize: number;
}

/** TCG_EfiSpecIDEvent (TCG PC Client PFP §10.4.5.1). */
export interface SpecIdEvent {
  readonly platformClass: number;
  readonly specVersionMinor: number;
  readonly specVersionMajor: number;
  readonly specErrata: number;
  readonly uintnSize: number;
  readonly algorithms: readonly SpecIdAlgorithm[];
  readonly vendorInfo: Uint8Array;
}

/** One logged event as read from the bytes. Every field is attacker-controlled until replayed. */
export interface LoggedEvent {
  /** Position in the log, 0 = first event (the Spec ID event of an agile log). */
  readonly sequence: number;
  /** Byte offset of the event in the log. */
  readonly offset: number;
  readonly pcrIndex: number;
  /** Event type (untrusted hint: not covered by any digest). */
  readonly type: number;
  /** Digest per bank (`sha1`, `sha256`, ... or `alg_0x…`). */
  readonly digests: ReadonlyMap<string, Uint8Array>;
  /** Event data (untrusted unless a digest is checked against it). */
  readonly data: Uint8Array;
}

/**
 * A parsed event log that nothing has verified yet. Pass it to `replayEventLog` with quote-verified PCR values to
 * get `VerifiedEvents`; use `untrustedEvents` only for debugging and offline tools.
 */
export interface UnverifiedEventLog {
  readonly trust: 'unverified';
  readonly format: EventLogFormat;
  /** The Spec ID event of a crypto-agile log. */
  readonly specId: SpecIdEvent | undefined;
  /** Banks the log carries digests for, in Spec ID order (`['sha1']` for a legacy log). */
  readonly banks: readonly string[];
  /**
   * Locality from an EV_NO_ACTION "StartupLocality" event on PCR 0 (TCG PC Client PFP §10.4.5.3), which sets
   * PCR 0's initial value to 0…03 (locality 3) or 0…04 (H-CRTM); undefined when the log has none.
   */
  readonly startupLocality: number | undefined;
  /** Parse quirks this log needed (e.g. SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE); empty for a log that follows the PFP. */
  readonly parseQuirks: readonly string[];
  /** Every event, including EV_NO_ACTION ones, in log order. UNTRUSTED: debug and offline use only. */
  readonly untrustedEvents: readonly LoggedEvent[];
}

function startsWithAscii(data: Uint8Array, text: string): boolean {
  if (data.length < text.length) return false;
  for (let i = 0; i < text.length; i++) if (data[i] !== text.charCodeAt(i)) return false;
  return true;
}

function isAllZero(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

/** Error code of every event-log parse failure. */
export const ERR_EVENTLOG_MALFORMED = 'ERR_EVENTLOG_MALFORMED';

/** A parse failure naming the event index and the byte offset (the field offset when known). */
function malformed(eventIndex: number, offset: number, what: string, cause?: unknown): MalformedInput {
  return new MalformedInput(ERR_EVENTLOG_MALFORMED, `event log: event ${eventIndex} at offset ${offset}: ${what}`, {
    fields: { event: eventIndex, offset },
    cause,
  });
}

/** Runs `read` for event `eventIndex` and rewrites any reader failure into one naming that event. */
function withinEvent<T>(reader: BytesReader, eventIndex: number, read: () => T): T {
  const eventOffset = reader.offset;
  try {
    return read();
  } catch (err) {
    if (err instanceof MalformedInput && err.code === ERR_EVENTLOG_MALFORMED) throw err;
    if (err instanceof MalformedInput) {
      const at = typeof err.fields.offset === 'number' ? err.fields.offset : eventOffset;
      throw malformed(eventIndex, at, err.message, err);
    }
    throw err;
  }
}

/** Reads the event-data size and the data (TCG_PCR_EVENT / TCG_PCR_EVENT2 `eventSize`, `event`). */
function readEventData(reader: BytesReader, eventIndex: number): Uint8Array {
  const sizeOffset = reader.offset;
  const size = reader.u32le('eventSize');
  if (size > MAX_EVENT_DATA) throw malformed(eventIndex, sizeOffset, `eventSize ${size} exceeds MAX_EVENT_DATA ${MAX_EVENT_DATA}`);
  if (size > reader.remaining) {
    throw malformed(eventIndex, sizeOffset, `eventSize ${size} runs past the end (${reader.remaining} bytes remain)`);
  }
  return reader.take(size, 'event data');
}

/**
 * Parse quirk: the Spec ID event's eventSize ends before its vendorInfo does, and the rest of vendorInfo follows the
 * event in the log (tpm2-tools reads such logs; its fixture specid-vendordata.bin declares eventSize 37, which ends
 * at vendorInfoSize, then carries the 4 vendorInfo bytes). The Spec ID event is never extended, so this changes where
 * the next event starts and nothing that any digest covers. Reported in `UnverifiedEventLog.parseQuirks`.
 */
export const SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE = 'spec-id-vendor-info-past-event-size';

/** A Spec ID event, and how many vendorInfo bytes lie in the log after the event's declared end (0 normally). */
interface ParsedSpecId {
  readonly specId: SpecIdEvent;
  readonly vendorInfoOverrun: number;
}

/**
 * Parses TCG_EfiSpecIDEvent (TCG PC Client PFP §10.4.5.1), which must fill the event data exactly. The one
 * tolerated deviation: vendorInfo may run past the data (see SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE); the caller then
 * reads the overrun from the log, so the result's vendorInfo holds only the part inside the event.
 */
function parseSpecIdEvent(data: Uint8Array, eventOffset: number): ParsedSpecId {
  const reader = new BytesReader(data, 'TCG_EfiSpecIDEvent');
  const fail = (what: string): never => {
    throw malformed(0, eventOffset, `Spec ID event: ${what}`);
  };
  return withinEvent(reader, 0, () => {
    reader.take(16, 'signature');
    const platformClass = reader.u32le('platformClass');
    const specVersionMinor = reader.u8('specVersionMinor');
    const specVersionMajor = reader.u8('specVersionMajor');
    const specErrata = reader.u8('specErrata');
    const uintnSize = reader.u8('uintnSize');
    const count = reader.u32le('numberOfAlgorithms');
    if (count === 0 || count > MAX_SPEC_ID_ALGORITHMS) fail(`numberOfAlgorithms ${count} not in 1..${MAX_SPEC_ID_ALGORITHMS}`);
    if (count * 4 > reader.remaining) fail(`numberOfAlgorithms ${count} runs past the end`);
    const algorithms: SpecIdAlgorithm[] = [];
    for (let i = 0; i < count; i++) {
      const algorithmId = reader.u16le('algorithmId');
      const digestSize = reader.u16le('digestSize');
      const known = HashAlg.tryFromId(algorithmId);
      if (known && known.size !== digestSize) {
        fail(`algorithm ${known.name} listed with digest size ${digestSize}, expected ${known.size}`);
      }
      if (digestSize === 0 || digestSize > MAX_DIGEST_SIZE) fail(`digest size ${digestSize} not in 1..${MAX_DIGEST_SIZE}`);
      if (algorithms.some((a) => a.algorithmId === algorithmId)) fail(`algorithm 0x${algorithmId.toString(16)} listed twice`);
      algorithms.push({ algorithmId, digestSize, bank: known?.name ?? unknownBankName(algorithmId) });
    }
    // TCG PC Client PFP §10.4.5.1: vendorInfoSize u8 then vendorInfo; some firmware puts data there.
    const vendorInfoSize = reader.u8('vendorInfoSize');
    const vendorInfoOverrun = Math.max(0, vendorInfoSize - reader.remaining);
    const vendorInfo = reader.take(vendorInfoSize - vendorInfoOverrun, 'vendorInfo');
    if (reader.remaining !== 0) fail(`${reader.remaining} trailing bytes after vendorInfo`);
    return { specId: { platformClass, specVersionMinor, specVersionMajor, specErrata, uintnSize, algorithms, vendorInfo }, vendorInfoOverrun };
  });
}

/** Bank name for a TPM_ALG_ID this project has no hash for (its digest size comes from the Spec ID event). */
export function unknownBankName(algorithmId: number): string {
  return `alg_0x${algorithmId.toString(16).padStart(4, '0')}`;
}

/** Reads a TCG_PCClientPCREvent (legacy SHA-1 format, TCG PC Client PFP §10.2.1). */
function readLegacyEvent(reader: BytesReader, sequence: number): LoggedEvent {
  return withinEvent(reader, sequence, () => {
    const offset = reader.offset;
    if (reader.remaining < LEGACY_EVENT_HEADER_SIZE) {
      throw malformed(sequence, offset, `truncated TCG_PCR_EVENT header (${reader.remaining} bytes remain)`);
    }
    const pcrIndex = reader.u32le('pcrIndex');
    const type = reader.u32le('eventType');
    const digest = reader.take(SHA1_DIGEST_SIZE, 'SHA-1 digest');
    const data = readEventData(reader, sequence);
    return { sequence, offset, pcrIndex, type, digests: new Map([['sha1', digest]]), data };
  });
}

/** Reads a TCG_PCR_EVENT2 (TCG PC Client PFP §10.2.2) using the digest sizes of the Spec ID event. */
function readAgileEvent(reader: BytesReader, sequence: number, specId: SpecIdEvent): LoggedEvent {
  return withinEvent(reader, sequence, () => {
    const offset = reader.offset;
    const pcrIndex = reader.u32le('pcrIndex');
    const type = reader.u32le('eventType');
    const countOffset = reader.offset;
    const count = reader.u32le('TPML_DIGEST_VALUES.count');
    if (count > specId.algorithms.length) {
      throw malformed(sequence, countOffset, `TPML_DIGEST_VALUES.count ${count} exceeds the ${specId.algorithms.length} Spec ID algorithms`);
    }
    const digests = new Map<string, Uint8Array>();
    for (let i = 0; i < count; i++) {
      const algOffset = reader.offset;
      const algorithmId = reader.u16le('TPMT_HA.hashAlg');
      const algorithm = specId.algorithms.find((a) => a.algorithmId === algorithmId);
      if (!algorithm) {
        throw malformed(sequence, algOffset, `digest algorithm 0x${algorithmId.toString(16)} is not listed in the Spec ID event`);
      }
      if (digests.has(algorithm.bank)) throw malformed(sequence, algOffset, `digest algorithm ${algorithm.bank} appears twice`);
      digests.set(algorithm.bank, reader.take(algorithm.digestSize, `${algorithm.bank} digest`));
    }
    const data = readEventData(reader, sequence);
    return { sequence, offset, pcrIndex, type, digests, data };
  });
}

/** Locality of an EV_NO_ACTION "StartupLocality" event (TCG PC Client PFP §10.4.5.3), else undefined. */
export function startupLocalityOf(event: LoggedEvent): number | undefined {
  if (event.type !== EventType.EV_NO_ACTION || event.pcrIndex !== 0) return undefined;
  if (event.data.length !== STARTUP_LOCALITY_SIGNATURE.length + 1) return undefined;
  if (!startsWithAscii(event.data, STARTUP_LOCALITY_SIGNATURE)) return undefined;
  return event.data[STARTUP_LOCALITY_SIGNATURE.length];
}

/** StartupLocality values the PFP defines: 0 or 3 (the locality of TPM2_Startup), 4 (an H-CRTM ran). */
const STARTUP_LOCALITIES: ReadonlySet<number> = new Set([0, 3, 4]);
const H_CRTM_LOCALITY = 4;

/**
 * The PFP rules for how PCR 0 starts (TCG PC Client PFP §10.4.5.3 StartupLocality; §3.3.4.1 and §10.4.1
 * EV_EFI_HCRTM_EVENT), checked while parsing so a log that breaks them is malformed rather than replayed from a
 * guessed start value:
 * - an EV_NO_ACTION on PCR 0 whose data starts with "StartupLocality\0" is the 17-byte StartupLocality event, holds
 *   0, 3 or 4, appears at most once, and precedes every extend of PCR 0 (it describes the value PCR 0 started at);
 * - an EV_EFI_HCRTM_EVENT (the digest the H-CRTM extended, logged by the firmware afterwards) is on PCR 0, appears at
 *   most once, is the first extend of PCR 0, and requires StartupLocality 4.
 */
class Pcr0StartRules {
  startupLocality: number | undefined;
  #pcr0Extended = false;
  #hcrtmSeen = false;

  check(event: LoggedEvent): void {
    const fail = (what: string): never => {
      throw malformed(event.sequence, event.offset, what);
    };
    if (event.type === EventType.EV_NO_ACTION && event.pcrIndex === 0 && startsWithAscii(event.data, STARTUP_LOCALITY_SIGNATURE)) {
      const locality = startupLocalityOf(event);
      if (locality === undefined) fail(`StartupLocality event is ${event.data.length} bytes, not ${STARTUP_LOCALITY_SIGNATURE.length + 1}`);
      if (!STARTUP_LOCALITIES.has(locality!)) fail(`StartupLocality ${locality} is not 0, 3 or 4`);
      if (this.startupLocality !== undefined) fail('a second StartupLocality event');
      if (this.#pcr0Extended) fail('StartupLocality event after an extend of PCR 0');
      this.startupLocality = locality;
      return;
    }
    if (event.type === EventType.EV_EFI_HCRTM_EVENT) {
      if (event.pcrIndex !== 0) fail(`EV_EFI_HCRTM_EVENT on PCR ${event.pcrIndex}, not PCR 0`);
      if (this.#hcrtmSeen) fail('a second EV_EFI_HCRTM_EVENT');
      if (this.#pcr0Extended) fail('EV_EFI_HCRTM_EVENT is not the first extend of PCR 0');
      if (this.startupLocality !== H_CRTM_LOCALITY) {
        fail(`EV_EFI_HCRTM_EVENT needs a preceding StartupLocality ${H_CRTM_LOCALITY} event (found ${this.startupLocality ?? 'none'})`);
      }
      this.#hcrtmSeen = true;
    }
    if (event.pcrIndex === 0 && event.type !== EventType.EV_NO_ACTION) this.#pcr0Extended = true;
  }
}

/**
 * Parses a TCG PC Client event log (crypto-agile or legacy SHA-1). Throws `MalformedInput` (code
 * `ERR_EVENTLOG_MALFORMED`) naming the event index and byte offset; never grants trust.
 */
export function parseEventLog(input: Uint8Array): UnverifiedEventLog {
  // Copy once so a later mutation of the caller's buffer cannot change what gets replayed.
  const bytes = Uint8Array.from(input);
  const reader = new BytesReader(bytes, 'TCG event log');
  if (bytes.length === 0) throw malformed(0, 0, 'empty event log');

  const first = readLegacyEvent(reader, 0);
  const isSpecIdEvent =
    first.pcrIndex === 0 &&
    first.type === EventType.EV_NO_ACTION &&
    isAllZero(first.digests.get('sha1')!) &&
    startsWithAscii(first.data, SPEC_ID_EVENT03_SIGNATURE);
  const parsedSpecId = isSpecIdEvent ? parseSpecIdEvent(first.data, first.offset) : undefined;
  let specId = parsedSpecId?.specId;
  const parseQuirks: string[] = [];
  if (specId && parsedSpecId!.vendorInfoOverrun > 0) {
    const overrun = parsedSpecId!.vendorInfoOverrun;
    if (overrun > reader.remaining) {
      throw malformed(0, first.offset, `Spec ID event: vendorInfoSize ${overrun + specId.vendorInfo.length} runs past the end of the log`);
    }
    const rest = reader.take(overrun, 'vendorInfo after the Spec ID event');
    specId = { ...specId, vendorInfo: Uint8Array.from([...specId.vendorInfo, ...rest]) };
    parseQuirks.push(SPEC_ID_VENDOR_INFO_PAST_EVENT_SIZE);
  }

  const events: LoggedEvent[] = [first];
  const pcr0 = new Pcr0StartRules();
  pcr0.check(first);
  while (reader.remaining > 0) {
    const sequence = events.length;
    if (sequence >= MAX_EVENTS) throw malformed(sequence, reader.offset, `more than MAX_EVENTS (${MAX_EVENTS}) events`);
    const event = specId ? readAgileEvent(reader, sequence, specId) : readLegacyEvent(reader, sequence);
    pcr0.check(event);
    events.push(event);
  }
  const startupLocality = pcr0.startupLocality;

  return {
    trust: 'unverified',
    format: specId ? 'crypto-agile' : 'legacy-sha1',
    specId,
    banks: specId ? specId.algorithms.map((a) => a.bank) : ['sha1'],
    startupLocality,
    parseQuirks,
    untrustedEvents: events,
  };
}
