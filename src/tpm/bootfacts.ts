/**
 * Boot facts for policy, derived ONLY from `VerifiedEvents` (events on PCRs whose replay matched a quoted value).
 *
 * Event types are not covered by the digests, and event data is covered only where the PFP (or the loader) says the
 * digest is the hash of the data. So each fact below states what covers it:
 * - Secure Boot (secureboot.ts): PCR 7 variable data, checked digest == H(data).
 * - EFI boot applications: PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION. The digest IS the fact (the image's Authenticode
 *   hash, TCG PC Client PFP §10.4.4); the event data (UEFI_IMAGE_LOAD_EVENT) is not used.
 * - GRUB commands and kernel command line: PCR 8 EV_IPL strings "grub_cmd: …", "kernel_cmdline: …". GRUB digests the
 *   text after the prefix, without (newer GRUB) or with (older GRUB) the trailing NUL; a string is used only when one
 *   of the two matches in every verified bank. Others are listed in `untrustedDataEvents`.
 * - GRUB files / kernel image: PCR 9 EV_IPL. The digest is the file's hash; the file name in the data is a hint.
 * - systemd-stub / systemd-boot command line: PCR 12 (or PCR 8 for older systemd-boot) EV_IPL UTF-16LE text whose
 *   digest is H(data).
 * - Separators: EV_SEPARATOR on PCRs 0–7, digest == H(data); data 0x00000000 is normal, anything else is an error
 *   separator (TCG PC Client PFP §10.4.4 / §3.3.2.2).
 *
 * @module
 */
import { toHex } from './bytes.js';
import { EventType } from './eventlog-types.js';
import type { AppliedQuirk, VerifiedEvent, VerifiedEvents } from './replay.js';
import { deriveSecureBootFacts, digestCoversData, type SecureBootFacts } from './secureboot.js';

export const PCR_BOOT_MANAGER_CODE = 4;
export const PCR_GRUB_COMMANDS = 8;
export const PCR_GRUB_FILES = 9;
export const PCR_SYSTEMD_STUB_CMDLINE = 12;

/** GRUB's PCR 8 prefixes (GRUB tpm module: "grub_cmd: ", "kernel_cmdline: ", "module_cmdline: "; older forms). */
const GRUB_COMMAND_PREFIXES = ['grub_cmd: ', 'kernel_cmdline: ', 'module_cmdline: ', 'grub_kernel_cmdline ', 'grub_cmd '] as const;
const GRUB_KERNEL_CMDLINE_PREFIXES = ['kernel_cmdline: ', 'grub_kernel_cmdline '] as const;
const GRUB_LINUX_COMMAND_PREFIXES = ['grub_cmd: linux ', 'grub_cmd linux ', 'grub_cmd: linuxefi ', 'grub_cmd linuxefi '] as const;

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
  /** File name from the event data: a hint, not covered by the digest. */
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
  readonly efiBootApplications: readonly EfiBootApplication[];
  readonly kernelCommandLines: readonly KernelCommandLine[];
  /** PCR 9 digests of the kernel image(s) GRUB loaded, matched by the (hint) file name to the kernel command line. */
  readonly kernelImages: readonly GrubFile[];
  /** Undefined when the log has no verified GRUB measurement ("no GRUB measurements found"). */
  readonly grub: GrubFacts | undefined;
  readonly separators: readonly Separator[];
  /** Sequences of PCR 8/12 string events whose digest did not match their data (their text is not used). */
  readonly untrustedDataEvents: readonly number[];
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

/** "(hd0,gpt2)/boot/vmlinuz" and "/boot/vmlinuz" name the same file for matching purposes. */
const withoutGrubDevice = (path: string): string => path.replace(/^\([^)]*\)/, '');

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

/** Derives every boot fact from verified events. */
export function deriveBootFacts(verified: VerifiedEvents): BootFacts {
  const efiBootApplications: EfiBootApplication[] = [];
  const kernelCommandLines: KernelCommandLine[] = [];
  const linuxCommands: KernelCommandLine[] = [];
  const grubCommands: string[] = [];
  const grubFiles: GrubFile[] = [];
  const separators: Separator[] = [];
  const untrustedDataEvents: number[] = [];

  for (const event of verified.events) {
    const { pcrIndex, type, sequence } = event;
    if (type === EventType.EV_SEPARATOR && pcrIndex <= 7) {
      if (!digestCoversData(event)) untrustedDataEvents.push(sequence);
      else separators.push({ pcrIndex, sequence, error: !event.data.every((b) => b === 0) });
      continue;
    }
    if (pcrIndex === PCR_BOOT_MANAGER_CODE && type === EventType.EV_EFI_BOOT_SERVICES_APPLICATION) {
      efiBootApplications.push({ sequence, digests: hexDigests(event) });
      continue;
    }
    if (type !== EventType.EV_IPL) continue;

    if (pcrIndex === PCR_GRUB_FILES) {
      grubFiles.push({ sequence, digests: hexDigests(event), filenameHint: stripTrailingNuls(text(event.data)) });
      continue;
    }
    if (pcrIndex === PCR_GRUB_COMMANDS) {
      const prefix = GRUB_COMMAND_PREFIXES.find((p) => startsWith(event.data, p));
      if (prefix !== undefined) {
        if (!grubStringCovered(event, prefix.length)) {
          untrustedDataEvents.push(sequence);
          continue;
        }
        const logged = text(event.data);
        grubCommands.push(stripTrailingNuls(logged));
        const cmdlinePrefix = GRUB_KERNEL_CMDLINE_PREFIXES.find((p) => logged.startsWith(p));
        if (cmdlinePrefix !== undefined) {
          const rest = logged.slice(cmdlinePrefix.length);
          kernelCommandLines.push({ source: 'grub', pcrIndex, sequence, logged: rest, cmdline: stripTrailingNuls(rest) });
        }
        const linuxPrefix = GRUB_LINUX_COMMAND_PREFIXES.find((p) => logged.startsWith(p));
        if (linuxPrefix !== undefined) {
          const rest = logged.slice(linuxPrefix.length);
          linuxCommands.push({ source: 'grub-linux-command', pcrIndex, sequence, logged: rest, cmdline: stripTrailingNuls(rest) });
        }
        continue;
      }
    }
    if (pcrIndex === PCR_SYSTEMD_STUB_CMDLINE || pcrIndex === PCR_GRUB_COMMANDS) {
      // systemd-stub (PCR 12) and older systemd-boot (PCR 8) measure the UTF-16LE command line; digest = H(data).
      const decoded = utf16le(event.data);
      if (decoded === undefined || !digestCoversData(event)) {
        untrustedDataEvents.push(sequence);
        continue;
      }
      kernelCommandLines.push({
        source: pcrIndex === PCR_SYSTEMD_STUB_CMDLINE ? 'systemd-stub' : 'systemd-boot',
        pcrIndex,
        sequence,
        logged: decoded,
        cmdline: stripTrailingNuls(decoded),
      });
    }
  }

  // "grub_cmd: linux …" only stands in for the command line when GRUB did not log "kernel_cmdline: ".
  if (!kernelCommandLines.some((c) => c.source === 'grub')) kernelCommandLines.push(...linuxCommands);

  const kernelPaths = new Set(
    kernelCommandLines.filter((c) => c.source.startsWith('grub')).map((c) => withoutGrubDevice(c.cmdline.split(' ')[0] ?? '')),
  );
  const kernelImages = grubFiles.filter((f) => kernelPaths.has(withoutGrubDevice(f.filenameHint)));
  const grub = grubCommands.length > 0 || grubFiles.length > 0 ? { commands: grubCommands, files: grubFiles } : undefined;

  return {
    secureBoot: deriveSecureBootFacts(verified),
    efiBootApplications,
    kernelCommandLines,
    kernelImages,
    grub,
    separators,
    untrustedDataEvents,
    appliedQuirks: verified.appliedQuirks,
  } as unknown as BootFacts;
}
