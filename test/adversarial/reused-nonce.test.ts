/**
 * Attack class: reused nonce. The node's real TPM answers, but over a nonce the server issued for another stream
 * (one still outstanding, or one already used by a completed attestation): a man in the middle rewrites the
 * challenge's nonce, or swaps in the quote of a parallel attempt. Each nonce belongs to exactly one Attest stream and
 * counts once: the shipped tpm-server refuses a quote over any other with PERMISSION_DENIED naming the nonce.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeChallenge, decodeResponse, encodeChallenge, encodeResponse } from '../../src/nodeattestor/wire.js';
import { parseAttest } from '../../src/tpm/attest.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import { AttackLab, expectRefused, genuineAttestation } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
let server: PluginHarness;
let agent: PluginHarness;

beforeAll(async () => {
  ({ server, agent } = await lab.goldenNode({ max_pending_challenges_per_ek: 16 }));
}, 120_000);

afterAll(() => lab.cleanup());

describe('reused nonce: a quote counts only on the stream whose nonce it carries', () => {
  it('the quote of a parallel attempt (its nonce still outstanding) on another stream: PERMISSION_DENIED; on its own stream it attests', async () => {
    const [tpm1, tpm2] = [openAgentSession(agent), openAgentSession(agent)];
    const s1 = openServerAttempt(server, await tpm1.payload);
    const s2 = openServerAttempt(server, await tpm2.payload);
    const r1 = decodeResponse(await tpm1.respond(await s1.challenge));
    const r2 = decodeResponse(await tpm2.respond(await s2.challenge));
    // Stream 2 gets its own (correct) secret with stream 1's quote: the credential holds, the nonce does not.
    s2.respond(Buffer.from(encodeResponse({ ...r2, attest: r1.attest, signature: r1.signature, pcr_values: r1.pcr_values })));
    await expectRefused(s2.result, grpc.status.PERMISSION_DENIED, /quote: extraData does not equal the nonce/);
    s1.respond(Buffer.from(encodeResponse(r1)));
    expect((await s1.result).spiffe_id).toMatch(/\/spire\/agent\/tpm\//);
    tpm1.cancel();
    tpm2.cancel();
  });

  it('a man in the middle gives the TPM the nonce of a completed attestation: the genuine quote over it is PERMISSION_DENIED', async () => {
    const done = await genuineAttestation(agent, server);
    const usedNonce = decodeChallenge(done.challenges[0]!).nonce;
    let quotedNonce: Uint8Array | undefined;
    const err = await expectRefused(
      genuineAttestation(agent, server, {
        challenge: (c) => Buffer.from(encodeChallenge({ ...decodeChallenge(c), nonce: usedNonce })),
        response: (r) => {
          quotedNonce = parseAttest(decodeResponse(r).attest).extraData;
          return r;
        },
      }),
      grpc.status.PERMISSION_DENIED,
    );
    expect(quotedNonce).toEqual(usedNonce); // the TPM really signed a quote over the reused nonce
    expect(err.details).toMatch(/quote: extraData does not equal the nonce/);
  });

  it('the nonce of a stream the attacker opened and abandoned: PERMISSION_DENIED', async () => {
    const payload = await openAgentSession(agent).payload;
    const abandoned = openServerAttempt(server, payload);
    const abandonedNonce = decodeChallenge(await abandoned.challenge).nonce;
    abandoned.cancel();
    await expectRefused(
      genuineAttestation(agent, server, { challenge: (c) => Buffer.from(encodeChallenge({ ...decodeChallenge(c), nonce: abandonedNonce })) }),
      grpc.status.PERMISSION_DENIED,
      /quote: extraData does not equal the nonce/,
    );
  });

  it('the server never issues a nonce twice: 32 challenges, 32 distinct 32-byte nonces', async () => {
    const payload = await openAgentSession(agent).payload;
    const nonces = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const wave = Array.from({ length: 8 }, () => openServerAttempt(server, payload));
      for (const a of wave) {
        const nonce = decodeChallenge(await a.challenge).nonce;
        expect(nonce.length).toBe(32);
        nonces.add(Buffer.from(nonce).toString('hex'));
        a.cancel();
      }
      await new Promise((r) => setTimeout(r, 50)); // let the cancellations free their per-EK slots
    }
    expect(nonces.size).toBe(32);
  });
});
