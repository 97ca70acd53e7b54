/**
 * Attack class F6: make the server work before anything is proven. A client with no TPM sends 16 MiB of deeply
 * nested or member-stuffed JSON, eight at once; or a trusted node's public EK with an 8 MiB event log it never backs
 * with a response. The shipped tpm-server must refuse the JSON before parsing it (INVALID_ARGUMENT, fast, no memory
 * blow-up) and must not parse the event log until the TPM has answered.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, encodePayload } from '../../src/nodeattestor/wire.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { AttackLab, goldenEvents, writeLog } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
const MIB = 1024 * 1024;
let node: SwtpmHandle;
let logPath: string;

beforeAll(async () => {
  const events = goldenEvents();
  node = await lab.bootNode(events);
  logPath = lab.file('eventlog.bin', writeLog(events));
}, 120_000);

afterAll(() => lab.cleanup());

/** Peak resident memory of the plugin process so far (VmHWM), in MiB. */
function peakRssMib(plugin: PluginHarness): number {
  const status = readFileSync(`/proc/${plugin.child.pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)![1]) / 1024;
}

async function refusedFast(server: PluginHarness, payload: Buffer): Promise<{ err: grpc.ServiceError; ms: number }> {
  const started = performance.now();
  const err = (await openServerAttempt(server, payload).result.catch((e) => e)) as grpc.ServiceError;
  return { err, ms: performance.now() - started };
}

describe('F6: no amplification before proof of possession', () => {
  it.each([
    ['16 MiB of nested arrays', () => Buffer.from('['.repeat(16 * MIB - 2) + ']]')],
    ['16 MiB of nested objects', () => Buffer.from('{"a":'.repeat((16 * MIB) / 5 - 1) + '1' + '}'.repeat(0))],
    ['16 MiB of object members', () => Buffer.from(`{${Array.from({ length: (16 * MIB) / 8 - 1 }, (_, i) => `"${(i % 1e6).toString(36).padStart(4, '0')}":0`).join(',')}}`.slice(0, 16 * MIB))],
  ])('%s, eight at once: INVALID_ARGUMENT before JSON.parse, with bounded memory', async (_name, make) => {
    const server = await lab.server(undefined, { require_event_log: false });
    const payload = make();
    expect(payload.length).toBeGreaterThan(15 * MIB);
    const before = peakRssMib(server);
    const results = await Promise.all(Array.from({ length: 8 }, () => refusedFast(server, payload)));
    for (const { err } of results) {
      expect({ side: (err as { side?: string }).side, code: err.code }).toEqual({ side: 'server', code: grpc.status.INVALID_ARGUMENT });
      expect(err.details).toMatch(/attestation payload: (JSON nested deeper than 4 at byte \d+|more than 256 JSON members)/);
    }
    // Eight 16 MiB messages must arrive (gRPC buffers them); parsing them must add nothing like the 900 MB each once cost.
    console.log(`peak RSS grew ${Math.round(peakRssMib(server) - before)} MiB; slowest ${Math.round(Math.max(...results.map((r) => r.ms)))} ms`);
    expect(peakRssMib(server) - before).toBeLessThan(8 * 16 * 2 + 100);
    expect(Math.max(...results.map((r) => r.ms))).toBeLessThan(10_000);
  }, 120_000);

  it('an 8 MiB event log is not parsed before the TPM answers: the challenge comes first, the refusal after', async () => {
    const server = await lab.server(undefined, { require_event_log: true });
    const honest = openAgentSession(await lab.agent(node, logPath));
    const real = decodePayload(await honest.payload);
    const garbageLog = new Uint8Array(8 * MIB - 4096).fill(0xff); // would be ERR_EVENTLOG_MALFORMED at byte 0
    const payload = Buffer.from(encodePayload({ ...real, event_log: garbageLog }));
    const attempt = openServerAttempt(server, payload);
    // Without a TPM the attacker stops here: the server issued a challenge and parsed nothing.
    const challenge = await attempt.challenge;
    expect(challenge.length).toBeGreaterThan(0);
    // With the TPM's answer the log is parsed, and refused.
    attempt.respond(await honest.respond(challenge));
    const err = (await attempt.result.catch((e) => e)) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/event log/i);
  }, 60_000);
});
