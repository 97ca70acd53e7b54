/**
 * TCTI strings for tpm2-tools, validated once from config.
 *
 * Accepted forms (tpm2-tss 3.x tctildr syntax, `<name>:<conf>`):
 *   device:/dev/tpmrm0            kernel resource manager (default on a real host)
 *   swtpm:path=/run/swtpm.sock    swtpm over a unix socket (control socket is `<path>.ctrl`)
 *   swtpm:host=127.0.0.1,port=2321
 *   mssim:host=127.0.0.1,port=2321
 *
 * Anything else is refused with InvalidConfig, so a typo fails at Configure, not at the first quote.
 * The string goes to the tools through TPM2TOOLS_TCTI, never through a shell.
 */
import { InvalidConfig } from '../errors.js';

export const DEFAULT_TCTI = 'device:/dev/tpmrm0';

export type TctiKind = 'device' | 'swtpm' | 'mssim';

export interface Tcti {
  readonly kind: TctiKind;
  /** The normalized string passed to tpm2-tools. */
  readonly value: string;
  /** True when transient objects are flushed by a kernel resource manager (`/dev/tpmrm*`). */
  readonly resourceManaged: boolean;
}

/** AF_UNIX sun_path is 108 bytes including the NUL; tcti-swtpm appends `.ctrl` for the control socket. */
const MAX_UNIX_PATH = 107 - '.ctrl'.length;

// Absolute path: no whitespace, no comma (the conf separator), no control characters, no `..` segments.
const PATH_RE = /^\/[A-Za-z0-9._+@\/-]*$/;
// Hostname, IPv4, or bracket-less IPv6 literal.
const HOST_RE = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$|^[0-9A-Fa-f:.]{2,45}$/;

function bad(tcti: string, rule: string): InvalidConfig {
  return new InvalidConfig('ERR_CONFIG_TCTI', `invalid tcti ${JSON.stringify(tcti.slice(0, 200))}: ${rule}`, {
    fields: { rule },
  });
}

function checkPath(raw: string, path: string, maxLen: number): void {
  if (!PATH_RE.test(path)) throw bad(raw, 'path must be absolute, without spaces, commas or control characters');
  if (path.split('/').some((seg) => seg === '..')) throw bad(raw, 'path must not contain ".." segments');
  if (new TextEncoder().encode(path).length > maxLen) throw bad(raw, `path longer than ${maxLen} bytes`);
}

function parseHostPort(raw: string, conf: string): void {
  const fields = new Map<string, string>();
  for (const part of conf.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw bad(raw, 'expected key=value pairs');
    const key = part.slice(0, eq);
    if (key !== 'host' && key !== 'port') throw bad(raw, `unknown key ${JSON.stringify(key)}`);
    if (fields.has(key)) throw bad(raw, `duplicate key ${key}`);
    fields.set(key, part.slice(eq + 1));
  }
  const host = fields.get('host');
  const port = fields.get('port');
  if (host === undefined || port === undefined) throw bad(raw, 'host and port are both required');
  if (!HOST_RE.test(host)) throw bad(raw, 'host is not a hostname or IP literal');
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw bad(raw, 'port must be 1-65535');
  }
}

/** Validates a TCTI string from config. Throws InvalidConfig (code ERR_CONFIG_TCTI). */
export function parseTcti(tcti: string = DEFAULT_TCTI): Tcti {
  if (typeof tcti !== 'string' || tcti.length === 0 || tcti.length > 512) throw bad(String(tcti), 'empty or too long');
  const colon = tcti.indexOf(':');
  if (colon < 0) throw bad(tcti, 'expected <device|swtpm|mssim>:<conf>');
  const name = tcti.slice(0, colon);
  const conf = tcti.slice(colon + 1);
  switch (name) {
    case 'device':
      checkPath(tcti, conf, 4096);
      if (!conf.startsWith('/dev/')) throw bad(tcti, 'device path must be under /dev/');
      return { kind: 'device', value: tcti, resourceManaged: /^\/dev\/tpmrm[0-9]+$/.test(conf) };
    case 'swtpm':
      if (conf.startsWith('path=')) {
        checkPath(tcti, conf.slice('path='.length), MAX_UNIX_PATH);
        return { kind: 'swtpm', value: tcti, resourceManaged: false };
      }
      parseHostPort(tcti, conf);
      return { kind: 'swtpm', value: tcti, resourceManaged: false };
    case 'mssim':
      parseHostPort(tcti, conf);
      return { kind: 'mssim', value: tcti, resourceManaged: false };
    default:
      throw bad(tcti, `unsupported tcti ${JSON.stringify(name)} (use device, swtpm or mssim)`);
  }
}
