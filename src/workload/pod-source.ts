/**
 * @module workload/pod-source
 *
 * `PodSource`: where pod metadata comes from. Every source returns the node's pods as one list (kubelet-style
 * `/pods` or a Kubernetes-API list with a node field selector); API-style sources can also stream a watch.
 * The pod index (pod-index.ts) owns caching: a source is only asked at start-up, on the poll timer, and on a
 * single-flight refresh after a miss, never once per attestation.
 *
 * Transport: node:http / node:https with a keep-alive agent, a timeout on every request, a byte cap on every
 * body, the bearer token and CA re-read from disk on each request (projected tokens rotate). TLS verification is
 * on unless the configuration turns it off explicitly.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Cancelled, MalformedInput, SourceUnavailable } from '../errors.js';
import { WorkloadErrorCode } from './errors.js';
import { decodePod, decodePodList, type K8sPod, type K8sPodList } from './k8s-types.js';
import { isLoopbackHost, parseLoopbackListeners } from './listener.js';
import { readOwnTcpTables } from './procfs.js';

export type PodSourceName = 'kubelet' | 'edged' | 'metaserver' | 'apiserver';

export interface PodListResult extends K8sPodList {
  /** Bytes of body read from the source for this list. */
  readonly bytes: number;
}

export type WatchEvent =
  | { readonly type: 'ADDED' | 'MODIFIED' | 'DELETED'; readonly pod: K8sPod }
  | { readonly type: 'BOOKMARK'; readonly resourceVersion: string };

export interface PodSource {
  readonly name: PodSourceName;
  /** A human-readable endpoint for logs (never includes a token). */
  readonly endpoint: string;
  /** True while `pod_source = "auto"` is still looking for a source: `name` is then a placeholder. */
  readonly probing?: boolean;
  list(signal: AbortSignal): Promise<PodListResult>;
  /**
   * Optional: stream changes after `resourceVersion`. Resolves when the server ends the stream; rejects on
   * error (410 Gone included: the caller lists again). `onBytes` reports body bytes as they arrive.
   */
  watch?(
    resourceVersion: string,
    onEvent: (e: WatchEvent) => void,
    onBytes: (n: number) => void,
    signal: AbortSignal,
    onOpen?: () => void,
  ): Promise<void>;
  close(): void;
}

export interface HttpSourceOptions {
  readonly name: PodSourceName;
  /** Base URL, e.g. `https://127.0.0.1:10250`. */
  readonly baseUrl: string;
  /** Path and query of the list request, e.g. `/pods`. */
  readonly listPath: string;
  /** Path and query of the watch request (without resourceVersion); undefined = no watch. */
  readonly watchPath?: string;
  readonly caPath?: string;
  readonly tokenPath?: string;
  readonly clientCertPath?: string;
  readonly clientKeyPath?: string;
  /** Must be set to true explicitly to disable server certificate verification. */
  readonly skipVerification?: boolean;
  /** TLS server name to verify instead of the URL host (e.g. the node name on the kubelet certificate). */
  readonly tlsServerName?: string;
  readonly timeoutMs: number;
  readonly maxBodyBytes: number;
  /**
   * For plain-HTTP loopback URLs: the uid that must own every socket listening on the port, checked before each
   * request (nothing in plain HTTP says who answered). Undefined: no check (https, or a remote host).
   */
  readonly loopbackOwnerUid?: number;
  /** Where the listening sockets are read (procfs.ts readOwnTcpTables); default: this process's network namespace. */
  readonly procNetDir?: string;
}

const TLS_ERROR_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/**
 * The TLS failure behind a request error, if any. OpenSSL reports a peer that answers TLS with plain HTTP as EPROTO
 * ("wrong version number"), not by an error code of its own.
 */
function tlsFailureCode(err: NodeJS.ErrnoException, protocol: string): string | undefined {
  if (err.code !== undefined && TLS_ERROR_CODES.has(err.code)) return err.code;
  if (protocol === 'https:' && err.code === 'EPROTO' && /wrong version number/i.test(err.message)) return 'ERR_SSL_WRONG_VERSION_NUMBER';
  return undefined;
}

/** A credential file read failed: says which file, what it is for, and why. */
class CredentialFileError extends Error {
  constructor(
    readonly what: string,
    readonly path: string,
    readonly errno: string | undefined,
    cause: unknown,
  ) {
    super(`cannot read the ${what} ${path}: ${errno === 'ENOENT' ? 'no such file' : errno === 'EACCES' ? 'permission denied' : (errno ?? String((cause as Error)?.message ?? cause))}${errno ? ` (${errno})` : ''}`, { cause });
  }
}

function readCredential(path: string | undefined, what: string): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CredentialFileError(what, path, (err as NodeJS.ErrnoException).code, err);
  }
}

/**
 * One line of a watch stream: the event it carries, 'error' for an ERROR event (the caller ends the watch), or
 * undefined for a line to skip (an unknown type, a bookmark without a resource version).
 */
export function decodeWatchLine(line: string, source: string): WatchEvent | 'error' | undefined {
  let ev: { type?: unknown; object?: unknown };
  try {
    ev = JSON.parse(line) as { type?: unknown; object?: unknown };
  } catch (err) {
    throw new MalformedInput(WorkloadErrorCode.SOURCE_BODY, `${source}: watch event is not JSON`, { fields: { source }, cause: err });
  }
  if (typeof ev !== 'object' || ev === null || Array.isArray(ev)) {
    throw new MalformedInput(WorkloadErrorCode.SOURCE_BODY, `${source}: watch event is not an object`, { fields: { source } });
  }
  if (ev.type === 'ADDED' || ev.type === 'MODIFIED' || ev.type === 'DELETED') return { type: ev.type, pod: decodePod(ev.object) };
  if (ev.type === 'BOOKMARK') {
    const md = (ev.object as { metadata?: { resourceVersion?: unknown } } | undefined)?.metadata;
    return typeof md?.resourceVersion === 'string' ? { type: 'BOOKMARK', resourceVersion: md.resourceVersion } : undefined;
  }
  return ev.type === 'ERROR' ? 'error' : undefined;
}

export class HttpPodSource implements PodSource {
  readonly name: PodSourceName;
  readonly endpoint: string;
  readonly #opts: HttpSourceOptions;
  readonly #url: URL;
  readonly #agent: http.Agent;
  readonly watch?: PodSource['watch'];

  constructor(opts: HttpSourceOptions) {
    this.#opts = opts;
    this.name = opts.name;
    this.#url = new URL(opts.baseUrl);
    if (this.#url.protocol !== 'http:' && this.#url.protocol !== 'https:') {
      throw new MalformedInput(WorkloadErrorCode.CONFIG, `${opts.name}: URL must be http or https`, { fields: { source: opts.name } });
    }
    this.endpoint = `${this.#url.origin}${opts.listPath.split('?')[0]}`;
    this.#agent = this.#url.protocol === 'https:' ? new https.Agent({ keepAlive: true, maxSockets: 4 }) : new http.Agent({ keepAlive: true, maxSockets: 4 });
    if (opts.watchPath !== undefined) this.watch = (rv, onEvent, onBytes, signal, onOpen) => this.#watch(rv, onEvent, onBytes, signal, onOpen);
  }

  close(): void {
    this.#agent.destroy();
  }

  #unavailable(code: string, message: string, cause?: unknown): SourceUnavailable {
    return new SourceUnavailable(code, `${this.name} ${this.endpoint}: ${message}`, {
      fields: { source: this.name, endpoint: this.endpoint },
      ...(cause !== undefined ? { cause } : {}),
    });
  }

  /** One GET. A keep-alive socket the server closed meanwhile (ECONNRESET on a reused socket) is retried once. */
  /** Refuses the request when something other than the expected user listens on the loopback port. */
  #checkLoopbackListener(): SourceUnavailable | undefined {
    const expected = this.#opts.loopbackOwnerUid;
    if (expected === undefined || this.#url.protocol !== 'http:' || !isLoopbackHost(this.#url.hostname)) return undefined;
    const port = Number(this.#url.port || 80);
    let tables: { tcp: string; tcp6: string | undefined };
    try {
      tables = readOwnTcpTables(this.#opts.procNetDir);
    } catch (err) {
      return this.#unavailable(WorkloadErrorCode.SOURCE_UNTRUSTED_LISTENER, `cannot read the TCP socket table to check who listens on port ${port}`, err);
    }
    const listeners = [
      ...parseLoopbackListeners(tables.tcp, false),
      ...(tables.tcp6 === undefined ? [] : parseLoopbackListeners(tables.tcp6, true)),
    ].filter((l) => l.port === port);
    if (listeners.length === 0) return this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, `nothing listens on port ${port}`);
    const foreign = listeners.find((l) => l.uid !== expected);
    if (foreign) {
      return this.#unavailable(
        WorkloadErrorCode.SOURCE_UNTRUSTED_LISTENER,
        `port ${port} is held by uid ${foreign.uid} (socket inode ${foreign.inode}), not uid ${expected}: refusing unauthenticated pod data from it`,
      );
    }
    return undefined;
  }

  #request(pathAndQuery: string, signal: AbortSignal, timeoutMs: number | undefined, retried = false): Promise<http.IncomingMessage> {
    const o = this.#opts;
    const impostor = this.#checkLoopbackListener();
    if (impostor) return Promise.reject(impostor);
    const headers: Record<string, string> = { accept: 'application/json' };
    let tlsOpts: https.RequestOptions = {};
    try {
      const token = readCredential(o.tokenPath, 'service account token')?.toString('utf8').trim();
      if (token) headers['authorization'] = `Bearer ${token}`;
      if (this.#url.protocol === 'https:') {
        const ca = readCredential(o.caPath, 'CA bundle');
        tlsOpts = {
          rejectUnauthorized: o.skipVerification !== true,
          ...(ca ? { ca } : {}),
          ...(o.clientCertPath ? { cert: readCredential(o.clientCertPath, 'client certificate') } : {}),
          ...(o.clientKeyPath ? { key: readCredential(o.clientKeyPath, 'client key') } : {}),
          ...(o.tlsServerName ? { servername: o.tlsServerName } : {}),
        };
      }
    } catch (err) {
      if (err instanceof CredentialFileError) {
        return Promise.reject(
          new SourceUnavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, `${this.name} ${this.endpoint}: ${err.message}`, {
            fields: { source: this.name, endpoint: this.endpoint, path: err.path, file: err.what },
            cause: err,
          }),
        );
      }
      return Promise.reject(this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, `cannot read a credential file: ${(err as Error).message}`, err));
    }
    const mod = this.#url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(new Cancelled(WorkloadErrorCode.CANCELLED, `${this.name}: request cancelled`));
        return;
      }
      const req = mod.request(
        {
          protocol: this.#url.protocol,
          hostname: this.#url.hostname,
          port: this.#url.port,
          path: pathAndQuery,
          method: 'GET',
          headers,
          agent: this.#agent,
          ...tlsOpts,
          signal,
        },
        (res) => resolve(res),
      );
      if (timeoutMs !== undefined) {
        req.setTimeout(timeoutMs, () => req.destroy(this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, `no response within ${timeoutMs} ms`)));
      }
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (!retried && req.reusedSocket && err.code === 'ECONNRESET' && !signal.aborted) {
          resolve(this.#request(pathAndQuery, signal, timeoutMs, true));
          return;
        }
        const tlsCode = tlsFailureCode(err, this.#url.protocol);
        if (signal.aborted) reject(new Cancelled(WorkloadErrorCode.CANCELLED, `${this.name}: request cancelled`));
        else if (err instanceof SourceUnavailable) reject(err);
        else if (tlsCode !== undefined) reject(this.#unavailable(WorkloadErrorCode.SOURCE_TLS, `TLS verification failed (${tlsCode})`, err));
        else reject(this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, `request failed (${err.code ?? err.message})`, err));
      });
      req.end();
    });
  }

  async list(signal: AbortSignal): Promise<PodListResult> {
    const { json, bytes } = await this.getJson(this.#opts.listPath, signal);
    return { ...decodePodList(json), bytes };
  }

  /** One GET of `pathAndQuery` on this source's endpoint, with its credentials, timeout and body cap. */
  async getJson(pathAndQuery: string, signal: AbortSignal): Promise<{ json: unknown; bytes: number }> {
    const res = await this.#request(pathAndQuery, signal, this.#opts.timeoutMs);
    const chunks: Buffer[] = [];
    let bytes = 0;
    const cap = this.#opts.maxBodyBytes;
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => res.destroy(this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, 'body not received in time')), this.#opts.timeoutMs);
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          if (bytes > cap) res.destroy(this.#unavailable(WorkloadErrorCode.SOURCE_TOO_LARGE, `body larger than ${cap} bytes`));
          else chunks.push(c);
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve();
        });
        res.on('error', (e) => {
          clearTimeout(timer);
          reject(e instanceof SourceUnavailable ? e : this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, 'body read failed', e));
        });
        res.on('close', () => {
          clearTimeout(timer);
          if (!res.complete) reject(this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, 'connection closed mid-body'));
        });
      });
    } catch (err) {
      if (signal.aborted) throw new Cancelled(WorkloadErrorCode.CANCELLED, `${this.name}: request cancelled`);
      throw err;
    }
    if (res.statusCode !== 200) {
      throw this.#unavailable(WorkloadErrorCode.SOURCE_HTTP_STATUS, `HTTP ${res.statusCode ?? 0}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      throw new MalformedInput(WorkloadErrorCode.SOURCE_BODY, `${this.name}: body is not JSON`, { fields: { source: this.name }, cause: err });
    }
    return { json, bytes };
  }

  async #watch(rv: string, onEvent: (e: WatchEvent) => void, onBytes: (n: number) => void, signal: AbortSignal, onOpen?: () => void): Promise<void> {
    const sep = this.#opts.watchPath!.includes('?') ? '&' : '?';
    const path = `${this.#opts.watchPath!}${sep}resourceVersion=${encodeURIComponent(rv)}&allowWatchBookmarks=true`;
    // Idle timeout for the stream: bookmarks arrive about once a minute, so allow two of them to be missed.
    const res = await this.#request(path, signal, Math.max(this.#opts.timeoutMs, 150_000));
    if (res.statusCode !== 200) {
      res.resume();
      throw this.#unavailable(WorkloadErrorCode.SOURCE_HTTP_STATUS, `watch HTTP ${res.statusCode ?? 0}`);
    }
    onOpen?.();
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        onBytes(Buffer.byteLength(chunk));
        buf += chunk;
        if (buf.length > this.#opts.maxBodyBytes) {
          res.destroy(this.#unavailable(WorkloadErrorCode.SOURCE_TOO_LARGE, 'watch event too large'));
          return;
        }
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === '') continue;
          try {
            const ev = decodeWatchLine(line, this.name);
            if (ev === 'error') {
              res.destroy(this.#unavailable(WorkloadErrorCode.SOURCE_HTTP_STATUS, 'watch ERROR event (resource version expired?)'));
              return;
            }
            if (ev !== undefined) onEvent(ev);
          } catch (err) {
            res.destroy(err instanceof Error ? err : new Error(String(err)));
            return;
          }
        }
      });
      res.on('end', () => resolve());
      res.on('error', (e) => reject(e));
      res.on('close', () => (signal.aborted ? resolve() : res.complete ? resolve() : reject(this.#unavailable(WorkloadErrorCode.SOURCE_UNAVAILABLE, 'watch closed'))));
    });
  }
}

