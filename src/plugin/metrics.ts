/**
 * Metrics through SPIRE's Metrics host service (spire.hostservice.common.metrics.v1), so our counters land in
 * whatever telemetry sink the operator configured for spire-server or spire-agent (Prometheus, StatsD, DogStatsD,
 * M3, in-memory), under SPIRE's own prefix. SPIRE offers the service to every plugin it loads.
 *
 * Fire and forget: a metric never delays or fails an attestation. At most MAX_IN_FLIGHT calls are outstanding;
 * beyond that, or while the host cannot be reached, samples are dropped and counted (`dropped`).
 */
import * as grpc from '@grpc/grpc-js';
import { isAttestorError } from '../errors.js';
import { clientConstructor, ServiceNames } from './protos.js';
import type { Logger, MetricLabels, Metrics } from './types.js';


/** For plugins run without SPIRE's host services (and for tests that do not look at metrics). */
export const NO_METRICS: Metrics = { incrCounter: () => undefined, measureSince: () => undefined };

/** Every key we emit starts with this, after SPIRE's own prefix (e.g. `spire_server_edge_attestors_…`). */
export const METRIC_PREFIX = 'edge_attestors';

const MAX_IN_FLIGHT = 64;
const CALL_TIMEOUT_MS = 5_000;

type Callback = (err: grpc.ServiceError | null) => void;
type MetricsClient = grpc.Client & {
  IncrCounter(request: object, options: grpc.CallOptions, callback: Callback): grpc.ClientUnaryCall;
  MeasureSince(request: object, options: grpc.CallOptions, callback: Callback): grpc.ClientUnaryCall;
};

const toLabels = (labels: MetricLabels | undefined) => Object.entries(labels ?? {}).map(([name, value]) => ({ name, value }));

export class HostMetrics implements Metrics {
  readonly #hostTarget: () => Promise<string>;
  readonly #log: Logger;
  readonly #offered: () => boolean;
  #client: Promise<MetricsClient | undefined> | undefined;
  #inFlight = 0;
  #dropped = 0;
  #warned = false;

  /**
   * `hostTarget` resolves to the gRPC target of SPIRE's host services; `offered` says whether SPIRE announced the
   * Metrics service in Init (read at each sample: Init comes after the plugin is built).
   */
  constructor(hostTarget: () => Promise<string>, log: Logger, offered: () => boolean) {
    this.#hostTarget = hostTarget;
    this.#log = log;
    this.#offered = offered;
  }

  /** Samples not delivered: over the in-flight bound, host unreachable, or refused by the host. */
  get dropped(): number {
    return this.#dropped;
  }

  incrCounter(key: readonly string[], labels?: MetricLabels, value = 1): void {
    this.#send('IncrCounter', { key: [...key], val: value, labels: toLabels(labels) });
  }

  measureSince(key: readonly string[], startedAtMs: number, labels?: MetricLabels): void {
    // Unix nanoseconds as a decimal string: int64 through proto-loader's `longs: String`.
    this.#send('MeasureSince', { key: [...key], time: `${BigInt(Math.round(startedAtMs)) * 1_000_000n}`, labels: toLabels(labels) });
  }

  #send(method: 'IncrCounter' | 'MeasureSince', request: object): void {
    if (!this.#offered()) return;
    if (this.#inFlight >= MAX_IN_FLIGHT) {
      this.#drop('too many metric calls in flight');
      return;
    }
    this.#inFlight++;
    this.#dial()
      .then((client) => {
        if (!client) throw new Error('host services unreachable');
        return new Promise<void>((resolve, reject) => {
          client[method](request, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err) => (err ? reject(err) : resolve()));
        });
      })
      .catch((err: Error) => this.#drop(err.message))
      .finally(() => this.#inFlight--);
  }

  #dial(): Promise<MetricsClient | undefined> {
    this.#client ??= this.#hostTarget().then(
      (target) => {
        const Client = clientConstructor(ServiceNames.metrics);
        return new Client(target, grpc.credentials.createInsecure()) as unknown as MetricsClient;
      },
      () => {
        this.#client = undefined; // try again at the next sample
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

  close(): void {
    void this.#client?.then((c) => c?.close());
    this.#client = undefined;
  }
}

export const ATTESTATION_OK: MetricLabels = Object.freeze({ status: 'OK', code: 'none' });
/** SPIRE gave up on the stream before a verdict (agent gone, server shutting down). */
export const ATTESTATION_CANCELLED: MetricLabels = Object.freeze({ status: 'CANCELLED', code: 'none' });

/** What one failed attestation RPC ended with: the gRPC status SPIRE saw and, for our own errors, their code. */
export function attestationFailure(err: unknown): MetricLabels {
  if (isAttestorError(err)) return { status: grpc.status[err.grpcCode] ?? 'UNKNOWN', code: err.code };
  return { status: 'INTERNAL', code: 'ERR_INTERNAL' };
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
