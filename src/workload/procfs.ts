/**
 * @module workload/procfs
 *
 * The only reader of /proc in this project. The root is configurable (`proc_path`) so an agent in a container
 * can read the host's /proc mounted elsewhere. Reads are small and synchronous on purpose: procfs files are
 * generated in memory and a sync read costs a few microseconds, less than scheduling an async one.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { MalformedInput, NotFound, PreconditionFailed } from '../errors.js';
import { WorkloadErrorCode } from './errors.js';

/** Field 22 (starttime, clock ticks since boot) of /proc/<pid>/stat. `comm` (field 2) may hold spaces and parens. */
export function parseStatStartTime(text: string): bigint {
  const close = text.lastIndexOf(')');
  if (close < 0 || text.indexOf('(') < 0 || text.indexOf('(') > close) {
    throw new MalformedInput(WorkloadErrorCode.STAT_MALFORMED, 'stat: no (comm) field', { fields: { rule: 'stat-comm' } });
  }
  // After "pid (comm)" come fields 3..52, separated by single spaces.
  const rest = text.slice(close + 1).trim().split(' ');
  const raw = rest[22 - 3];
  if (raw === undefined || !/^[0-9]{1,20}$/.test(raw)) {
    throw new MalformedInput(WorkloadErrorCode.STAT_MALFORMED, 'stat: field 22 (starttime) missing or not a number', {
      fields: { rule: 'stat-starttime' },
    });
  }
  return BigInt(raw);
}

export interface ProcessIds {
  /** Effective UID and GID (second column of Uid:/Gid: in /proc/<pid>/status). */
  readonly uid: number;
  readonly gid: number;
}

export function parseStatusIds(text: string): ProcessIds {
  const pick = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s+(\\d+)`, 'm').exec(text);
    if (!m) throw new MalformedInput(WorkloadErrorCode.STAT_MALFORMED, `status: no ${key} line`, { fields: { rule: 'status-ids' } });
    return Number(m[2]);
  };
  return { uid: pick('Uid'), gid: pick('Gid') };
}

function isNoEnt(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}

export interface ExeInfo {
  readonly path: string;
  readonly sha256?: string;
}

/**
 * The text of `/proc/self/net/tcp` and `tcp6` (this process's network namespace, whatever `proc_path` says: the
 * sockets that matter are the ones this process connects to). `tcp6` is undefined when IPv6 is off; a missing
 * `tcp` throws (the caller fails closed).
 */
export function readOwnTcpTables(netDir = '/proc/self/net'): { tcp: string; tcp6: string | undefined } {
  const tcp = readFileSync(join(netDir, 'tcp'), 'utf8');
  let tcp6: string | undefined;
  try {
    tcp6 = readFileSync(join(netDir, 'tcp6'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { tcp, tcp6 };
}

export class Procfs {
  readonly root: string;
  readonly #hashCache = new Map<string, string>();

  constructor(root = '/proc') {
    this.root = root;
  }

  #path(pid: number, file: string): string {
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new MalformedInput(WorkloadErrorCode.PID_INVALID, `pid ${String(pid)} is not a positive integer`, {
        fields: { pid, rule: 'pid-positive' },
      });
    }
    return join(this.root, String(pid), file);
  }

  #read(pid: number, file: string): string {
    try {
      return readFileSync(this.#path(pid, file), 'utf8');
    } catch (err) {
      if (isNoEnt(err)) {
        throw new NotFound(WorkloadErrorCode.PID_GONE, `pid ${pid}: process not found`, { fields: { pid }, cause: err });
      }
      if (err instanceof MalformedInput) throw err;
      throw new PreconditionFailed(WorkloadErrorCode.PROC_READ, `pid ${pid}: cannot read ${file}`, { fields: { pid, file }, cause: err });
    }
  }

  /** Process start time in clock ticks; NotFound when the PID does not exist. */
  startTime(pid: number): bigint {
    return parseStatStartTime(this.#read(pid, 'stat'));
  }

  /**
   * This process's own /proc/self/cgroup (always the real /proc: it is about the agent, not a mounted host tree), or
   * undefined when it cannot be read. Paths in it are relative to the same cgroup namespace as the PIDs' files.
   */
  static ownCgroup(): string | undefined {
    try {
      return readFileSync('/proc/self/cgroup', 'utf8');
    } catch {
      return undefined;
    }
  }

  /** `/proc/<pid>/cgroup`, or `undefined` when absent (only synthetic trees; the kernel always has it). */
  cgroup(pid: number): string | undefined {
    try {
      return readFileSync(this.#path(pid, 'cgroup'), 'utf8');
    } catch (err) {
      if (isNoEnt(err)) return undefined;
      throw new PreconditionFailed(WorkloadErrorCode.PROC_READ, `pid ${pid}: cannot read cgroup`, { fields: { pid }, cause: err });
    }
  }

  mountinfo(pid: number): string | undefined {
    try {
      return readFileSync(this.#path(pid, 'mountinfo'), 'utf8');
    } catch (err) {
      if (isNoEnt(err)) return undefined;
      throw new PreconditionFailed(WorkloadErrorCode.PROC_READ, `pid ${pid}: cannot read mountinfo`, { fields: { pid }, cause: err });
    }
  }

  ids(pid: number): ProcessIds {
    return parseStatusIds(this.#read(pid, 'status'));
  }

  /**
   * The executable's path and (when `sizeLimit >= 0`) its SHA-256. The hash is taken through the
   * `/proc/<pid>/exe` magic link, which reaches the file in the process's own mount namespace. `sizeLimit` 0
   * means no limit; a larger file gives PreconditionFailed. Hashes are cached by (dev, inode, size, mtime).
   */
  exe(pid: number, sizeLimit: number): ExeInfo {
    const link = this.#path(pid, 'exe');
    let path: string;
    try {
      path = readlinkSync(link);
    } catch (err) {
      if (isNoEnt(err)) throw new NotFound(WorkloadErrorCode.PID_GONE, `pid ${pid}: process not found`, { fields: { pid }, cause: err });
      throw new PreconditionFailed(WorkloadErrorCode.PROC_READ, `pid ${pid}: cannot read exe link`, { fields: { pid }, cause: err });
    }
    if (sizeLimit < 0) return { path };
    return { path, sha256: this.#hashLink(pid, 'exe', 'sha256', sizeLimit, 'executable') };
  }

  /** `/proc/<pid>/maps` (the process's mappings; IMA container checks read the file-backed ones). */
  maps(pid: number): string {
    return this.#read(pid, 'maps');
  }

  /**
   * Digest of a file the process maps, through the `/proc/<pid>/map_files/<start>-<end>` magic link (the mapped
   * inode itself, whatever its path now resolves to; needs CAP_SYS_ADMIN), for IMA matching.
   */
  mappedFileDigest(pid: number, range: string, alg: string, sizeLimit: number): string {
    if (!/^[0-9a-f]{1,16}-[0-9a-f]{1,16}$/.test(range)) {
      throw new MalformedInput(WorkloadErrorCode.PROC_READ, `pid ${pid}: "${range.slice(0, 40)}" is not a mapping range`, { fields: { pid, rule: 'map-range' } });
    }
    return this.#hashLink(pid, `map_files/${range}`, alg, sizeLimit, 'mapped file', 'ima_file_size_limit');
  }

  /** Digest of the executable through `/proc/<pid>/exe` in any algorithm Node hashes (IMA logs sha1 on older kernels). */
  exeDigest(pid: number, alg: string, sizeLimit: number): string {
    return this.#hashLink(pid, 'exe', alg, sizeLimit, 'executable', 'ima_file_size_limit');
  }

  /** Hashes what a magic link under /proc/<pid> points at; cached by (alg, dev, inode, size, mtime). */
  #hashLink(pid: number, file: string, alg: string, sizeLimit: number, what: string, limitKey = 'workload_size_limit'): string {
    const link = this.#path(pid, file);
    let fd: number;
    try {
      fd = openSync(link, 'r');
    } catch (err) {
      throw new PreconditionFailed(WorkloadErrorCode.PROC_READ, `pid ${pid}: cannot open ${what}`, { fields: { pid, file }, cause: err });
    }
    try {
      const st = fstatSync(fd);
      if (sizeLimit > 0 && st.size > sizeLimit) {
        throw new PreconditionFailed(WorkloadErrorCode.EXE_TOO_LARGE, `pid ${pid}: ${what} is larger than ${limitKey}`, {
          fields: { pid, size: st.size, limit: sizeLimit, rule: limitKey },
        });
      }
      const key = `${alg}:${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
      const cached = this.#hashCache.get(key);
      if (cached !== undefined) return cached;
      const h = createHash(alg);
      const buf = Buffer.allocUnsafe(1 << 20);
      let total = 0;
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        total += n;
        if (sizeLimit > 0 && total > sizeLimit) {
          throw new PreconditionFailed(WorkloadErrorCode.EXE_TOO_LARGE, `pid ${pid}: ${what} grew past ${limitKey}`, {
            fields: { pid, limit: sizeLimit, rule: limitKey },
          });
        }
        h.update(buf.subarray(0, n));
      }
      const digest = h.digest('hex');
      if (this.#hashCache.size > 1024) this.#hashCache.clear();
      this.#hashCache.set(key, digest);
      return digest;
    } finally {
      closeSync(fd);
    }
  }
}
