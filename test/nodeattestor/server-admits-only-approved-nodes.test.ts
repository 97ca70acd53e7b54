/**
 * Security property: with `enrolment = "required"` a node whose TPM evidence verified is still admitted only once its
 * EK is approved in the store; an unknown one is recorded as pending and refused, a revoked one refused, and a store
 * that does not parse fails closed at Configure. In-process with soft TPMs (every mutant of the server's enrolment
 * wiring is visible to `npm run mutate`); test/revocation/enrolment.test.ts drives the same with swtpm and the CLI.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import { SoftAgent } from './soft-agent.js';

const core = { trustDomain: 'example.org' };
const agent = SoftAgent.of('p256', 'p256', 21);
let work: string;
let n = 0;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'server-enrolment-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function storePath(nodes: Record<string, unknown> | undefined): string {
  const path = join(work, `store-${n++}.json`);
  if (nodes) writeFileSync(path, JSON.stringify({ version: 1, nodes }));
  return path;
}

async function server(enrolmentPath: string): Promise<TpmServerAttestor> {
  const s = new TpmServerAttestor(createLogger({ module: 'test', level: 'error', sink: () => undefined }));
  await s.configure({ ek_hash_allowlist: [agent.ekHash], require_event_log: false, enrolment: 'required', enrolment_path: enrolmentPath }, core);
  return s;
}

const record = (state: string, note?: string) => ({ state, updated_at: '2026-12-01T00:00:00Z', ...(note ? { note } : {}) });

describe('enrolment = "required"', () => {
  it('an unknown node is recorded as pending with its agent ID and refused, naming the command that approves it', async () => {
    const path = storePath(undefined);
    const err = await (await server(path)).attest(agent.payload(), agent.io()).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED, code: 'ERR_ENROLMENT_PENDING' });
    expect(err.message).toContain(`spire-edge-attest enrol approve ${agent.ekHash}`);
    const stored = JSON.parse(readFileSync(path, 'utf8'));
    expect(stored.nodes[agent.ekHash]).toMatchObject({ state: 'pending', agent_id: `spiffe://example.org/spire/agent/tpm/${agent.ekHash}` });
  });
  it('an approved node is admitted', async () => {
    const s = await server(storePath({ [agent.ekHash]: record('approved') }));
    await expect(s.attest(agent.payload(), agent.io())).resolves.toMatchObject({ spiffeId: `spiffe://example.org/spire/agent/tpm/${agent.ekHash}` });
  });
  it('a revoked node is refused with the operator note', async () => {
    const s = await server(storePath({ [agent.ekHash]: record('revoked', 'stolen from site 4') }));
    const err = await s.attest(agent.payload(), agent.io()).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED, code: 'ERR_ENROLMENT_REVOKED' });
    expect(err.message).toContain('stolen from site 4');
  });
  it('approval never stands in for the TPM evidence: an approved EK with a forged activation answer is refused', async () => {
    const s = await server(storePath({ [agent.ekHash]: record('approved') }));
    const err = await s.attest(agent.payload(), agent.io({ response: () => ({ secret: new Uint8Array(32) }) })).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED, code: 'ERR_CREDENTIAL_SECRET' });
  });
  it('a store that does not parse fails closed at Configure, naming the file (INVALID_ARGUMENT)', async () => {
    const path = join(work, 'broken.json');
    writeFileSync(path, '{"version": 1, "nodes": ');
    const err = await new TpmServerAttestor(createLogger({ module: 'test', level: 'error', sink: () => undefined }))
      .configure({ ek_hash_allowlist: [agent.ekHash], enrolment: 'required', enrolment_path: path }, core)
      .catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT });
    expect(err.message).toContain(path);
  });
});
