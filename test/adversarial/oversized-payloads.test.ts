/**
 * Attack class: oversized payloads. Every field of every message has a bound, checked before the bytes are decoded
 * or parsed, and the message as a whole has one. A client with no TPM (only a trusted node's public EK) sends each
 * field just past its bound, and a man in the middle does the same to the agent. The shipped plugins refuse each with
 * INVALID_ARGUMENT naming the message and the field, and keep serving.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CHALLENGE_BYTES, MAX_PAYLOAD_BYTES, MAX_RESPONSE_BYTES, decodePayload } from '../../src/nodeattestor/wire.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import { AttackLab, expectRefused, genuineAttestation } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
const KIB = 1024;
const MIB = 1024 * KIB;
let server: PluginHarness;
let agent: PluginHarness;
/** The genuine payload as JSON, for field-by-field edits. */
let payloadJson: Record<string, unknown>;

beforeAll(async () => {
  ({ server, agent } = await lab.goldenNode());
  const payload = await openAgentSession(agent).payload;
  decodePayload(payload); // it is a valid payload
  payloadJson = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
}, 120_000);

afterAll(() => lab.cleanup());

/** The longest base64 text the wire accepts for a field of `maxBytes` (wire.ts b64), plus one quantum (4 chars). */
const pastBound = (maxBytes: number): string => 'A'.repeat(Math.ceil(maxBytes / 3) * 4 + 4 + 4);
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const tooBig = (field: string) => new RegExp(`field "${field.replaceAll('.', '\\.')}": Too big: expected (string|array) to have <=`);

describe('oversized payloads: every field is bounded before it is decoded', () => {
  it.each([
    ['ek_pub', () => ({ ek_pub: pastBound(4096) })],
    ['ek_cert', () => ({ ek_cert: pastBound(16 * KIB) })],
    ['ek_intermediates', () => ({ ek_intermediates: Array.from({ length: 9 }, () => 'AAAA') })],
    ['ek_intermediates.0', () => ({ ek_intermediates: [pastBound(16 * KIB)] })],
    ['ak_pub', () => ({ ak_pub: pastBound(4096) })],
    ['event_log', () => ({ event_log: pastBound(8 * MIB) })],
    ['ima_log', () => ({ ima_log: pastBound(8 * MIB) })],
    ['tpm.manufacturer', () => ({ tpm: { manufacturer: 'M'.repeat(65), vendor: 'v', firmware_version: '1' } })],
    ['tpm.vendor', () => ({ tpm: { manufacturer: 'IBM', vendor: 'v'.repeat(129), firmware_version: '1' } })],
    ['tpm.firmware_version', () => ({ tpm: { manufacturer: 'IBM', vendor: 'v', firmware_version: '1'.repeat(33) } })],
  ])('payload field %s past its bound: INVALID_ARGUMENT before any challenge', async (field, edit) => {
    const attempt = openServerAttempt(server, json({ ...payloadJson, ...edit() }));
    await expect(attempt.challenge).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    const err = await expectRefused(attempt.result, grpc.status.INVALID_ARGUMENT, tooBig(field));
    expect(err.details).toMatch(/^attestation payload: /);
  });

  it(`a payload past ${MAX_PAYLOAD_BYTES} bytes: INVALID_ARGUMENT by its size alone`, async () => {
    const padded = json({ ...payloadJson, event_log: 'A'.repeat(MAX_PAYLOAD_BYTES) });
    await expectRefused(
      openServerAttempt(server, padded).result,
      grpc.status.INVALID_ARGUMENT,
      new RegExp(`^attestation payload is ${padded.length} bytes, more than ${MAX_PAYLOAD_BYTES}$`),
    );
  });

  it('a payload with more than 256 JSON members: INVALID_ARGUMENT before parsing', async () => {
    const stuffed = json({ ...payloadJson, ek_intermediates: Array.from({ length: 600 }, () => '') });
    await expectRefused(openServerAttempt(server, stuffed).result, grpc.status.INVALID_ARGUMENT, /^attestation payload: more than 256 JSON members$/);
  });

  it('a TPM2B_PUBLIC within the wire bound but past the TPM bound (1024 bytes of TPMT_PUBLIC): INVALID_ARGUMENT', async () => {
    const big = Buffer.alloc(2 + 2000);
    big.writeUInt16BE(2000, 0);
    await expectRefused(openServerAttempt(server, json({ ...payloadJson, ak_pub: big.toString('base64') })).result, grpc.status.INVALID_ARGUMENT, /TPM2B_PUBLIC/);
  });

  /** A genuine challenge answered with `response` (the attacker needs no TPM to send bytes). */
  async function answer(response: Buffer): Promise<unknown> {
    const attempt = openServerAttempt(server, json(payloadJson));
    await attempt.challenge;
    attempt.respond(response);
    return attempt.result;
  }
  const responseWith = (fields: Record<string, unknown>) => json({ v: 1, secret: 'AAAA', attest: 'AAAA', signature: 'AAAA', pcr_values: 'AAAA', ...fields });

  it.each([
    ['secret', () => ({ secret: pastBound(64) })],
    ['attest', () => ({ attest: pastBound(4096) })],
    ['signature', () => ({ signature: pastBound(4096) })],
    ['pcr_values', () => ({ pcr_values: pastBound(24 * 64 * 4) })],
    ['ima_log', () => ({ ima_log: pastBound(8 * MIB) })],
  ])('challenge response field %s past its bound: INVALID_ARGUMENT', async (field, edit) => {
    const err = await expectRefused(answer(responseWith(edit())), grpc.status.INVALID_ARGUMENT, tooBig(field));
    expect(err.details).toMatch(/^challenge response: /);
  });

  it(`a challenge response past ${MAX_RESPONSE_BYTES} bytes: INVALID_ARGUMENT by its size alone`, async () => {
    const padded = responseWith({ ima_log: 'A'.repeat(MAX_RESPONSE_BYTES) });
    await expectRefused(answer(padded), grpc.status.INVALID_ARGUMENT, new RegExp(`^challenge response is ${padded.length} bytes, more than ${MAX_RESPONSE_BYTES}$`));
  });

  it.each([
    [`a challenge past ${MAX_CHALLENGE_BYTES} bytes`, () => json({ v: 1, credential: 'A'.repeat(MAX_CHALLENGE_BYTES), nonce: 'AAAA', pcrs: 'sha256:0' }), /challenge is \d+ bytes, more than 65536/],
    ['a challenge nonce past 64 bytes', () => json({ v: 1, credential: 'AAAA', nonce: pastBound(64), pcrs: 'sha256:0' }), /challenge: field "nonce": Too big/],
    ['a challenge credential past 4096 bytes', () => json({ v: 1, credential: pastBound(4096), nonce: 'AAAA', pcrs: 'sha256:0' }), /challenge: field "credential": Too big/],
    ['a challenge PCR selection past 256 characters', () => json({ v: 1, credential: 'AAAA', nonce: 'AAAA', pcrs: `sha256:${'0,'.repeat(200)}0` }), /challenge: field "pcrs": Too big/],
  ])('a man in the middle sends the agent %s: the agent refuses with INVALID_ARGUMENT before the TPM sees it', async (_name, make, pattern) => {
    const session = openAgentSession(agent);
    await session.payload;
    const err = (await session.respond(make()).catch((e) => e)) as grpc.ServiceError & { side?: string };
    expect({ side: err.side, code: err.code }).toEqual({ side: 'agent', code: grpc.status.INVALID_ARGUMENT });
    expect(err.details).toMatch(pattern);
  });

  it('after all of it, both plugins still serve: a genuine attestation succeeds', async () => {
    expect((await genuineAttestation(agent, server)).attributes.spiffe_id).toMatch(/\/spire\/agent\/tpm\//);
    expect(server.child.exitCode).toBeNull();
    expect(agent.child.exitCode).toBeNull();
  });
});
