/**
 * Security property: a challenge is answerable only within nonce_ttl (a late answer is DEADLINE_EXCEEDED, which
 * SPIRE's agent retries, not a verdict), and an unproven client can hold at most max_pending_challenges_per_ek
 * challenges per EK, each slot given back however the attempt ends. In-process with a soft TPM and real timers.
 */
import { describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import type { ServerAttestIo } from '../../src/plugin/types.js';
import { SoftAgent } from './soft-agent.js';

const core = { trustDomain: 'example.org' };
const log = createLogger({ module: 'test', level: 'error', sink: () => undefined });

async function server(agents: SoftAgent[], config: Record<string, unknown> = {}, now?: () => Date): Promise<TpmServerAttestor> {
  const s = new TpmServerAttestor(log, now ? { now } : {});
  await s.configure({ ek_hash_allowlist: agents.map((a) => a.ekHash), require_event_log: false, ...config }, core);
  return s;
}

/** An agent that takes the challenge and answers only when told to. */
function heldIo(agent: SoftAgent): { io: ServerAttestIo; answer: () => void; fail: () => void; challenged: Promise<void> } {
  let answer!: () => void;
  let fail!: () => void;
  let challenged!: () => void;
  const onChallenge = new Promise<void>((r) => (challenged = r));
  const decision = new Promise<'answer' | 'fail'>((resolve) => {
    answer = () => resolve('answer');
    fail = () => resolve('fail');
  });
  const io: ServerAttestIo = {
    signal: new AbortController().signal,
    challenge: async (bytes) => {
      challenged();
      if ((await decision) === 'fail') throw new Error('agent stream broke');
      return agent.respond(bytes);
    },
  };
  return { io, answer, fail, challenged: onChallenge };
}

describe('nonce_ttl', () => {
  it('an agent that never answers is cut off after nonce_ttl with DEADLINE_EXCEEDED naming the limit', async () => {
    const agent = new SoftAgent();
    const s = await server([agent], { nonce_ttl: '1s' });
    const started = performance.now();
    const err = await s.attest(agent.payload(), { signal: new AbortController().signal, challenge: () => new Promise<never>(() => undefined) }).catch((e) => e);
    const waited = performance.now() - started;
    expect(err).toMatchObject({ code: 'ERR_NONCE_EXPIRED', grpcCode: GrpcCode.DEADLINE_EXCEEDED, fields: { rule: 'nonce freshness' } });
    expect(err.message).toMatch(/no challenge response within nonce_ttl \(1000 ms; waited \d+ ms\)/);
    const reported = Number(/waited (\d+) ms/.exec(err.message)![1]);
    expect(reported).toBeGreaterThanOrEqual(950);
    expect(reported).toBeLessThanOrEqual(Math.ceil(waited));
    expect(err.fields.age_ms).toBe(reported);
    expect(waited).toBeGreaterThanOrEqual(950);
    expect(waited).toBeLessThan(5_000);
  });
  it('an answer that arrives after nonce_ttl (by the server clock) is DEADLINE_EXCEEDED; one at exactly nonce_ttl is still fresh', async () => {
    const agent = new SoftAgent();
    let now = Date.parse('2026-01-01T00:00:00Z');
    const s = await server([agent], { nonce_ttl: '10s' }, () => new Date(now));
    const late = (ms: number): ServerAttestIo => ({
      signal: new AbortController().signal,
      challenge: async (bytes) => {
        now += ms;
        return agent.respond(bytes);
      },
    });
    await expect(s.attest(agent.payload(), late(10_000))).resolves.toMatchObject({ canReattest: true });
    const err = await s.attest(agent.payload(), late(10_001)).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_NONCE_EXPIRED', grpcCode: GrpcCode.DEADLINE_EXCEEDED, fields: { age_ms: 10_001 } });
    expect(err.message).toMatch(/\(10000 ms; waited 10001 ms\)/);
  });
  it('an answered challenge leaves no timer behind (it would hold the plugin process up to nonce_ttl at unload)', async () => {
    const agent = new SoftAgent();
    const s = await server([agent], { nonce_ttl: '600s' });
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    await expect(s.attest(agent.payload(), agent.io())).resolves.toMatchObject({ canReattest: true });
    await expect(s.attest(agent.payload(), agent.io({ response: () => ({ secret: new Uint8Array(32) }) }))).rejects.toMatchObject({ code: 'ERR_CREDENTIAL_SECRET' });
    expect(timers()).toBe(before);
  });
});

describe('max_pending_challenges_per_ek', () => {
  it('the limit is per EK and counts only outstanding challenges; the refusal names the count and the limit', async () => {
    const a = new SoftAgent();
    const b = SoftAgent.of('p256', 'p256', 1);
    const s = await server([a, b], { max_pending_challenges_per_ek: 2 });
    const first = heldIo(a);
    const second = heldIo(a);
    const p1 = s.attest(a.payload(), first.io);
    const p2 = s.attest(a.payload(), second.io);
    await Promise.all([first.challenged, second.challenged]);
    const third = await s.attest(a.payload(), a.io()).catch((e) => e);
    expect(third).toMatchObject({ code: 'ERR_CHALLENGES_PER_EK', grpcCode: GrpcCode.RESOURCE_EXHAUSTED, fields: { rule: 'max_pending_challenges_per_ek', pending: 2 } });
    expect(third.message).toMatch(/2 challenges are already outstanding for this EK \(max_pending_challenges_per_ek 2\)/);
    // Another EK is not affected by the first one's challenges.
    await expect(s.attest(b.payload(), b.io())).resolves.toMatchObject({ canReattest: true });
    first.answer();
    await expect(p1).resolves.toMatchObject({ canReattest: true });
    // One slot is free again, not two.
    const refill = heldIo(a);
    const p3 = s.attest(a.payload(), refill.io);
    await refill.challenged;
    await expect(s.attest(a.payload(), a.io())).rejects.toMatchObject({ code: 'ERR_CHALLENGES_PER_EK' });
    second.answer();
    refill.answer();
    await Promise.all([p2, p3]);
  });
  it('by default an EK may have 4 challenges outstanding, not 5', async () => {
    const agent = new SoftAgent();
    const s = await server([agent]);
    const held = [heldIo(agent), heldIo(agent), heldIo(agent), heldIo(agent)];
    const pending = held.map((h) => s.attest(agent.payload(), h.io));
    await Promise.all(held.map((h) => h.challenged));
    await expect(s.attest(agent.payload(), agent.io())).rejects.toMatchObject({ code: 'ERR_CHALLENGES_PER_EK', fields: { pending: 4 } });
    held.forEach((h) => h.answer());
    await Promise.all(pending);
  });
  it('a slot is given back when the agent stream fails, when the answer is late and when the answer is forged', async () => {
    const agent = new SoftAgent();
    const s = await server([agent], { max_pending_challenges_per_ek: 1, nonce_ttl: '1s' });
    const broken = heldIo(agent);
    const p = s.attest(agent.payload(), broken.io);
    await broken.challenged;
    broken.fail();
    await expect(p).rejects.toThrow(/agent stream broke/);
    await expect(s.attest(agent.payload(), { signal: new AbortController().signal, challenge: () => new Promise<never>(() => undefined) })).rejects.toMatchObject({
      code: 'ERR_NONCE_EXPIRED',
    });
    await expect(s.attest(agent.payload(), agent.io({ response: () => ({ secret: new Uint8Array(32) }) }))).rejects.toMatchObject({ code: 'ERR_CREDENTIAL_SECRET' });
    // After three failed attempts the single slot is free: the honest answer is admitted.
    await expect(s.attest(agent.payload(), agent.io())).resolves.toMatchObject({ canReattest: true });
  });
  it('pending challenges survive a reconfiguration: a new limit applies to the challenges already outstanding', async () => {
    const agent = new SoftAgent();
    const s = await server([agent], { max_pending_challenges_per_ek: 4 });
    const held = heldIo(agent);
    const p = s.attest(agent.payload(), held.io);
    await held.challenged;
    await s.configure({ ek_hash_allowlist: [agent.ekHash], require_event_log: false, max_pending_challenges_per_ek: 1 }, core);
    await expect(s.attest(agent.payload(), agent.io())).rejects.toMatchObject({ code: 'ERR_CHALLENGES_PER_EK', fields: { pending: 1 } });
    held.answer();
    await expect(p).resolves.toMatchObject({ canReattest: true });
    await expect(s.attest(agent.payload(), agent.io())).resolves.toMatchObject({ canReattest: true });
  });
});
