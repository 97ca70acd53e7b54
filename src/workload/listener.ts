/**
 * @module workload/listener
 *
 * Who owns a local listening TCP port, from `/proc/net/tcp` and `/proc/net/tcp6` (proc(5)). Pure parsing; the
 * reading is in pod-source.ts. Used for the unauthenticated loopback pod sources (edged's read-only port,
 * MetaServer or the kubelet read-only port over plain HTTP): nothing in the HTTP exchange says who answered, so
 * before each request the plugin checks that every socket listening on that port belongs to the expected user.
 * Any local user can bind a free port above 1024 when the real server is down or not started yet.
 */
import { endianness } from 'node:os';

/** One LISTEN socket: the port and the owner's uid. */
export interface TcpListener {
  readonly port: number;
  readonly uid: number;
  readonly inode: string;
}

/** TCP_LISTEN in include/net/tcp_states.h. */
const TCP_LISTEN = '0A';

/** /proc prints each 32-bit address word in host byte order: on little-endian hosts 127.0.0.1 is `0100007F`. */
const LITTLE_ENDIAN = endianness() === 'LE';

/** True for the IPv4 any address or an address in 127.0.0.0/8, as /proc prints it. */
function v4WildcardOrLoopback(hex: string): boolean {
  if (hex === '00000000') return true;
  return LITTLE_ENDIAN ? hex.endsWith('7F') : hex.startsWith('7F');
}

/** True for `::`, `::1` or a v4-mapped wildcard/loopback address (32 hex digits, per 32-bit word in host order). */
function v6WildcardOrLoopback(hex: string): boolean {
  if (/^0{32}$/.test(hex)) return true;
  if (hex === '00000000000000000000000001000000' || hex === '00000000000000000000000000000001') return true;
  const mapped = /^0{16}(?:FFFF0000|0000FFFF)([0-9A-F]{8})$/.exec(hex);
  return mapped !== null && v4WildcardOrLoopback(mapped[1]!);
}

/**
 * The LISTEN sockets reachable through a loopback address, from the text of `/proc/net/tcp` (`v6` false) or
 * `/proc/net/tcp6` (`v6` true). Lines that do not have the documented shape are skipped.
 */
export function parseLoopbackListeners(text: string, v6: boolean): TcpListener[] {
  const out: TcpListener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [addr, portHex] = f[1]!.split(':');
    if (addr === undefined || portHex === undefined || f[3] !== TCP_LISTEN) continue;
    const reachable = v6 ? v6WildcardOrLoopback(addr.toUpperCase()) : v4WildcardOrLoopback(addr.toUpperCase());
    if (!reachable) continue;
    const port = Number.parseInt(portHex, 16);
    const uid = Number(f[7]);
    if (!Number.isInteger(port) || !Number.isInteger(uid)) continue;
    out.push({ port, uid, inode: f[9]! });
  }
  return out;
}

/** True for a host name that only reaches this machine. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
