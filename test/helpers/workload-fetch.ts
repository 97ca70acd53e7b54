/**
 * Child-process entry for end-to-end tests: fetches one X.509-SVID over the Workload API at
 * SPIFFE_ENDPOINT_SOCKET with our TypeScript client (kubeedge-demo/mtls/svid-source.ts) and prints one JSON line.
 * It runs as its own process because the agent attests the PID on the other end of the socket: the test starts
 * it inside a pod's cgroup.
 */
import { SvidSource } from '../../kubeedge-demo/mtls/svid-source.js';

const timeoutMs = Number(process.env['FETCH_TIMEOUT_MS'] ?? '15000');
const source = new SvidSource({ initialBackoffMs: 200, maxBackoffMs: 1000 }).start();
// The agent answers a workload it cannot identify with PERMISSION_DENIED; the source retries that (an entry may
// still be on its way), so the last error is what this process reports if no SVID comes.
let lastError: { code?: number; details?: string } | undefined;
source.on('disconnected', (err: Error & { code?: number; details?: string }) => (lastError = { code: err.code, details: err.details }));
const timer = setTimeout(() => {
  process.stdout.write(JSON.stringify({ ok: false, code: lastError?.code ?? 'TIMEOUT', details: lastError?.details ?? `no SVID within ${timeoutMs} ms` }) + '\n');
  process.exit(2);
}, timeoutMs);
source.ready().then(
  (svid) => {
    clearTimeout(timer);
    process.stdout.write(
      JSON.stringify({ ok: true, spiffeId: svid.spiffeId, serial: svid.leaf.serialNumber, notAfter: svid.leaf.validTo, certChainPem: svid.certChainPem, bundlePem: svid.bundlePem }) + '\n',
    );
    source.close();
    process.exit(0);
  },
  (err: Error & { code?: number; details?: string }) => {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ ok: false, code: err.code, details: err.details ?? err.message }) + '\n');
    process.exit(1);
  },
);
