/**
 * Agent side of NodeAttestor "tpm". Only this side touches the TPM (through src/tpm/tools.ts):
 * it sends the EK (certificate and public area), the persisted AK's public area, the measured-boot
 * event log read fresh at every attestation, and answers the server's challenge with
 * ActivateCredential plus a quote over the PCRs the server asked for, using the server's nonce.
 */
import { readFile, stat } from 'node:fs/promises';
import { InvalidConfig, MalformedInput, NotConfigured } from '../errors.js';
import { block, ConfigProblems, duration, parseConfig, z } from '../plugin/config-schema.js';
import type { AgentAttestationSession, AgentNodeAttestor, CoreConfig, Logger } from '../plugin/types.js';
import { parseCertificates } from '../tpm/ek.js';
import { locateImaEntry } from '../tpm/ima/slice.js';
import { PcrSelection } from '../tpm/pcrs.js';
import { type AkAlg, type EkKind, parseTcti, selectEk, Tpm2Tools, type TpmDevice } from '../tpm/tools.js';
import { DEFAULT_IMA_CHUNK_BYTES, MAX_IMA_CHUNK_BYTES, MAX_IMA_LIST_BYTES, decodeChallenge, decodeImaResend, encodeImaResendResponse, encodePayload, encodeResponse } from './wire.js';

export const DEFAULT_EVENT_LOG_PATH = '/sys/kernel/security/tpm0/binary_bios_measurements';
const MAX_LOG_FILE_BYTES = 8 * 1024 * 1024;
/**
 * Default persistent AK handles, one per (EK kind, AK algorithm) so switching ek_kind never picks up an
 * AK that belongs to another EK. Owner range (TCG handle registry: 0x81000000-0x8100FFFF), clear of the
 * EK handles in 0x81010000-0x8101FFFF.
 */
export const DEFAULT_AK_HANDLES: Readonly<Record<EkKind, Readonly<Record<AkAlg, number>>>> = {
  rsa: { rsa: 0x81000a01, ecc: 0x81000a02 },
  'ecc-p256': { rsa: 0x81000a03, ecc: 0x81000a04 },
  'ecc-p384': { rsa: 0x81000a05, ecc: 0x81000a06 },
};

const PERSISTENT_HANDLE = 'expected a persistent handle 0x81000000..0x81ffffff such as "0x81010002" (hex) or 2164326402';
/**
 * A number, a hex string, or a decimal string: HCL1 parsers with 32-bit integers (ours) cannot hold 0x81xxxxxx, and
 * src/plugin/hcl.ts hands such a literal over as a string, so `ak_handle = 0x81000a02` works unquoted too.
 */
const handle = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const text = typeof value === 'string' ? value.trim() : '';
  const n =
    typeof value === 'number' ? value : /^0[xX][0-9a-fA-F]{1,8}$/.test(text) ? Number.parseInt(text, 16) : /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 0x81000000 || n > 0x81ffffff) {
    ctx.addIssue({ code: 'custom', message: `${PERSISTENT_HANDLE}, got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return n;
});

/** Bounds of tpm_timeout (per tpm2-tools call). */
const TPM_TIMEOUT_MIN_MS = 1_000;
const TPM_TIMEOUT_MAX_MS = 600_000;

export const agentConfigSchema = z.strictObject({
  tpm_tcti: z.string().default('device:/dev/tpmrm0'),
  ek_kind: z.enum(['auto', 'rsa', 'ecc-p256', 'ecc-p384']).default('auto'),
  ak_alg: z.enum(['rsa', 'ecc']).default('ecc'),
  ak_handle: handle.optional(),
  event_log_path: z.string().min(1).default(DEFAULT_EVENT_LOG_PATH),
  /** Send the IMA log too, read after the quote (the server verifies it against PCR 10: docs/ima.md). */
  ima_log_path: z.string().min(1).optional(),
  /** Largest IMA chunk per message (bytes of the list); longer lists go in chunks the server asks for. */
  ima_chunk_bytes: z.number().int().min(4096).max(MAX_IMA_CHUNK_BYTES).default(DEFAULT_IMA_CHUNK_BYTES),
  /** Certificates to send along with the EK certificate (PEM or DER files). */
  ek_intermediates: z.array(z.string().min(1)).max(8).default([]),
  send_ek_certificate: z.boolean().default(true),
  /** Per tpm2-tools call: Go duration syntax like every other duration ("30s", "2m"), or a number of seconds. */
  tpm_timeout: duration()
    .refine((ms) => ms >= TPM_TIMEOUT_MIN_MS && ms <= TPM_TIMEOUT_MAX_MS, { message: 'must be between 1s and 10m' })
    .default(30_000),
  tpm: block(z.strictObject({ work_dir: z.string().optional() })).optional(),
});
export type TpmAgentConfig = z.output<typeof agentConfigSchema>;

export interface TpmAgentOptions {
  /** Injects a TPM (tests); by default a Tpm2Tools driver is built from `tpm_tcti`. */
  readonly device?: (config: TpmAgentConfig) => TpmDevice;
  readonly readFile?: (path: string) => Promise<Uint8Array>;
}

interface Identity {
  readonly ekKind: EkKind;
  readonly ekHandle: number;
  readonly ekPublic: Uint8Array;
  readonly ekCertificate: Uint8Array | undefined;
  readonly akHandle: number;
  readonly akPublic: Uint8Array;
}

interface AgentState {
  readonly config: TpmAgentConfig;
  readonly device: TpmDevice;
  readonly intermediates: Uint8Array[];
  identity?: Promise<Identity>;
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

async function requireFile(path: string, key: string): Promise<void> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new InvalidConfig('ERR_CONFIG_PATH', `tpm agent: key "${key}": ${path}: ${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)}`, {
      fields: { key, path },
    });
  });
  // sysfs event logs are not regular files by size, but stat reports them as files.
  if (!info.isFile()) throw new InvalidConfig('ERR_CONFIG_PATH', `tpm agent: key "${key}": ${path} is not a file`, { fields: { key, path } });
}

async function requireDirectory(path: string, key: string): Promise<void> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new InvalidConfig('ERR_CONFIG_PATH', `tpm agent: key "${key}": ${path}: ${err.code === 'ENOENT' ? 'no such directory' : (err.code ?? err.message)}`, {
      fields: { key, path },
    });
  });
  if (!info.isDirectory()) throw new InvalidConfig('ERR_CONFIG_PATH', `tpm agent: key "${key}": ${path} is not a directory`, { fields: { key, path } });
}

/** The certificates of a PEM bundle or DER file, each as DER; checked here so a wrong file fails at Configure. */
function parsePemOrDer(bytes: Uint8Array, path: string): Uint8Array[] {
  let certs;
  try {
    certs = parseCertificates(bytes);
  } catch (err) {
    throw new InvalidConfig('ERR_CONFIG_EK_INTERMEDIATES', `tpm agent: key "ek_intermediates": ${path} is not a PEM or DER certificate: ${(err as Error).message}`, {
      fields: { key: 'ek_intermediates', path },
    });
  }
  if (certs.length === 0) {
    throw new InvalidConfig('ERR_CONFIG_EK_INTERMEDIATES', `tpm agent: key "ek_intermediates": ${path} holds no PEM certificate`, {
      fields: { key: 'ek_intermediates', path },
    });
  }
  return certs.map((c) => new Uint8Array(c.rawData));
}

/**
 * The IMA part of the response: the entries from the server's offset (incremental re-attestation), or the whole list
 * when no offset was asked, when the list is shorter than the offset (a reboot started a new list) or when its framing
 * is not understood (the server then verifies, or refuses, the whole list).
 */
export function imaIncrement(log: Uint8Array, offset: number | undefined, maxBytes = DEFAULT_IMA_CHUNK_BYTES): { ima_log: Uint8Array; ima_offset?: number; ima_total?: number } {
  const boundary = locateImaEntry(log, offset ?? 0);
  if (!boundary) return { ima_log: log };
  if (boundary.start === undefined) return { ima_log: log, ima_total: boundary.total };
  const chunk = log.subarray(boundary.start, chunkEnd(log, boundary.start, maxBytes));
  return { ima_log: chunk, ...(offset !== undefined ? { ima_offset: offset } : {}), ima_total: boundary.total };
}

/**
 * Where a chunk starting at `start` ends: after the last whole entry within `maxBytes`, or after one entry when the
 * first is larger. SPIRE's server takes at most 4 MiB per agent message (grpc-go's default), so a long list goes in
 * chunks the server asks for one by one (docs/ima.md).
 */
function chunkEnd(log: Uint8Array, start: number, maxBytes: number): number {
  if (log.length - start <= maxBytes) return log.length;
  const window = log.subarray(start, start + maxBytes);
  const fit = locateImaEntry(window, 0)?.total ?? 0;
  const end = fit > 0 ? locateImaEntry(window, fit)?.start : locateImaEntry(log.subarray(start), 1)?.start;
  return end === undefined ? log.length : start + end;
}

export class TpmAgentAttestor implements AgentNodeAttestor {
  readonly #log: Logger;
  readonly #options: TpmAgentOptions;
  #state: AgentState | undefined;

  constructor(log: Logger, options: TpmAgentOptions = {}) {
    this.#log = log;
    this.#options = options;
  }

  async configure(raw: Record<string, unknown>, _core: CoreConfig): Promise<void> {
    const { config, intermediates } = await this.#load(raw);
    const device =
      this.#options.device?.(config) ??
      new Tpm2Tools({
        tcti: config.tpm_tcti,
        timeoutMs: config.tpm_timeout,
        ...(config.tpm?.work_dir ? { workDir: config.tpm.work_dir } : {}),
        log: (msg, fields) => this.#log.debug(msg, fields),
      });
    const previous = this.#state;
    this.#state = { config, device, intermediates };
    if (previous && previous.device !== device && previous.device instanceof Tpm2Tools) previous.device.close();
    if (raw['event_log_path'] === undefined && !(await isFile(config.event_log_path))) {
      this.#log.warn('No measured-boot event log at the default path; the server refuses nodes without one unless require_event_log is off', {
        path: config.event_log_path,
      });
    }
  }

  /** Everything Configure checks, without touching the TPM; throws every problem at once. */
  async validate(raw: Record<string, unknown>): Promise<string[]> {
    await this.#load(raw);
    return [];
  }

  async #load(raw: Record<string, unknown>): Promise<{ config: TpmAgentConfig; intermediates: Uint8Array[] }> {
    const problems = new ConfigProblems('tpm agent');
    const config = await problems.check(() => parseConfig(agentConfigSchema, raw, 'tpm agent'));
    if (!config) return problems.fail();
    await problems.check(() => {
      try {
        parseTcti(config.tpm_tcti);
      } catch (err) {
        throw new InvalidConfig('ERR_CONFIG_TCTI', `tpm agent: key "tpm_tcti": ${(err as Error).message}`, { fields: { key: 'tpm_tcti' } });
      }
    });
    const read = this.#options.readFile ?? ((p: string) => readFile(p).then((b) => new Uint8Array(b)));
    const intermediates: Uint8Array[] = [];
    for (const path of config.ek_intermediates) {
      const certs = await problems.check(async () => {
        const bytes = await read(path).catch((err: NodeJS.ErrnoException) => {
          throw new InvalidConfig('ERR_CONFIG_EK_INTERMEDIATES', `tpm agent: key "ek_intermediates": cannot read ${path}: ${err.code ?? err.message}`, {
            fields: { key: 'ek_intermediates', path },
          });
        });
        return parsePemOrDer(bytes, path);
      });
      if (certs) intermediates.push(...certs);
    }
    // An explicitly configured event log path that does not exist is a typo; the default may be absent (no TPM
    // event log support in firmware), which is warned about at Configure.
    if (raw['event_log_path'] !== undefined) {
      await problems.check(() => requireFile(config.event_log_path, 'event_log_path'));
    }
    if (config.ima_log_path !== undefined) await problems.check(() => requireFile(config.ima_log_path!, 'ima_log_path'));
    if (config.tpm?.work_dir !== undefined) await problems.check(() => requireDirectory(config.tpm!.work_dir!, 'tpm.work_dir'));
    problems.throwIfAny();
    return { config, intermediates };
  }

  async close(): Promise<void> {
    if (this.#state?.device instanceof Tpm2Tools) this.#state.device.close();
  }

  async begin(_signal: AbortSignal): Promise<AgentAttestationSession> {
    const state = this.#state;
    if (!state) throw new NotConfigured('ERR_NOT_CONFIGURED', 'tpm agent attestor is not configured');
    const identity = await this.#identity(state);
    const read = this.#options.readFile ?? ((p: string) => readFile(p).then((b) => new Uint8Array(b)));
    // Read the logs fresh every time: a re-attestation must reflect the current boot.
    const eventLog = await this.#readLog(read, state.config.event_log_path, 'event log');
    const properties = await state.device.properties().catch(() => undefined);
    const payload = encodePayload({
      ek_pub: identity.ekPublic,
      ...(identity.ekCertificate ? { ek_cert: identity.ekCertificate } : {}),
      ...(identity.ekCertificate && state.intermediates.length ? { ek_intermediates: state.intermediates } : {}),
      ak_pub: identity.akPublic,
      ...(eventLog ? { event_log: eventLog } : {}),
      ...(properties
        ? {
            tpm: {
              manufacturer: properties.manufacturer,
              vendor: properties.vendorStrings.join(''),
              firmware_version: properties.firmwareVersion,
            },
          }
        : {}),
    });
    /** The IMA list as read right after the quote: every chunk and resend of this attestation is cut from it. */
    let imaAtQuote: Uint8Array | undefined;
    let quoted = false;
    return {
      payload,
      respond: async (challengeBytes) => {
        const resend = decodeImaResend(challengeBytes);
        if (resend) {
          // The next chunk of a long list, or the whole list when the server could not use the increment (another
          // boot since its state): from the bytes read after this attestation's quote, not read again per chunk.
          if (!quoted || !state.config.ima_log_path) throw new MalformedInput('ERR_WIRE_FIELD', 'IMA resend request before a quote, or without ima_log_path');
          const { ima_log, ima_total } = imaIncrement(imaAtQuote ?? new Uint8Array(0), resend.from, state.config.ima_chunk_bytes);
          return encodeImaResendResponse({ ima_log, ...(resend.from ? { ima_offset: resend.from } : {}), ...(ima_total !== undefined ? { ima_total } : {}) });
        }
        const challenge = decodeChallenge(challengeBytes);
        // Validate the server's request before the TPM sees it.
        const selection = PcrSelection.parse(challenge.pcrs);
        if (challenge.nonce.length < 16 || challenge.nonce.length > 64) {
          throw new MalformedInput('ERR_WIRE_FIELD', `challenge nonce must be 16..64 bytes, got ${challenge.nonce.length}`);
        }
        const secret = await state.device.activateCredential({
          akHandle: identity.akHandle,
          ekHandle: identity.ekHandle,
          ekKind: identity.ekKind,
          credentialBlob: challenge.credential,
        });
        const quote = await state.device.quote({ akHandle: identity.akHandle, selection: selection.toString(), nonce: challenge.nonce });
        quoted = true;
        // Read after the quote: entries appended meanwhile only make the log longer than PCR 10, which the server
        // handles (it verifies the quoted prefix); read before, they would make PCR 10 run ahead and fail.
        imaAtQuote = state.config.ima_log_path ? await this.#readLog(read, state.config.ima_log_path, 'IMA log', MAX_IMA_LIST_BYTES) : undefined;
        return encodeResponse({
          secret,
          attest: quote.attest,
          signature: quote.signature,
          pcr_values: quote.pcrValues,
          ...(imaAtQuote ? imaIncrement(imaAtQuote, challenge.ima_offset, state.config.ima_chunk_bytes) : {}),
        });
      },
    };
  }

  /** EK and AK are looked up (and the AK created and persisted) once per configuration. */
  #identity(state: AgentState): Promise<Identity> {
    state.identity ??= this.#loadIdentity(state).catch((err: unknown) => {
      state.identity = undefined; // retry on the next attestation
      throw err;
    });
    return state.identity;
  }

  async #loadIdentity(state: AgentState): Promise<Identity> {
    const { config, device } = state;
    const { kind: ekKind, certificate: nvCertificate } = await selectEk(device, config.ek_kind);
    const certificate = config.send_ek_certificate ? nvCertificate : undefined;
    const ek = await device.ekPublic(ekKind);
    const akAlg: AkAlg = config.ak_alg;
    const ak = await device.ensureAk({ handle: config.ak_handle ?? DEFAULT_AK_HANDLES[ekKind][akAlg], ekHandle: ek.handle, alg: akAlg });
    this.#log.info('TPM identity ready', {
      ek_kind: ekKind,
      ek_handle: `0x${ek.handle.toString(16)}`,
      ek_certificate: certificate !== undefined,
      ak_handle: `0x${ak.handle.toString(16)}`,
    });
    return {
      ekKind,
      ekHandle: ek.handle,
      ekPublic: ek.publicArea,
      ekCertificate: certificate,
      akHandle: ak.handle,
      akPublic: ak.publicArea,
    };
  }

  async #readLog(read: (p: string) => Promise<Uint8Array>, path: string, what: string, max = MAX_LOG_FILE_BYTES): Promise<Uint8Array | undefined> {
    try {
      const bytes = await read(path);
      if (bytes.length > max) {
        throw new MalformedInput('ERR_LOG_TOO_LARGE', `${what} ${path} is ${bytes.length} bytes, more than ${max}`);
      }
      return bytes;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.#log.warn(`No ${what} at ${path}; attesting without it`, { path });
        return undefined;
      }
      throw err;
    }
  }
}
