/**
 * The revoker receiving tpm-server's webhook: DecisionEvents (the plugin's real webhook sink) POSTs over mTLS to
 * the revoker's receiver (a real HTTPS server), which appends each event to events_file; the revoker's tail then
 * handles it. Clients without a certificate from the CA, or with a SPIFFE ID not allowed, and bodies that are not
 * decision events are refused.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestationRefused } from '../../src/errors.js';
import { buildDecisionEvent } from '../../src/nodeattestor/decision-event.js';
import { DecisionEvents } from '../../src/nodeattestor/event-sinks.js';
import { createLogger } from '../../src/plugin/log.js';
import { revokerConfigSchema } from '../../src/revocation/config.js';
import { Revoker, type AuditEntry } from '../../src/revocation/revoker.js';
import { makePki, type TestPki } from '../workload/helpers.js';

let work: string;
let pki: TestPki;
let port: number;
const controller = new AbortController();
let running: Promise<void>;
const logs: Record<string, unknown>[] = [];
const log = createLogger({ module: 'revoker', level: 'debug', sink: (l) => logs.push(JSON.parse(l)) });

const refusal = (id: string) =>
  buildDecisionEvent({
    eventId: id,
    outcome: 'refused',
    audit: { agent_id: `spiffe://edge.example/spire/agent/tpm/${'ab'.repeat(32)}`, ek_hash: 'ab'.repeat(32) },
    policies: { passed: [], failed: [] },
    error: new AttestationRefused('ERR_POLICY_VIOLATION', 'policy "golden": pcr sha256:4', { fields: { rule: 'pcr sha256:4' } }),
    startedAt: new Date(),
    decidedAt: new Date(),
    verifierBuild: 'test',
  });

function post(body: string, withClientCert: boolean, to = () => port): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: to(), method: 'POST', path: '/', ca: pki.caPem, ...(withClientCert ? { cert: pki.clientCertPem, key: pki.clientKeyPem } : {}) },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const audit = () =>
  readFileSync(join(work, 'state', 'audit.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditEntry);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'receiver-'));
  pki = await makePki();
  for (const [name, pem] of Object.entries({ 'server.pem': pki.serverCertPem, 'server.key': pki.serverKeyPem, 'ca.pem': pki.caPem, 'client.pem': pki.clientCertPem, 'client.key': pki.clientKeyPem })) {
    writeFileSync(join(work, name), pem);
  }
  const config = revokerConfigSchema.parse({
    events_file: join(work, 'received.jsonl'),
    state_dir: join(work, 'state'),
    webhook_listen: { address: '127.0.0.1:0', cert_path: join(work, 'server.pem'), key_path: join(work, 'server.key'), client_ca_path: join(work, 'ca.pem') },
    poll_interval: '50ms',
  });
  running = new Revoker({ config, log }).run(controller.signal);
  const deadline = Date.now() + 10_000;
  while (!logs.some((l) => l['@message'] === 'Webhook receiver listening') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  port = Number(String(logs.find((l) => l['@message'] === 'Webhook receiver listening')!['address']).split(':')[1]);
});

afterAll(async () => {
  controller.abort();
  await running;
  rmSync(work, { recursive: true, force: true });
});

describe('webhook receiver', () => {
  it('events POSTed by the plugin sink over mTLS are stored and handled by the revoker', async () => {
    const sinkLog = createLogger({ module: 'sink', level: 'debug', sink: () => undefined });
    const events = await DecisionEvents.load(
      {
        webhook: {
          url: `https://127.0.0.1:${port}/events`,
          queue_dir: join(work, 'queue'),
          queue_max_events: 100,
          ca_path: join(work, 'ca.pem'),
          cert_path: join(work, 'client.pem'),
          key_path: join(work, 'client.key'),
          timeout: 5000,
          max_backoff: 1000,
        },
        max_pending: 10,
      },
      sinkLog,
      async (p) => readFileSync(p),
    );
    events.emit(refusal('hook-1'));
    events.emit(refusal('hook-2'));
    const deadline = Date.now() + 10_000;
    let handled: AuditEntry[] = [];
    while (Date.now() < deadline) {
      handled = (() => {
        try {
          return audit().filter((e) => e.action === 'ban');
        } catch {
          return [];
        }
      })();
      if (handled.length >= 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(handled.map((e) => e.event_id)).toEqual(['hook-1', 'hook-2']);
    expect(handled.every((e) => e.result === 'disabled')).toBe(true); // no spire block in this config
    const stored = readFileSync(join(work, 'received.jsonl'), 'utf8').split('\n').filter(Boolean);
    expect(stored.map((l) => JSON.parse(l).event_id)).toEqual(['hook-1', 'hook-2']);
    expect(events.stats.dropped).toEqual({});
    await events.close();
  });

  it('refuses a client without a certificate (TLS), and a body that is not a decision event (400), storing nothing', async () => {
    const before = readFileSync(join(work, 'received.jsonl'), 'utf8');
    await expect(post(JSON.stringify(refusal('no-cert')), false)).rejects.toThrow(/certificate|alert|socket hang up|ECONNRESET/i);
    expect(await post('{"hello":"world"}', true)).toBe(400);
    expect(await post(JSON.stringify({ ...refusal('v2'), version: 2 }), true)).toBe(400);
    expect(readFileSync(join(work, 'received.jsonl'), 'utf8')).toBe(before);
    expect(logs.filter((l) => l['@message'] === 'Webhook: body is not a decision event')).toHaveLength(2);
  });

  it('with allowed_client_ids, a client certificate from the CA but without an allowed SPIFFE ID gets 403', async () => {
    const local: Record<string, unknown>[] = [];
    const stop = new AbortController();
    const config = revokerConfigSchema.parse({
      events_file: join(work, 'received-strict.jsonl'),
      state_dir: join(work, 'state-strict'),
      webhook_listen: {
        address: '127.0.0.1:0',
        cert_path: join(work, 'server.pem'),
        key_path: join(work, 'server.key'),
        client_ca_path: join(work, 'ca.pem'),
        allowed_client_ids: ['spiffe://edge.example/spire/server'],
      },
    });
    const run = new Revoker({ config, log: createLogger({ module: 'strict', level: 'debug', sink: (l) => local.push(JSON.parse(l)) }) }).run(stop.signal);
    const deadline = Date.now() + 10_000;
    while (!local.some((l) => l['@message'] === 'Webhook receiver listening') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const strictPort = Number(String(local.find((l) => l['@message'] === 'Webhook receiver listening')!['address']).split(':')[1]);
    expect(await post(JSON.stringify(refusal('strict-1')), true, () => strictPort)).toBe(403);
    expect(local.find((l) => l['@message'] === 'Webhook: client not allowed')).toMatchObject({ client_ids: '(none)' });
    stop.abort();
    await run;
  });
});
