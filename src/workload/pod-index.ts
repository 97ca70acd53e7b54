/**
 * @module workload/pod-index
 *
 * A node-local index of pods by pod UID and by container ID, kept fresh by polling the pod source (or by a
 * watch, for sources that have one). Attestation reads the index; it never fetches `/pods` itself.
 *
 * - Miss: one refresh (single-flight: every concurrent miss shares one request, and a request that started
 *   after the miss satisfies it), then retries with exponential backoff until `missRetryDeadlineMs`, then
 *   DeadlineExceeded (DEADLINE_EXCEEDED, as SPIRE's "no selectors found after max poll attempts").
 * - Source down: the last good snapshot keeps serving; staleness is logged and exposed (`status().ageMs`).
 *   Past `maxStalenessMs` every lookup fails with SourceUnavailable `ERR_WORKLOAD_SNAPSHOT_STALE`.
 */
import { Cancelled, DeadlineExceeded, PreconditionFailed, SourceUnavailable } from '../errors.js';
import type { Logger } from '../plugin/types.js';
import type { ContainerRuntime } from './cgroup.js';
import { WorkloadErrorCode } from './errors.js';
import { containerIdOfStatus, type K8sContainerStatus, type K8sPod } from './k8s-types.js';
import type { PodListResult, PodSource, WatchEvent } from './pod-source.js';
import { containerStatusSelectors, podSelectors, runtimeFromScheme } from './selectors.js';

export class IndexedPod {
  readonly pod: K8sPod;
  #selectors: readonly string[] | undefined;
  constructor(pod: K8sPod) {
    this.pod = pod;
  }
  /** Pod-level selectors, computed once per pod version. */
  get selectors(): readonly string[] {
    return (this.#selectors ??= podSelectors(this.pod));
  }
}

export class IndexedContainer {
  readonly pod: IndexedPod;
  readonly status: K8sContainerStatus;
  readonly runtime: ContainerRuntime | undefined;
  #selectors: readonly string[] | undefined;
  constructor(pod: IndexedPod, status: K8sContainerStatus, runtime: ContainerRuntime | undefined) {
    this.pod = pod;
    this.status = status;
    this.runtime = runtime;
  }
  get selectors(): readonly string[] {
    return (this.#selectors ??= containerStatusSelectors(this.status));
  }
}

/** An immutable view of the node's pods. */
export class PodSnapshot {
  readonly pods: ReadonlyMap<string, IndexedPod>;
  readonly byContainer: ReadonlyMap<string, readonly IndexedContainer[]>;
  /** When the request that produced this snapshot started (clock of the index). */
  readonly fetchStartedAt: number;
  readonly resourceVersion: string | undefined;

  constructor(pods: Iterable<K8sPod>, fetchStartedAt: number, resourceVersion?: string) {
    const byUid = new Map<string, IndexedPod>();
    for (const p of pods) byUid.set(p.metadata.uid.toLowerCase(), new IndexedPod(p));
    this.pods = byUid;
    this.byContainer = PodSnapshot.#indexContainers(byUid.values());
    this.fetchStartedAt = fetchStartedAt;
    this.resourceVersion = resourceVersion;
  }

  static #indexContainers(pods: Iterable<IndexedPod>): Map<string, IndexedContainer[]> {
    const out = new Map<string, IndexedContainer[]>();
    for (const ip of pods) {
      // SPIRE scans containerStatuses then initContainerStatuses; ephemeral containers are not workloads.
      for (const s of [...(ip.pod.status.containerStatuses ?? []), ...(ip.pod.status.initContainerStatuses ?? [])]) {
        const c = containerIdOfStatus(s);
        if (!c) continue;
        const list = out.get(c.id);
        const entry = new IndexedContainer(ip, s, runtimeFromScheme(c.scheme));
        if (list) list.push(entry);
        else out.set(c.id, [entry]);
      }
    }
    return out;
  }

  /** A new snapshot with one watch event applied. */
  apply(ev: Exclude<WatchEvent, { type: 'BOOKMARK' }>, at: number, rv: string | undefined): PodSnapshot {
    const pods = new Map<string, K8sPod>();
    for (const [uid, ip] of this.pods) pods.set(uid, ip.pod);
    const uid = ev.pod.metadata.uid.toLowerCase();
    if (ev.type === 'DELETED') pods.delete(uid);
    else pods.set(uid, ev.pod);
    return new PodSnapshot(pods.values(), at, rv);
  }
}

export interface IndexStatus {
  readonly source: string;
  /** Milliseconds since the snapshot was known current; 0 while a watch is connected; undefined before the first. */
  readonly ageMs: number | undefined;
  readonly live: boolean;
  readonly pods: number;
  readonly fetches: number;
  readonly bytesRead: number;
  readonly lastError: string | undefined;
}

export interface PodIndexOptions {
  readonly source: PodSource;
  readonly log: Logger;
  readonly pollIntervalMs: number;
  readonly maxStalenessMs: number;
  /** Minimum spacing between two requests to the source (protects it from a storm of misses). */
  readonly minRefreshGapMs?: number;
  readonly now?: () => number;
}

export interface ResolveQuery {
  readonly podUid?: string;
  readonly containerId: string;
  /** Match the pod by UID only (SPIRE `disable_container_selectors`). */
  readonly podOnly?: boolean;
}

export interface Resolved {
  readonly pod: IndexedPod;
  readonly container?: IndexedContainer;
}

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new Cancelled(WorkloadErrorCode.CANCELLED, 'attestation cancelled'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new Cancelled(WorkloadErrorCode.CANCELLED, 'attestation cancelled'));
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export class PodIndex {
  readonly #o: PodIndexOptions;
  readonly #now: () => number;
  readonly #abort = new AbortController();
  #snap: PodSnapshot | undefined;
  /** Last time the snapshot was confirmed current (list success or watch event). */
  #syncedAt = 0;
  #live = false;
  #inflight: { startedAt: number; promise: Promise<boolean> } | undefined;
  #lastRequestAt = Number.NEGATIVE_INFINITY;
  #fetches = 0;
  #bytes = 0;
  #lastError: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #staleWarnedAt = 0;

  constructor(o: PodIndexOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => performance.now());
  }

  get source(): PodSource {
    return this.#o.source;
  }

  /** First load (errors are logged, not thrown: the index keeps trying), then the poll timer or watch loop. */
  async start(seed?: PodListResult): Promise<void> {
    if (seed) {
      const now = this.#now();
      this.#fetches++;
      this.#bytes += seed.bytes;
      this.#snap = new PodSnapshot(seed.items, now, seed.resourceVersion);
      this.#syncedAt = now;
      this.#lastRequestAt = now;
    } else {
      await this.refresh();
    }
    if (this.#o.source.watch) {
      void this.#watchLoop();
    }
    this.#timer = setInterval(() => {
      if (!this.#live) void this.refresh();
    }, this.#o.pollIntervalMs);
    this.#timer.unref();
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#abort.abort();
    this.#o.source.close();
  }

  status(): IndexStatus {
    return {
      source: this.#o.source.name,
      ageMs: this.#snap === undefined ? undefined : this.#live ? 0 : Math.max(0, this.#now() - this.#syncedAt),
      live: this.#live,
      pods: this.#snap?.pods.size ?? 0,
      fetches: this.#fetches,
      bytesRead: this.#bytes,
      lastError: this.#lastError,
    };
  }

  /** Starts a list request now (or joins the one in flight). Resolves true on success; never rejects. */
  refresh(): Promise<boolean> {
    if (this.#inflight) return this.#inflight.promise;
    const startedAt = this.#now();
    this.#lastRequestAt = startedAt;
    const promise = this.#fetch(startedAt).finally(() => {
      if (this.#inflight?.promise === promise) this.#inflight = undefined;
    });
    this.#inflight = { startedAt, promise };
    return promise;
  }

  /**
   * Single-flight refresh for a miss seen at time `t`: joins the request in flight if there is one, returns at
   * once if a request started at or after `t` already completed, otherwise starts one (no sooner than
   * `minRefreshGapMs` after the previous request). Every concurrent miss thus shares one request.
   */
  async refreshNewerThan(t: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      if (this.#snap && this.#snap.fetchStartedAt >= t) return;
      if (this.#inflight) {
        await this.#inflight.promise;
        return;
      }
      const gap = (this.#o.minRefreshGapMs ?? 50) - (this.#now() - this.#lastRequestAt);
      if (gap > 0) {
        await sleep(gap, signal);
        continue;
      }
      await this.refresh();
      return;
    }
  }

  async #fetch(startedAt: number): Promise<boolean> {
    this.#fetches++;
    let res: PodListResult;
    try {
      res = await this.#o.source.list(this.#abort.signal);
    } catch (err) {
      this.#lastError = err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err);
      const source = this.#o.source;
      const probing = source.probing === true;
      if (this.#snap === undefined) {
        // Nothing to serve: say so instead of "serving the last snapshot" with no age.
        this.#o.log.warn(probing ? 'pod_source = "auto": no pod source answered yet; pods cannot be attested until one does' : 'pod source unreachable; no pod snapshot yet, pods cannot be attested until it answers', {
          source: probing ? 'auto' : source.name,
          endpoint: source.endpoint,
          error: this.#lastError,
        });
      } else {
        this.#o.log.warn('pod source unreachable; serving the last snapshot', {
          source: source.name,
          endpoint: source.endpoint,
          error: this.#lastError,
          snapshot_age_ms: Math.round(this.#now() - this.#syncedAt),
          max_staleness_ms: this.#o.maxStalenessMs,
        });
      }
      return false;
    }
    this.#bytes += res.bytes;
    this.#snap = new PodSnapshot(res.items, startedAt, res.resourceVersion);
    this.#syncedAt = this.#now();
    if (this.#lastError !== undefined) {
      this.#o.log.info('pod source reachable again', { source: this.#o.source.name, pods: res.items.length });
    }
    this.#lastError = undefined;
    return true;
  }

  async #watchLoop(): Promise<void> {
    const signal = this.#abort.signal;
    let backoff = 500;
    while (!signal.aborted) {
      const snap = this.#snap;
      if (!snap || snap.resourceVersion === undefined) {
        await sleep(backoff, signal).catch(() => undefined);
        backoff = Math.min(backoff * 2, 30_000);
        await this.refresh();
        continue;
      }
      let rv = snap.resourceVersion;
      try {
        await this.#o.source.watch!(
          rv,
          (ev) => {
            const now = this.#now();
            if (ev.type === 'BOOKMARK') {
              rv = ev.resourceVersion;
            } else {
              rv = ev.pod.metadata.resourceVersion ?? rv;
              this.#snap = (this.#snap ?? snap).apply(ev, now, rv);
            }
            this.#syncedAt = now;
          },
          (n) => {
            this.#bytes += n;
          },
          signal,
          () => {
            // The stream is open: from now on the snapshot is current until the stream ends.
            this.#live = true;
            this.#syncedAt = this.#now();
          },
        );
        this.#live = false;
        this.#syncedAt = this.#now();
        backoff = 500;
        // Clean end (server timeout): re-watch from where we are.
        if (this.#snap) this.#snap = new PodSnapshot([...this.#snap.pods.values()].map((p) => p.pod), this.#snap.fetchStartedAt, rv);
      } catch (err) {
        this.#live = false;
        if (signal.aborted) return;
        this.#o.log.warn('pod watch failed; listing again', {
          source: this.#o.source.name,
          error: err instanceof Error ? err.message : String(err),
        });
        await sleep(backoff, signal).catch(() => undefined);
        backoff = Math.min(backoff * 2, 30_000);
        await this.refresh();
      }
    }
  }

  /** The current snapshot, or a clear error when there is none or it is older than `maxStalenessMs`. */
  current(): PodSnapshot {
    const snap = this.#snap;
    if (!snap) {
      // The last failure goes into the message too: it is all SPIRE's agent logs of why the workload got no identity.
      const why = this.#lastError === undefined ? '' : ` (last attempt: ${this.#lastError})`;
      throw new SourceUnavailable(WorkloadErrorCode.NO_SNAPSHOT, `pod source ${this.#o.source.name} has not answered yet${why}`, {
        fields: { source: this.#o.source.name, endpoint: this.#o.source.endpoint, last_error: this.#lastError },
      });
    }
    if (!this.#live) {
      const age = this.#now() - this.#syncedAt;
      if (age > this.#o.maxStalenessMs) {
        throw new SourceUnavailable(
          WorkloadErrorCode.SNAPSHOT_STALE,
          `pod snapshot from ${this.#o.source.name} is ${Math.round(age / 1000)}s old, past max_staleness`,
          { fields: { source: this.#o.source.name, age_ms: Math.round(age), max_staleness_ms: this.#o.maxStalenessMs, last_error: this.#lastError } },
        );
      }
      if (this.#lastError !== undefined && this.#now() - this.#staleWarnedAt > 10_000) {
        this.#staleWarnedAt = this.#now();
        this.#o.log.warn('attesting from a stale pod snapshot', { source: this.#o.source.name, snapshot_age_ms: Math.round(age) });
      }
    }
    return snap;
  }

  /** One lookup in one snapshot: a hit, `undefined` for a miss, or PreconditionFailed for an ambiguous answer. */
  static match(snap: PodSnapshot, q: ResolveQuery): Resolved | undefined {
    const cid = q.containerId.toLowerCase();
    const byC = snap.byContainer.get(cid);
    if (byC && byC.length > 1) {
      throw new PreconditionFailed(WorkloadErrorCode.DUPLICATE_CONTAINER, `container ${cid} is listed in ${byC.length} pods`, {
        fields: { container_id: cid, rule: 'container-in-one-pod' },
      });
    }
    const hit = byC?.[0];
    if (q.podUid !== undefined) {
      const uid = q.podUid.toLowerCase();
      if (hit && hit.pod.pod.metadata.uid.toLowerCase() !== uid) {
        throw new PreconditionFailed(WorkloadErrorCode.DUPLICATE_CONTAINER, `container ${cid} belongs to another pod than its cgroup says`, {
          fields: { container_id: cid, pod_uid: uid, rule: 'cgroup-pod-matches-source' },
        });
      }
      const pod = snap.pods.get(uid);
      if (!pod) return undefined;
      if (q.podOnly) return hit ? { pod, container: hit } : { pod };
      return hit ? { pod, container: hit } : undefined;
    }
    return hit ? { pod: hit.pod, container: hit } : undefined;
  }

  /**
   * Finds the pod (and container) for a located process: the current snapshot first, then one shared refresh,
   * then retries with backoff until `deadlineMs` from now.
   */
  async resolve(q: ResolveQuery, deadlineMs: number, signal: AbortSignal): Promise<Resolved> {
    // No snapshot yet (the source was down at start): one shared, rate-limited refresh before giving up.
    if (!this.#snap) await this.refreshNewerThan(this.#now(), signal);
    const first = PodIndex.match(this.current(), q);
    if (first) return first;
    const t0 = this.#now();
    const deadline = t0 + deadlineMs;
    let backoff = 50;
    let since = t0;
    for (;;) {
      await this.refreshNewerThan(since, signal);
      const r = PodIndex.match(this.current(), q);
      if (r) return r;
      const now = this.#now();
      if (now >= deadline) break;
      const wait = Math.min(backoff, deadline - now);
      await sleep(wait, signal);
      backoff = Math.min(backoff * 2, 1000);
      since = this.#now();
    }
    throw new DeadlineExceeded(
      WorkloadErrorCode.POD_NOT_FOUND,
      `no pod for container ${q.containerId}${q.podUid ? ` (pod ${q.podUid})` : ''} in ${this.#o.source.name} after ${deadlineMs} ms`,
      { fields: { container_id: q.containerId, pod_uid: q.podUid, source: this.#o.source.name, deadline_ms: deadlineMs } },
    );
  }
}
