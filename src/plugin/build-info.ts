/**
 * What a running plugin is: its name, release version, the Node that runs it, and the sha256 of the file SPIRE's
 * plugin_checksum covers (the single executable, which holds runtime and code; or the bundled script run by a host
 * Node). Logged first at every Configure so an operator can match a log to a pinned checksum. Dependency-free so the
 * entry points can answer --version before the runtime loads.
 */
import { createHash } from 'node:crypto';
import { writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { isSea } from 'node:sea';
import { PRODUCT, VERSION } from '../version.js';

/** A SEA is ~130 MB; anything far larger is not our binary. */
const MAX_CHECKSUM_BYTES = 512 * 1024 * 1024;
const CHUNK_BYTES = 1024 * 1024;

export interface BuildInfo {
  readonly plugin: string;
  readonly version: string;
  readonly node: string;
  /** "sea": Node single executable; "script": bundled JS under a host Node. */
  readonly form: 'sea' | 'script';
  readonly file: string;
  /** sha256 hex of `file`, or "unavailable: <why>" (the plugin still serves). */
  readonly build_sha256: string;
}

function runningSea(): boolean {
  try {
    return isSea();
  } catch {
    return false;
  }
}

/** The file SPIRE's plugin_cmd points at: the executable itself for a SEA, else the script Node was given. */
export function runningFile(): { form: BuildInfo['form']; file: string } {
  if (runningSea()) return { form: 'sea', file: process.execPath };
  return { form: 'script', file: process.argv[1] ?? process.execPath };
}

/**
 * sha256 of a file, read through ONE reused buffer: streaming a 130 MB executable in fresh chunks left several MiB of
 * freed-but-kept malloc memory in the plugin for its whole life. Size-bounded.
 */
export async function sha256OfFile(path: string, maxBytes = MAX_CHECKSUM_BYTES): Promise<string> {
  let file: FileHandle | undefined;
  try {
    file = await open(path, 'r');
    const hash = createHash('sha256');
    const buffer = Buffer.allocUnsafeSlow(CHUNK_BYTES);
    let seen = 0;
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, CHUNK_BYTES, null);
      if (bytesRead === 0) break;
      seen += bytesRead;
      if (seen > maxBytes) return `unavailable: ${path} is larger than ${maxBytes} bytes`;
      hash.update(buffer.subarray(0, bytesRead));
    }
    return hash.digest('hex');
  } catch (err) {
    return `unavailable: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  } finally {
    await file?.close();
  }
}

/** Computed once per process, on first use (after the handshake, so it does not delay SPIRE's start). */
let cached: Promise<BuildInfo> | undefined;
export function buildInfo(plugin: string): Promise<BuildInfo> {
  cached ??= (async () => {
    const { form, file } = runningFile();
    return { plugin, version: VERSION, node: process.version, form, file, build_sha256: await sha256OfFile(file) };
  })();
  return cached;
}

/** `<binary> --version` (or -v) prints one line and exits 0, with no SPIRE environment needed. */
export function answerVersionFlag(plugin: string, argv: readonly string[] = process.argv.slice(2)): void {
  if (argv[0] !== '--version' && argv[0] !== '-v') return;
  const { form } = runningFile();
  // stdout before and instead of the plugin protocol: SPIRE never passes arguments, so no handshake is at stake.
  writeSync(1, `${plugin} ${VERSION} (${PRODUCT}; node ${process.version}; ${form === 'sea' ? 'single executable' : 'script'})\n`);
  process.exit(0);
}
