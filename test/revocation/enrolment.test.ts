/**
 * Enrolment with approval: the tpm-server attestor in-process with the real agent attestor on a real swtpm, the
 * file store hot-reloaded, and `spire-edge-attest enrol` (the built CLI) changing it, as an operator would.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TpmAgentAttestor } from '../../src/nodeattestor/agent.js';
import type { DecisionEvent } from '../../src/nodeattestor/decision-event.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const core = { trustDomain: 'example.org' };
let tpm: SwtpmHandle;
let work: string;
let agent: TpmAgentAttestor;
let store: string;
let eventsFile: string;
let server: TpmServerAttestor;
const lines: Record<string, unknown>[] = [];

function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(builtPlugin('spire-edge-attest'), [...args], { encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function attest() {
  const controller = new AbortController();
  const session = await agent.begin(controller.signal);
  return server.attest(session.payload, { signal: controller.signal, challenge: (bytes) => session.respond(bytes) });
}

const storeJson = () => JSON.parse(readFileSync(store, 'utf8')) as { version: number; nodes: Record<string, { state: string; agent_id?: string; updated_by?: string }> };

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'enrolment-'));
  tpm = await startSwtpm();
  const log = new Uint8Array(readFileSync(LOG));
  await simulateMeasuredBoot(tpm.tcti, log);
  writeFileSync(join(work, 'log.bin'), log);
  writeFileSync(join(work, 'ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
  agent = new TpmAgentAttestor(createLogger({ module: 'agent', level: 'error', sink: () => undefined }));
  await agent.configure({ tpm_tcti: tpm.tcti, event_log_path: join(work, 'log.bin'), ek_kind: 'rsa' }, core);
  store = join(work, 'enrolment.json');
  eventsFile = join(work, 'events.jsonl');
  server = new TpmServerAttestor(createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }));
  await server.configure({ ek_ca_path: join(work, 'ca.pem'), enrolment: 'required', enrolment_path: store, decision_events: { file: { path: eventsFile } } }, core);
}, 120_000);

afterAll(async () => {
  await agent?.close();
  await tpm?.stop();
  rmSync(work, { recursive: true, force: true });
});

const events = () => readFileSync(eventsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as DecisionEvent);

describe('enrolment = "required"', () => {
  let hash: string;

  it('a trusted but unknown node is recorded as pending and refused with a clear rule and a pending event', async () => {
    const err = await attest().catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_ENROLMENT_PENDING', grpcCode: 7, fields: { rule: 'enrolment: pending' } });
    const [[ekHash, record]] = Object.entries(storeJson().nodes) as [[string, { state: string; agent_id: string; updated_by: string }]];
    hash = ekHash;
    expect(err.message).toContain(`spire-edge-attest enrol approve ${hash}`);
    expect(record).toMatchObject({ state: 'pending', agent_id: `spiffe://example.org/spire/agent/tpm/${hash}`, updated_by: 'tpm-server' });
    await new Promise((r) => setTimeout(r, 200));
    expect(events().at(-1)).toMatchObject({ outcome: 'refused', code: 'ERR_ENROLMENT_PENDING', rule: 'enrolment: pending', enrolment: 'pending', ek_hash: hash });
    expect(events().at(-1)!.appraisal['instance-identity']).toMatchObject({ status: 'contraindicated', value: 97 });
    // Enrolment is consulted last: the evidence itself verified.
    expect(events().at(-1)!.appraisal.hardware.status).toBe('affirming');
    expect(lines.filter((l) => l['@message'] === 'Attestation decision').at(-1)).toMatchObject({ outcome: 'refused', enrolment: 'pending', rule: 'enrolment: pending' });
  });

  it('enrol list shows it pending; still refused until approved', async () => {
    const listed = await cli(['enrol', 'list', '--store', store, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ ek_hash: hash, state: 'pending' })]);
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_ENROLMENT_PENDING' });
    expect(Object.keys(storeJson().nodes)).toEqual([hash]); // recorded once
  });

  it('enrol approve: the plugin hot-reloads the store and admits the node at its next attestation', async () => {
    const r = await cli(['enrol', 'approve', hash, '--store', store, '--note', 'rack 4, ticket 1234']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${hash}: pending -> approved\n`);
    expect(storeJson().nodes[hash]).toMatchObject({ state: 'approved', updated_by: expect.stringContaining('spire-edge-attest') });
    const attrs = await attest();
    expect(attrs.spiffeId).toBe(`spiffe://example.org/spire/agent/tpm/${hash}`);
    await new Promise((r2) => setTimeout(r2, 200));
    expect(events().at(-1)).toMatchObject({ outcome: 'accepted', enrolment: 'approved' });
  });

  it('enrol revoke: refused as revoked (with the note), which the revoker acts on', async () => {
    const r = await cli(['enrol', 'revoke', hash, '--store', store, '--note', 'stolen']);
    expect(r.stdout).toBe(`${hash}: approved -> revoked\n`);
    const err = await attest().catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_ENROLMENT_REVOKED', grpcCode: 7, fields: { rule: 'enrolment: revoked' } });
    expect(err.message).toContain('stolen');
    await new Promise((r2) => setTimeout(r2, 200));
    expect(events().at(-1)!.appraisal['instance-identity']).toMatchObject({ status: 'contraindicated', value: 96 });
    const listed = await cli(['enrol', 'list', '--store', store]);
    expect(listed.stdout).toMatch(new RegExp(`^revoked\\s+${hash}`));
  });

  it('a store that does not parse fails closed: UNAVAILABLE at attestation, INVALID_ARGUMENT at Configure', async () => {
    writeFileSync(store, '{"version":1,"nodes":{"not-a-hash":{}}}');
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_ENROLMENT_STORE', grpcCode: 14 });
    const other = new TpmServerAttestor(createLogger({ module: 't', level: 'error', sink: () => undefined }));
    await expect(other.configure({ ek_ca_path: join(work, 'ca.pem'), enrolment: 'required', enrolment_path: store }, core)).rejects.toMatchObject({
      grpcCode: 3,
      message: expect.stringContaining('keys are 64-hex EK hashes'),
    });
    await expect(other.configure({ ek_ca_path: join(work, 'ca.pem'), enrolment: 'required' }, core)).rejects.toMatchObject({
      message: expect.stringContaining('enrolment = "required" needs enrolment_path'),
    });
  });

  it('enrol approve refuses something that is not an EK hash (usage error, exit 2)', async () => {
    const r = await cli(['enrol', 'approve', 'node-7', '--store', store]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('64 hex digits');
  });
});

describe('enrolment = "off" (the default)', () => {
  it('admits a verified node without any store', async () => {
    const plain = new TpmServerAttestor(createLogger({ module: 't', level: 'error', sink: () => undefined }));
    await plain.configure({ ek_ca_path: join(work, 'ca.pem') }, core);
    const controller = new AbortController();
    const session = await agent.begin(controller.signal);
    await expect(plain.attest(session.payload, { signal: controller.signal, challenge: (b) => session.respond(b) })).resolves.toMatchObject({ canReattest: true });
  });
});
