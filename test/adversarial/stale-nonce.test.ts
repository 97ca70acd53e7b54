/**
 * Attack class: stale nonce. A response that arrives after `nonce_ttl` — a TPM held back on purpose, or an answer
 * computed long ago for this very challenge and released late — is not fresh. The shipped tpm-server ends the stream at
 * nonce_ttl with DEADLINE_EXCEEDED (not a verdict on the node: SPIRE's agent retries it) and never admits the late
 * answer, however genuine.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { AttackLab, expectRefused, goldenEvents, writeLog } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
let node: SwtpmHandle;
let logPath: string;
let server: PluginHarness;
let agent: PluginHarness;

beforeAll(async () => {
  const events = goldenEvents();
  node = await lab.bootNode(events);
  logPath = lab.file('eventlog.bin', writeLog(events));
  server = await lab.server(undefined, { nonce_ttl: '1s' });
  agent = await lab.agent(node, logPath);
}, 120_000);

afterAll(() => lab.cleanup());

describe('stale nonce: an answer after nonce_ttl is never admitted', () => {
  it('a genuine TPM answer held back past nonce_ttl: DEADLINE_EXCEEDED at the ttl, the late answer finds the stream closed', async () => {
    const tpm = openAgentSession(agent);
    const attempt = openServerAttempt(server, await tpm.payload);
    const challenge = await attempt.challenge;
    const issued = Date.now();
    const answer = await tpm.respond(challenge); // computed in time...
    let admitted = false;
    attempt.result.then(() => (admitted = true), () => undefined);
    await new Promise((r) => setTimeout(r, Math.max(0, 1_500 - (Date.now() - issued))));
    attempt.respond(answer); // ...released after the ttl
    const err = await expectRefused(attempt.result, grpc.status.DEADLINE_EXCEEDED, /no challenge response within nonce_ttl \(1000 ms; waited \d+ ms\)/);
    expect(admitted).toBe(false);
    expect(err.details).toMatch(/^node [0-9a-f]{16}: /);
    tpm.cancel();
  });

  it('a late answer is refused with the server still serving: the next, timely attempt attests', async () => {
    const tpm = openAgentSession(agent);
    const attempt = openServerAttempt(server, await tpm.payload);
    attempt.respond(await tpm.respond(await attempt.challenge));
    expect((await attempt.result).spiffe_id).toMatch(/\/spire\/agent\/tpm\//);
    tpm.cancel();
  });

  it('the decision log names the rule and the wait', async () => {
    const log = server.stderrLines.filter((l) => l.includes('"outcome":"refused"')).join('\n');
    expect(log).toMatch(/"code":"ERR_NONCE_EXPIRED"/);
    expect(log).toMatch(/"rule":"nonce freshness"/);
  });
});
