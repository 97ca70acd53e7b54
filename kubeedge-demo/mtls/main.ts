/**
 * Container entry point of the demo services (see ../README.md and ../base/demo-services.yaml).
 *
 *   ROLE=server  PORT=8443 ALLOWED_CLIENT_ID=spiffe://…/sa/greeter-client
 *   ROLE=client  SERVER_URL=https://greeter-server.demo:8443/ SERVER_ID=spiffe://…/sa/greeter-server INTERVAL_MS=5000
 *
 * Both read SPIFFE_ENDPOINT_SOCKET. Logs are JSON lines on stdout. If the Workload API stops the stream for
 * good, the process exits 1 so that Kubernetes restarts it.
 */
import { allowIds } from './spiffe-tls.js';
import { mtlsRequest } from './client.js';
import { createMtlsServer, greeter } from './server.js';
import { SvidSource } from './svid-source.js';

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') throw new Error(`set ${name}`);
  return value;
}

const log = (message: string, fields: Record<string, unknown> = {}): void => {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), message, ...fields }) + '\n');
};

const source = new SvidSource({ log }).start();
source.on('stopped', (err) => {
  log('Workload API stopped, exiting', { error: err.message });
  process.exit(1);
});
await source.ready();

const role = env('ROLE');
if (role === 'server') {
  const server = createMtlsServer({ source, authorizeClient: allowIds(env('ALLOWED_CLIENT_ID')), handler: greeter(source), log });
  server.listen(Number(env('PORT', '8443')), () => log('listening', { address: server.address() }));
  process.once('SIGTERM', () => {
    source.close();
    server.close();
  });
} else if (role === 'client') {
  const url = env('SERVER_URL');
  const authorizeServer = allowIds(env('SERVER_ID'));
  const timer = setInterval(() => {
    mtlsRequest(url, { source, authorizeServer }).then(
      (r) => log('response', { status: r.status, server: r.serverId, serverSerial: r.serverCert.serialNumber, body: r.body }),
      (err: Error) => log('request failed', { error: err.message }),
    );
  }, Number(env('INTERVAL_MS', '5000')));
  process.once('SIGTERM', () => {
    clearInterval(timer);
    source.close();
  });
} else {
  throw new Error(`ROLE must be server or client, got "${role}"`);
}
