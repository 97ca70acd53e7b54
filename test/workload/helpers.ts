/** Shared test helpers for the workload attestor: a recording logger, fake procfs trees, a test CA, HTTPS servers. */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LogFields, Logger, LogLevel, PluginContext } from '../../src/plugin/types.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

export interface LogLine {
  level: LogLevel;
  message: string;
  fields: LogFields | undefined;
}

export function recordingLogger(lines: LogLine[] = []): Logger & { lines: LogLine[] } {
  const mk = (): Logger & { lines: LogLine[] } => {
    const at = (level: LogLevel) => (message: string, fields?: LogFields) => void lines.push({ level, message, fields });
    return { lines, trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), named: () => mk(), setLevel: () => undefined };
  };
  return mk();
}

export function testContext(lines: LogLine[] = []): PluginContext & { log: Logger & { lines: LogLine[] } } {
  return {
    log: recordingLogger(lines),
    host: { names: [], agentExists: async () => false },
  };
}

export function tempDir(prefix = 'wl-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A `/proc/<pid>/stat` line whose comm contains spaces and parens, with the given start time (field 22). */
export function statLine(pid: number, startTime: bigint | number, comm = 'my (weird) proc'): string {
  const after = ['S', '1', String(pid), String(pid), '0', '-1', '4194560', '100', '0', '0', '0', '1', '2', '0', '0', '20', '0', '1', '0', String(startTime), '1000', '200'];
  return `${pid} (${comm}) ${after.join(' ')}\n`;
}

/** Writes `<root>/<pid>/{stat,cgroup,mountinfo,status}` (undefined = file absent). */
export function writeFakeProc(root: string, pid: number, files: { cgroup?: string; mountinfo?: string; startTime?: bigint | number; status?: string }): void {
  const dir = join(root, String(pid));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'stat'), statLine(pid, files.startTime ?? 4242));
  if (files.cgroup !== undefined) writeFileSync(join(dir, 'cgroup'), files.cgroup);
  if (files.mountinfo !== undefined) writeFileSync(join(dir, 'mountinfo'), files.mountinfo);
  writeFileSync(join(dir, 'status'), files.status ?? 'Name:\tx\nUid:\t1000\t1001\t1001\t1001\nGid:\t2000\t2002\t2002\t2002\n');
}

// ---- TLS ------------------------------------------------------------------------------------------------

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

export interface TestPki {
  caPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  clientCertPem: string;
  clientKeyPem: string;
}

async function leaf(ca: x509.X509Certificate, caKey: CryptoKey, cn: string, san: boolean): Promise<{ cert: string; key: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: Date.now().toString(16) + Math.floor(Math.random() * 1e6).toString(16),
    subject: `CN=${cn}`,
    issuer: ca.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: san
      ? [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'localhost' }, { type: 'ip', value: '127.0.0.1' }])]
      : [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])],
  });
  return { cert: cert.toString('pem') + '\n', key: pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) };
}

export async function makePki(): Promise<TestPki> {
  const caKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=workload-test-ca-${Math.random().toString(16).slice(2)}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    signingAlgorithm: ALG,
    keys: caKeys,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)],
  });
  const server = await leaf(ca, caKeys.privateKey, 'kubelet', true);
  const client = await leaf(ca, caKeys.privateKey, 'spire-agent', false);
  return { caPem: ca.toString('pem') + '\n', serverCertPem: server.cert, serverKeyPem: server.key, clientCertPem: client.cert, clientKeyPem: client.key };
}

// ---- servers --------------------------------------------------------------------------------------------

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface TestServer {
  url: string;
  port: number;
  requests: Array<{ path: string; auth: string | undefined; clientCert: boolean }>;
  bytesServed: number;
  close(): Promise<void>;
}

function track(server: http.Server | https.Server, handler: Handler, scheme: string): Promise<TestServer> {
  const out: TestServer = {
    url: '',
    port: 0,
    requests: [],
    bytesServed: 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const sock = req.socket as unknown as { getPeerCertificate?: () => { subject?: unknown } };
    const peer = sock.getPeerCertificate?.();
    out.requests.push({ path: req.url ?? '', auth: req.headers.authorization, clientCert: !!peer && !!peer.subject });
    const write = res.write.bind(res);
    const end = res.end.bind(res);
    res.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) out.bytesServed += Buffer.byteLength(chunk as string);
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof res.write;
    res.end = ((chunk?: unknown, ...rest: unknown[]) => {
      if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) out.bytesServed += Buffer.byteLength(chunk as string);
      return (end as (...a: unknown[]) => http.ServerResponse)(chunk, ...rest);
    }) as typeof res.end;
    handler(req, res);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      out.port = (server.address() as AddressInfo).port;
      out.url = `${scheme}://127.0.0.1:${out.port}`;
      resolve(out);
    });
  });
}

export function startHttps(pki: TestPki, handler: Handler, requestClientCert = false): Promise<TestServer> {
  const server = https.createServer({ key: pki.serverKeyPem, cert: pki.serverCertPem, ca: pki.caPem, requestCert: requestClientCert, rejectUnauthorized: false });
  return track(server, handler, 'https');
}

export function startHttp(handler: Handler): Promise<TestServer> {
  return track(http.createServer(), handler, 'http');
}

export function json(res: http.ServerResponse, body: unknown, status = 200): void {
  const s = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(s);
}

export const sorted = (a: readonly string[]): string[] => [...a].sort();
export const OURS = /^(container-id|runtime|pod-source|uid|gid|path|sha256):/;
/** The SPIRE-k8s part of a selector list (drops our own selector types). */
export const spirePart = (a: readonly string[]): string[] => sorted(a.filter((s) => !OURS.test(s)));

/** The error `fn` throws (the test fails if it does not throw). */
export function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

/** The error `p` rejects with (the test fails if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}
