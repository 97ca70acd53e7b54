/**
 * kubeedge-demo/mtls/main.ts as the containers run it: two processes configured only through the environment
 * (as in kubeedge-demo/base/demo-services.yaml), each with its own fake SPIRE agent socket, talking mTLS on loopback.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeWorkloadApi, TestTrustDomain } from './workload-api.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MAIN = 'kubeedge-demo/mtls/main.ts';

type LogLine = Record<string, unknown> & { message: string };

interface Service {
  child: ChildProcess;
  /** Resolves with the first log line that matches. */
  waitFor(match: (line: LogLine) => boolean): Promise<LogLine>;
  exited: Promise<number | null>;
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function startService(env: Record<string, string>): Service {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: LogLine[] = [];
  const waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      return;
    }
    lines.push(line);
    for (const w of waiters.splice(0)) (w.match(line) ? w.resolve(line) : waiters.push(w));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return {
    child,
    exited,
    waitFor: (match) =>
      new Promise((resolve, reject) => {
        const seen = lines.find(match);
        if (seen) return resolve(seen);
        waiters.push({ match, resolve });
        void exited.then((code) => reject(new Error(`service exited (${code}) before the expected log line; stderr: ${stderr}`)));
      }),
  };
}

let edge: TestTrustDomain;
beforeAll(async () => {
  edge = await TestTrustDomain.create('edge.example');
});

async function agent(path: string): Promise<FakeWorkloadApi> {
  const api = await FakeWorkloadApi.start(edge, path);
  cleanups.push(() => api.close());
  return api;
}

describe('kubeedge-demo/mtls/main.ts', () => {
  it('runs as greeter-server and greeter-client from the environment, and both stop cleanly on SIGTERM', async () => {
    const serverApi = await agent('/ns/demo/sa/greeter-server');
    const clientApi = await agent('/ns/demo/sa/greeter-client');
    const server = startService({
      ROLE: 'server',
      PORT: '0',
      ALLOWED_CLIENT_ID: 'spiffe://edge.example/ns/demo/sa/greeter-client',
      SPIFFE_ENDPOINT_SOCKET: serverApi.endpoint,
    });
    const listening = await server.waitFor((l) => l.message === 'listening');
    const port = (listening['address'] as { port: number }).port;

    const client = startService({
      ROLE: 'client',
      SERVER_URL: `https://127.0.0.1:${port}/hello`,
      SERVER_ID: 'spiffe://edge.example/ns/demo/sa/greeter-server',
      INTERVAL_MS: '50',
      SPIFFE_ENDPOINT_SOCKET: clientApi.endpoint,
    });
    const response = await client.waitFor((l) => l.message === 'response');
    expect(response).toMatchObject({ status: 200, server: 'spiffe://edge.example/ns/demo/sa/greeter-server', serverSerial: serverApi.svid.serial });
    expect(JSON.parse(response['body'] as string)).toMatchObject({ hello: 'spiffe://edge.example/ns/demo/sa/greeter-client', clientSerial: clientApi.svid.serial });

    // A rotation of the server's SVID shows up in the client's next responses.
    const rotated = await serverApi.rotate();
    await server.waitFor((l) => l.message === 'serving with rotated SVID' && l['serial'] === rotated.serial);
    await client.waitFor((l) => l.message === 'response' && l['serverSerial'] === rotated.serial);

    client.child.kill('SIGTERM');
    server.child.kill('SIGTERM');
    expect(await client.exited).toBe(0);
    expect(await server.exited).toBe(0);
  });

  it('exits 1 when the Workload API ends the stream for good (INVALID_ARGUMENT), so Kubernetes restarts it', async () => {
    const api = await agent('/ns/demo/sa/greeter-server');
    api.failNext.push({ code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' });
    const server = startService({ ROLE: 'server', PORT: '0', ALLOWED_CLIENT_ID: 'spiffe://edge.example/x', SPIFFE_ENDPOINT_SOCKET: api.endpoint });
    await server.waitFor((l) => l.message === 'Workload API stopped, exiting').catch(() => undefined);
    expect(await server.exited).toBe(1);
  });
});
