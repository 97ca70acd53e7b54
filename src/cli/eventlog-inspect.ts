/**
 * `spire-edge-attest eventlog inspect`: an offline view of an event log. Pure: returns text or a JSON-ready object
 * (shape documented in docs/cli.md, "eventlog inspect"). Nothing here is verified: the PCR values are what the log
 * replays to, and the Secure Boot state is derived from the log replayed against its own PCRs.
 *
 * @module
 */
import { toHex } from '../tpm/bytes.js';
import { parseEventLog, startupLocalityOf, type LoggedEvent } from '../tpm/eventlog.js';
import { EventType, eventTypeName } from '../tpm/eventlog-types.js';
import { computePcrs, EventLogReplayFailed, isExtendedEvent, replayEventLog, type PcrBankValues } from '../tpm/replay.js';
import { deriveSecureBootFacts, parseUefiVariableData } from '../tpm/secureboot.js';

/** Longest data description printed per event. */
const MAX_DESCRIPTION = 120;

export interface InspectedEvent {
  readonly index: number;
  readonly pcr: number;
  readonly type: string;
  /** False for EV_NO_ACTION and PCR index 0xFFFFFFFF events (not extended). */
  readonly extended: boolean;
  readonly digests: Record<string, string>;
  readonly dataSize: number;
  readonly description: string;
}

export interface EventLogInspection {
  readonly format: 'crypto-agile' | 'legacy-sha1';
  readonly banks: readonly string[];
  readonly startupLocality: number | null;
  readonly eventCount: number;
  readonly events: readonly InspectedEvent[];
  /** bank → PCR index (string) → hex, for PCRs the log extends. */
  readonly pcrs: Record<string, Record<string, string>>;
  readonly secureBoot: { readonly state: 'enabled' | 'disabled' | 'unknown'; readonly reason: string };
  /** With `--pcrs`: the log replayed against the given PCR values exactly as tpm-server replays it against a quote. */
  readonly replay?: PcrReplayReport;
}

/**
 * The log replayed against given PCR values as tpm-server does after a verified quote: `replayEventLog` with every
 * firmware quirk of eventlog-quirks.ts (tried only after the strict replay failed), then the server's
 * require_event_log rule that a log must replay at least one given PCR. The values are claims, not a quote.
 */
export interface PcrReplayReport {
  /** The PCR values file. */
  readonly against: string;
  /** `match` is what tpm-server would accept (with the default require_event_log); the others it refuses. */
  readonly result: 'match' | 'mismatch' | 'verifies-nothing';
  /** Parse quirks the log needed (e.g. `spec-id-vendor-info-past-event-size`). */
  readonly parseQuirks: readonly string[];
  /** The firmware workaround that made the replay match, if one was needed. */
  readonly quirks: readonly { readonly id: string; readonly pcrIndex: number; readonly description: string }[];
  /** Every given PCR the log does not replay to (`result: mismatch`), as tpm-server names them. */
  readonly mismatches: readonly { readonly bank: string; readonly index: number; readonly quoted: string; readonly replayed: string }[];
  /** bank → given PCR indices the log replayed to. */
  readonly replayedPcrs: Record<string, readonly number[]>;
  /** Given PCRs outside 0–9 that are not at their reset value and that the log does not extend. */
  readonly unexplainedPcrs: readonly number[];
  /** Secure Boot derived from this replay (as the server would, had a quote covered these values). */
  readonly secureBoot?: { readonly state: 'enabled' | 'disabled' | 'unknown'; readonly reason: string };
}

/** Given PCR values (from a file; see pcr-values-file.ts) and the file they came from. */
export interface PcrsToReplay {
  readonly values: PcrBankValues;
  readonly source: string;
}

function printable(text: string): string {
  const clean = text.replace(/\0+$/, '').replace(/[^\x20-\x7e]/g, '.');
  return clean.length > MAX_DESCRIPTION ? `${clean.slice(0, MAX_DESCRIPTION)}…` : clean;
}

function latin1(data: Uint8Array): string {
  let s = '';
  for (const b of data) s += String.fromCharCode(b);
  return s;
}

/** A short, untrusted description of an event's data. */
function describe(event: LoggedEvent): string {
  const locality = startupLocalityOf(event);
  if (locality !== undefined) return `StartupLocality ${locality}`;
  switch (event.type) {
    case EventType.EV_NO_ACTION:
      return event.sequence === 0 && latin1(event.data.subarray(0, 15)) === 'Spec ID Event03' ? 'Spec ID Event03' : printable(latin1(event.data));
    case EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
    case EventType.EV_EFI_VARIABLE_BOOT:
    case EventType.EV_EFI_VARIABLE_BOOT2:
    case EventType.EV_EFI_VARIABLE_AUTHORITY:
      try {
        const v = parseUefiVariableData(event.data);
        return `${v.name} (${v.variableGuid}), ${v.value.length} bytes${v.value.length > 0 && v.value.length <= 4 ? ` = ${toHex(v.value)}` : ''}`;
      } catch {
        return `unparsed variable data, ${event.data.length} bytes`;
      }
    case EventType.EV_SEPARATOR:
      return `separator ${toHex(event.data)}`;
    case EventType.EV_EFI_HCRTM_EVENT:
      // The digest is what the H-CRTM measured before TPM2_Startup; the data is only the PFP's "HCRTM" marker.
      return `H-CRTM measurement (${printable(latin1(event.data))})`;
    case EventType.EV_EFI_ACTION:
    case EventType.EV_ACTION:
    case EventType.EV_IPL:
    case EventType.EV_S_CRTM_VERSION:
    case EventType.EV_POST_CODE:
      return printable(event.data.length > 1 && event.data[1] === 0 && event.data.length % 2 === 0 ? utf16(event.data) : latin1(event.data));
    default:
      return `${event.data.length} bytes`;
  }
}

function utf16(data: Uint8Array): string {
  let s = '';
  for (let i = 0; i + 1 < data.length; i += 2) s += String.fromCharCode(data[i]! | (data[i + 1]! << 8));
  return s;
}

function replayAgainst(log: ReturnType<typeof parseEventLog>, pcrs: PcrsToReplay): PcrReplayReport {
  const base = { against: pcrs.source, parseQuirks: log.parseQuirks };
  let verified;
  try {
    verified = replayEventLog(log, { values: pcrs.values });
  } catch (err) {
    if (!(err instanceof EventLogReplayFailed)) throw err;
    return { ...base, result: 'mismatch', quirks: [], mismatches: err.invalidPcrs, replayedPcrs: {}, unexplainedPcrs: [] };
  }
  const replayedPcrs = Object.fromEntries([...verified.replayedPcrs].map(([bank, values]) => [bank, [...values.keys()].sort((a, b) => a - b)]));
  const secureBoot = deriveSecureBootFacts(verified);
  return {
    ...base,
    result: Object.values(replayedPcrs).some((indices) => indices.length > 0) ? 'match' : 'verifies-nothing',
    quirks: verified.appliedQuirks.map((q) => ({ id: q.id, pcrIndex: q.pcrIndex, description: q.description })),
    mismatches: [],
    replayedPcrs,
    unexplainedPcrs: [...verified.unexplainedPcrs].sort((a, b) => a - b),
    secureBoot: { state: secureBoot.state, reason: secureBoot.reason },
  };
}

/**
 * Parses and describes a log; `json: true` gives the documented object, otherwise human-readable text. With `pcrs`
 * the log is also replayed against those values as tpm-server replays it (see {@link PcrReplayReport}).
 */
export function inspectEventLog(bytes: Uint8Array, options: { json: true; pcrs?: PcrsToReplay }): EventLogInspection;
export function inspectEventLog(bytes: Uint8Array, options?: { json?: false; pcrs?: PcrsToReplay }): string;
export function inspectEventLog(bytes: Uint8Array, options: { json?: boolean; pcrs?: PcrsToReplay } = {}): EventLogInspection | string {
  const log = parseEventLog(bytes);
  const computed = computePcrs(log);
  const secureBoot = deriveSecureBootFacts(replayEventLog(log, { values: computed }, { quirks: [] }));
  const inspection: EventLogInspection = {
    format: log.format,
    banks: log.banks,
    startupLocality: log.startupLocality ?? null,
    eventCount: log.untrustedEvents.length,
    events: log.untrustedEvents.map((event) => ({
      index: event.sequence,
      pcr: event.pcrIndex,
      type: eventTypeName(event.type),
      extended: isExtendedEvent(event),
      digests: Object.fromEntries([...event.digests].map(([bank, digest]) => [bank, toHex(digest)])),
      dataSize: event.data.length,
      description: describe(event),
    })),
    pcrs: Object.fromEntries(
      [...computed].map(([bank, values]) => [
        bank,
        Object.fromEntries([...values].sort(([a], [b]) => a - b).map(([index, value]) => [String(index), toHex(value)])),
      ]),
    ),
    secureBoot: { state: secureBoot.state, reason: secureBoot.reason },
    ...(options.pcrs === undefined ? {} : { replay: replayAgainst(log, options.pcrs) }),
  };
  if (options.json) return inspection;
  return formatInspection(inspection);
}

/** The human-readable text of an inspection (what `inspectEventLog` returns without `json`). */
export function formatInspection(inspection: EventLogInspection): string {
  const lines: string[] = [
    `format: ${inspection.format}`,
    `banks: ${inspection.banks.join(', ')}`,
    ...(inspection.startupLocality === null ? [] : [`startup locality: ${inspection.startupLocality}`]),
    `events: ${inspection.eventCount}`,
    '',
  ];
  for (const e of inspection.events) {
    const pcr = e.pcr === 0xffffffff ? '-' : String(e.pcr);
    lines.push(`#${e.index} pcr ${pcr} ${e.type}${e.extended ? '' : ' (not extended)'}: ${e.description}`);
    for (const [bank, hex] of Object.entries(e.digests)) lines.push(`    ${bank}: ${hex}`);
  }
  lines.push('', 'replayed PCRs (unverified):');
  for (const [bank, values] of Object.entries(inspection.pcrs)) {
    for (const [index, hex] of Object.entries(values)) lines.push(`  ${bank}:${index.padEnd(2)} ${hex}`);
  }
  const reason = inspection.secureBoot.reason ? ` (${inspection.secureBoot.reason})` : '';
  lines.push('', `secure boot: ${inspection.secureBoot.state}${reason}`);
  if (inspection.replay) lines.push('', ...formatReplay(inspection.replay));
  return `${lines.join('\n')}\n`;
}

function formatReplay(replay: PcrReplayReport): string[] {
  const lines = [`replay against ${replay.against} (as tpm-server replays a quote; these values are not a quote):`];
  for (const id of replay.parseQuirks) lines.push(`  parse quirk: ${id}`);
  const replayed = Object.entries(replay.replayedPcrs).map(([bank, indices]) => `${bank}:${indices.join(',')}`).join('+');
  if (replay.result === 'mismatch') {
    lines.push(`FAIL replay: the log does not replay to ${replay.mismatches.map((m) => `${m.bank}:${m.index}`).join(', ')}`);
    for (const m of replay.mismatches) lines.push(`  ${m.bank}:${m.index} given ${m.quoted}, replayed ${m.replayed}`);
    return lines;
  }
  if (replay.result === 'verifies-nothing') {
    lines.push('FAIL replay: the log replays none of the given PCRs (tpm-server refuses it while require_event_log is on)');
    return lines;
  }
  lines.push(`PASS replay: ${replayed}`);
  if (replay.quirks.length === 0) lines.push('  firmware workaround: none (strict replay)');
  for (const q of replay.quirks) lines.push(`  firmware workaround: ${q.id} (PCR ${q.pcrIndex}): ${q.description}`);
  if (replay.unexplainedPcrs.length > 0) lines.push(`  unexplained PCRs (facts on them are unknown): ${replay.unexplainedPcrs.join(', ')}`);
  const sbReason = replay.secureBoot?.reason ? ` (${replay.secureBoot.reason})` : '';
  lines.push(`  secure boot against these values: ${replay.secureBoot?.state ?? 'unknown'}${sbReason}`);
  return lines;
}
