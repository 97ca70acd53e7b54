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
import { computePcrs, isExtendedEvent, replayEventLog } from '../tpm/replay.js';
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

/** Parses and describes a log; `json: true` gives the documented object, otherwise human-readable text. */
export function inspectEventLog(bytes: Uint8Array, options: { json: true }): EventLogInspection;
export function inspectEventLog(bytes: Uint8Array, options?: { json?: false }): string;
export function inspectEventLog(bytes: Uint8Array, options: { json?: boolean } = {}): EventLogInspection | string {
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
  };
  if (options.json) return inspection;
  return formatInspection(inspection);
}

function formatInspection(inspection: EventLogInspection): string {
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
  return `${lines.join('\n')}\n`;
}
