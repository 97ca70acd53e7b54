/**
 * Named firmware quirks: known ways in which real firmware's event log disagrees with what it extended into the
 * PCRs. Each quirk is data (id, the PCR it affects, a transform) rather than a branch in the replay.
 *
 * replay.ts tries a quirk ONLY after a strict replay has failed, ONLY when the quirk's PCR is among the failing ones,
 * and ONLY on a copy of the events; the quirks that made the replay match are reported in `VerifiedEvents`.
 * Events a quirk adds carry its id (`quirk`) and were never logged by the firmware.
 *
 * @module
 */
import { HashAlg } from './alg.js';
import type { LoggedEvent } from './eventlog.js';
import { EXIT_BOOT_SERVICES_INVOCATION, EXIT_BOOT_SERVICES_RETURNED, EventType } from './eventlog-types.js';

/** An event as the replay sees it: a logged one, or one a quirk added (then `quirk` names it). */
export interface ReplayEvent extends LoggedEvent {
  readonly quirk?: string;
}

export interface EventLogQuirk {
  /** Stable id, reported in `VerifiedEvents.appliedQuirks`. */
  readonly id: string;
  /** The PCR whose replay the quirk repairs; the quirk is only tried when this PCR failed. */
  readonly pcrIndex: number;
  readonly description: string;
  /**
   * Returns a transformed copy of `events`, or undefined when the quirk does not apply to this log. Never mutates.
   * `banks` are the banks the log carries digests for.
   */
  readonly apply: (events: readonly ReplayEvent[], banks: readonly string[]) => ReplayEvent[] | undefined;
}

const PCR_EXIT_BOOT_SERVICES = 5;

function asciiBytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function isEfiActionWithText(event: LoggedEvent, text: string): boolean {
  if (event.type !== EventType.EV_EFI_ACTION || event.pcrIndex !== PCR_EXIT_BOOT_SERVICES) return false;
  const expected = asciiBytes(text);
  return event.data.length === expected.length && event.data.every((b, i) => b === expected[i]);
}

/** An EV_EFI_ACTION event the firmware extended without logging (TCG PC Client PFP §10.4.4: digest = H(string)). */
function unloggedEfiAction(quirk: string, text: string, banks: readonly string[]): ReplayEvent {
  const data = asciiBytes(text);
  const digests = new Map<string, Uint8Array>();
  for (const bank of banks) {
    const alg = HashAlg.ALL.find((a) => a.name === bank);
    if (alg) digests.set(bank, alg.digest(data));
  }
  return { sequence: -1, offset: -1, pcrIndex: PCR_EXIT_BOOT_SERVICES, type: EventType.EV_EFI_ACTION, digests, data, quirk };
}

/** The quirks, in the order they are tried. */
export const EVENT_LOG_QUIRKS: readonly EventLogQuirk[] = [
  {
    id: 'exit-boot-services-unlogged',
    pcrIndex: PCR_EXIT_BOOT_SERVICES,
    description:
      'Firmware extends the "Exit Boot Services Invocation" and "Exit Boot Services Returned with Success" ' +
      'EV_EFI_ACTION events into PCR5 but the log handed to the OS ends before them.',
    apply(events, banks) {
      const logged = events.some(
        (e) => isEfiActionWithText(e, EXIT_BOOT_SERVICES_INVOCATION) || isEfiActionWithText(e, EXIT_BOOT_SERVICES_RETURNED),
      );
      if (logged) return undefined;
      return [
        ...events,
        unloggedEfiAction(this.id, EXIT_BOOT_SERVICES_INVOCATION, banks),
        unloggedEfiAction(this.id, EXIT_BOOT_SERVICES_RETURNED, banks),
      ];
    },
  },
  {
    id: 'exit-boot-services-returned-unlogged',
    pcrIndex: PCR_EXIT_BOOT_SERVICES,
    description:
      'Firmware logs "Exit Boot Services Invocation" but extends "Exit Boot Services Returned with Success" into ' +
      'PCR5 without logging it.',
    apply(events, banks) {
      const invoked = events.some((e) => isEfiActionWithText(e, EXIT_BOOT_SERVICES_INVOCATION));
      const returned = events.some((e) => isEfiActionWithText(e, EXIT_BOOT_SERVICES_RETURNED));
      if (!invoked || returned) return undefined;
      return [...events, unloggedEfiAction(this.id, EXIT_BOOT_SERVICES_RETURNED, banks)];
    },
  },
];
