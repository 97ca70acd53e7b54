/**
 * Test harness: a provisioned swtpm per call, running as a child process on a unix socket.
 *
 * - `swtpm_setup` writes EK certs (RSA-2048 at 0x01c00002, ECC P-384 at 0x01c00016) and a platform cert into NV,
 *   signed by a private local CA. The CA lives in one temp dir shared by the running instances of this process
 *   (created by the first setup; parallel setups against one CA dir are safe, swtpm_localca locks it). It is
 *   removed when the last instance stops, so a later startSwtpm() gets a new CA: compare certs only against the
 *   PEMs of the handle that issued them.
 * - `swtpm socket` runs as a plain child (never --daemon: PID 1 here reaps orphans late and `kill -0` lies about
 *   zombies). `stop()` sends SIGTERM, awaits 'exit' and removes the state dir.
 * - Socket paths stay short (AF_UNIX limit 108 bytes including the `.ctrl` suffix tcti-swtpm appends).
 * See /work/shared/reference/tpm-notes.md §3-4.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface SwtpmOptions {
  /** Pass `--ecc` to swtpm_setup (ECC storage primary key). swtpm 0.7.1 creates the RSA *and* the P-384 EK anyway. */
  readonly ecc?: boolean;
  /** PCR banks to activate; default ['sha1', 'sha256']. */
  readonly pcrBanks?: readonly string[];
  /**
   * How the TPM is started (default: swtpm's own TPM2_Startup(CLEAR) at locality 0). `{ locality: 3 }` sends
   * TPM2_Startup(CLEAR) from locality 3, so PCR 0 starts at 0…03; `{ hcrtm: data }` runs the H-CRTM sequence
   * (_TPM_Hash_Start/Data/End, which the TPM performs at locality 4) before TPM2_Startup, so PCR 0 = H(0…04 ‖ H(data))
   * in every bank (TPM 2.0 Part 1 §34.3, TCG PC Client PFP §3.3.4.1 / §10.4.5.3). restart() repeats it.
   */
  readonly startup?: SwtpmStartup;
}

export type SwtpmStartup = { readonly locality: 0 | 3 } | { readonly hcrtm: Uint8Array };

export interface SwtpmHandle {
  /** TCTI string for tpm2-tools / Tpm2Tools: `swtpm:path=<sock>`. */
  readonly tcti: string;
  /** Temp dir with the TPM state (`st/`), cert files (`certs/`), the socket and the swtpm log. */
  readonly dir: string;
  readonly stateDir: string;
  /** The process-wide local CA dir (root + intermediate + keys). */
  readonly caDir: string;
  readonly rootCaPem: string;
  readonly intermediateCaPem: string;
  /** The RSA-2048 EK cert swtpm_setup wrote (same bytes as NV index 0x01c00002). */
  readonly ekCertRsaDer: Uint8Array;
  /** The ECC P-384 EK cert (NV index 0x01c00016), when swtpm_setup wrote one. */
  readonly ekCertEccDer?: Uint8Array;
  readonly pid: () => number | undefined;
  /** Stops and starts swtpm on the same state (a TPM Reset with startup-clear: PCRs reset, persistent keys stay). */
  restart(): Promise<void>;
  /** SIGTERM, await exit, remove `dir`. Idempotent. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// The process-wide CA

let caDirPromise: Promise<string> | undefined;
/** Handles started and not yet stopped; the CA dir is removed when the last one stops. */
let caRefs = 0;
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Safety net only: tests call stop() in afterAll. On exit, kill leftovers and remove the CA dir synchronously.
  process.once('exit', () => {
    for (const child of liveChildren) child.kill('SIGKILL');
    if (caDirSync !== undefined) rmSync(caDirSync, { recursive: true, force: true });
  });
}
let caDirSync: string | undefined;

async function releaseCa(): Promise<void> {
  caRefs -= 1;
  if (caRefs > 0 || caDirPromise === undefined) return;
  const pending = caDirPromise;
  caDirPromise = undefined;
  caDirSync = undefined;
  const dir = await pending.catch(() => undefined);
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
}

async function caDir(): Promise<string> {
  caDirPromise ??= (async () => {
    installExitHook();
    const dir = mkdtempSync(join(tmpdir(), 'swca-'));
    caDirSync = dir;
    await writeFile(
      join(dir, 'swtpm-localca.conf'),
      [`statedir = ${dir}`, `signingkey = ${dir}/signkey.pem`, `issuercert = ${dir}/issuercert.pem`, `certserial = ${dir}/certserial`, ''].join('\n'),
    );
    await writeFile(
      join(dir, 'swtpm-localca.options'),
      ['--platform-manufacturer TestVendor', '--platform-version 2.1', '--platform-model swtpm-test', ''].join('\n'),
    );
    await writeFile(
      join(dir, 'swtpm_setup.conf'),
      [
        'create_certs_tool = /usr/bin/swtpm_localca',
        `create_certs_tool_config = ${dir}/swtpm-localca.conf`,
        `create_certs_tool_options = ${dir}/swtpm-localca.options`,
        '',
      ].join('\n'),
    );
    return dir;
  })();
  return caDirPromise;
}

// ---------------------------------------------------------------------------------------------------------------
// swtpm

export async function startSwtpm(options: SwtpmOptions = {}): Promise<SwtpmHandle> {
  caRefs += 1;
  let ca: string;
  let dir: string;
  try {
    ca = await caDir();
    dir = await mkdtemp(join(tmpdir(), 'sw-'));
  } catch (err) {
    await releaseCa();
    throw err;
  }
  const stateDir = join(dir, 'st');
  const certDir = join(dir, 'certs');
  const sock = join(dir, 's');
  if (Buffer.byteLength(`${sock}.ctrl`) >= 100) throw new Error(`swtpm socket path too long: ${sock}`);
  let child: ChildProcess | undefined;
  try {
    await mkdir(stateDir);
    await mkdir(certDir);
    const banks = (options.pcrBanks ?? ['sha1', 'sha256']).join(',');
    await execFileP(
      'swtpm_setup',
      [
        '--tpm2',
        '--tpmstate', stateDir,
        '--config', join(ca, 'swtpm_setup.conf'),
        '--create-ek-cert',
        '--create-platform-cert',
        '--pcr-banks', banks,
        '--write-ek-cert-files', certDir,
        '--overwrite',
        ...(options.ecc === true ? ['--ecc'] : []),
      ],
      { timeout: 60_000 },
    ).catch((err: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`swtpm_setup failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
    });

    const [rootCaPem, intermediateCaPem, ekCertRsaDer, ekCertEccDer] = await Promise.all([
      readFile(join(ca, 'swtpm-localca-rootca-cert.pem'), 'utf8'),
      readFile(join(ca, 'issuercert.pem'), 'utf8'),
      readFile(join(certDir, 'ek-rsa2048.crt')),
      readFile(join(certDir, 'ek-secp384r1.crt')).catch(() => undefined),
    ]);

    const start = async (): Promise<ChildProcess> => {
      const spawned = await spawnSwtpm(stateDir, sock, join(dir, 'swtpm.log'), options.startup === undefined);
      if (options.startup !== undefined) await startTpm(sock, options.startup);
      return spawned;
    };
    child = await start();
    let current: ChildProcess | undefined = child;
    let stopped = false;

    const handle: SwtpmHandle = {
      tcti: `swtpm:path=${sock}`,
      dir,
      stateDir,
      caDir: ca,
      rootCaPem,
      intermediateCaPem,
      ekCertRsaDer: new Uint8Array(ekCertRsaDer),
      ...(ekCertEccDer !== undefined ? { ekCertEccDer: new Uint8Array(ekCertEccDer) } : {}),
      pid: () => current?.pid,
      async restart() {
        if (stopped) throw new Error('swtpm already stopped');
        if (current !== undefined) await killChild(current);
        current = undefined;
        current = await start();
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        if (current !== undefined) await killChild(current);
        current = undefined;
        await rm(dir, { recursive: true, force: true });
        await releaseCa();
      },
    };
    return handle;
  } catch (err) {
    if (child !== undefined) await killChild(child);
    await rm(dir, { recursive: true, force: true });
    await releaseCa();
    throw err;
  }
}

async function spawnSwtpm(stateDir: string, sock: string, logFile: string, startupClear = true): Promise<ChildProcess> {
  const child = spawn(
    'swtpm',
    [
      'socket',
      '--tpm2',
      '--tpmstate', `dir=${stateDir}`,
      '--server', `type=unixio,path=${sock}`,
      '--ctrl', `type=unixio,path=${sock}.ctrl`,
      '--flags', startupClear ? 'not-need-init,startup-clear' : 'not-need-init',
      '--log', `file=${logFile},level=1`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  liveChildren.add(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4000) stderr += d;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => liveChildren.delete(child));
  child.once('error', () => liveChildren.delete(child));

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`swtpm exited early (${child.exitCode ?? child.signalCode}): ${stderr}`);
    }
    if (await canConnect(sock)) return child;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      throw new Error(`swtpm did not listen on ${sock} within 10 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** TPM2_Startup(TPM_SU_CLEAR): tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_Startup (TPM 2.0 Part 3 §9.3). */
const TPM2_STARTUP_CLEAR = Buffer.from('80010000000c000001440000', 'hex');

/**
 * Starts the TPM as `startup` says. TPM2_Startup is written to the command socket directly: the swtpm TCTI sets
 * locality 0 before each command it sends, which would undo the locality chosen over the control channel.
 */
async function startTpm(sock: string, startup: SwtpmStartup): Promise<void> {
  const ctrl = ['--unix', `${sock}.ctrl`];
  if ('hcrtm' in startup) {
    await new Promise<void>((resolve, reject) => {
      const child = execFile('swtpm_ioctl', [...ctrl, '-h', '-'], { timeout: 10_000 }, (err) => (err ? reject(err) : resolve()));
      child.stdin?.end(Buffer.from(startup.hcrtm));
    });
  } else {
    await execFileP('swtpm_ioctl', [...ctrl, '-l', String(startup.locality)], { timeout: 10_000 });
  }
  const response = await new Promise<Buffer>((resolve, reject) => {
    const s = connect(sock);
    const chunks: Buffer[] = [];
    s.once('error', reject);
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      const all = Buffer.concat(chunks);
      if (all.length >= 10) {
        s.destroy();
        resolve(all);
      }
    });
    s.once('connect', () => s.write(TPM2_STARTUP_CLEAR));
  });
  const rc = response.readUInt32BE(6);
  if (rc !== 0) throw new Error(`TPM2_Startup returned 0x${rc.toString(16)}`);
  if (!('hcrtm' in startup)) await execFileP('swtpm_ioctl', [...ctrl, '-l', '0'], { timeout: 10_000 });
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      s.destroy();
      resolve(false);
    });
  });
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// PCR extends (simulated measured boot)

export interface PcrExtend {
  readonly pcr: number;
  readonly bank: 'sha1' | 'sha256' | 'sha384' | 'sha512';
  readonly digestHex: string;
}

const DIGEST_HEX_LEN = { sha1: 40, sha256: 64, sha384: 96, sha512: 128 } as const;

/** Extends all digests, in order, with as few `tpm2_pcrextend` calls as possible (chunks of 100 specs). */
export async function extendPcrs(tcti: string, extends_: readonly PcrExtend[]): Promise<void> {
  const specs = extends_.map(({ pcr, bank, digestHex }) => {
    if (!Number.isInteger(pcr) || pcr < 0 || pcr > 23) throw new Error(`bad pcr ${pcr}`);
    const want = DIGEST_HEX_LEN[bank];
    if (want === undefined || !new RegExp(`^[0-9a-fA-F]{${want}}$`).test(digestHex)) {
      throw new Error(`bad ${bank} digest for pcr ${pcr}: ${digestHex}`);
    }
    return `${pcr}:${bank}=${digestHex.toLowerCase()}`;
  });
  for (let i = 0; i < specs.length; i += 100) {
    await execFileP('tpm2_pcrextend', specs.slice(i, i + 100), {
      env: { ...process.env, TPM2TOOLS_TCTI: tcti },
      timeout: 30_000,
    });
  }
}

/** Runs one tpm2-tools command against `tcti` (test-only helper for cross-checks such as handles-transient). */
export async function tpm2(tcti: string, tool: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP(tool, [...args], { env: { ...process.env, TPM2TOOLS_TCTI: tcti }, timeout: 30_000, encoding: 'utf8' });
}
