/**
 * What a running plugin is: its name, release version, the Node that runs it, and the sha256 of the file SPIRE's
 * plugin_checksum covers (the single executable, which holds runtime and code; or the bundled script run by a host
 * Node). Logged first at every Configure so an operator can match a log to a pinned checksum. Dependency-free so the
 * entry points can answer --version before the runtime loads.
 */
import { createHash } from 'node:crypto';
import { createReadStream, writeSync } from 'node:fs';
import { isSea } from 'node:sea';
import { PRODUCT, VERSION } from '../version.js';

/** A SEA is ~130 MB; anything far larger is not our binary. */
const MAX_CHECKSUM_BYTES = 512 * 1024 * 1024;

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

/** Streams the file through sha256 (never holds it in memory); size-bounded. */
export function sha256OfFile(path: string, maxBytes = MAX_CHECKSUM_BYTES): Promise<string> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let seen = 0;
    const stream = createReadStream(path, { highWaterMark: 256 * 1024 });
    stream.on('data', (chunk) => {
      seen += chunk.length;
      if (seen > maxBytes) {
        stream.destroy();
        resolve(`unavailable: ${path} is larger than ${maxBytes} bytes`);
        return;
      }
      hash.update(chunk);
    });
    stream.on('error', (err: NodeJS.ErrnoException) => resolve(`unavailable: cannot read ${path}: ${err.code ?? err.message}`));
    stream.on('end', () => resolve(hash.digest('hex')));
  });
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
