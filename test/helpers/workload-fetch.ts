/**
 * Child-process entry for end-to-end tests: our TypeScript Workload API client (kubeedge-demo/mtls/svid-source.ts)
 * against SPIFFE_ENDPOINT_SOCKET, printing JSON lines. It runs as its own process because the agent attests the
 * PID on the other end of the socket: the test starts it inside a pod's cgroup.
 *
 *   FETCH_MODE=once (default): prints the first X.509-SVID (or the last error) and exits.
 *   FETCH_MODE=watch: prints every SVID update and every stream error with a timestamp until killed.
 */
import { SvidSource } from '../../kubeedge-demo/mtls/svid-source.js';

const timeoutMs = Number(process.env['FETCH_TIMEOUT_MS'] ?? '15000');
const watch = process.env['FETCH_MODE'] === 'watch';
const print = (o: object) => process.stdout.write(JSON.stringify({ at: Date.now(), ...o }) + '\n');
const source = new SvidSource({ initialBackoffMs: 200, maxBackoffMs: 1000 }).start();
// The agent answers a workload it cannot identify with PERMISSION_DENIED; the source retries that (an entry may
// still be on its way), so the last error is what this process reports if no SVID comes.
let lastError: { code?: number; details?: string } | undefined;
source.on('disconnected', (err: Error & { code?: number; details?: string }) => {
  lastError = { code: err.code, details: err.details };
  if (watch) print({ event: 'error', code: err.code, details: err.details });
});

if (watch) {
  source.on('update', (svid) => print({ event: 'update', spiffeId: svid.spiffeId, serial: svid.leaf.serialNumber, notBefore: svid.leaf.validFrom, notAfter: svid.leaf.validTo }));
  process.once('SIGTERM', () => {
    source.close();
    process.exit(0);
  });
} else {
  const timer = setTimeout(() => {
    print({ ok: false, code: lastError?.code ?? 'TIMEOUT', details: lastError?.details ?? `no SVID within ${timeoutMs} ms` });
    process.exit(2);
  }, timeoutMs);
  source.ready().then(
    (svid) => {
      clearTimeout(timer);
      print({ ok: true, spiffeId: svid.spiffeId, serial: svid.leaf.serialNumber, notAfter: svid.leaf.validTo, certChainPem: svid.certChainPem, bundlePem: svid.bundlePem });
      source.close();
      process.exit(0);
    },
    (err: Error & { code?: number; details?: string }) => {
      clearTimeout(timer);
      print({ ok: false, code: err.code, details: err.details ?? err.message });
      process.exit(1);
    },
  );
}
