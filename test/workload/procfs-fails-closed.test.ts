/**
 * Security properties of the /proc reader (src/workload/procfs.ts), on the kernel's own files where it can be:
 *  - the start time that guards against PID reuse is field 22 or nothing: a stat text it cannot be sure of is
 *    MalformedInput, never a guess;
 *  - uid/gid selectors are the EFFECTIVE ids, wherever the lines sit in the real status file;
 *  - a PID that does not exist is NOT_FOUND, a PID that is not a positive integer is INVALID_ARGUMENT, and a file
 *    that exists but cannot be read is FAILED_PRECONDITION, never "no container";
 *  - the executable hash is bounded by workload_size_limit even when the size the kernel reports is 0 (a file that
 *    grows while read), is recomputed when the file changes, and leaks no descriptor.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput, NotFound, PreconditionFailed } from '../../src/errors.js';
import { WorkloadErrorCode } from '../../src/workload/errors.js';
import { Procfs, parseStatStartTime, parseStatusIds, readOwnTcpTables } from '../../src/workload/procfs.js';
import { statLine, tempDir, thrown, writeFakeProc } from './helpers.js';

let dir: { path: string; remove(): void };
let sleeper: ChildProcess;

beforeAll(async () => {
  dir = tempDir('wl-procfs-closed-');
  sleeper = spawn('/bin/sleep', ['600'], { stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    sleeper.once('spawn', () => resolve());
    sleeper.once('error', reject);
  });
});

afterAll(async () => {
  if (sleeper.exitCode === null && sleeper.signalCode === null) {
    sleeper.kill('SIGKILL');
    await new Promise((r) => sleeper.once('exit', r));
  }
  dir.remove();
});

const malformed = (fn: () => unknown, code: string = WorkloadErrorCode.STAT_MALFORMED) => {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(MalformedInput);
  expect(e.code).toBe(code);
  expect(e.grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
  return e;
};

describe('the PID-reuse guard reads field 22 of stat or refuses', () => {
  it('a real process: the value equals field 22 counted from the right of the kernel line', () => {
    const raw = readFileSync(`/proc/${sleeper.pid}/stat`, 'utf8');
    const fields = raw.trim().split(' ');
    expect(new Procfs().startTime(sleeper.pid!).toString()).toBe(fields[fields.length - 31]);
  });
  it('a stat text with no "(comm)" pair, or a "(" only after the last ")", is refused', () => {
    const good = statLine(7, 99n, 'x');
    expect(parseStatStartTime(good)).toBe(99n);
    malformed(() => parseStatStartTime(good.replace('(', '')));
    malformed(() => parseStatStartTime(good.replace('(x)', 'x)')));
    malformed(() => parseStatStartTime(good.replace('(x)', ')x(')));
    const e = malformed(() => parseStatStartTime(good.replace('(', '').replace(')', '')));
    expect([e.message, e.fields]).toEqual(['stat: no (comm) field', { rule: 'stat-comm' }]);
    // Whatever precedes "(comm)" (the pid), fields are counted from the last ")".
    expect(parseStatStartTime(good.slice(good.indexOf('(')))).toBe(99n);
  });
  it('field 22 must be 1 to 20 decimal digits, nothing around them', () => {
    expect(parseStatStartTime(statLine(7, 18446744073709551615n))).toBe(18446744073709551615n);
    expect(parseStatStartTime(statLine(7, 0))).toBe(0n);
    for (const bad of ['123456789012345678901', '12a', 'a12', '-1', '']) {
      const e = malformed(() => parseStatStartTime(statLine(7, 1).replace(/ 1 1000 200\n$/, ` ${bad} 1000 200\n`)));
      expect([e.message, e.fields], bad).toEqual(['stat: field 22 (starttime) missing or not a number', { rule: 'stat-starttime' }]);
    }
    // A line cut after field 21 has no start time.
    malformed(() => parseStatStartTime(statLine(7, 5).replace(/ 5 1000 200\n$/, '')));
  });
});

describe('uid and gid are the effective ids', () => {
  it('of the real status file, where Uid/Gid are not the first lines', () => {
    const text = readFileSync('/proc/self/status', 'utf8');
    expect(text.startsWith('Uid:')).toBe(false);
    expect(new Procfs().ids(process.pid)).toEqual({ uid: process.geteuid!(), gid: process.getegid!() });
  });
  it('the second column, not the real id', () => {
    expect(parseStatusIds('Name:\tx\nUid:\t0\t1000\t0\t0\nGid:\t0\t2000\t0\t0\n')).toEqual({ uid: 1000, gid: 2000 });
  });
  it('a status without a Uid or Gid line, or with a Uid only inside another line, is refused', () => {
    const noUid = malformed(() => parseStatusIds('Name:\tx\nGid:\t1\t1\t1\t1\n'));
    expect([noUid.message, noUid.fields]).toEqual(['status: no Uid line', { rule: 'status-ids' }]);
    expect(malformed(() => parseStatusIds('Name:\tx\nUid:\t1\t1\t1\t1\n')).message).toBe('status: no Gid line');
    malformed(() => parseStatusIds('Name:\tUid:\t1\t1\nGid:\t1\t1\t1\t1\n'));
    malformed(() => parseStatusIds('Uid:\t1\nGid:\t1\t1\t1\t1\n'));
  });
});

describe('a missing PID, a bad PID and an unreadable file are told apart', () => {
  it('a PID that is not a positive safe integer is INVALID_ARGUMENT for every reader', () => {
    const p = new Procfs(dir.path);
    for (const pid of [0, -1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1]) {
      for (const read of [() => p.startTime(pid), () => p.ids(pid), () => p.exe(pid, 0)]) {
        const e = malformed(read, WorkloadErrorCode.PID_INVALID);
        expect(e.fields.rule).toBe('pid-positive');
        expect(e.message).toBe(`pid ${String(pid)} is not a positive integer`);
      }
    }
  });
  it('a PID that does not exist is NOT_FOUND; its cgroup and mountinfo are absent', () => {
    const p = new Procfs(join(dir.path, 'empty-proc'));
    for (const read of [() => p.startTime(77), () => p.ids(77), () => p.exe(77, 0), () => p.exe(77, -1)]) {
      const e = thrown(read);
      expect(e).toBeInstanceOf(NotFound);
      expect(e.code).toBe(WorkloadErrorCode.PID_GONE);
      expect([e.message, e.fields, e.cause?.code]).toEqual(['pid 77: process not found', { pid: 77 }, 'ENOENT']);
    }
    expect(p.cgroup(77)).toBeUndefined();
    expect(p.mountinfo(77)).toBeUndefined();
  });
  it('an exited real process is NOT_FOUND', async () => {
    const child = spawn('/bin/true', { stdio: 'ignore' });
    await new Promise((r) => child.once('exit', r));
    const e = thrown(() => new Procfs().startTime(child.pid!));
    expect(e).toBeInstanceOf(NotFound);
  });
  it('a file that exists but cannot be read is FAILED_PRECONDITION, not "no container" or "gone"', () => {
    const root = join(dir.path, 'unreadable');
    mkdirSync(join(root, '5', 'stat'), { recursive: true });
    mkdirSync(join(root, '5', 'status'), { recursive: true });
    mkdirSync(join(root, '5', 'cgroup'), { recursive: true });
    mkdirSync(join(root, '5', 'mountinfo'), { recursive: true });
    writeFileSync(join(root, '5', 'exe'), 'not a link');
    const p = new Procfs(root);
    for (const [read, what] of [
      [() => p.startTime(5), 'cannot read stat'],
      [() => p.ids(5), 'cannot read status'],
      [() => p.cgroup(5), 'cannot read cgroup'],
      [() => p.mountinfo(5), 'cannot read mountinfo'],
      [() => p.exe(5, -1), 'cannot read exe link'],
    ] as const) {
      const e = thrown(read);
      expect(e, what).toBeInstanceOf(PreconditionFailed);
      expect(e.code).toBe(WorkloadErrorCode.PROC_READ);
      expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
      expect(e.message).toBe(`pid 5: ${what}`);
      // The audit log gets the pid (and the file), and the OS error stays attached as the cause.
      expect(e.fields.pid).toBe(5);
      if (what === 'cannot read stat') expect(e.fields.file).toBe('stat');
      expect(e.cause?.code).toMatch(/^E[A-Z]+$/);
    }
  });
  it('an exe link whose target cannot be opened is FAILED_PRECONDITION', () => {
    const root = join(dir.path, 'dangling');
    writeFakeProc(root, 6, {});
    symlinkSync(join(dir.path, 'no-such-binary'), join(root, '6', 'exe'));
    const p = new Procfs(root);
    expect(p.exe(6, -1)).toEqual({ path: join(dir.path, 'no-such-binary') });
    const e = thrown(() => p.exe(6, 0));
    expect(e).toBeInstanceOf(PreconditionFailed);
    expect(e.message).toBe('pid 6: cannot open executable');
    expect([e.fields, e.cause?.code]).toEqual([{ pid: 6, file: 'exe' }, 'ENOENT']);
  });
  it('the proc root is configurable: a tree elsewhere is read, not /proc', () => {
    const root = join(dir.path, 'elsewhere');
    writeFakeProc(root, process.pid, { cgroup: '0::/elsewhere\n', startTime: 31337 });
    const p = new Procfs(root);
    expect(p.root).toBe(root);
    expect(p.startTime(process.pid)).toBe(31337n);
    expect(p.cgroup(process.pid)).toBe('0::/elsewhere\n');
    expect(new Procfs().cgroup(process.pid)).toBe(readFileSync('/proc/self/cgroup', 'utf8'));
    expect(new Procfs().mountinfo(process.pid)).toBe(readFileSync(`/proc/${process.pid}/mountinfo`, 'utf8'));
    expect(new Procfs().root).toBe('/proc');
  });
});

describe('the executable hash is bounded, fresh and leak-free', () => {
  const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

  function procWithExe(name: string, target: string): Procfs {
    const root = join(dir.path, name);
    writeFakeProc(root, 9, {});
    symlinkSync(target, join(root, '9', 'exe'));
    return new Procfs(root);
  }

  it('a file exactly at the limit is hashed; one byte over is refused', () => {
    const file = join(dir.path, 'exact.bin');
    writeFileSync(file, Buffer.alloc(4096, 7));
    const p = procWithExe('exact', file);
    expect(p.exe(9, 4096).sha256).toBe(sha256(Buffer.alloc(4096, 7)));
    const e = thrown(() => p.exe(9, 4095));
    expect(e.code).toBe(WorkloadErrorCode.EXE_TOO_LARGE);
    expect(e.message).toBe('pid 9: executable is larger than workload_size_limit');
    expect(e.fields).toMatchObject({ size: 4096, limit: 4095, rule: 'workload_size_limit' });
  });

  it('a file larger than one read buffer is hashed whole', () => {
    const big = Buffer.alloc((1 << 20) * 2 + 123);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const file = join(dir.path, 'big.bin');
    writeFileSync(file, big);
    expect(procWithExe('big', file).exe(9, 0).sha256).toBe(sha256(big));
  });

  it('a file the kernel sizes as 0 but that yields more than the limit is refused while read', () => {
    // /proc files report st_size 0 and then produce bytes: the size check before reading cannot catch them.
    const p = procWithExe('grows', `/proc/${process.pid}/status`);
    const e = thrown(() => p.exe(9, 64));
    expect(e).toBeInstanceOf(PreconditionFailed);
    expect(e.code).toBe(WorkloadErrorCode.EXE_TOO_LARGE);
    expect(e.message).toBe('pid 9: executable grew past workload_size_limit');
    expect(e.fields).toEqual({ pid: 9, limit: 64, rule: 'workload_size_limit' });
    // Unbounded, the same file is read to its end.
    expect(p.exe(9, 0).sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a replaced executable is hashed again, not served from the cache', () => {
    const file = join(dir.path, 'swap.bin');
    writeFileSync(file, 'first');
    const p = procWithExe('swap', file);
    expect(p.exe(9, 0).sha256).toBe(sha256('first'));
    writeFileSync(file, 'second!');
    expect(p.exe(9, 0).sha256).toBe(sha256('second!'));
    // Same size, new content and mtime.
    writeFileSync(file, 'third!!');
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    expect(p.exe(9, 0).sha256).toBe(sha256('third!!'));
  });

  it('a cached hash still obeys the size limit', () => {
    const file = join(dir.path, 'cached.bin');
    writeFileSync(file, Buffer.alloc(100));
    const p = procWithExe('cached', file);
    expect(p.exe(9, 0).sha256).toBe(sha256(Buffer.alloc(100)));
    expect(p.exe(9, 100)).toEqual({ path: file, sha256: sha256(Buffer.alloc(100)) });
    expect(thrown(() => p.exe(9, 99)).code).toBe(WorkloadErrorCode.EXE_TOO_LARGE);
  });

  it('hashing many executables leaks no file descriptor, on success or refusal', () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const p = new Procfs();
    p.exe(sleeper.pid!, 0);
    const before = fds();
    for (let i = 0; i < 30; i++) {
      p.exe(sleeper.pid!, 0);
      thrown(() => p.exe(sleeper.pid!, 10));
    }
    expect(fds()).toBe(before);
  });

  it('the cache survives more distinct executables than it holds and still answers correctly', () => {
    const root = join(dir.path, 'many');
    const p = new Procfs(root);
    for (let i = 1; i <= 1030; i++) {
      const file = join(dir.path, `many-${i}.bin`);
      writeFileSync(file, `exe ${i}`);
      mkdirSync(join(root, String(i)), { recursive: true });
      symlinkSync(file, join(root, String(i), 'exe'));
      expect(p.exe(i, 0).sha256).toBe(sha256(`exe ${i}`));
    }
    expect(p.exe(1, 0).sha256).toBe(sha256('exe 1'));
  });
});

describe('the socket tables the loopback owner check reads', () => {
  it('are this process\'s own /proc/self/net tcp and tcp6', () => {
    // The tables change as other tests open sockets: compare their headers.
    const t = readOwnTcpTables();
    const header = (s: string | undefined) => s?.split('\n')[0];
    expect(header(t.tcp)).toMatch(/^\s*sl\s+local_address/);
    expect(header(t.tcp)).toBe(header(readFileSync('/proc/self/net/tcp', 'utf8')));
    expect(header(t.tcp6)).toBe(header(readFileSync('/proc/self/net/tcp6', 'utf8')));
  });
  it('tcp6 may be absent (IPv6 off); a missing tcp, or an unreadable tcp6, throws (the caller fails closed)', () => {
    const net = join(dir.path, 'net');
    mkdirSync(net);
    expect(() => readOwnTcpTables(net)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    writeFileSync(join(net, 'tcp'), 'header\n');
    expect(readOwnTcpTables(net)).toEqual({ tcp: 'header\n', tcp6: undefined });
    mkdirSync(join(net, 'tcp6'));
    expect(() => readOwnTcpTables(net)).toThrow(expect.objectContaining({ code: 'EISDIR' }));
  });
});
