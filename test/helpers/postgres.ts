/**
 * A real PostgreSQL server for tests: Debian's `postgresql` binaries, a fresh cluster in a temp dir owned by the
 * `postgres` user (initdb refuses root), listening on a free loopback port only, trust auth on loopback.
 * SPIRE's sql DataStore connects to it with `database_type = "postgres"`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './spire.js';

const execFileP = promisify(execFile);

/** The newest installed PostgreSQL's bin dir, or undefined. */
export function postgresBinDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(base, versions[0], 'bin') : undefined;
}

export interface Postgres {
  readonly port: number;
  /** A libpq connection string for `db` on loopback. */
  connectionString(db: string): string;
  createDatabase(db: string): Promise<void>;
  stop(): Promise<void>;
}

function asPostgres(bin: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP('runuser', ['-u', 'postgres', '--', bin, ...args], { timeout: 60_000, encoding: 'utf8' });
}

export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does it)');
  const dir = mkdtempSync(join(tmpdir(), 'pg-'));
  const { uid, gid } = await execFileP('id', ['-u', 'postgres'], { encoding: 'utf8' }).then(async (u) => ({
    uid: Number(u.stdout.trim()),
    gid: Number((await execFileP('id', ['-g', 'postgres'], { encoding: 'utf8' })).stdout.trim()),
  }));
  chownSync(dir, uid, gid);
  const data = join(dir, 'data');
  await asPostgres(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  const child: ChildProcess = spawn(
    'runuser',
    ['-u', 'postgres', '--', join(bin, 'postgres'), '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_connections=200'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await execFileP(join(bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port)]).then(() => true, () => false);
    if (ready) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`postgres did not start on 127.0.0.1:${port}: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  let stopped = false;
  return {
    port,
    connectionString: (db) => `dbname=${db} user=postgres host=127.0.0.1 port=${port} sslmode=disable`,
    createDatabase: async (db) => {
      await asPostgres(join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', db]);
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // runuser forwards SIGINT to postgres: a "fast" shutdown.
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
