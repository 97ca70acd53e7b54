/**
 * Attack class: replay. Everything an honest node sends travels in the clear between agent and server, so an
 * attacker records a complete, valid attestation (payload, challenge, response) and replays it on a new Attest stream,
 * whole or in parts, without owning the TPM. The shipped tpm-server binds each response to the credential secret and
 * the nonce of its own stream: a replay is PERMISSION_DENIED naming which binding failed.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeResponse, encodeResponse } from '../../src/nodeattestor/wire.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { RelayResult } from '../helpers/spire-relay.js';
import { AttackLab, expectRefused, genuineAttestation } from './kit.js';
import { openServerAttempt } from './streams.js';

const lab = new AttackLab();
let server: PluginHarness;
let agent: PluginHarness;
let recorded: RelayResult;

beforeAll(async () => {
  ({ server, agent } = await lab.goldenNode({ max_pending_challenges_per_ek: 16 }));
  recorded = await genuineAttestation(agent, server); // what the wiretap saw
  expect(recorded.attributes.spiffe_id).toMatch(/\/spire\/agent\/tpm\/[0-9a-f]{64}$/);
}, 120_000);

afterAll(() => lab.cleanup());

describe('replay: a recorded valid attestation does not attest again', () => {
  it('the recorded response replayed on a new stream (no TPM involved): PERMISSION_DENIED, credential activation', async () => {
    const attempt = openServerAttempt(server, recorded.payload);
    const challenge = await attempt.challenge;
    expect(challenge.equals(recorded.challenges[0]!)).toBe(false); // a new credential and nonce every stream
    attempt.respond(recorded.responses[0]!);
    await expectRefused(attempt.result, grpc.status.PERMISSION_DENIED, /credential activation failed: the AK is not in the TPM holding this EK/);
  });

  it('the recorded quote with a freshly activated secret (the TPM answered, then the old quote was swapped in): PERMISSION_DENIED, nonce', async () => {
    const old = decodeResponse(recorded.responses[0]!);
    const err = await expectRefused(
      genuineAttestation(agent, server, {
        response: (r) => Buffer.from(encodeResponse({ ...decodeResponse(r), attest: old.attest, signature: old.signature, pcr_values: old.pcr_values })),
      }),
      grpc.status.PERMISSION_DENIED,
    );
    expect(err.details).toMatch(/quote: extraData does not equal the nonce/);
  });

  it('the recorded response replayed on many concurrent streams: every one refused, none admitted', async () => {
    const attempts = Array.from({ length: 8 }, () => openServerAttempt(server, recorded.payload));
    await Promise.all(attempts.map((a) => a.challenge));
    for (const a of attempts) a.respond(recorded.responses[0]!);
    for (const a of attempts) await expectRefused(a.result, grpc.status.PERMISSION_DENIED, /credential activation failed/);
  });

  it('control: the same node attests again when its TPM answers the new challenge', async () => {
    const again = await genuineAttestation(agent, server);
    expect(again.attributes.spiffe_id).toBe(recorded.attributes.spiffe_id);
  });
});
