/**
 * Boot facts for policy, derived ONLY from `VerifiedEvents` (events on PCRs whose replay matched a quoted value).
 *
 * Event types are not covered by the digests, and event data is covered only where the PFP (or the loader) says the
 * digest is the hash of the data. So a fact is derived from EVERY event of the PCRs it depends on, whatever its
 * logged type, and holds only when each of those events reads as something we interpret (else it is unknown, and a
 * rule on it fails). Each PCR must also be accounted for by the log and carry nothing measured after
 * ExitBootServices() (pcr-integrity.ts). The facts and what covers them (TCG PC Client PFP v1.05):
 * - Secure Boot (secureboot.ts): PCR 7.
 * - EFI boot applications: PCR 4 (§3.3.4.5). An event there is an EV_EFI_ACTION or EV_SEPARATOR only if its digest
 *   covers one of the PFP's PCR 4 strings or the 4-byte separator value (a preimage nobody can choose); every other
 *   PCR 4 event, whatever its type says, is a loaded image whose digest (its Authenticode hash, §10.4.4) is the fact.
 *   "BOOT ATTEMPTS OMITTED" (EV_OMIT_BOOT_DEVICE_EVENTS) makes the list unknown.
 * - Kernel command lines and GRUB commands: PCR 8 (and PCR 12 for systemd-stub). Every PCR 8 event must be an EV_IPL
 *   GRUB string ("grub_cmd: …", "kernel_cmdline: …"; GRUB digests the text after the prefix, with or without the
 *   trailing NUL) or systemd-boot's UTF-16LE command line (digest = H(data)); every PCR 12 event the latter. Anything
 *   else (another type, a digest that does not cover the text) makes the command lines unknown: it may be the real
 *   command line, relabelled.
 * - Boot-loader files: PCR 9. Every event must be an EV_IPL (GRUB: a file it read) or EV_EVENT_TAG (the Linux EFI stub:
 *   the initrd). The digest is the file's hash; the file name in the data is a hint, never used for a decision, so a
 *   `kernels` rule checks every PCR 9 file.
 * - Separators: EV_SEPARATOR on PCRs 0–7, digest == H(data); data 0x00000000 is normal, anything else is an error
 *   separator (§10.4.4 / §3.3.2.2).
 *
 * @module
 */
import { toHex } from './bytes.js';
import { EventType, eventTypeName } from './eventlog-types.js';
import { coveredAscii, digestCoversData, pcrProblems, problemsOf } from './pcr-integrity.js';
import type { AppliedQuirk, VerifiedEvent, VerifiedEvents } from './replay.js';
import { deriveSecureBootFacts, type SecureBootFacts } from './secureboot.js';

export const PCR_BOOT_MANAGER_CODE = 4;
export const PCR_GRUB_COMMANDS = 8;
export const PCR_GRUB_FILES = 9;
export const PCR_SYSTEMD_STUB_CMDLINE = 12;

/** GRUB's PCR 8 prefixes (GRUB tpm module: "grub_cmd: ", "kernel_cmdline: ", "module_cmdline: "; older forms). */
const GRUB_COMMAND_PREFIXES = ['grub_cmd: ', 'kernel_cmdline: ', 'module_cmdline: ', 'grub_kernel_cmdline ', 'grub_cmd '] as const;
const GRUB_KERNEL_CMDLINE_PREFIXES = ['kernel_cmdline: ', 'grub_kernel_cmdline '] as const;
const GRUB_LINUX_COMMAND_PREFIXES = ['grub_cmd: linux ', 'grub_cmd linux ', 'grub_cmd: linuxefi ', 'grub_cmd linuxefi '] as const;
/** PFP §10.4.4: the EV_EFI_ACTION strings of PCR 4 (boot attempts). */
const PCR4_ACTIONS: ReadonlySet<string> = new Set([
  'Calling EFI Application from Boot Option',
  'Returning from EFI Application from Boot Option',
]);
/** PFP §10.4.1, EV_OMIT_BOOT_DEVICE_EVENTS: the platform stopped measuring boot attempts into PCR 4. */
const BOOT_ATTEMPTS_OMITTED = 'BOOT ATTEMPTS OMITTED';

/** A fact that holds, or the reason it is unknown (a rule on an unknown fact fails). */
export type Fact<T> = { readonly known: true; readonly value: T } | { readonly known: false; readonly reason: string };

const known = <T>(value: T): Fact<T> => ({ known: true, value });
const unknown = <T>(reason: string): Fact<T> => ({ known: false, reason });

/** Digests per verified bank, hex. */
export type HexDigests = ReadonlyMap<string, string>;

export interface EfiBootApplication {
  readonly sequence: number;
  /** Authenticode digests per verified bank. */
  readonly digests: HexDigests;
}

export type KernelCommandLineSource = 'grub' | 'grub-linux-command' | 'systemd-stub' | 'systemd-boot';

export interface KernelCommandLine {
  readonly source: KernelCommandLineSource;
  readonly pcrIndex: number;
  readonly sequence: number;
  /** Exactly the logged text after the prefix (GRUB keeps the trailing NUL). */
  readonly logged: string;
  /** `logged` without trailing NULs: what policy patterns match against. */
  readonly cmdline: string;
}

export interface GrubFile {
  readonly sequence: number;
  readonly digests: HexDigests;
  /** File name from the event data: a hint, not covered by the digest (display only). */
  readonly filenameHint: string;
}

export interface GrubFacts {
  /** Verified PCR 8 strings, as logged without the trailing NUL (prefix included). */
  readonly commands: readonly string[];
  readonly files: readonly GrubFile[];
}

export interface Separator {
  readonly pcrIndex: number;
  readonly sequence: number;
  /** Data other than 00000000 (e.g. FFFFFFFF): the firmware signalled an error. */
  readonly error: boolean;
}

declare const bootFactsBrand: unique symbol;

/** Facts from verified events. The brand keeps object literals from passing for derived facts. */
export interface BootFacts {
  readonly [bootFactsBrand]: true;
  readonly secureBoot: SecureBootFacts;
  /** Every image measured into PCR 4, whatever its logged type. */
  readonly efiBootApplications: Fact<readonly EfiBootApplication[]>;
  /** Every kernel command line of PCRs 8 and 12 (those quoted). */
  readonly kernelCommandLines: Fact<readonly KernelCommandLine[]>;
  /** Every file measured into PCR 9 (kernel, initrd, GRUB's configuration and modules): what `kernels` checks. */
  readonly bootLoaderFiles: Fact<readonly GrubFile[]>;
  /** Undefined when the log has no verified GRUB measurement ("no GRUB measurements found"). */
  readonly grub: GrubFacts | undefined;
  readonly separators: readonly Separator[];
  readonly appliedQuirks: readonly AppliedQuirk[];
}

function hexDigests(event: VerifiedEvent): HexDigests {
  return new Map([...event.digests].map(([bank, digest]) => [bank, toHex(digest)]));
}

function latin1(data: Uint8Array): string {
  let s = '';
  for (const b of data) s += String.fromCharCode(b);
  return s;
}

/** UTF-8 when valid (GRUB configuration is UTF-8), else latin1 so no byte is lost. */
function text(data: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch {
    return latin1(data);
  }
}

function startsWith(data: Uint8Array, prefix: string): boolean {
  if (data.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (data[i] !== prefix.charCodeAt(i)) return false;
  return true;
}

const stripTrailingNuls = (s: string): string => s.replace(/\0+$/, '');

/** GRUB PCR 8 string: covered when digest == H(after prefix, minus trailing NUL) or H(after prefix). */
function grubStringCovered(event: VerifiedEvent, prefixLength: number): boolean {
  const body = event.data.subarray(prefixLength);
  const withoutNul = body.length > 0 && body[body.length - 1] === 0 ? body.subarray(0, body.length - 1) : undefined;
  return (withoutNul !== undefined && digestCoversData(event, withoutNul)) || digestCoversData(event, body);
}

function utf16le(data: Uint8Array): string | undefined {
  if (data.length % 2 !== 0) return undefined;
  try {
    return new TextDecoder('utf-16le', { fatal: true }).decode(data);
  } catch {
    return undefined;
  }
}

function bootApplicationsOf(verified: VerifiedEvents, problems: ReadonlyMap<number, readonly string[]>): Fact<readonly EfiBootApplication[]> {
  const blocked = problemsOf(problems, [PCR_BOOT_MANAGER_CODE]);
  if (blocked !== undefined) return unknown(blocked);
  const apps: EfiBootApplication[] = [];
  for (const event of verified.onPcr(PCR_BOOT_MANAGER_CODE)) {
    const text = coveredAscii(event);
    if (text === BOOT_ATTEMPTS_OMITTED) return unknown(`event ${event.sequence}: the platform omitted boot attempts from PCR 4`);
    if (text !== undefined && PCR4_ACTIONS.has(text)) continue;
    if (text !== undefined && event.data.length === 4 && event.data.every((b) => b === 0)) continue; // separator
    // Anything else was loaded and run, whatever the log calls it.
    apps.push({ sequence: event.sequence, digests: hexDigests(event) });
  }
  return known(apps);
}

interface CommandLineScan {
  readonly lines: KernelCommandLine[];
  readonly linuxCommands: KernelCommandLine[];
  readonly grubCommands: string[];
  /** Why the command lines cannot be known, or undefined. */
  readonly problem: string | undefined;
}

function scanGrubCommands(verified: VerifiedEvents): CommandLineScan {
  const lines: KernelCommandLine[] = [];
  const linuxCommands: KernelCommandLine[] = [];
  const grubCommands: string[] = [];
  const problems: string[] = [];
  for (const event of verified.onPcr(PCR_GRUB_COMMANDS)) {
    const { pcrIndex, sequence } = event;
    const at = `event ${sequence} (${eventTypeName(event.type)}) on PCR ${pcrIndex}`;
    if (event.type !== EventType.EV_IPL) {
      problems.push(`${at} is not a boot-loader measurement we interpret`);
      continue;
    }
    const prefix = GRUB_COMMAND_PREFIXES.find((p) => startsWith(event.data, p));
    if (prefix !== undefined && grubStringCovered(event, prefix.length)) {
      const logged = text(event.data);
      grubCommands.push(stripTrailingNuls(logged));
      const cmdlinePrefix = GRUB_KERNEL_CMDLINE_PREFIXES.find((p) => logged.startsWith(p));
      if (cmdlinePrefix !== undefined) {
        const rest = logged.slice(cmdlinePrefix.length);
        lines.push({ source: 'grub', pcrIndex, sequence, logged: rest, cmdline: stripTrailingNuls(rest) });
      }
      const linuxPrefix = GRUB_LINUX_COMMAND_PREFIXES.find((p) => logged.startsWith(p));
      if (linuxPrefix !== undefined) {
        const rest = logged.slice(linuxPrefix.length);
        linuxCommands.push({ source: 'grub-linux-command', pcrIndex, sequence, logged: rest, cmdline: stripTrailingNuls(rest) });
      }
      continue;
    }
    // Older systemd-boot measures the UTF-16LE command line into PCR 8; digest = H(data).
    const decoded = prefix === undefined ? utf16le(event.data) : undefined;
    if (decoded !== undefined && digestCoversData(event)) {
      lines.push({ source: 'systemd-boot', pcrIndex, sequence, logged: decoded, cmdline: stripTrailingNuls(decoded) });
      continue;
    }
    problems.push(`${at}: its digest does not cover its text`);
  }
  return { lines, linuxCommands, grubCommands, problem: problems.length > 0 ? problems.join('; ') : undefined };
}

function scanSystemdStub(verified: VerifiedEvents): { lines: KernelCommandLine[]; problem: string | undefined } {
  const lines: KernelCommandLine[] = [];
  const problems: string[] = [];
  for (const event of verified.onPcr(PCR_SYSTEMD_STUB_CMDLINE)) {
    const decoded = event.type === EventType.EV_IPL ? utf16le(event.data) : undefined;
    if (decoded !== undefined && digestCoversData(event)) {
      const { pcrIndex, sequence } = event;
      lines.push({ source: 'systemd-stub', pcrIndex, sequence, logged: decoded, cmdline: stripTrailingNuls(decoded) });
    } else {
      problems.push(`event ${event.sequence} (${eventTypeName(event.type)}) on PCR 12 is not a command line whose digest covers it`);
    }
  }
  return { lines, problem: problems.length > 0 ? problems.join('; ') : undefined };
}

function bootLoaderFilesOf(verified: VerifiedEvents, problems: ReadonlyMap<number, readonly string[]>): { fact: Fact<readonly GrubFile[]>; grubFiles: GrubFile[] } {
  const files: GrubFile[] = [];
  const grubFiles: GrubFile[] = [];
  const wrongTypes: string[] = [];
  for (const event of verified.onPcr(PCR_GRUB_FILES)) {
    const file = { sequence: event.sequence, digests: hexDigests(event), filenameHint: stripTrailingNuls(text(event.data)) };
    if (event.type === EventType.EV_IPL) grubFiles.push(file);
    else if (event.type !== EventType.EV_EVENT_TAG) {
      wrongTypes.push(`event ${event.sequence} (${eventTypeName(event.type)}) on PCR 9 is not a file measurement we interpret`);
    }
    files.push(file);
  }
  const blocked = problemsOf(problems, [PCR_GRUB_FILES]) ?? (wrongTypes.length > 0 ? wrongTypes.join('; ') : undefined);
  return { fact: blocked === undefined ? known(files) : unknown(blocked), grubFiles };
}

/** Derives every boot fact from verified events. */
export function deriveBootFacts(verified: VerifiedEvents): BootFacts {
  // Images, command lines and files are chosen by software on the node: SHA-1 alone cannot vouch for them.
  const problems = pcrProblems(verified, [PCR_BOOT_MANAGER_CODE, PCR_GRUB_COMMANDS, PCR_GRUB_FILES, PCR_SYSTEMD_STUB_CMDLINE], {
    collisionResistant: true,
  });
  const separators: Separator[] = [];
  for (const event of verified.events) {
    if (event.type !== EventType.EV_SEPARATOR || event.pcrIndex > 7 || !digestCoversData(event)) continue;
    separators.push({ pcrIndex: event.pcrIndex, sequence: event.sequence, error: !event.data.every((b) => b === 0) });
  }

  const grub = scanGrubCommands(verified);
  const stub = scanSystemdStub(verified);
  // "grub_cmd: linux …" only stands in for the command line when GRUB did not log "kernel_cmdline: ".
  const grubLines = grub.lines.some((c) => c.source === 'grub') ? grub.lines : [...grub.lines, ...grub.linuxCommands];
  const quoted = (pcr: number) => [...verified.quotedPcrs.values()].some((bank) => bank.has(pcr));
  const sources = [PCR_GRUB_COMMANDS, PCR_SYSTEMD_STUB_CMDLINE].filter(quoted);
  const cmdlineProblem =
    sources.length === 0
      ? 'neither PCR 8 nor PCR 12 is quoted'
      : (problemsOf(problems, sources) ??
        [sources.includes(PCR_GRUB_COMMANDS) ? grub.problem : undefined, sources.includes(PCR_SYSTEMD_STUB_CMDLINE) ? stub.problem : undefined]
          .filter((p) => p !== undefined)
          .join('; '));
  const kernelCommandLines: Fact<readonly KernelCommandLine[]> = cmdlineProblem
    ? unknown(cmdlineProblem)
    : known([...grubLines, ...stub.lines].sort((a, b) => a.sequence - b.sequence));

  const files = bootLoaderFilesOf(verified, problems);
  const grubFacts = grub.grubCommands.length > 0 || files.grubFiles.length > 0 ? { commands: grub.grubCommands, files: files.grubFiles } : undefined;

  return {
    secureBoot: deriveSecureBootFacts(verified),
    efiBootApplications: bootApplicationsOf(verified, problems),
    kernelCommandLines,
    bootLoaderFiles: files.fact,
    grub: grubFacts,
    separators,
    appliedQuirks: verified.appliedQuirks,
  } as unknown as BootFacts;
}
