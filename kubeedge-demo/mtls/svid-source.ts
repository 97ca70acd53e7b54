/**
 * A SPIFFE Workload API client: streams FetchX509SVID from the local SPIRE agent and keeps the latest X.509-SVID.
 *
 * The agent pushes a new response whenever the SVID rotates (or the bundle changes); every valid response
 * replaces the current SVID and emits 'update'. When the stream fails the source reconnects with exponential
 * backoff and jitter, like go-spiffe's X509Source, except on CANCELLED (we, or the agent, cancelled the call)
 * and INVALID_ARGUMENT (the agent refuses the request itself, e.g. no security header): those stop the source
 * and emit 'stopped'. Everything else — UNAVAILABLE while the agent restarts, PERMISSION_DENIED "no identity
 * issued" while the registration entry is still propagating — is retried.
 */
import { EventEmitter } from 'node:events';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { clientConstructor, ServiceNames } from '../../src/plugin/protos.js';
import { spiffeIdOf, type X509Svid } from './spiffe-tls.js';

export type { X509Svid } from './spiffe-tls.js';

/** X509SVIDResponse as decoded with the repository's loader options (keepCase, bytes as Buffer). */
interface X509SvidResponse {
  svids: Array<{ spiffe_id: string; x509_svid: Buffer; x509_svid_key: Buffer; bundle: Buffer; hint: string }>;
}

export interface SvidSourceOptions {
  /** Workload API address; default $SPIFFE_ENDPOINT_SOCKET, e.g. `unix:///run/spire/sockets/agent.sock`. */
  readonly endpoint?: string;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  readonly log?: (message: string, fields?: Record<string, unknown>) => void;
}

export interface SvidSourceEvents {
  update: [svid: X509Svid];
  /** The stream broke; a reconnect is scheduled. */
  disconnected: [error: grpc.ServiceError];
  /** Terminal: no more updates will come. */
  stopped: [error: Error];
}

/** gRPC target for a SPIFFE_ENDPOINT_SOCKET value (`unix:///path` or `tcp://ip:port`). */
export function grpcTarget(endpoint: string): string {
  if (endpoint.startsWith('unix:')) return endpoint;
  if (endpoint.startsWith('tcp://')) return endpoint.slice('tcp://'.length);
  throw new Error(`SPIFFE endpoint "${endpoint}" must be unix:///path or tcp://ip:port`);
}

/** Splits concatenated ASN.1 DER values (the Workload API's certificate lists) into one buffer each. */
export function splitDer(bytes: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    if (bytes[offset] !== 0x30 || offset + 2 > bytes.length) throw new Error('certificate list is not a sequence of DER certificates');
    let length = bytes[offset + 1]!;
    let header = 2;
    if (length & 0x80) {
      const octets = length & 0x7f;
      if (octets < 1 || octets > 4 || offset + 2 + octets > bytes.length) throw new Error('bad DER length');
      length = 0;
      for (let i = 0; i < octets; i++) length = length * 256 + bytes[offset + 2 + i]!;
      header += octets;
    }
    const end = offset + header + length;
    if (end > bytes.length) throw new Error('truncated DER certificate');
    out.push(Buffer.from(bytes.subarray(offset, end)));
    offset = end;
  }
  return out;
}

/** Turns the first SVID of a response into PEM, checking that the leaf names the ID and matches the key. */
export function svidFromResponse(response: X509SvidResponse): X509Svid {
  const first = response.svids[0];
  if (!first) throw new Error('Workload API response holds no SVID');
  const chain = splitDer(first.x509_svid).map((der) => new X509Certificate(der));
  const bundle = splitDer(first.bundle).map((der) => new X509Certificate(der));
  const leaf = chain[0];
  if (!leaf || bundle.length === 0) throw new Error('SVID without certificates or without a trust bundle');
  const key = createPrivateKey({ key: first.x509_svid_key, format: 'der', type: 'pkcs8' });
  if (!leaf.checkPrivateKey(key)) throw new Error('SVID private key does not match its certificate');
  const spiffeId = spiffeIdOf(leaf);
  if (spiffeId !== first.spiffe_id) throw new Error(`SVID certificate names ${spiffeId}, the response says ${first.spiffe_id}`);
  return {
    spiffeId,
    certChainPem: chain.map((c) => c.toString()).join(''),
    keyPem: key.export({ format: 'pem', type: 'pkcs8' }).toString(),
    bundlePem: bundle.map((c) => c.toString()).join(''),
    leaf,
  };
}

const TERMINAL = new Set<number>([grpc.status.CANCELLED, grpc.status.INVALID_ARGUMENT]);

export class SvidSource extends EventEmitter<SvidSourceEvents> {
  readonly #target: string;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #log: (message: string, fields?: Record<string, unknown>) => void;
  #svid: X509Svid | undefined;
  #client: grpc.Client | undefined;
  #call: grpc.ClientReadableStream<X509SvidResponse> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #state: 'idle' | 'running' | 'stopped' = 'idle';

  constructor(options: SvidSourceOptions = {}) {
    super();
    const endpoint = options.endpoint ?? process.env['SPIFFE_ENDPOINT_SOCKET'];
    if (!endpoint) throw new Error('set SPIFFE_ENDPOINT_SOCKET (e.g. unix:///run/spire/sockets/agent.sock)');
    this.#target = grpcTarget(endpoint);
    this.#initialBackoffMs = options.initialBackoffMs ?? 500;
    this.#maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.#log = options.log ?? (() => undefined);
  }

  /** The latest SVID, or undefined before the first one arrived. */
  get current(): X509Svid | undefined {
    return this.#svid;
  }

  get state(): 'idle' | 'running' | 'stopped' {
    return this.#state;
  }

  start(): this {
    if (this.#state === 'idle') {
      this.#state = 'running';
      this.#connect();
    }
    return this;
  }

  /** Resolves with the current SVID, or the first one to arrive; rejects if the source stops first. */
  ready(): Promise<X509Svid> {
    if (this.#svid) return Promise.resolve(this.#svid);
    return new Promise((resolve, reject) => {
      const onUpdate = (svid: X509Svid): void => {
        this.off('stopped', onStopped);
        resolve(svid);
      };
      const onStopped = (err: Error): void => {
        this.off('update', onUpdate);
        reject(err);
      };
      this.once('update', onUpdate);
      this.once('stopped', onStopped);
    });
  }

  close(): void {
    if (this.#state === 'stopped') return;
    this.#state = 'stopped';
    clearTimeout(this.#timer);
    this.#teardown();
  }

  #connect(): void {
    const Client = clientConstructor(ServiceNames.workloadApi);
    // A fresh channel per attempt: no hidden channel-level reconnect backoff on top of ours.
    const client = new Client(this.#target, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set('workload.spiffe.io', 'true');
    const call = (client as unknown as { FetchX509SVID(req: object, md: grpc.Metadata): grpc.ClientReadableStream<X509SvidResponse> })
      .FetchX509SVID({}, metadata);
    this.#client = client;
    this.#call = call;

    call.on('data', (response: X509SvidResponse) => {
      let svid: X509Svid;
      try {
        svid = svidFromResponse(response);
      } catch (err) {
        this.#log('ignoring an invalid Workload API response', { error: (err as Error).message });
        return;
      }
      this.#failures = 0;
      this.#svid = svid;
      this.#log('X.509-SVID updated', { spiffe_id: svid.spiffeId, serial: svid.leaf.serialNumber, expires: svid.leaf.validTo });
      this.emit('update', svid);
    });
    call.on('error', (err: grpc.ServiceError) => this.#onEnd(call, err));
    call.on('status', (status: grpc.StatusObject) => {
      // A stream the agent ends with OK carries no more rotations: treat it like a dropped one.
      if (status.code !== grpc.status.OK) return;
      const ended = Object.assign(new Error('Workload API stream ended'), { code: grpc.status.UNAVAILABLE, details: 'stream ended by the agent', metadata: status.metadata });
      this.#onEnd(call, ended);
    });
  }

  #onEnd(call: grpc.ClientReadableStream<X509SvidResponse>, err: grpc.ServiceError): void {
    if (call !== this.#call || this.#state !== 'running') return;
    this.#teardown();
    if (TERMINAL.has(err.code)) {
      this.#state = 'stopped';
      this.#log('Workload API stream stopped', { code: grpc.status[err.code], details: err.details });
      this.emit('stopped', err);
      return;
    }
    const ceiling = Math.min(this.#maxBackoffMs, this.#initialBackoffMs * 2 ** this.#failures);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.#failures++;
    this.#log('Workload API stream failed, reconnecting', { code: grpc.status[err.code], details: err.details, retry_in_ms: delay });
    this.emit('disconnected', err);
    this.#timer = setTimeout(() => {
      if (this.#state === 'running') this.#connect();
    }, delay);
  }

  #teardown(): void {
    const call = this.#call;
    const client = this.#client;
    this.#call = undefined;
    this.#client = undefined;
    call?.cancel();
    client?.close();
  }
}
