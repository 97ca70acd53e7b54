/**
 * Real SPIRE for the end-to-end tests, the demo and the benchmarks: finds the spire-server / spire-agent binaries
 * built by `npm run spire:install` (or given by SPIRE_BIN_DIR, or on PATH), writes their configs into a temp dir
 * and runs them as child processes with JSON logs captured line by line.
 *
 * Everything a test does to SPIRE goes through SPIRE's own CLI on the admin socket (`entry create`, `agent list`,
 * `bundle show`) or its Workload API, so the tests see exactly what an operator sees.
 */
import { execFile, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from './binaries.js';

export interface SpireInstall {
  /** As the binary reports it, e.g. "1.15.3". */
  readonly version: string;
  readonly server: string;
  readonly agent: string;
  readonly source: string;
}

function reportedVersion(binary: string): string | undefined {
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  const m = /(\d+\.\d+\.\d+\S*)/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  return r.status === 0 && m ? m[1] : undefined;
}

function installAt(dir: string, source: string): SpireInstall | undefined {
  const server = join(dir, 'spire-server');
  const agent = join(dir, 'spire-agent');
  if (!existsSync(server) || !existsSync(agent)) return undefined;
  const version = reportedVersion(server);
  return version === undefined ? undefined : { version, server, agent, source };
}

let cached: SpireInstall[] | undefined;

/** Forgets the installs found so far (after `npm run spire:install` added one). */
export function resetSpireInstalls(): void {
  cached = undefined;
}

/**
 * Every SPIRE install this machine has, newest first, deduplicated by version: SPIRE_BIN_DIR, then the binaries
 * `npm run spire:install` built (.cache/spire/installed.json), then PATH.
 */
export function spireInstalls(): SpireInstall[] {
  if (cached) return cached;
  const found: SpireInstall[] = [];
  const add = (i: SpireInstall | undefined) => {
    if (i && !found.some((f) => f.version === i.version)) found.push(i);
  };
  if (process.env['SPIRE_BIN_DIR']) add(installAt(process.env['SPIRE_BIN_DIR'], 'SPIRE_BIN_DIR'));
  const manifest = join(repoRoot, '.cache/spire/installed.json');
  if (existsSync(manifest)) {
    const entries = (JSON.parse(readFileSync(manifest, 'utf8')) as { spire: { dir: string; source: string }[] }).spire;
    for (const e of entries) add(installAt(e.dir, e.source === 'built' ? 'npm run spire:install' : e.source));
  }
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) if (dir) add(installAt(dir, 'PATH'));
  const rank = (v: string) => v.split(/[.-]/).slice(0, 3).map(Number);
  found.sort((a, b) => {
    const [x, y] = [rank(a.version), rank(b.version)];
    return (y[0]! - x[0]!) || (y[1]! - x[1]!) || (y[2]! - x[2]!);
  });
  cached = found;
  return found;
}

/**
 * The installs the e2e suites run against. Under CI=true a machine without SPIRE is a failure, not a skip;
 * elsewhere the suites report themselves as not run (see test/summary-reporter.ts).
 */
export function spireUnderTest(): SpireInstall[] {
  const installs = spireInstalls();
  if (installs.length === 0 && process.env['CI'] === 'true') {
    throw new Error('no SPIRE binaries (CI=true): run `npm run spire:install` or set SPIRE_BIN_DIR');
  }
  const only = process.env['SPIRE_VERSIONS'];
  return only ? installs.filter((i) => only.split(',').includes(i.version)) : installs;
}

/**
 * The agent ID our TPM attestor (and spire-tpm-plugin) gives a node, computed independently of our code: the sha256
 * of the EK's SubjectPublicKeyInfo, from its certificate.
 */
export function tpmAgentPath(ekCertDer: Uint8Array): string {
  return `/spire/agent/tpm/${ekPubHash(ekCertDer)}`;
}

export function ekPubHash(ekCertDer: Uint8Array): string {
  return createHash('sha256').update(new X509Certificate(ekCertDer).publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

export const NO_SPIRE_NOTE = 'not run: no SPIRE binaries (npm run spire:install, or SPIRE_BIN_DIR)';

// ---------------------------------------------------------------------------------------------------------------
// HCL

export type HclValue = string | number | boolean | readonly HclValue[] | { readonly [k: string]: HclValue | undefined };

/** HCL1 text for a nested object: plain values as `k = v`, objects as blocks. */
export function toHcl(obj: { readonly [k: string]: HclValue | undefined }, indent = ''): string {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    if (typeof v === 'object' && !Array.isArray(v)) {
      lines.push(`${indent}${k} {`, toHcl(v as { [k: string]: HclValue }, `${indent}  `), `${indent}}`);
    } else {
      lines.push(`${indent}${k} = ${JSON.stringify(v)}`);
    }
  }
  return lines.filter((l) => l !== '').join('\n');
}

/** A plugin's flat `plugin_data` settings as the HCL a Configure call carries (`key = <JSON value>` per line). */
export function settingsHcl(settings: Readonly<Record<string, unknown>>): string {
  return toHcl(settings as { readonly [k: string]: HclValue | undefined });
}

/** An external plugin as SPIRE declares it: `plugin_cmd`, the real `plugin_checksum` and `plugin_data`. */
export interface ExternalPlugin {
  readonly type: string;
  readonly name: string;
  readonly cmd: string;
  /** Defaults to the sha256 of `cmd`. */
  readonly checksum?: string;
  readonly data: { readonly [k: string]: HclValue | undefined };
}

export interface BuiltinPlugin {
  readonly type: string;
  readonly name: string;
  readonly data: { readonly [k: string]: HclValue | undefined };
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function pluginsHcl(plugins: readonly (ExternalPlugin | BuiltinPlugin)[]): string {
  const out: string[] = ['plugins {'];
  for (const p of plugins) {
    out.push(`  ${p.type} "${p.name}" {`);
    if ('cmd' in p) {
      out.push(`    plugin_cmd = ${JSON.stringify(p.cmd)}`);
      out.push(`    plugin_checksum = ${JSON.stringify(p.checksum ?? sha256File(p.cmd))}`);
    }
    out.push('    plugin_data {', toHcl(p.data, '      '), '    }', '  }');
  }
  out.push('}');
  return out.filter((l) => l !== '').join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// Processes and logs

export interface SpireLogLine {
  readonly level: string;
  readonly msg: string;
  readonly time: string;
  readonly [field: string]: unknown;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** A SPIRE process with its JSON log lines; `raw` keeps lines that were not JSON (there should be none). */
export class SpireProcess {
  readonly logs: SpireLogLine[] = [];
  readonly raw: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #waiters: { pred: (l: SpireLogLine) => boolean; resolve: (l: SpireLogLine) => void }[] = [];

  constructor(readonly child: ChildProcess, readonly name: string) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => this.#onLine(line));
    }
  }

  #onLine(line: string): void {
    if (line.trim() === '') return;
    let parsed: SpireLogLine;
    try {
      parsed = JSON.parse(line) as SpireLogLine;
      if (typeof parsed !== 'object' || parsed === null || typeof parsed.msg !== 'string') throw new Error('not a log line');
    } catch {
      this.raw.push(line);
      return;
    }
    this.logs.push(parsed);
    if (process.env['SPIRE_E2E_ECHO']) process.stderr.write(`[${this.name}] ${line}\n`);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.pred(parsed)) return true;
      w.resolve(parsed);
      return false;
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first log line matching `pred`: already seen, or (with `onlyNew`) only from now on. */
  waitForLog(pred: (l: SpireLogLine) => boolean, timeoutMs: number, what = 'log line', onlyNew = false): Promise<SpireLogLine> {
    const seen = onlyNew ? undefined : this.logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms; last lines:\n${this.tail()}`));
      }, timeoutMs);
      const done = (l: SpireLogLine) => {
        clearTimeout(timer);
        resolve(l);
      };
      this.#waiters.push({ pred, resolve: done });
    });
  }

  /** Counts matching lines from now on (lines already seen do not count). */
  countFrom(pred: (l: SpireLogLine) => boolean): () => SpireLogLine[] {
    const start = this.logs.length;
    return () => this.logs.slice(start).filter(pred);
  }

  tail(n = 25): string {
    return [...this.logs.slice(-n).map((l) => JSON.stringify(l)), ...this.raw.slice(-5)].join('\n');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}

function run(binary: string, args: readonly string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(binary, [...args], { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, proc?: SpireProcess): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (proc && !proc.running) throw new Error(`${proc.name} exited while waiting for ${what}:\n${proc.tail()}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${proc ? `:\n${proc.tail()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Server

/** How a SPIRE process is started: plain `spawn`, or e.g. PodCgroups.spawn to run it inside a pod's cgroup. */
export type Launch = (command: string, args: readonly string[], options: SpawnOptions) => ChildProcess;
const plainLaunch: Launch = (command, args, options) => spawn(command, [...args], options);

export interface ServerOptions {
  readonly spire: SpireInstall;
  /** Directory for configs, data and sockets (created). */
  readonly dir: string;
  readonly trustDomain?: string;
  readonly plugins: readonly (ExternalPlugin | BuiltinPlugin)[];
  /** Go durations. */
  readonly agentTtl?: string;
  readonly defaultX509SvidTtl?: string;
  readonly caTtl?: string;
  readonly logLevel?: string;
  /** Extra `server { }` settings. */
  readonly server?: { readonly [k: string]: HclValue | undefined };
  /** A top-level `telemetry { }` block, e.g. `{ Prometheus: { host: '127.0.0.1', port: 9988 } }`. */
  readonly telemetry?: { readonly [k: string]: HclValue | undefined };
  /** `disk` keeps the CA keys across restarts (default `memory`). */
  readonly keyManager?: 'memory' | 'disk';
  /** Default: sqlite3 in the data dir. */
  readonly dataStore?: { readonly database_type: string; readonly connection_string: string };
  /** Fixed port (default: a free one, kept across restarts). */
  readonly port?: number;
  readonly launch?: Launch;
  /** Wait for the admin API to answer (default true). */
  readonly waitReady?: boolean;
}

export interface AgentListEntry {
  id: { trust_domain: string; path: string };
  attestation_type: string;
  selectors: { type: string; value: string }[];
  x509svid_serial_number: string;
  x509svid_expires_at: string;
  banned: boolean;
  can_reattest: boolean;
}

async function waitHealthy(proc: SpireProcess, check: () => Promise<{ code: number }>, what: string): Promise<void> {
  try {
    await until(what, 60_000, async () => ((await check()).code === 0 ? true : undefined), proc);
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

export class SpireServer {
  #proc: SpireProcess;
  /** Every process this server has run, oldest first (restart() adds one); `logs` spans them all. */
  readonly generations: SpireProcess[] = [];

  private constructor(
    proc: SpireProcess,
    readonly options: ServerOptions,
    readonly socketPath: string,
    readonly port: number,
    readonly configPath: string,
  ) {
    this.#proc = proc;
    this.generations.push(proc);
  }

  get proc(): SpireProcess {
    return this.#proc;
  }
  get trustDomain(): string {
    return this.options.trustDomain ?? 'edge.example';
  }
  get logs(): SpireLogLine[] {
    return this.generations.flatMap((g) => g.logs);
  }

  static async start(options: ServerOptions): Promise<SpireServer> {
    const { dir } = options;
    mkdirSync(join(dir, 'data'), { recursive: true });
    const port = options.port ?? (await freePort());
    const socketPath = join(dir, 'server.sock');
    const td = options.trustDomain ?? 'edge.example';
    const keyManager =
      options.keyManager === 'disk'
        ? { type: 'KeyManager', name: 'disk', data: { keys_path: join(dir, 'data', 'keys.json') } }
        : { type: 'KeyManager', name: 'memory', data: {} };
    const config = [
      toHcl({
        server: {
          bind_address: '127.0.0.1',
          bind_port: String(port),
          socket_path: socketPath,
          trust_domain: td,
          data_dir: join(dir, 'data'),
          log_level: options.logLevel ?? 'DEBUG',
          log_format: 'json',
          ca_ttl: options.caTtl,
          agent_ttl: options.agentTtl,
          default_x509_svid_ttl: options.defaultX509SvidTtl,
          ...options.server,
        },
      }),
      options.telemetry ? toHcl({ telemetry: options.telemetry }) : '',
      pluginsHcl([
        { type: 'DataStore', name: 'sql', data: options.dataStore ?? { database_type: 'sqlite3', connection_string: join(dir, 'data', 'datastore.sqlite3') } },
        keyManager,
        ...options.plugins,
      ]),
    ].join('\n');
    const configPath = join(dir, 'server.conf');
    writeFileSync(configPath, config + '\n');
    const server = new SpireServer(SpireServer.#spawn(options, configPath), options, socketPath, port, configPath);
    if (options.waitReady !== false) await waitHealthy(server.proc, () => server.cli(['healthcheck']), 'spire-server healthcheck');
    return server;
  }

  static #spawn(options: ServerOptions, configPath: string): SpireProcess {
    const child = (options.launch ?? plainLaunch)(options.spire.server, ['run', '-config', configPath], { cwd: options.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    return new SpireProcess(child, `spire-server ${options.spire.version}`);
  }

  /** Starts the server again on the same config, data and port (after stop(), or stops it first). */
  async restart(waitReady = true): Promise<void> {
    await this.#proc.stop();
    this.#proc = SpireServer.#spawn(this.options, this.configPath);
    this.generations.push(this.#proc);
    if (waitReady) await waitHealthy(this.#proc, () => this.cli(['healthcheck']), 'spire-server healthcheck');
  }

  /** Runs `spire-server <args> -socketPath <admin socket>`. */
  cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return run(this.options.spire.server, [...args, '-socketPath', this.socketPath]);
  }

  async cliOk(args: readonly string[]): Promise<string> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`spire-server ${args.join(' ')} failed (${r.code}):\n${r.stdout}${r.stderr}`);
    return r.stdout;
  }

  async bundlePem(): Promise<string> {
    return this.cliOk(['bundle', 'show']);
  }

  async agents(): Promise<AgentListEntry[]> {
    const out = JSON.parse(await this.cliOk(['agent', 'list', '-output', 'json'])) as { agents?: AgentListEntry[] };
    return out.agents ?? [];
  }

  async createEntry(args: readonly string[]): Promise<string> {
    const out = await this.cliOk(['entry', 'create', '-output', 'json', ...args]);
    const parsed = JSON.parse(out) as { results: { status: { code: number; message: string }; entry: { id: string } }[] };
    const r = parsed.results[0]!;
    if (r.status.code !== 0) throw new Error(`entry create ${args.join(' ')}: ${r.status.message}`);
    return r.entry.id;
  }

  agentId(path: string): string {
    return `spiffe://${this.trustDomain}${path}`;
  }

  stop(): Promise<void> {
    return this.#proc.stop();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Agent

export interface AgentOptions {
  readonly spire: SpireInstall;
  readonly dir: string;
  readonly server: SpireServer;
  readonly plugins: readonly (ExternalPlugin | BuiltinPlugin)[];
  readonly logLevel?: string;
  readonly agent?: { readonly [k: string]: HclValue | undefined };
  /** A top-level `telemetry { }` block, as for the server. */
  readonly telemetry?: { readonly [k: string]: HclValue | undefined };
  /** Connect here instead of the server's own port (a proxy in front of several servers). */
  readonly serverPort?: number;
  readonly launch?: Launch;
  /** Wait until the agent is attested and its Workload API answers (default true). */
  readonly waitReady?: boolean;
}

export class SpireAgent {
  #proc: SpireProcess;
  readonly generations: SpireProcess[] = [];

  private constructor(
    proc: SpireProcess,
    readonly options: AgentOptions,
    readonly socketPath: string,
    readonly configPath: string,
  ) {
    this.#proc = proc;
    this.generations.push(proc);
  }

  get proc(): SpireProcess {
    return this.#proc;
  }
  get logs(): SpireLogLine[] {
    return this.generations.flatMap((g) => g.logs);
  }

  static async start(options: AgentOptions): Promise<SpireAgent> {
    const { dir, server } = options;
    mkdirSync(join(dir, 'data'), { recursive: true });
    const bundlePath = join(dir, 'bundle.pem');
    writeFileSync(bundlePath, await server.bundlePem());
    const socketPath = join(dir, 'agent.sock');
    const config = [
      toHcl({
        agent: {
          data_dir: join(dir, 'data'),
          log_level: options.logLevel ?? 'DEBUG',
          log_format: 'json',
          server_address: '127.0.0.1',
          server_port: String(options.serverPort ?? server.port),
          socket_path: socketPath,
          trust_domain: server.trustDomain,
          trust_bundle_path: bundlePath,
          ...options.agent,
        },
      }),
      options.telemetry ? toHcl({ telemetry: options.telemetry }) : '',
      pluginsHcl([{ type: 'KeyManager', name: 'memory', data: {} }, ...options.plugins]),
    ].join('\n');
    const configPath = join(dir, 'agent.conf');
    writeFileSync(configPath, config + '\n');
    const agent = new SpireAgent(SpireAgent.#spawn(options, configPath), options, socketPath, configPath);
    if (options.waitReady !== false) await waitHealthy(agent.proc, () => agent.cli(['healthcheck']), 'spire-agent healthcheck');
    return agent;
  }

  static #spawn(options: AgentOptions, configPath: string): SpireProcess {
    const child = (options.launch ?? plainLaunch)(options.spire.agent, ['run', '-config', configPath], { cwd: options.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    return new SpireProcess(child, `spire-agent ${options.spire.version}`);
  }

  /** What a supervisor (systemd, a kubelet) does: start the agent again on the same config and data dir. */
  async restart(waitReady = true): Promise<void> {
    await this.#proc.stop();
    this.#proc = SpireAgent.#spawn(this.options, this.configPath);
    this.generations.push(this.#proc);
    if (waitReady) await waitHealthy(this.#proc, () => this.cli(['healthcheck']), 'spire-agent healthcheck');
  }

  cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return run(this.options.spire.agent, [...args, '-socketPath', this.socketPath]);
  }

  get pid(): number | undefined {
    return this.#proc.child.pid;
  }

  stop(): Promise<void> {
    return this.#proc.stop();
  }
}
