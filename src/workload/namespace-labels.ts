/**
 * @module workload/namespace-labels
 *
 * `ns-label:<key>:<value>` selectors (SPIRE k8s `enable_namespace_labels`, SPIRE 1.15.3): the labels of the
 * workload pod's namespace. SPIRE GETs the namespace from the API server at every attestation; we keep a
 * node-local cache the way the pod index does: one list of `/api/v1/namespaces` (API server, or KubeEdge
 * MetaServer, which answers from the edge's local store while offline) at start and on the poll timer, one
 * shared refresh when a pod's namespace is not in it, and the last snapshot served until `max_staleness`.
 * Needs RBAC `list` on namespaces. Fails closed: no labels known means no selectors, never partial ones.
 */
import { MalformedInput, SourceUnavailable } from '../errors.js';
import type { Logger } from '../plugin/types.js';
import { WorkloadErrorCode } from './errors.js';
import { sleep } from './pod-index.js';
import type { HttpPodSource } from './pod-source.js';

export const NAMESPACES_PATH = '/api/v1/namespaces';
/** A namespace missing from a list is refetched at most this often (a storm of misses must not hammer the API). */
const MIN_MISS_REFRESH_GAP_MS = 1_000;

function bad(what: string): never {
  throw new MalformedInput(WorkloadErrorCode.SOURCE_BODY, `namespace list: ${what}`, { fields: { rule: 'namespace-list-shape' } });
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A NamespaceList (kind NamespaceList, items[].metadata.{name,labels}) as name → labels. */
export function decodeNamespaceList(json: unknown): Map<string, Readonly<Record<string, string>>> {
  if (!isObj(json)) bad('body is not an object');
  if (json['kind'] !== undefined && json['kind'] !== 'NamespaceList') bad(`kind is ${JSON.stringify(json['kind']).slice(0, 40)}, not NamespaceList`);
  const items = json['items'];
  if (items === null || items === undefined) return new Map();
  if (!Array.isArray(items)) bad('items is not a list');
  const out = new Map<string, Readonly<Record<string, string>>>();
  items.forEach((item, i) => {
    const md = isObj(item) ? item['metadata'] : undefined;
    if (!isObj(md) || typeof md['name'] !== 'string' || md['name'] === '') bad(`items[${i}] has no metadata.name`);
    const labels = md['labels'] ?? {};
    if (!isObj(labels)) bad(`items[${i}].metadata.labels is not a map`);
    for (const [k, v] of Object.entries(labels)) if (typeof v !== 'string') bad(`items[${i}].metadata.labels.${k} is not a string`);
    out.set(md['name'], Object.freeze({ ...(labels as Record<string, string>) }));
  });
  return out;
}

export function namespaceLabelSelectors(labels: Readonly<Record<string, string>>): string[] {
  return Object.entries(labels).map(([k, v]) => `ns-label:${k}:${v}`);
}

export interface NamespaceLabelIndexOptions {
  /** API server or MetaServer endpoint; only its transport is used (getJson). */
  readonly source: HttpPodSource;
  readonly log: Logger;
  readonly pollIntervalMs: number;
  readonly maxStalenessMs: number;
  readonly now?: () => number;
}

interface Snapshot {
  readonly labels: ReadonlyMap<string, Readonly<Record<string, string>>>;
  readonly fetchStartedAt: number;
}

export class NamespaceLabelIndex {
  readonly #o: NamespaceLabelIndexOptions;
  readonly #now: () => number;
  readonly #abort = new AbortController();
  #snap: Snapshot | undefined;
  #syncedAt = 0;
  #inflight: Promise<boolean> | undefined;
  #lastRequestAt = Number.NEGATIVE_INFINITY;
  #lastError: string | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(o: NamespaceLabelIndexOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => performance.now());
  }

  /** First list (a failure is logged; lookups then refresh), then the poll timer. */
  async start(): Promise<void> {
    await this.refresh();
    this.#timer = setInterval(() => void this.refresh(), this.#o.pollIntervalMs);
    this.#timer.unref();
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#abort.abort();
    this.#o.source.close();
  }

  get namespaces(): number {
    return this.#snap?.labels.size ?? 0;
  }

  /** Lists now, or joins the list in flight. Resolves true on success; never rejects. */
  refresh(): Promise<boolean> {
    if (this.#inflight) return this.#inflight;
    const startedAt = this.#now();
    this.#lastRequestAt = startedAt;
    const promise = this.#fetch(startedAt).finally(() => {
      if (this.#inflight === promise) this.#inflight = undefined;
    });
    this.#inflight = promise;
    return promise;
  }

  async #fetch(startedAt: number): Promise<boolean> {
    const source = this.#o.source;
    try {
      const { json } = await source.getJson(NAMESPACES_PATH, this.#abort.signal);
      this.#snap = { labels: decodeNamespaceList(json), fetchStartedAt: startedAt };
      this.#syncedAt = this.#now();
      if (this.#lastError !== undefined) this.#o.log.info('namespace source reachable again', { source: source.name });
      this.#lastError = undefined;
      return true;
    } catch (err) {
      this.#lastError = err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err);
      this.#o.log.warn(
        this.#snap ? 'namespace source unreachable; serving the last namespace labels' : 'namespace source unreachable; no namespace labels yet, pods cannot be attested until it answers',
        { source: source.name, endpoint: `${source.endpoint.replace(/\/api\/v1\/pods$/, '')}${NAMESPACES_PATH}`, error: this.#lastError, ...(this.#snap ? { snapshot_age_ms: Math.round(this.#now() - this.#syncedAt) } : {}) },
      );
      return false;
    }
  }

  #fresh(): Snapshot | undefined {
    const snap = this.#snap;
    if (!snap) return undefined;
    const age = this.#now() - this.#syncedAt;
    if (age > this.#o.maxStalenessMs) {
      throw new SourceUnavailable(WorkloadErrorCode.SNAPSHOT_STALE, `namespace labels from ${this.#o.source.name} are ${Math.round(age / 1000)}s old, past max_staleness`, {
        fields: { source: this.#o.source.name, age_ms: Math.round(age), last_error: this.#lastError },
      });
    }
    return snap;
  }

  /** The labels of `namespace`: from the cache, else after one shared (rate-limited) refresh, else an error. */
  async labels(namespace: string, signal: AbortSignal): Promise<Readonly<Record<string, string>>> {
    const missAt = this.#now();
    const hit = this.#fresh()?.labels.get(namespace);
    if (hit) return hit;
    for (;;) {
      const snap = this.#snap;
      if (snap && snap.fetchStartedAt >= missAt) break;
      if (this.#inflight) {
        await this.#inflight;
        continue;
      }
      const gap = MIN_MISS_REFRESH_GAP_MS - (this.#now() - this.#lastRequestAt);
      if (gap > 0 && snap) break; // listed moments ago: the namespace really is not there
      if (gap > 0) await sleep(gap, signal);
      if (!(await this.refresh())) break;
    }
    const after = this.#fresh()?.labels.get(namespace);
    if (after) return after;
    if (!this.#snap) {
      throw new SourceUnavailable(WorkloadErrorCode.NO_SNAPSHOT, `namespace labels: ${this.#o.source.name} has not answered yet (enable_namespace_labels)`, {
        fields: { source: this.#o.source.name, namespace, last_error: this.#lastError },
      });
    }
    throw new SourceUnavailable(WorkloadErrorCode.NAMESPACE_NOT_FOUND, `namespace ${namespace} is not in the namespace list from ${this.#o.source.name}`, {
      fields: { source: this.#o.source.name, namespace },
    });
  }
}
