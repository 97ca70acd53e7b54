/**
 * Load generator for bench/e2e.ts, run as a process inside a pod's cgroup (the agent attests the caller's PID):
 * FetchX509SVID over SPIFFE_ENDPOINT_SOCKET, each call a new stream that ends at the first response, which is
 * what a workload's "fetch my SVID" costs the agent (one workload attestation per call).
 *
 *   SEQUENTIAL=N   N calls one after the other → latency percentiles
 *   CONCURRENCY=C DURATION_MS=D   C callers in parallel for D ms → throughput
 * Prints one JSON object.
 */
import * as grpc from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';
import { clientConstructor, ServiceNames } from '../../src/plugin/protos.js';

const endpoint = process.env['SPIFFE_ENDPOINT_SOCKET'] ?? '';
const target = endpoint.startsWith('unix://') ? `unix:${endpoint.slice('unix://'.length)}` : endpoint;
const Client = clientConstructor(ServiceNames.workloadApi);
const client = new Client(target, grpc.credentials.createInsecure()) as unknown as {
  FetchX509SVID(req: object, md: grpc.Metadata): grpc.ClientReadableStream<{ svids: unknown[] }>;
  close(): void;
};
const md = new grpc.Metadata();
md.set('workload.spiffe.io', 'true');

function fetchOnce(): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = client.FetchX509SVID({}, md);
    let done = false;
    call.on('data', (r) => {
      if (done) return;
      done = true;
      call.cancel();
      if (r.svids.length > 0) resolve();
      else reject(new Error('response without SVIDs'));
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (!done) {
        done = true;
        reject(err);
      }
    });
  });
}

function pct(sorted: number[], p: number): number {
  return Number(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!.toFixed(3));
}

const sequential = Number(process.env['SEQUENTIAL'] ?? '0');
const concurrency = Number(process.env['CONCURRENCY'] ?? '0');
const durationMs = Number(process.env['DURATION_MS'] ?? '0');
const out: Record<string, unknown> = {};
let errors = 0;
let lastError = '';

await fetchOnce(); // warm: channel connected, agent cache populated
if (sequential > 0) {
  const lat: number[] = [];
  for (let i = 0; i < sequential; i++) {
    const t = performance.now();
    try {
      await fetchOnce();
      lat.push(performance.now() - t);
    } catch (err) {
      errors++;
      lastError = (err as Error).message;
    }
  }
  lat.sort((a, b) => a - b);
  out['sequential'] = { calls: sequential, p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), max_ms: pct(lat, 100) };
}
if (concurrency > 0 && durationMs > 0) {
  let calls = 0;
  const end = performance.now() + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      try {
        await fetchOnce();
        calls++;
      } catch (err) {
        errors++;
        lastError = (err as Error).message;
      }
    }
  };
  const t = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  out['throughput'] = { concurrency, calls, per_second: Math.round(calls / ((performance.now() - t) / 1000)) };
}
out['errors'] = errors;
if (lastError) out['last_error'] = lastError;
client.close();
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
