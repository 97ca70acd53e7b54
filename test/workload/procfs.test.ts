/**
 * procfs: start time (field 22) parsing against the kernel's own output for a real process whose comm holds
 * spaces and parentheses, status ids, the executable path and hash with its size limit, and process
 * selectors through the attestor.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, chmodSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput } from '../../src/errors.js';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { Procfs, parseStatStartTime, parseStatusIds } from '../../src/workload/procfs.js';
import { statLine, tempDir, testContext, writeFakeProc, thrown } from './helpers.js';

let dir: { path: string; remove(): void };
let weird: ChildProcess;
const WEIRD = 'sl ee) (p x';

beforeAll(async () => {
  dir = tempDir('wl-procfs-');
  const exe = join(dir.path, WEIRD);
  copyFileSync('/bin/sleep', exe);
  chmodSync(exe, 0o755);
  weird = spawn(exe, ['600'], { stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    weird.once('spawn', () => resolve());
    weird.once('error', reject);
  });
});

afterAll(async () => {
  if (weird.exitCode === null && weird.signalCode === null) {
    weird.kill('SIGKILL');
    await new Promise((r) => weird.once('exit', r));
  }
  dir.remove();
});

describe('start time (field 22)', () => {
  it('the kernel prints a comm with spaces and parens; we still find field 22', () => {
    const raw = readFileSync(`/proc/${weird.pid}/stat`, 'utf8');
    expect(raw).toContain('(sl ee) (p x)');
    // independent reading: field 22 counted from the right end (52 fields in total since Linux 3.5)
    const fields = raw.trim().split(' ');
    const fromRight = fields[fields.length - (52 - 22 + 1)];
    const t = new Procfs().startTime(weird.pid!);
    expect(t.toString()).toBe(fromRight);
    expect(new Procfs().startTime(weird.pid!)).toBe(t);
    // a process started after ours has a start time >= ours
    expect(t >= new Procfs().startTime(process.pid)).toBe(true);
  });
  it('synthetic stat lines', () => {
    expect(parseStatStartTime(statLine(7, 123456789n, 'a) b (c'))).toBe(123456789n);
    expect(parseStatStartTime(statLine(7, 1, ')))'))).toBe(1n);
    for (const bad of ['', '7 no-parens S 1', '7 (x) S 1 2', '7 (x' + ' 1'.repeat(30)]) {
      const e = thrown(() => parseStatStartTime(bad));
      expect(e).toBeInstanceOf(MalformedInput);
      expect(e.code).toBe('ERR_WORKLOAD_STAT_MALFORMED');
    }
  });
  it('any comm round-trips', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 16 }), fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }), (comm, t) => {
        expect(parseStatStartTime(statLine(1, t, comm.replaceAll('\n', '')))).toBe(t);
      }),
    );
  });
  it('a missing PID is NotFound (NOT_FOUND); a bad PID is INVALID_ARGUMENT', () => {
    const e = thrown(() => new Procfs(join(dir.path, 'empty')).startTime(5));
    expect(e.grpcCode).toBe(GrpcCode.NOT_FOUND);
    expect(thrown(() => new Procfs().startTime(0)).grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
  });
});

describe('status and executable', () => {
  it('effective uid/gid', () => {
    expect(parseStatusIds('Uid:\t0\t1000\t0\t0\nGid:\t5\t6\t7\t8\n')).toEqual({ uid: 1000, gid: 6 });
    const me = new Procfs().ids(process.pid);
    expect(me.uid).toBe(process.geteuid!());
  });
  it('path and sha256 of a real process, with the size limit', () => {
    const p = new Procfs();
    const exe = p.exe(weird.pid!, 0);
    expect(exe.path).toBe(join(dir.path, WEIRD));
    expect(exe.sha256).toBe(createHash('sha256').update(readFileSync('/bin/sleep')).digest('hex'));
    expect(p.exe(weird.pid!, -1).sha256).toBeUndefined();
    const e = thrown(() => p.exe(weird.pid!, 10));
    expect(e.code).toBe('ERR_WORKLOAD_EXE_TOO_LARGE');
    expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
  });
});

describe('process selectors through the attestor', () => {
  it('uid, gid, path, sha256 are added for a containerised process when enabled', async () => {
    // A proc root whose <pid> points at the real process but with a container cgroup: link the real files.
    const root = join(dir.path, 'proc');
    writeFakeProc(root, 42, { cgroup: '0::/system.slice/docker-' + 'c'.repeat(64) + '.scope\n' });
    const pidDir = join(root, '42');
    symlinkSync(join(dir.path, WEIRD), join(pidDir, 'exe'));
    const a = new EdgeWorkloadAttestor(testContext(), { env: {} });
    await a.configure({ pod_source: 'none', proc_path: root, process_selectors: true, workload_size_limit: 64 << 20 }, { trustDomain: 'example.org' });
    try {
      const sel = await a.attest(42, new AbortController().signal);
      expect(sel).toEqual([
        'container-id:' + 'c'.repeat(64),
        'runtime:docker',
        'pod-source:none',
        'uid:1001',
        'gid:2002',
        `path:${join(dir.path, WEIRD)}`,
        `sha256:${createHash('sha256').update(readFileSync('/bin/sleep')).digest('hex')}`,
      ]);
    } finally {
      await a.close();
    }
  });
});
