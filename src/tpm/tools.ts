/**
 * The agent-side TPM driver: the only module in src/ that runs tpm2-tools.
 *
 * `TpmDevice` is the one interface the agent uses for hardware (style.md §1); `Tpm2Tools` is its only
 * implementation. It runs tpm2-tools 5.x with `execFile` and an argv array (never a shell), with the TCTI in
 * `TPM2TOOLS_TCTI`, a timeout and an AbortSignal on every call. Every operation:
 *   - runs under a per-device promise-chain mutex. Without a resource manager (swtpm, mssim, /dev/tpm0)
 *     concurrent callers would share the TPM's 3 transient slots and its sessions;
 *   - works in its own temp dir, deleted in `finally`;
 *   - flushes the sessions it started and the transient objects it loaded in `finally`.
 * It returns raw bytes exactly as the tools wrote them; the agent forwards them and the server parses them again.
 * The driver checks only what it needs to pick and reuse keys safely (AK attributes, AK under the given EK).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';

import { InvalidConfig, MalformedInput, PreconditionFailed, TpmToolFailed } from '../errors.js';
import { ERR_PCR_SELECTION, PcrSelection } from './pcrs.js';
import { parseTpm2bPublic, publicName, qualifiedName, type TpmPublic } from './public.js';
import { parseTcti, type Tcti } from './tcti.js';

export { DEFAULT_TCTI, parseTcti, type Tcti } from './tcti.js';

/** EK kinds from the TCG EK Credential Profile that the driver can read. */
export type EkKind = 'rsa' | 'ecc-p256' | 'ecc-p384';
export type AkAlg = 'rsa' | 'ecc';
export type HashAlgName = 'sha1' | 'sha256' | 'sha384' | 'sha512';

/** TCG EK Credential Profile 2.x, §2.2.1.5: NV indices of the EK certificates. */
export const EK_CERT_NV_INDEX: Readonly<Record<EkKind, number>> = Object.freeze({
  rsa: 0x01c00002, // RSA 2048 EK certificate (low range)
  'ecc-p256': 0x01c0000a, // ECC NIST P-256 EK certificate (low range; absent on swtpm 0.7.1)
  'ecc-p384': 0x01c00016, // ECC NIST P-384 EK certificate (high range; swtpm's ECC EK)
});

/**
 * Persistent EK handles. RSA and P-256 follow the TCG profile's low range (0x81010001 / 0x81010002);
 * P-384 is where swtpm_setup puts its high-range ECC EK. Note: 0x81010002 is also this project's default RSA AK
 * handle; the driver checks what it finds at a handle, so a clash fails with a clear error instead of misusing a key.
 */
export const DEFAULT_EK_HANDLE: Readonly<Record<EkKind, number>> = Object.freeze({
  rsa: 0x81010001,
  'ecc-p256': 0x81010002,
  'ecc-p384': 0x81010016,
});

/** Default persistent AK handles: 0x81010002 for an RSA AK, 0x81010003 for an ECC AK. */
export const DEFAULT_AK_HANDLE: Readonly<Record<AkAlg, number>> = Object.freeze({
  rsa: 0x81010002,
  ecc: 0x81010003,
});

/** `tpm2_createek -G` argument per EK kind (tpm2-tools 5.4: `ecc384` uses the high-range template). */
const CREATEEK_ALG: Readonly<Record<EkKind, string>> = { rsa: 'rsa', 'ecc-p256': 'ecc', 'ecc-p384': 'ecc384' };

/**
 * TCG EK Credential Profile 2.x, Table "Policy values": the high-range P-384 EK's authPolicy is
 * PolicyB_SHA384 = PolicyOR(PolicyA_SHA384, PolicyC_SHA384), so ActivateCredential needs a SHA-384 policy
 * session that ran PolicySecret(endorsement) and then PolicyOR over these two branches.
 * PolicyA = H(H(0^48 || TPM_CC_PolicySecret || TPM_RH_ENDORSEMENT)); PolicyC is the profile constant.
 */
const POLICY_A_SHA384 = hex(
  '8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e143e8bb1133824ccb431053871c6db53',
);
const POLICY_C_SHA384 = hex(
  'd6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165',
);

/** TPM 2.0 Part 2, TPMA_OBJECT bits. */
const TPMA = {
  fixedTPM: 0x00000002,
  fixedParent: 0x00000010,
  sensitiveDataOrigin: 0x00000020,
  restricted: 0x00010000,
  decrypt: 0x00020000,
  sign: 0x00040000,
} as const;
const EK_REQUIRED_ATTRS = TPMA.restricted | TPMA.decrypt | TPMA.fixedTPM | TPMA.fixedParent;


/** tpm2-tools makecredential file: u32 magic, u32 version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET. */
const CREDENTIAL_MAGIC = 0xbadcc0de;
const MAX_CREDENTIAL_BLOB = 4096;
const MAX_NONCE = 64; // TPM2B_DATA in TPM2_Quote: at most sizeof(TPMU_HA) = 64 bytes

export interface EkPublic {
  readonly handle: number;
  /** TPM2B_PUBLIC as written by `tpm2_readpublic -f tss` (u16 size || TPMT_PUBLIC). */
  readonly publicArea: Uint8Array;
  readonly kind: EkKind;
}

export interface AkPublic {
  readonly handle: number;
  /** TPM2B_PUBLIC as written by `tpm2_readpublic -f tss`. */
  readonly publicArea: Uint8Array;
  /** TPM2B-less name: u16 nameAlg || H_nameAlg(TPMT_PUBLIC), as written by `-n`. */
  readonly name: Uint8Array;
  readonly alg: AkAlg;
  readonly ekHandle: number;
}

export interface EnsureAkOptions {
  /** Persistent handle for the AK; default DEFAULT_AK_HANDLE[alg]. */
  readonly handle?: number;
  readonly ekHandle: number;
  readonly alg: AkAlg;
}

export interface ActivateCredentialOptions {
  readonly akHandle: number;
  readonly ekHandle: number;
  readonly ekKind: EkKind;
  /** tpm2-tools makecredential file format (magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET). */
  readonly credentialBlob: Uint8Array;
}

export interface QuoteOptions {
  readonly akHandle: number;
  /** PCR selection, e.g. `sha256:0,1,2,3,4,5,6,7` (tpm2-tools syntax, banks joined with `+`). */
  readonly selection: string | PcrSelection;
  /** qualifyingData, 1..64 bytes. */
  readonly nonce: Uint8Array;
  /** Signature hash; default sha256. */
  readonly hashAlg?: HashAlgName;
}

export interface QuoteResult {
  /** TPMS_ATTEST exactly as signed (`tpm2_quote -m`). */
  readonly attest: Uint8Array;
  /** TPMT_SIGNATURE (`tpm2_quote -s`, tss format). */
  readonly signature: Uint8Array;
  /** Selected PCR values concatenated in selection order (`-o --pcrs_format values`). */
  readonly pcrValues: Uint8Array;
  /** The selection quoted, normalized to tpm2-tools syntax (indices ascending). */
  readonly selection: string;
}

export interface TpmProperties {
  /** TPM2_PT_MANUFACTURER as ASCII, NULs and trailing spaces removed (e.g. "IBM"). */
  readonly manufacturer: string;
  readonly manufacturerId: number;
  /** TPM2_PT_VENDOR_STRING_1..4, each 4 ASCII bytes with NULs removed. */
  readonly vendorStrings: readonly string[];
  /** (FIRMWARE_VERSION_1 << 32 | FIRMWARE_VERSION_2) as 16 hex digits; equals TPMS_ATTEST.firmwareVersion. */
  readonly firmwareVersion: string;
}

/** The agent's view of a TPM. */
export interface TpmDevice {
  /** DER bytes of the EK certificate in NV, or undefined when the index does not exist. */
  readEkCertificate(kind: EkKind): Promise<Uint8Array | undefined>;
  /** The persistent EK of this kind; created and persisted when absent. */
  ekPublic(kind: EkKind): Promise<EkPublic>;
  /** The persistent AK at `handle`, created under `ekHandle` and persisted the first time. */
  ensureAk(opts: EnsureAkOptions): Promise<AkPublic>;
  /** Runs TPM2_ActivateCredential with the EK policy session; returns the recovered secret. */
  activateCredential(opts: ActivateCredentialOptions): Promise<Uint8Array>;
  quote(opts: QuoteOptions): Promise<QuoteResult>;
  /** PCR values for `selection`, concatenated in selection order (`tpm2_pcrread -o`). */
  readPcrs(selection: string | PcrSelection): Promise<Uint8Array>;
  properties(): Promise<TpmProperties>;
}

export type TpmLog = (msg: string, fields: Readonly<Record<string, string | number | boolean | undefined>>) => void;

export interface Tpm2ToolsOptions {
  /** `device:/dev/tpmrm0` (default), `swtpm:path=...`, `swtpm:host=..,port=..`, `mssim:host=..,port=..`. */
  readonly tcti?: string;
  /** Per tool call; key generation (createek/createak) gets 4x this. Default 30 000 ms. */
  readonly timeoutMs?: number;
  /** Parent of the per-operation temp dirs; default os.tmpdir(). */
  readonly workDir?: string;
  readonly log?: TpmLog;
}

interface ToolOutput {
  readonly stdout: string;
  readonly stderr: string;
}

/** Handle to one exclusive TPM operation: its temp dir and its tool runner. */
interface Op {
  readonly dir: string;
  run(tool: string, args: readonly string[], opts?: { keygen?: boolean }): Promise<ToolOutput>;
  /** Runs a flush; never throws (cleanup must not hide the operation's own error). */
  flush(args: readonly string[]): Promise<void>;
}

export class Tpm2Tools implements TpmDevice {
  readonly tcti: Tcti;
  readonly #timeoutMs: number;
  readonly #workDir: string;
  readonly #log: TpmLog | undefined;
  readonly #closed = new AbortController();
  #queue: Promise<unknown> = Promise.resolve();

  readonly #ekCertCache = new Map<EkKind, Uint8Array | null>();
  readonly #ekPubCache = new Map<EkKind, EkPublic>();
  readonly #akCache = new Map<number, AkPublic>();
  #propsCache: TpmProperties | undefined;

  constructor(options: Tpm2ToolsOptions = {}) {
    this.tcti = parseTcti(options.tcti);
    const timeoutMs = options.timeoutMs ?? 30_000;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 600_000) {
      throw new InvalidConfig('ERR_CONFIG_TPM_TIMEOUT', 'tpm timeoutMs must be an integer in 100..600000', {
        fields: { timeoutMs },
      });
    }
    this.#timeoutMs = timeoutMs;
    this.#workDir = options.workDir ?? tmpdir();
    this.#log = options.log;
  }

  /** Aborts running tool calls and refuses new ones. */
  close(): void {
    this.#closed.abort();
  }

  /** Forgets cached EK certs, EK/AK publics and properties (e.g. after the TPM was cleared). */
  clearCache(): void {
    this.#ekCertCache.clear();
    this.#ekPubCache.clear();
    this.#akCache.clear();
    this.#propsCache = undefined;
  }

  async readEkCertificate(kind: EkKind): Promise<Uint8Array | undefined> {
    checkEkKind(kind);
    const cached = this.#ekCertCache.get(kind);
    if (cached !== undefined) return cached === null ? undefined : cached.slice();
    return this.#exclusive('readEkCertificate', async (op) => {
      const again = this.#ekCertCache.get(kind);
      if (again !== undefined) return again === null ? undefined : again.slice();
      const out = join(op.dir, 'ekcert.der');
      try {
        // No -C: the EK cert indices are AUTHREAD with an empty auth, so this works even with an owner password.
        await op.run('tpm2_nvread', [hex32(EK_CERT_NV_INDEX[kind]), '-o', out]);
      } catch (err) {
        if (isHandleMissing(err)) {
          this.#ekCertCache.set(kind, null);
          return undefined;
        }
        throw err;
      }
      const der = new Uint8Array(await readFile(out));
      this.#ekCertCache.set(kind, der);
      return der.slice();
    });
  }

  async ekPublic(kind: EkKind): Promise<EkPublic> {
    checkEkKind(kind);
    const cached = this.#ekPubCache.get(kind);
    if (cached !== undefined) return copyEk(cached);
    return this.#exclusive('ekPublic', async (op) => {
      const again = this.#ekPubCache.get(kind);
      if (again !== undefined) return copyEk(again);
      const handle = DEFAULT_EK_HANDLE[kind];
      let pub = await readPublicIfPresent(op, handle);
      if (pub === undefined) {
        // Recreate the EK from the endorsement seed (deterministic template) and persist it: -c <handle> evicts.
        try {
          await op.run('tpm2_createek', ['-G', CREATEEK_ALG[kind], '-c', hex32(handle), '-u', join(op.dir, 'ek.pub'), '-f', 'tss'], {
            keygen: true,
          });
        } finally {
          await op.flush(['-t']);
        }
        pub = await readPublicIfPresent(op, handle);
        if (pub === undefined) throw toolStateError('ERR_TPM_EK_MISSING', `EK not found at ${hex32(handle)} after createek`);
      }
      checkEkPublic(pub.publicArea, kind, handle);
      const ek: EkPublic = { handle, publicArea: pub.publicArea, kind };
      this.#ekPubCache.set(kind, ek);
      return copyEk(ek);
    });
  }

  async ensureAk(opts: EnsureAkOptions): Promise<AkPublic> {
    const alg = opts.alg;
    if (alg !== 'rsa' && alg !== 'ecc') throw new MalformedInput('ERR_TPM_AK_ALG', 'ak alg must be rsa or ecc');
    const handle = opts.handle ?? DEFAULT_AK_HANDLE[alg];
    checkPersistentHandle(handle, 'AK handle');
    checkPersistentHandle(opts.ekHandle, 'EK handle');
    if (handle === opts.ekHandle) throw new InvalidConfig('ERR_CONFIG_AK_HANDLE', 'AK handle equals EK handle');
    const fromCache = (): AkPublic | undefined => {
      const c = this.#akCache.get(handle);
      if (c === undefined) return undefined;
      if (c.alg !== alg || c.ekHandle !== opts.ekHandle) {
        throw toolStateError('ERR_TPM_AK_INVALID', `AK at ${hex32(handle)} is a ${c.alg} AK under ${hex32(c.ekHandle)}`);
      }
      return copyAk(c);
    };
    const cached = fromCache();
    if (cached !== undefined) return cached;
    return this.#exclusive('ensureAk', async (op) => {
      const again = fromCache();
      if (again !== undefined) return again;
      let found = await readPublicIfPresent(op, handle);
      if (found === undefined) {
        const ctx = join(op.dir, 'ak.ctx');
        const keyArgs = alg === 'rsa' ? ['-G', 'rsa', '-g', 'sha256', '-s', 'rsassa'] : ['-G', 'ecc', '-g', 'sha256', '-s', 'ecdsa'];
        try {
          // createak starts and flushes the EK policy session itself (also the PolicyOR one of the P-384 EK).
          await op.run(
            'tpm2_createak',
            ['-C', hex32(opts.ekHandle), '-c', ctx, ...keyArgs, '-u', join(op.dir, 'ak.pub'), '-f', 'tss', '-n', join(op.dir, 'ak.name')],
            { keygen: true },
          );
          await op.run('tpm2_evictcontrol', ['-C', 'o', '-c', ctx, hex32(handle)]);
        } finally {
          await op.flush(['-t']);
        }
        found = await readPublicIfPresent(op, handle);
        if (found === undefined) throw toolStateError('ERR_TPM_AK_MISSING', `AK not found at ${hex32(handle)} after evictcontrol`);
      }
      checkAkPublic(found.publicArea, alg, handle);
      // The AK must be a child of this EK: QN(AK) = nameAlg || H(QN(EK) || Name(AK)) (TPM 2.0 Part 1, 16.6).
      const ek = await readPublicIfPresent(op, opts.ekHandle);
      if (ek === undefined) throw toolStateError('ERR_TPM_EK_MISSING', `no EK at ${hex32(opts.ekHandle)}`);
      const akParsed = parsePublic(found.publicArea, `AK at ${hex32(handle)}`);
      if (!equalBytes(publicName(akParsed), found.name)) {
        throw toolStateError('ERR_TPM_AK_INVALID', `AK at ${hex32(handle)}: name does not match its public area`);
      }
      if (!equalBytes(qualifiedName(ek.qualifiedName, akParsed), found.qualifiedName)) {
        throw toolStateError('ERR_TPM_AK_INVALID', `key at ${hex32(handle)} is not a child of the EK at ${hex32(opts.ekHandle)}`);
      }
      const ak: AkPublic = { handle, publicArea: found.publicArea, name: found.name, alg, ekHandle: opts.ekHandle };
      this.#akCache.set(handle, ak);
      return copyAk(ak);
    });
  }

  async activateCredential(opts: ActivateCredentialOptions): Promise<Uint8Array> {
    checkEkKind(opts.ekKind);
    checkPersistentHandle(opts.akHandle, 'AK handle');
    checkPersistentHandle(opts.ekHandle, 'EK handle');
    checkCredentialBlob(opts.credentialBlob);
    const blob = opts.credentialBlob.slice(); // copy before the caller can change it
    return this.#exclusive('activateCredential', async (op) => {
      const session = join(op.dir, 'session.ctx');
      const credFile = join(op.dir, 'cred.bin');
      const secretFile = join(op.dir, 'secret.bin');
      await writeFile(credFile, blob, { mode: 0o600 });
      const highRange = opts.ekKind === 'ecc-p384';
      let started = false;
      let failed = false;
      try {
        await op.run('tpm2_startauthsession', ['--policy-session', ...(highRange ? ['-g', 'sha384'] : []), '-S', session]);
        started = true;
        await op.run('tpm2_policysecret', ['-S', session, '-c', 'e']);
        if (highRange) {
          const a = join(op.dir, 'policyA.bin');
          const c = join(op.dir, 'policyC.bin');
          await Promise.all([writeFile(a, POLICY_A_SHA384), writeFile(c, POLICY_C_SHA384)]);
          await op.run('tpm2_policyor', ['-S', session, '-l', `sha384:${a},${c}`]);
        }
        await op.run('tpm2_activatecredential', [
          '-c', hex32(opts.akHandle),
          '-C', hex32(opts.ekHandle),
          '-i', credFile,
          '-o', secretFile,
          '-P', `session:${session}`,
        ]);
        return new Uint8Array(await readFile(secretFile));
      } catch (err) {
        failed = true;
        throw err;
      } finally {
        if (started) await op.flush([session]);
        if (failed) await op.flush(['-t']);
      }
    });
  }

  async quote(opts: QuoteOptions): Promise<QuoteResult> {
    checkPersistentHandle(opts.akHandle, 'AK handle');
    const selection = checkSelection(opts.selection);
    const hashAlg = opts.hashAlg ?? 'sha256';
    if (!(hashAlg in HASH_SIZES)) throw new MalformedInput('ERR_TPM_HASH_ALG', `unsupported quote hash ${String(hashAlg)}`);
    if (!(opts.nonce instanceof Uint8Array) || opts.nonce.length < 1 || opts.nonce.length > MAX_NONCE) {
      throw new MalformedInput('ERR_TPM_QUOTE_NONCE', `quote nonce must be 1..${MAX_NONCE} bytes`);
    }
    const nonceHex = Buffer.from(opts.nonce).toString('hex');
    return this.#exclusive('quote', async (op) => {
      const m = join(op.dir, 'attest.bin');
      const s = join(op.dir, 'sig.bin');
      const o = join(op.dir, 'pcrs.bin');
      try {
        await op.run('tpm2_quote', [
          '-c', hex32(opts.akHandle),
          '-l', selection,
          '-q', nonceHex,
          '-m', m,
          '-s', s,
          '-f', 'tss',
          '-o', o,
          '--pcrs_format', 'values',
          '-g', hashAlg,
        ]);
      } catch (err) {
        await op.flush(['-t']);
        throw err;
      }
      const [attest, signature, pcrValues] = await Promise.all([readFile(m), readFile(s), readFile(o)]);
      return {
        attest: new Uint8Array(attest),
        signature: new Uint8Array(signature),
        pcrValues: new Uint8Array(pcrValues),
        selection,
      };
    });
  }

  async readPcrs(selection: string | PcrSelection): Promise<Uint8Array> {
    const sel = checkSelection(selection);
    return this.#exclusive('readPcrs', async (op) => {
      const o = join(op.dir, 'pcrs.bin');
      await op.run('tpm2_pcrread', [sel, '-o', o]);
      return new Uint8Array(await readFile(o));
    });
  }

  async properties(): Promise<TpmProperties> {
    if (this.#propsCache !== undefined) return copyProps(this.#propsCache);
    return this.#exclusive('properties', async (op) => {
      const { stdout } = await op.run('tpm2_getcap', ['properties-fixed']);
      const props = parsePropertiesFixed(stdout);
      this.#propsCache = props;
      return copyProps(props);
    });
  }

  /** Runs `fn` alone on this device, in a fresh temp dir that is removed afterwards. */
  #exclusive<T>(opName: string, fn: (op: Op) => Promise<T>): Promise<T> {
    const task = async (): Promise<T> => {
      if (this.#closed.signal.aborted) {
        throw new TpmToolFailed('ERR_TPM_TOOL', `tpm device closed (${opName})`, { fields: { op: opName } });
      }
      const started = performance.now();
      const dir = await mkdtemp(join(this.#workDir, 'tpm-op-'));
      try {
        return await fn(this.#op(dir, opName));
      } finally {
        await rm(dir, { recursive: true, force: true });
        this.#log?.('tpm operation', { op: opName, ms: round(performance.now() - started) });
      }
    };
    const result = this.#queue.then(task, task);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  #op(dir: string, opName: string): Op {
    const run = (tool: string, args: readonly string[], opts: { keygen?: boolean } = {}): Promise<ToolOutput> =>
      this.#runTool(tool, args, opts.keygen === true ? this.#timeoutMs * 4 : this.#timeoutMs, dir);
    return {
      dir,
      run,
      flush: async (args) => {
        try {
          await run('tpm2_flushcontext', args);
        } catch (err) {
          this.#log?.('tpm flushcontext failed', {
            op: opName,
            args: args.join(' '),
            error: err instanceof Error ? err.message : String(err),
          });
        }
      },
    };
  }

  #runTool(tool: string, args: readonly string[], timeoutMs: number, cwd: string): Promise<ToolOutput> {
    if (!/^tpm2_[a-z]+$/.test(tool)) throw new InvalidConfig('ERR_TPM_TOOL_NAME', `not a tpm2-tools binary: ${tool}`);
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), this.#closed.signal]);
    const started = performance.now();
    return new Promise<ToolOutput>((resolve, reject) => {
      execFile(
        tool,
        args,
        {
          cwd,
          env: { ...process.env, TPM2TOOLS_TCTI: this.tcti.value },
          encoding: 'utf8',
          signal,
          killSignal: 'SIGKILL',
          maxBuffer: 4 * 1024 * 1024,
          windowsHide: true,
        },
        (error, stdout, stderr) => {
          const ms = round(performance.now() - started);
          if (error === null) {
            this.#log?.('tpm tool', { tool, ms, exitCode: 0 });
            resolve({ stdout, stderr });
            return;
          }
          const e = error as NodeJS.ErrnoException & { code?: number | string; signal?: string | null };
          let message: string;
          let exitCode: number | undefined;
          if (e.name === 'AbortError' || signal.aborted) {
            message = this.#closed.signal.aborted
              ? `${tool} aborted: tpm device closed`
              : `${tool} timed out after ${timeoutMs} ms`;
          } else if (typeof e.code === 'number') {
            exitCode = e.code;
            message = `${tool} failed with exit code ${e.code}: ${describeToolStderr(stderr, this.tcti)}`;
          } else if (e.code === 'ENOENT') {
            message = `${tool} not found: install tpm2-tools`;
          } else {
            message = `${tool} failed: ${e.signal ? `killed by ${e.signal}` : String(e.code ?? e.message)}`;
          }
          this.#log?.('tpm tool failed', { tool, ms, exitCode });
          reject(
            new TpmToolFailed('ERR_TPM_TOOL', message, {
              cause: error,
              fields: { tool, exitCode, stderr: stderr.slice(0, 2000), tcti: this.tcti.kind },
            }),
          );
        },
      );
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers (module-private)

const HASH_SIZES: Readonly<Record<HashAlgName, number>> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

function hex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'hex'));
}

function hex32(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
}

function copyEk(ek: EkPublic): EkPublic {
  return { ...ek, publicArea: ek.publicArea.slice() };
}

function copyAk(ak: AkPublic): AkPublic {
  return { ...ak, publicArea: ak.publicArea.slice(), name: ak.name.slice() };
}

function copyProps(p: TpmProperties): TpmProperties {
  return { ...p, vendorStrings: [...p.vendorStrings] };
}

function toolStateError(code: string, message: string): PreconditionFailed {
  return new PreconditionFailed(code, message);
}

/**
 * What went wrong, from a tpm2-tools stderr. When the TCTI could not be loaded the tool's own line says only
 * `Could not load tcti`; the cause (ENOENT, EACCES, a refused connection) is on the tss2 library's lines before it,
 * so that line is carried too, with a hint at the usual fix.
 */
export function describeToolStderr(stderr: string, tcti: Tcti): string {
  const first = firstErrorLine(stderr);
  if (!/Could not load tcti/i.test(first)) return first;
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^(ERROR|WARNING):tcti:/.test(l));
  // The innermost failure is the first tcti line: "…Init() Failed to open specified TCTI device file /dev/tpmrm0: Permission denied".
  const causeLine = lines[0];
  const cause = causeLine === undefined ? undefined : causeLine.replace(/^(ERROR|WARNING):tcti:\S+\s+/, '').replace(/\s+$/, '');
  const parts = [`could not load TCTI ${JSON.stringify(tcti.value)}`];
  if (cause) parts.push(cause.length > 300 ? `${cause.slice(0, 300)}...` : cause);
  const hint = tctiHint(stderr, tcti);
  return `${parts.join(': ')}${hint ? ` (hint: ${hint})` : ''}`;
}

function tctiHint(stderr: string, tcti: Tcti): string | undefined {
  const conf = tcti.value.slice(tcti.value.indexOf(":") + 1).replace(/^path=/, "");
  if (tcti.kind === 'device') {
    if (/Permission denied/i.test(stderr)) {
      return `this user cannot open ${conf}: add the agent's user to the group that owns it (usually tss: usermod -aG tss <user>) or run the agent as that group`;
    }
    if (/No such file or directory/i.test(stderr)) {
      return `${conf} does not exist: check that the TPM is enabled in firmware and its kernel driver is loaded (ls /dev/tpm*), or set tpm_tcti`;
    }
    if (/Device or resource busy/i.test(stderr)) return `${conf} is held by another process: use the resource manager /dev/tpmrm0 instead of /dev/tpm0`;
  }
  if (/connect|Connection refused/i.test(stderr)) return `nothing answers at ${conf}: is the TPM simulator (swtpm) running there?`;
  return undefined;
}

/** The most useful line of a tpm2-tools stderr: the tool's own `ERROR: ...` line, else the first line. */
function firstErrorLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const line = lines.find((l) => l.startsWith('ERROR: ')) ?? lines.find((l) => l.startsWith('ERROR')) ?? lines[0] ?? '(no stderr)';
  return line.length > 300 ? `${line.slice(0, 300)}...` : line;
}

/** TPM_RC_HANDLE for handle 1 (0x18B): the NV index or persistent handle does not exist. */
function isHandleMissing(err: unknown): boolean {
  return err instanceof TpmToolFailed && typeof err.fields['stderr'] === 'string' && /\(0x18B\)/i.test(err.fields['stderr']);
}

function checkEkKind(kind: EkKind): void {
  if (kind !== 'rsa' && kind !== 'ecc-p256' && kind !== 'ecc-p384') {
    throw new MalformedInput('ERR_TPM_EK_KIND', 'ek kind must be rsa, ecc-p256 or ecc-p384');
  }
}

function checkPersistentHandle(h: number, what: string): void {
  if (!Number.isInteger(h) || h < 0x81000000 || h > 0x81ffffff) {
    throw new InvalidConfig('ERR_CONFIG_TPM_HANDLE', `${what} must be a persistent handle 0x81000000..0x81ffffff`, {
      fields: { handle: String(h) },
    });
  }
}

/**
 * Validates a PCR selection with the project's value type (known banks, indices 0-23, no duplicates) and
 * returns it in tpm2-tools syntax (banks in the given order, indices ascending: the order of the values file).
 */
function checkSelection(selection: string | PcrSelection): string {
  if (selection instanceof PcrSelection) return selection.toString();
  if (typeof selection !== 'string') throw new MalformedInput(ERR_PCR_SELECTION, 'pcr selection must be a string');
  return PcrSelection.parse(selection).toString();
}

function checkCredentialBlob(b: Uint8Array): void {
  const fail = (rule: string): never => {
    throw new MalformedInput('ERR_TPM_CREDENTIAL_BLOB', `credential blob: ${rule}`);
  };
  if (!(b instanceof Uint8Array)) fail('not bytes');
  if (b.length < 12 || b.length > MAX_CREDENTIAL_BLOB) fail(`length ${b.length} outside 12..${MAX_CREDENTIAL_BLOB}`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (v.getUint32(0) !== CREDENTIAL_MAGIC) fail('bad magic (expected 0xBADCC0DE)');
  if (v.getUint32(4) !== 1) fail('unsupported version');
  const idSize = v.getUint16(8);
  if (idSize === 0 || 10 + idSize + 2 > b.length) fail('TPM2B_ID_OBJECT size past the end');
  const secretSize = v.getUint16(10 + idSize);
  if (secretSize === 0 || 12 + idSize + secretSize !== b.length) fail('TPM2B_ENCRYPTED_SECRET size does not match the blob');
}

interface ReadPublic {
  readonly publicArea: Uint8Array;
  readonly name: Uint8Array;
  readonly qualifiedName: Uint8Array;
}

/** `tpm2_readpublic` of a persistent handle, or undefined when nothing is there (TPM_RC_HANDLE). */
async function readPublicIfPresent(op: Op, handle: number): Promise<ReadPublic | undefined> {
  const tag = hex32(handle).slice(2);
  const o = join(op.dir, `${tag}.pub`);
  const n = join(op.dir, `${tag}.name`);
  const q = join(op.dir, `${tag}.qname`);
  try {
    await op.run('tpm2_readpublic', ['-c', hex32(handle), '-f', 'tss', '-o', o, '-n', n, '-q', q]);
  } catch (err) {
    if (isHandleMissing(err)) return undefined;
    throw err;
  }
  const [publicArea, name, qualifiedName] = await Promise.all([readFile(o), readFile(n), readFile(q)]);
  return { publicArea: new Uint8Array(publicArea), name: new Uint8Array(name), qualifiedName: new Uint8Array(qualifiedName) };
}

/** Parses a TPM2B_PUBLIC the TPM returned (src/tpm/public.ts); a malformed one is a device-state error here. */
function parsePublic(pub: Uint8Array, what: string): TpmPublic {
  try {
    return parseTpm2bPublic(pub);
  } catch (err) {
    throw new PreconditionFailed('ERR_TPM_PUBLIC', `${what}: TPM2B_PUBLIC does not parse`, { cause: err });
  }
}

function checkEkPublic(pub: Uint8Array, kind: EkKind, handle: number): void {
  const p = parsePublic(pub, `EK at ${hex32(handle)}`);
  const wantCurve = kind === 'ecc-p256' ? 'P-256' : kind === 'ecc-p384' ? 'P-384' : undefined;
  const typeOk = kind === 'rsa' ? p.type === 'rsa' : p.type === 'ecc' && p.curve.jwkName === wantCurve;
  if (!typeOk) throw toolStateError('ERR_TPM_EK_INVALID', `key at ${hex32(handle)} is not an EK of kind ${kind}`);
  if ((p.attributes & EK_REQUIRED_ATTRS) !== EK_REQUIRED_ATTRS || (p.attributes & TPMA.sign) !== 0) {
    throw toolStateError('ERR_TPM_EK_INVALID', `key at ${hex32(handle)} is not a restricted decryption key (EK)`);
  }
}

/** The driver's own AK check (agent side: PreconditionFailed); the server runs activation.checkAkAttributes. */
function checkAkPublic(pub: Uint8Array, alg: AkAlg, handle: number): void {
  const p = parsePublic(pub, `AK at ${hex32(handle)}`);
  if (p.type !== alg) throw toolStateError('ERR_TPM_AK_INVALID', `key at ${hex32(handle)} is not an ${alg} key`);
  const required = ['restricted', 'sign', 'fixedTPM', 'fixedParent', 'sensitiveDataOrigin'] as const;
  const missing = required.filter((k) => (p.attributes & TPMA[k]) === 0);
  if (missing.length > 0 || (p.attributes & TPMA.decrypt) !== 0) {
    const rule = missing.length > 0 ? `lacks ${missing.join(', ')}` : 'has decrypt';
    throw toolStateError('ERR_TPM_AK_INVALID', `key at ${hex32(handle)} is not an attestation key: ${rule}`);
  }
}

/** Parses `tpm2_getcap properties-fixed` YAML (values decoded from the `raw` u32 fields). */
export function parsePropertiesFixed(stdout: string): TpmProperties {
  let doc: unknown;
  try {
    doc = parseYaml(stdout, { logLevel: 'error' });
  } catch (err) {
    throw new TpmToolFailed('ERR_TPM_TOOL', 'tpm2_getcap properties-fixed: output is not YAML', { cause: err });
  }
  const raw = (key: string): number => {
    const entry = (doc as Record<string, unknown> | null)?.[key];
    const r = typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>)['raw'] : undefined;
    const n = typeof r === 'number' ? r : typeof r === 'string' ? Number(r) : NaN;
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
      throw new TpmToolFailed('ERR_TPM_TOOL', `tpm2_getcap properties-fixed: missing ${key}`);
    }
    return n;
  };
  const ascii = (n: number): string => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b.toString('latin1').replace(/\0/g, '');
  };
  const manufacturerId = raw('TPM2_PT_MANUFACTURER');
  const vendorStrings = [1, 2, 3, 4].map((i) => ascii(raw(`TPM2_PT_VENDOR_STRING_${i}`)));
  const fw1 = raw('TPM2_PT_FIRMWARE_VERSION_1');
  const fw2 = raw('TPM2_PT_FIRMWARE_VERSION_2');
  return {
    manufacturer: ascii(manufacturerId).trimEnd(),
    manufacturerId,
    vendorStrings,
    firmwareVersion: fw1.toString(16).padStart(8, '0') + fw2.toString(16).padStart(8, '0'),
  };
}

/** Preference when the EK kind is "auto": the first kind whose EK certificate is provisioned in NV. */
export const AUTO_EK_ORDER: readonly EkKind[] = ['rsa', 'ecc-p384', 'ecc-p256'];

/**
 * Which EK to use and its certificate from NV (if any). For `auto`, the first kind of AUTO_EK_ORDER with a
 * certificate, else RSA without one. The agent and `spire-edge-attest ek-hash` share this so they always agree.
 */
export async function selectEk(
  device: TpmDevice,
  kind: EkKind | 'auto',
  progress: (step: string) => void = () => undefined,
): Promise<{ kind: EkKind; certificate: Uint8Array | undefined }> {
  if (kind !== 'auto') {
    progress(`reading the ${kind} EK certificate from NV…`);
    return { kind, certificate: await device.readEkCertificate(kind) };
  }
  for (const candidate of AUTO_EK_ORDER) {
    progress(`looking for a ${candidate} EK certificate in NV…`);
    const certificate = await device.readEkCertificate(candidate);
    if (certificate) return { kind: candidate, certificate };
  }
  return { kind: 'rsa', certificate: undefined };
}
