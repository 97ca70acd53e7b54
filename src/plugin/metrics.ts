/**
 * Metrics through SPIRE's Metrics host service (spire.hostservice.common.metrics.v1), so our counters land in
 * whatever telemetry sink the operator configured for spire-server or spire-agent (Prometheus, StatsD, DogStatsD,
 * M3, in-memory), under SPIRE's own prefix. SPIRE offers the service to every plugin it loads.
 *
 * Aggregated here, sent once per FLUSH_MS: a gRPC call per sample would double the plugin's CPU per workload
 * attestation (measured by bench/workload.ts). Counters are exact (one IncrCounter per series with the sum); timings
 * are sampled, at most MAX_SAMPLES_PER_FLUSH per series and flush (a uniform reservoir), sent as AddSample in
 * milliseconds, which is what SPIRE's own MeasureSince records.
 *
 * Fire and forget: a metric never delays or fails an attestation. At most MAX_IN_FLIGHT calls are outstanding and
 * the rest wait in a bounded queue; beyond it, or while the host cannot be reached, samples are dropped and counted
 * (`dropped`).
 */
import * as grpc from '@grpc/grpc-js';
import { isAttestorError } from '../errors.js';
import { clientConstructor, ServiceNames } from './protos.js';
import { toStatus } from './status.js';
import type { Logger, MetricLabels, Metrics } from './types.js';

/** For plugins run without SPIRE's host services (and for tests that do not look at metrics). */
export const NO_METRICS: Metrics = { incrCounter: () => undefined, measureSince: () => undefined };

/** Every key we emit starts with this, after SPIRE's own prefix (e.g. `spire_server_edge_attestors_…`). */
export const METRIC_PREFIX = 'edge_attestors';

const FLUSH_MS = 1_000;
const MAX_SAMPLES_PER_FLUSH = 16;
/** Distinct series kept between flushes; labels are bounded sets, so this is only a guard. */
const MAX_SERIES = 512;
const MAX_IN_FLIGHT = 64;
/** Two flushes' worth at the series bound: a host that falls further behind loses samples, never memory. */
const MAX_QUEUED = 2 * MAX_SERIES * (1 + MAX_SAMPLES_PER_FLUSH);
const CALL_TIMEOUT_MS = 5_000;

type Callback = (err: grpc.ServiceError | null) => void;
type Method = 'IncrCounter' | 'AddSample';
type MetricsClient = grpc.Client & Record<Method, (request: object, options: grpc.CallOptions, callback: Callback) => grpc.ClientUnaryCall>;

interface Series {
  readonly key: readonly string[];
  readonly labels: MetricLabels;
}
interface CounterSeries extends Series {
  value: number;
}
interface SampleSeries extends Series {
  readonly values: number[];
  seen: number;
}

const toLabels = (labels: MetricLabels) => Object.entries(labels).map(([name, value]) => ({ name, value }));
const seriesId = (key: readonly string[], labels: MetricLabels) => JSON.stringify([key, Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1))]);

export class HostMetrics implements Metrics {
  readonly #hostTarget: () => Promise<string>;
  readonly #log: Logger;
  readonly #offered: () => boolean;
  readonly #random: () => number;
  #client: Promise<MetricsClient | undefined> | undefined;
  #counters = new Map<string, CounterSeries>();
  #samples = new Map<string, SampleSeries>();
  #timer: NodeJS.Timeout | undefined;
  readonly #queue: { method: Method; request: object }[] = [];
  #inFlight = 0;
  #closed = false;
  #dropped = 0;
  #warned = false;

  /**
   * `hostTarget` resolves to the gRPC target of SPIRE's host services; `offered` says whether SPIRE announced the
   * Metrics service in Init (read at each sample: Init comes after the plugin is built).
   */
  constructor(hostTarget: () => Promise<string>, log: Logger, offered: () => boolean, random: () => number = Math.random) {
    this.#hostTarget = hostTarget;
    this.#log = log;
    this.#offered = offered;
    this.#random = random;
  }

  /** Samples not delivered: over the queue or series bound, host unreachable, or refused by the host. */
  get dropped(): number {
    return this.#dropped;
  }

  incrCounter(key: readonly string[], labels: MetricLabels = {}, value = 1): void {
    if (this.#closed || !this.#offered()) return;
    const id = seriesId(key, labels);
    const series = this.#counters.get(id);
    if (series) series.value += value;
    else if (this.#counters.size < MAX_SERIES) this.#counters.set(id, { key: [...key], labels, value });
    else return this.#drop('too many distinct counter series');
    this.#schedule();
  }

  measureSince(key: readonly string[], startedAtMs: number, labels: MetricLabels = {}): void {
    if (this.#closed || !this.#offered()) return;
    const ms = Math.max(0, Date.now() - startedAtMs);
    const id = seriesId(key, labels);
    let series = this.#samples.get(id);
    if (!series) {
      if (this.#samples.size >= MAX_SERIES) return this.#drop('too many distinct timing series');
      series = { key: [...key], labels, values: [], seen: 0 };
      this.#samples.set(id, series);
    }
    series.seen++;
    if (series.values.length < MAX_SAMPLES_PER_FLUSH) series.values.push(ms);
    else {
      // Reservoir sampling: every sample of this interval has the same chance to be kept.
      const slot = Math.floor(this.#random() * series.seen);
      if (slot < MAX_SAMPLES_PER_FLUSH) series.values[slot] = ms;
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => this.flush(), FLUSH_MS);
    this.#timer.unref(); // metrics never keep the plugin alive
  }

  /** Sends what was aggregated since the last flush (called by the timer, and at close). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const counters = [...this.#counters.values()];
    const samples = [...this.#samples.values()];
    this.#counters = new Map();
    this.#samples = new Map();
    for (const c of counters) this.#send('IncrCounter', { key: c.key, val: c.value, labels: toLabels(c.labels) });
    for (const s of samples) for (const ms of s.values) this.#send('AddSample', { key: s.key, val: ms, labels: toLabels(s.labels) });
  }

  /** Queues one call; at most MAX_IN_FLIGHT run at once, and a queue the host cannot keep up with drops. */
  #send(method: Method, request: object): void {
    if (this.#queue.length >= MAX_QUEUED) {
      this.#drop('the host is not keeping up with metric calls');
      return;
    }
    this.#queue.push({ method, request });
    this.#pump();
  }

  #pump(): void {
    while (this.#inFlight < MAX_IN_FLIGHT && this.#queue.length > 0) {
      const { method, request } = this.#queue.shift()!;
      this.#inFlight++;
      this.#dial()
        .then((client) => {
          if (!client) throw new Error('host services unreachable');
          return new Promise<void>((resolve, reject) => {
            client[method](request, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err) => (err ? reject(err) : resolve()));
          });
        })
        .catch((err: Error) => this.#drop(err.message))
        .finally(() => {
          this.#inFlight--;
          this.#pump();
        });
    }
  }

  #dial(): Promise<MetricsClient | undefined> {
    this.#client ??= this.#hostTarget().then(
      (target) => {
        const Client = clientConstructor(ServiceNames.metrics);
        return new Client(target, grpc.credentials.createInsecure()) as unknown as MetricsClient;
      },
      () => {
        this.#client = undefined; // try again at the next flush
        return undefined;
      },
    );
    return this.#client;
  }

  #drop(reason: string): void {
    this.#dropped++;
    // Once, then at debug: a missing telemetry sink must not flood the plugin log.
    if (!this.#warned) {
      this.#warned = true;
      this.#log.warn('Metric dropped', { reason, dropped_total: this.#dropped });
    } else {
      this.#log.debug('Metric dropped', { reason, dropped_total: this.#dropped });
    }
  }

  /** Flushes, then closes the connection once the queue is sent (or CALL_TIMEOUT_MS has passed); later samples are ignored. */
  close(): void {
    this.flush();
    this.#closed = true;
    const closeWhenIdle = (left: number) => {
      if ((this.#inFlight === 0 && this.#queue.length === 0) || left === 0) {
        const client = this.#client;
        this.#client = undefined;
        void client?.then((c) => c?.close());
      } else setTimeout(() => closeWhenIdle(left - 1), 50).unref();
    };
    closeWhenIdle(CALL_TIMEOUT_MS / 50);
  }
}

export const ATTESTATION_OK: MetricLabels = Object.freeze({ status: 'OK', code: 'none' });
/** SPIRE gave up on the stream before a verdict (agent gone, server shutting down). */
export const ATTESTATION_CANCELLED: MetricLabels = Object.freeze({ status: 'CANCELLED', code: 'none' });

/**
 * What one failed attestation RPC ended with: the gRPC status SPIRE saw (the runtime's own error-to-status mapping,
 * so the two cannot disagree) and, for our own errors, their code.
 */
export function attestationFailure(err: unknown): MetricLabels {
  const status = grpc.status[toStatus(err).code] ?? 'UNKNOWN';
  return { status, code: isAttestorError(err) ? err.code : status === 'INTERNAL' ? 'ERR_INTERNAL' : 'none' };
}

/**
 * One counter and one timing per attestation RPC (`kind`: node_attestation on tpm-server, workload_attestation on
 * edge-workload), labelled by outcome, e.g. `spire_server_edge_attestors_node_attestation{status="PERMISSION_DENIED",
 * code="ERR_POLICY_VIOLATION"}`: what an operator alerts on when nodes start failing their boot policy.
 */
export function recordAttestation(metrics: Metrics, kind: string, startedAtMs: number, labels: MetricLabels): void {
  metrics.incrCounter([METRIC_PREFIX, kind], labels);
  metrics.measureSince([METRIC_PREFIX, kind, 'duration'], startedAtMs, labels);
}
