/**
 * Where decision events go: an append-only JSONL file (fsync'd per event, rotated by size) and/or an HTTPS webhook
 * (bounded on-disk queue, retry with backoff, optional mTLS with a certificate that is re-read per attempt, so an
 * SVID rotated on disk is picked up).
 *
 * Emitting never blocks or fails an attestation: `emit` only pushes onto a bounded in-memory queue and returns; a
 * background pump signs (optional EAR JWT) and writes. Every event that cannot be kept is counted and logged.
 */
import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { InvalidConfig } from '../errors.js';
import { block, duration, z } from '../plugin/config-schema.js';
import type { Logger } from '../plugin/types.js';
import { buildDecisionEvent, type DecisionEvent, type DecisionInput } from './decision-event.js';

/** Names this verifier in `ear.verifier-id`. */
export const VERIFIER_BUILD = 'spire-edge-attestors tpm-server 0.1.0';

const MiB = 1024 * 1024;

export const decisionEventsSchema = block(
  z.strictObject({
    /** Append-only JSONL file. */
    file: block(
      z.strictObject({
        path: z.string().min(1),
        /** Rotate once the file would grow past this many bytes. */
        max_bytes: z.number().int().min(4096).default(64 * MiB),
        /** Rotated files kept: <path>.1 (newest) .. <path>.<keep>. */
        keep: z.number().int().min(1).max(100).default(5),
      }),
    ).optional(),
    /** HTTPS webhook: one POST of one JSON event per request. */
    webhook: block(
      z.strictObject({
        url: z.url({ protocol: /^https$/, error: 'expected an https:// URL' }),
        /** Directory of the on-disk queue (created, mode 0700). */
        queue_dir: z.string().min(1),
        queue_max_events: z.number().int().min(1).max(1_000_000).default(10_000),
        /** PEM roots for the receiver's certificate; default: the system roots. */
        ca_path: z.string().min(1).optional(),
        /** Client certificate and key for mTLS (for example an SVID written by spire-agent); re-read per attempt. */
        cert_path: z.string().min(1).optional(),
        key_path: z.string().min(1).optional(),
        timeout: duration().default(5_000),
        /** Longest wait between retries. */
        max_backoff: duration().default(60_000),
      }),
    ).optional(),
    /** PKCS#8 PEM private key (EC P-256/P-384, Ed25519 or RSA): signs the EAR as a JWT in `ear_jwt`. */
    signing_key_path: z.string().min(1).optional(),
    /** `kid` header of the EAR JWT. */
    signing_key_id: z.string().min(1).max(256).optional(),
    /** Events waiting for the pump; past this, new events are dropped and counted. */
    max_pending: z.number().int().min(1).max(100_000).default(1_000),
  }).refine((c) => c.file !== undefined || c.webhook !== undefined, { message: 'set a file { } or webhook { } sink, or both' })
    .refine((c) => c.webhook === undefined || (c.webhook.cert_path === undefined) === (c.webhook.key_path === undefined), {
      message: 'webhook: set cert_path and key_path together',
    }),
);
export type DecisionEventsConfig = z.output<typeof decisionEventsSchema>;

export interface EventStats {
  emitted: number;
  /** Per sink: events durably handed over (file fsync'd / webhook 2xx). */
  delivered: Record<string, number>;
  /** Per reason: events that were lost, each logged. */
  dropped: Record<string, number>;
}

interface Sink {
  readonly name: string;
  write(line: string): Promise<void>;
  /** Picks up work a previous process left (the webhook's on-disk queue). */
  resume?(): void;
  close(): Promise<void>;
}

/** A signing key and the JWS algorithm its type implies. */
interface Signer {
  readonly key: KeyObject;
  readonly alg: string;
  readonly kid?: string;
}

function signerFromPem(pem: string, kid: string | undefined): Signer {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "decision_events.signing_key_path": not a PEM private key: ${(err as Error).message}`);
  }
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const alg =
    type === 'ec' && curve === 'prime256v1' ? 'ES256' : type === 'ec' && curve === 'secp384r1' ? 'ES384' : type === 'ed25519' ? 'EdDSA' : type === 'rsa' ? 'PS256' : undefined;
  if (!alg) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "decision_events.signing_key_path": unsupported key type ${type}${curve ? ` (${curve})` : ''}`);
  }
  return { key, alg, ...(kid ? { kid } : {}) };
}

/** Signs the EAR claims; the JWT `typ` follows the EAR media type. */
export async function signEar(event: DecisionEvent, signer: Signer): Promise<string> {
  return new SignJWT({ ...event.ear } as Record<string, unknown>)
    .setProtectedHeader({ alg: signer.alg, typ: 'application/eat+jwt', ...(signer.kid ? { kid: signer.kid } : {}) })
    .sign(signer.key);
}

export class DecisionEvents {
  readonly stats: EventStats = { emitted: 0, delivered: {}, dropped: {} };
  readonly #log: Logger;
  readonly #sinks: Sink[];
  readonly #signer: Signer | undefined;
  readonly #maxPending: number;
  readonly #pending: DecisionEvent[] = [];
  #pumping: Promise<void> | undefined;
  #lastDropLog = 0;

  private constructor(log: Logger, sinks: Sink[], signer: Signer | undefined, maxPending: number) {
    this.#log = log;
    this.#sinks = sinks;
    this.#signer = signer;
    this.#maxPending = maxPending;
  }

  /** Checks the configuration and reads the signing key; opens no file until the first event. */
  static async load(config: DecisionEventsConfig, log: Logger, readFileBytes: (p: string) => Promise<Uint8Array>): Promise<DecisionEvents> {
    let signer: Signer | undefined;
    if (config.signing_key_path) {
      let pem: string;
      try {
        pem = Buffer.from(await readFileBytes(config.signing_key_path)).toString('utf8');
      } catch (err) {
        throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "decision_events.signing_key_path": cannot read ${config.signing_key_path}: ${(err as Error).message}`);
      }
      signer = signerFromPem(pem, config.signing_key_id);
    }
    const events = new DecisionEvents(log, [], signer, config.max_pending);
    if (config.file) events.#sinks.push(new FileSink(config.file));
    if (config.webhook) events.#sinks.push(new WebhookSink(config.webhook, log, (reason) => events.#dropped(reason, 1)));
    return events;
  }

  /** Called once the configuration is in force (not by validate): delivers what an earlier process queued. */
  start(): void {
    for (const sink of this.#sinks) sink.resume?.();
  }

  /** Never throws, never waits. */
  emit(event: DecisionEvent): void {
    this.stats.emitted++;
    if (this.#pending.length >= this.#maxPending) {
      this.#dropped('queue_full', 1, event);
      return;
    }
    this.#pending.push(event);
    this.#pumping ??= this.#pump().finally(() => (this.#pumping = undefined));
  }

  /** Resolves once every event emitted so far has been handed to every sink. */
  async flush(): Promise<void> {
    while (this.#pumping) await this.#pumping;
  }

  async close(): Promise<void> {
    await this.flush();
    await Promise.all(this.#sinks.map((s) => s.close().catch(() => undefined)));
  }

  async #pump(): Promise<void> {
    for (let event = this.#pending.shift(); event; event = this.#pending.shift()) {
      if (this.#signer) {
        try {
          event.ear_jwt = await signEar(event, this.#signer);
        } catch (err) {
          this.#log.error('Decision event: signing the EAR failed; the event goes unsigned', { event_id: event.event_id, error: (err as Error).message });
        }
      }
      const line = JSON.stringify(event) + '\n';
      for (const sink of this.#sinks) {
        try {
          await sink.write(line);
          this.stats.delivered[sink.name] = (this.stats.delivered[sink.name] ?? 0) + 1;
        } catch (err) {
          this.#dropped(`${sink.name}_write_failed`, 1, event, (err as Error).message);
        }
      }
    }
  }

  #dropped(reason: string, count: number, event?: DecisionEvent, error?: string): void {
    this.stats.dropped[reason] = (this.stats.dropped[reason] ?? 0) + count;
    const total = Object.values(this.stats.dropped).reduce((a, b) => a + b, 0);
    // Every loss is counted; the log says so at most once a second, with the running totals, so a flood of drops
    // cannot flood SPIRE's log too. Write failures carry their error and are always logged.
    const now = Date.now();
    if (error !== undefined || now - this.#lastDropLog >= 1000 || total === 1) {
      this.#lastDropLog = now;
      this.#log.error('Decision event dropped', {
        reason,
        dropped_total: total,
        ...Object.fromEntries(Object.entries(this.stats.dropped).map(([k, v]) => [`dropped_${k}`, v])),
        event_id: event?.event_id,
        agent_id: event?.agent_id,
        outcome: event?.outcome,
        error,
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// JSONL file

type FileConfig = NonNullable<DecisionEventsConfig['file']>;

export class FileSink implements Sink {
  readonly name = 'file';
  readonly #config: FileConfig;
  #handle: FileHandle | undefined;
  #size = 0;

  constructor(config: FileConfig) {
    this.#config = config;
  }

  async write(line: string): Promise<void> {
    const bytes = Buffer.from(line, 'utf8');
    if (!this.#handle) await this.#open();
    if (this.#size > 0 && this.#size + bytes.length > this.#config.max_bytes) await this.#rotate();
    await this.#handle!.write(bytes);
    await this.#handle!.sync();
    this.#size += bytes.length;
  }

  async #open(): Promise<void> {
    this.#handle = await open(this.#config.path, 'a', 0o640);
    this.#size = (await this.#handle.stat()).size;
  }

  /** <path> → <path>.1 → … → <path>.<keep>; the oldest goes. Readers follow by inode (see src/revocation/tail.ts). */
  async #rotate(): Promise<void> {
    await this.#handle?.close();
    this.#handle = undefined;
    const { path, keep } = this.#config;
    await rm(`${path}.${keep}`, { force: true });
    for (let i = keep - 1; i >= 1; i--) await rename(`${path}.${i}`, `${path}.${i + 1}`).catch(() => undefined);
    await rename(path, `${path}.1`);
    await this.#open();
  }

  async close(): Promise<void> {
    await this.#handle?.close();
    this.#handle = undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTPS webhook

type WebhookConfig = NonNullable<DecisionEventsConfig['webhook']>;

const MIN_BACKOFF_MS = 250;
const MAX_RESPONSE_BYTES = 64 * 1024;

export class WebhookSink implements Sink {
  readonly name = 'webhook';
  readonly #config: WebhookConfig;
  readonly #log: Logger;
  readonly #onDrop: (reason: string) => void;
  #seq = 0;
  #queued: number | undefined;
  #sending: Promise<void> | undefined;
  #closed = false;
  #wake: (() => void) | undefined;

  constructor(config: WebhookConfig, log: Logger, onDrop: (reason: string) => void) {
    this.#config = config;
    this.#log = log;
    this.#onDrop = onDrop;
  }

  /** Queues the event on disk (bounded) and returns; delivery is the sender loop's job. */
  async write(line: string): Promise<void> {
    const dir = this.#config.queue_dir;
    if (this.#queued === undefined) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      this.#queued = (await readdir(dir)).filter((f) => f.endsWith('.json')).length;
    }
    if (this.#queued >= this.#config.queue_max_events) {
      throw new Error(`webhook queue ${dir} is full (${this.#config.queue_max_events} events)`);
    }
    // Names sort by time then sequence, so the sender delivers in emission order across restarts.
    const name = `${Date.now().toString().padStart(15, '0')}-${String(this.#seq++).padStart(9, '0')}-${randomUUID()}.json`;
    const tmp = join(dir, `.${name}.tmp`);
    await writeFile(tmp, line, { mode: 0o600, flush: true });
    await rename(tmp, join(dir, name));
    this.#queued++;
    this.#sending ??= this.#sendLoop().finally(() => (this.#sending = undefined));
    this.#wake?.();
  }

  resume(): void {
    this.#sending ??= this.#sendLoop()
      .catch((err: Error) => this.#log.error('Decision event webhook: cannot read the queue', { queue_dir: this.#config.queue_dir, error: err.message }))
      .finally(() => (this.#sending = undefined));
  }

  async #sendLoop(): Promise<void> {
    let backoff = MIN_BACKOFF_MS;
    while (!this.#closed) {
      await mkdir(this.#config.queue_dir, { recursive: true, mode: 0o700 });
      const files = (await readdir(this.#config.queue_dir)).filter((f) => f.endsWith('.json')).sort();
      this.#queued = files.length;
      if (files.length === 0) return;
      const file = join(this.#config.queue_dir, files[0]!);
      let body: string;
      try {
        body = await readFile(file, 'utf8');
      } catch {
        continue; // removed meanwhile
      }
      const result = await this.#post(body).catch((err: Error) => ({ status: 0, error: err.message }));
      if (result.status >= 200 && result.status < 300) {
        await rm(file, { force: true });
        backoff = MIN_BACKOFF_MS;
        continue;
      }
      // A 4xx other than 408/429 will never succeed: keep the queue moving, count and log the loss.
      if (result.status >= 400 && result.status < 500 && result.status !== 408 && result.status !== 429) {
        await rm(file, { force: true });
        this.#onDrop(`webhook_rejected_${result.status}`);
        continue;
      }
      this.#log.warn('Decision event webhook: delivery failed, will retry', {
        url: this.#config.url,
        status: result.status,
        error: 'error' in result ? result.error : undefined,
        retry_in_ms: backoff,
        queued: files.length,
      });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff);
        timer.unref();
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      backoff = Math.min(backoff * 2, this.#config.max_backoff);
    }
  }

  async #post(body: string): Promise<{ status: number }> {
    const c = this.#config;
    const [ca, cert, key] = await Promise.all([c.ca_path, c.cert_path, c.key_path].map((p) => (p ? readFile(p) : Promise.resolve(undefined))));
    const agent = new Agent({ ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}), keepAlive: false });
    return new Promise((resolve, reject) => {
      const req = request(c.url, { method: 'POST', agent, timeout: c.timeout, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let seen = 0;
        res.on('data', (d: Buffer) => {
          seen += d.length;
          if (seen > MAX_RESPONSE_BYTES) res.destroy();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${c.timeout} ms`)));
      req.on('error', reject);
      req.end(body);
    }).finally(() => agent.destroy()) as Promise<{ status: number }>;
  }

  /** Resolves when the on-disk queue is empty (tests, shutdown). */
  async drained(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.#sending && this.#queued === 0) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  }

  async close(): Promise<void> {
    // Undelivered events stay in queue_dir and are sent by the next process that opens it.
    this.#closed = true;
    this.#wake?.();
    await stat(this.#config.queue_dir).catch(() => undefined);
  }
}

/** The server's one call per decision: builds and emits the event; never throws, whatever the input. */
export function recordDecision(
  events: DecisionEvents | undefined,
  log: Logger,
  input: Omit<DecisionInput, 'eventId' | 'verifierBuild'>,
): void {
  if (!events) return;
  try {
    events.emit(buildDecisionEvent({ ...input, eventId: randomUUID(), verifierBuild: VERIFIER_BUILD }));
  } catch (err) {
    log.error('Decision event could not be built; the decision stands', { error: (err as Error).message });
  }
}
