/**
 * Decision events from the TPM server attestor, driven in-process by the real agent attestor on a real swtpm:
 * the JSONL file sink (fsync'd, rotated by size), the EAR form and its JWT signature, report-mode failures, the
 * HTTPS webhook with mTLS (a real HTTPS server), and the guarantee that a broken sink never blocks or fails
 * an attestation, with every loss counted and logged.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProtectedHeader, importSPKI, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyCommand } from '../../src/cli/policy-create.js';
import { TpmAgentAttestor } from '../../src/nodeattestor/agent.js';
import { buildDecisionEvent, type DecisionEvent } from '../../src/nodeattestor/decision-event.js';
import { DecisionEvents } from '../../src/nodeattestor/event-sinks.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import { repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';
import { makePki, startHttps, type TestPki } from '../workload/helpers.js';

const LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const core = { trustDomain: 'example.org' };
let tpm: SwtpmHandle;
let work: string;
let agent: TpmAgentAttestor;

function logger() {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }), lines };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'decision-events-'));
  tpm = await startSwtpm();
  const log = new Uint8Array(readFileSync(LOG));
  await simulateMeasuredBoot(tpm.tcti, log);
  writeFileSync(join(work, 'log.bin'), log);
  writeFileSync(join(work, 'ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
  const golden = createPolicyCommand(log, { pcrs: [0, 2, 4, 7], name: 'golden' });
  writeFileSync(join(work, 'golden.yaml'), golden);
  writeFileSync(
    join(work, 'two.yaml'),
    golden.replace(/^policies:\n/m, `policies:\n  - name: impossible\n    pcrs:\n      sha256:\n        "0": "${'00'.repeat(32)}"\n`),
  );
  agent = new TpmAgentAttestor(logger().log);
  await agent.configure({ tpm_tcti: tpm.tcti, event_log_path: join(work, 'log.bin'), ek_kind: 'rsa' }, core);
}, 120_000);

afterAll(async () => {
  await agent?.close();
  await tpm?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function attest(server: TpmServerAttestor) {
  const controller = new AbortController();
  const session = await agent.begin(controller.signal);
  return server.attest(session.payload, { signal: controller.signal, challenge: (bytes) => session.respond(bytes) });
}

function readEvents(path: string): DecisionEvent[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as DecisionEvent);
}

/** The events the server wrote, once its sinks caught up. */
async function flushed(server: TpmServerAttestor): Promise<void> {
  // The attestor owns its DecisionEvents; reconfiguring closes (and so flushes) them. Flushing that way keeps the
  // test on the public surface only.
  await server.configure({ ek_ca_path: join(work, 'ca.pem') }, core);
  await new Promise((r) => setTimeout(r, 200));
}

describe('JSONL file sink', () => {
  it('writes one event per decision: accepted (affirming) and refused (contraindicated, naming the rule)', async () => {
    const path = join(work, 'events-1.jsonl');
    const { log } = logger();
    const ok = new TpmServerAttestor(log);
    await ok.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'golden.yaml'), decision_events: [{ file: [{ path }] }] }, core);
    await attest(ok);
    await flushed(ok);
    const bad = new TpmServerAttestor(log);
    await bad.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'two.yaml'), policy_match: 'all', decision_events: { file: { path } } }, core);
    await expect(attest(bad)).rejects.toMatchObject({ code: 'ERR_POLICY_VIOLATION' });
    await flushed(bad);

    const [accepted, refused] = readEvents(path);
    expect(accepted).toMatchObject({
      version: 1,
      outcome: 'accepted',
      status: 'affirming',
      policies: { passed: ['golden'], failed: [] },
      secure_boot: 'enabled',
      policy_match: 'any',
    });
    expect(accepted!.agent_id).toMatch(/^spiffe:\/\/example\.org\/spire\/agent\/tpm\/[0-9a-f]{64}$/);
    expect(accepted!.agent_id!.endsWith(accepted!.ek_hash!)).toBe(true);
    expect(Date.parse(accepted!.decided_at)).toBeGreaterThanOrEqual(Date.parse(accepted!.started_at));
    expect(accepted!.ear.submods['tpm']!['ear.status']).toBe('affirming');
    expect(accepted!.ear.submods['tpm']!['ear.trustworthiness-vector']).toEqual({ 'instance-identity': 2, hardware: 2, executables: 2, configuration: 2 });
    expect(accepted!.ear.sub).toBe(accepted!.agent_id);

    expect(refused).toMatchObject({ outcome: 'refused', status: 'contraindicated', code: 'ERR_POLICY_VIOLATION', rule: 'pcr sha256:0', ek_hash: accepted!.ek_hash });
    expect(refused!.policies).toEqual({ passed: ['golden'], failed: [{ policy: 'impossible', rules: ['pcr sha256:0'] }] });
    expect(refused!.appraisal.configuration).toMatchObject({ status: 'contraindicated', value: 96 });
    expect(refused!.appraisal.hardware.status).toBe('affirming');
    expect(refused!.ear.submods['tpm']!['ear.status']).toBe('contraindicated');
    expect(refused!.event_id).not.toBe(accepted!.event_id);
  });

  it('an untrusted EK: refused, instance-identity not recognized, no agent ID in the event', async () => {
    const path = join(work, 'events-untrusted.jsonl');
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ek_hash_allowlist: ['ab'.repeat(32)], decision_events: { file: { path } } }, core);
    await expect(attest(server)).rejects.toMatchObject({ grpcCode: 7 });
    await flushed(server);
    const [event] = readEvents(path);
    expect(event).toMatchObject({ outcome: 'refused', status: 'contraindicated' });
    expect(event!.agent_id).toBeUndefined();
    expect(event!.appraisal['instance-identity']).toMatchObject({ status: 'contraindicated', value: 97 });
  });

  it('report mode: accepted with status warning, the event and the audit line name every policy that would have failed', async () => {
    const path = join(work, 'events-report.jsonl');
    const { log, lines } = logger();
    const server = new TpmServerAttestor(log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'two.yaml'), policy_match: 'report', decision_events: { file: { path } } }, core);
    await attest(server);
    await flushed(server);
    const [event] = readEvents(path);
    expect(event).toMatchObject({ outcome: 'accepted', status: 'warning', policy_match: 'report' });
    expect(event!.policies.failed).toEqual([{ policy: 'impossible', rules: ['pcr sha256:0'] }]);
    expect(event!.appraisal.configuration.detail).toContain('impossible (pcr sha256:0)');
    const audit = lines.find((l) => l['@message'] === 'Attestation decision');
    expect(audit).toMatchObject({ outcome: 'accepted', policies: 'golden' });
    // The audit line carries the observed and expected values too (the event keeps the rule names).
    expect(String(audit!['policies_failed'])).toMatch(/^impossible: pcr sha256:0 \(observed [0-9a-f]{64}, expected 0{64}\)$/);
  });

  it('rotates by size: <path>.1 holds the older events, every line is whole JSON, none lost', async () => {
    const path = join(work, 'events-rotate.jsonl');
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), decision_events: { file: { path, max_bytes: 4096, keep: 2 } } }, core);
    for (let i = 0; i < 4; i++) await attest(server);
    await flushed(server);
    const current = readEvents(path);
    const older = readEvents(`${path}.1`);
    expect(older.length).toBeGreaterThan(0);
    expect(current.length + older.length).toBe(4);
    expect(readFileSync(`${path}.1`).length).toBeLessThanOrEqual(4096);
    expect(new Set([...older, ...current].map((e) => e.event_id)).size).toBe(4);
  }, 60_000);

  it('signs the EAR as a JWT with the configured key; the signature verifies and the claims are the EAR', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(join(work, 'ear-key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const path = join(work, 'events-signed.jsonl');
    const server = new TpmServerAttestor(logger().log);
    await server.configure(
      { ek_ca_path: join(work, 'ca.pem'), decision_events: { file: { path }, signing_key_path: join(work, 'ear-key.pem'), signing_key_id: 'ear-1' } },
      core,
    );
    await attest(server);
    await flushed(server);
    const [event] = readEvents(path);
    expect(decodeProtectedHeader(event!.ear_jwt!)).toEqual({ alg: 'ES256', typ: 'application/eat+jwt', kid: 'ear-1' });
    const key = await importSPKI(publicKey.export({ type: 'spki', format: 'pem' }) as string, 'ES256');
    const { payload } = await jwtVerify(event!.ear_jwt!, key);
    expect(payload).toEqual(JSON.parse(JSON.stringify(event!.ear)));
    // A tampered token does not verify.
    const [h, p, s] = event!.ear_jwt!.split('.');
    const forged = Buffer.from(JSON.stringify({ ...payload, sub: 'spiffe://example.org/spire/agent/tpm/evil' })).toString('base64url');
    await expect(jwtVerify(`${h}.${forged}.${s}`, key)).rejects.toThrow(/signature/);
    expect(p).toBeDefined();
  });

  it('refuses at Configure a signing key that does not exist, and a block with no sink', async () => {
    const server = new TpmServerAttestor(logger().log);
    await expect(
      server.configure({ ek_ca_path: join(work, 'ca.pem'), decision_events: { file: { path: join(work, 'x.jsonl') }, signing_key_path: join(work, 'nope.pem') } }, core),
    ).rejects.toMatchObject({ grpcCode: 3, message: expect.stringContaining('decision_events.signing_key_path') });
    await expect(server.configure({ ek_ca_path: join(work, 'ca.pem'), decision_events: { max_pending: 5 } }, core)).rejects.toMatchObject({
      grpcCode: 3,
      message: expect.stringContaining('set a file { } or webhook { } sink'),
    });
  });
});

describe('a broken sink never blocks or fails attestation', () => {
  it('an unwritable file: attestation succeeds, the loss is counted and logged with the event ID', async () => {
    const dir = join(work, 'is-a-directory');
    mkdirSync(dir, { recursive: true });
    const { log, lines } = logger();
    const server = new TpmServerAttestor(log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), decision_events: { file: { path: dir } } }, core);
    await expect(attest(server)).resolves.toMatchObject({ canReattest: true });
    await expect(attest(server)).resolves.toMatchObject({ canReattest: true });
    await flushed(server);
    const drops = lines.filter((l) => l['@message'] === 'Decision event dropped');
    expect(drops.length).toBe(2); // write failures carry their error and are always logged
    expect(drops[1]).toMatchObject({ '@level': 'error', reason: 'file_write_failed', dropped_total: 2, outcome: 'accepted' });
    expect(String(drops[0]!['error'])).toMatch(/EISDIR|directory/i);
    expect(drops[0]!['event_id']).toEqual(expect.any(String));
  });

  it('a full in-memory queue drops and counts each event beyond max_pending; emit returns at once', async () => {
    const path = join(work, 'events-full.jsonl');
    const { log, lines } = logger();
    const events = await DecisionEvents.load({ file: { path, max_bytes: 1 << 20, keep: 1 }, max_pending: 2 }, log, async (p) => readFileSync(p));
    const make = (i: number) =>
      buildDecisionEvent({
        eventId: `e${i}`,
        outcome: 'accepted',
        audit: { agent_id: `spiffe://example.org/spire/agent/tpm/${String(i).repeat(64).slice(0, 64)}` },
        policies: { passed: [], failed: [] },
        startedAt: new Date(),
        decidedAt: new Date(),
        verifierBuild: 'test',
      });
    const t0 = performance.now();
    // The first event is taken by the pump at once; two more wait; the last two find the queue full.
    for (let i = 1; i <= 5; i++) events.emit(make(i));
    expect(performance.now() - t0).toBeLessThan(50);
    await events.close();
    expect(readEvents(path).map((e) => e.event_id)).toEqual(['e1', 'e2', 'e3']);
    expect(events.stats).toMatchObject({ emitted: 5, delivered: { file: 3 }, dropped: { queue_full: 2 } });
    const drop = lines.find((l) => l['@message'] === 'Decision event dropped');
    expect(drop).toMatchObject({ reason: 'queue_full', dropped_total: 1, event_id: 'e4' });
  });
});

describe('HTTPS webhook sink', () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await makePki();
    writeFileSync(join(work, 'hook-ca.pem'), pki.caPem);
    writeFileSync(join(work, 'hook-client.pem'), pki.clientCertPem);
    writeFileSync(join(work, 'hook-client.key'), pki.clientKeyPem);
  });

  it('delivers each event over mTLS; while the receiver is down, events wait in the bounded on-disk queue and are retried', async () => {
    const received: Array<{ body: DecisionEvent; clientCert: boolean }> = [];
    let answer = 503;
    const handler = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
        if (answer === 200) received.push({ body: JSON.parse(body), clientCert: !!peer?.subject });
        res.writeHead(answer).end();
      });
    };
    const hook = await startHttps(pki, handler, true);
    const queueDir = join(work, 'hook-queue');
    const { log, lines } = logger();
    const server = new TpmServerAttestor(log);
    await server.configure(
      {
        ek_ca_path: join(work, 'ca.pem'),
        decision_events: {
          webhook: {
            url: `https://127.0.0.1:${hook.port}/events`,
            queue_dir: queueDir,
            queue_max_events: 2,
            ca_path: join(work, 'hook-ca.pem'),
            cert_path: join(work, 'hook-client.pem'),
            key_path: join(work, 'hook-client.key'),
            max_backoff: '1s',
          },
        },
      },
      core,
    );
    // Receiver answering 503: three decisions, the queue holds two, the third is dropped, counted and logged.
    for (let i = 0; i < 3; i++) await attest(server);
    await new Promise((r) => setTimeout(r, 300));
    expect(readdirSync(queueDir).filter((f) => f.endsWith('.json'))).toHaveLength(2);
    expect(lines.some((l) => l['@message'] === 'Decision event webhook: delivery failed, will retry' && l['status'] === 503)).toBe(true);
    expect(lines.find((l) => l['@message'] === 'Decision event dropped')).toMatchObject({ reason: 'webhook_write_failed', dropped_total: 1 });
    expect(received).toHaveLength(0);

    answer = 200;
    const deadline = Date.now() + 10_000;
    while (received.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(received).toHaveLength(2);
    expect(received.every((r) => r.clientCert)).toBe(true);
    expect(received.every((r) => r.body.outcome === 'accepted' && r.body.type === 'spire-edge.attestation.decision')).toBe(true);
    expect(readdirSync(queueDir).filter((f) => f.endsWith('.json'))).toHaveLength(0);
    await server.configure({ ek_ca_path: join(work, 'ca.pem') }, core);
    await hook.close();
  }, 60_000);

  it('events a previous process left in the on-disk queue are delivered at Configure, without a new decision', async () => {
    const got: string[] = [];
    const hook = await startHttps(pki, (req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        got.push((JSON.parse(body) as DecisionEvent).event_id);
        res.writeHead(204).end();
      });
    });
    const queueDir = join(work, 'hook-queue-left');
    mkdirSync(queueDir, { recursive: true });
    for (const id of ['left-1', 'left-2']) writeFileSync(join(queueDir, `000000000000001-00000000${id.slice(-1)}-${id}.json`), JSON.stringify({ event_id: id }) + '\n');
    const server = new TpmServerAttestor(logger().log);
    await server.configure(
      { ek_ca_path: join(work, 'ca.pem'), decision_events: { webhook: { url: `https://127.0.0.1:${hook.port}/`, queue_dir: queueDir, ca_path: join(work, 'hook-ca.pem') } } },
      core,
    );
    const deadline = Date.now() + 10_000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(got).toEqual(['left-1', 'left-2']);
    expect(readdirSync(queueDir).filter((f) => f.endsWith('.json'))).toEqual([]);
    await server.configure({ ek_ca_path: join(work, 'ca.pem') }, core);
    await hook.close();
  }, 30_000);

  it('rejects a plain http:// URL at Configure', async () => {
    const server = new TpmServerAttestor(logger().log);
    await expect(
      server.configure({ ek_ca_path: join(work, 'ca.pem'), decision_events: { webhook: { url: 'http://127.0.0.1/x', queue_dir: join(work, 'q2') } } }, core),
    ).rejects.toMatchObject({ grpcCode: 3, message: expect.stringContaining('https') });
  });
});
