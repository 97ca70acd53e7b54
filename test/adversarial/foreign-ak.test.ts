/**
 * Attack class: foreign AK. The quote must come from the AK that was activated with this node's EK, in this node's
 * TPM. Root on two trusted nodes (both real swtpm TPMs with CA-issued EK certificates) mixes their keys: node A's EK
 * with node B's AK, node A's activation with node B's quote, or a software AK with perfect attributes that no TPM
 * holds. The shipped tpm-server refuses each with PERMISSION_DENIED naming the binding that failed.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, decodeResponse, encodePayload, encodeResponse } from '../../src/nodeattestor/wire.js';
import { encodeTpm2bPublic } from '../../src/tpm/public.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { softKey, softQuote } from '../tpm/soft-tpm.js';
import { PcrSelection } from '../../src/tpm/pcrs.js';
import { AGENT_AK_HANDLE, AttackLab, expectRefused, goldenEvents, NodeRoot, readChallenge, writeLog } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
let nodeA: SwtpmHandle;
let nodeB: SwtpmHandle;
let server: PluginHarness;
let agentA: PluginHarness;
let agentB: PluginHarness;
let payloadA: ReturnType<typeof decodePayload>;
let payloadB: ReturnType<typeof decodePayload>;

const zeroResponse = () => Buffer.from(encodeResponse({ secret: new Uint8Array(32), attest: new Uint8Array(10), signature: new Uint8Array(10), pcr_values: new Uint8Array(0) }));

beforeAll(async () => {
  const events = goldenEvents();
  [nodeA, nodeB] = await Promise.all([lab.bootNode(events), lab.bootNode(events)]);
  const logPath = lab.file('eventlog.bin', writeLog(events));
  server = await lab.server(undefined);
  [agentA, agentB] = await Promise.all([lab.agent(nodeA, logPath), lab.agent(nodeB, logPath)]);
  // The agents create and persist their AKs; these payloads are public (the wire is in the clear).
  payloadA = decodePayload(await openAgentSession(agentA).payload);
  payloadB = decodePayload(await openAgentSession(agentB).payload);
  expect(Buffer.from(payloadA.ak_pub).equals(Buffer.from(payloadB.ak_pub))).toBe(false);
}, 120_000);

afterAll(() => lab.cleanup());

describe('foreign AK: the quote must be signed by the AK activated with this EK', () => {
  it("node A's EK with node B's AK: node A's TPM cannot activate the credential; a guessed secret is PERMISSION_DENIED", async () => {
    const attempt = openServerAttempt(server, Buffer.from(encodePayload({ ...payloadA, ak_pub: payloadB.ak_pub })));
    const challenge = readChallenge(await attempt.challenge);
    // Root on node A tries its own AK against a credential bound to B's AK name: the TPM refuses.
    await expect(new NodeRoot(nodeA).activate(AGENT_AK_HANDLE, challenge.credential)).rejects.toThrow();
    attempt.respond(zeroResponse());
    await expectRefused(attempt.result, grpc.status.PERMISSION_DENIED, /credential activation failed: the AK is not in the TPM holding this EK/);
  });

  it("node A's real activation with node B's TPM quoting the same nonce (root on both nodes): PERMISSION_DENIED, signature", async () => {
    const tpmA = openAgentSession(agentA);
    const attempt = openServerAttempt(server, await tpmA.payload);
    const raw = await attempt.challenge;
    const challenge = readChallenge(raw);
    const genuine = decodeResponse(await tpmA.respond(raw));
    const fromB = await new NodeRoot(nodeB).tools.quote({ akHandle: AGENT_AK_HANDLE, selection: challenge.pcrs, nonce: challenge.nonce });
    attempt.respond(Buffer.from(encodeResponse({ secret: genuine.secret, attest: fromB.attest, signature: fromB.signature, pcr_values: fromB.pcrValues })));
    await expectRefused(attempt.result, grpc.status.PERMISSION_DENIED, /quote: signature does not verify with the AK/);
    tpmA.cancel();
  });

  it("node B's AK and node B's quote over node A's nonce, sent as node A: PERMISSION_DENIED, credential activation", async () => {
    const attempt = openServerAttempt(server, Buffer.from(encodePayload({ ...payloadA, ak_pub: payloadB.ak_pub })));
    const challenge = readChallenge(await attempt.challenge);
    const fromB = await new NodeRoot(nodeB).tools.quote({ akHandle: AGENT_AK_HANDLE, selection: challenge.pcrs, nonce: challenge.nonce });
    // Everything about the quote verifies with the AK named in the payload; only the activation cannot be faked.
    attempt.respond(Buffer.from(encodeResponse({ secret: new Uint8Array(32), attest: fromB.attest, signature: fromB.signature, pcr_values: fromB.pcrValues })));
    await expectRefused(attempt.result, grpc.status.PERMISSION_DENIED, /credential activation failed/);
  });

  it('a software AK with every attribute right and a perfect quote over the nonce and the real PCR values: PERMISSION_DENIED', async () => {
    const soft = softKey('rsa', { slot: 7 });
    const attempt = openServerAttempt(server, Buffer.from(encodePayload({ ...payloadA, ak_pub: encodeTpm2bPublic({ ...soft.pub, scheme: soft.pub.scheme }) })));
    const challenge = readChallenge(await attempt.challenge);
    const selection = PcrSelection.parse(challenge.pcrs);
    const real = await new NodeRoot(nodeA).tools.readPcrs(selection);
    const values = Array.from({ length: real.length / 32 }, (_, i) => real.subarray(i * 32, i * 32 + 32));
    const q = softQuote(soft, { selection, values, nonce: challenge.nonce });
    attempt.respond(Buffer.from(encodeResponse({ secret: new Uint8Array(32), attest: q.attestBytes, signature: q.signatureBytes, pcr_values: q.pcrValues })));
    await expectRefused(attempt.result, grpc.status.PERMISSION_DENIED, /credential activation failed: the AK is not in the TPM holding this EK/);
  });

  it('control: each node attests with its own AK', async () => {
    for (const agent of [agentA, agentB]) {
      const tpm = openAgentSession(agent);
      const attempt = openServerAttempt(server, await tpm.payload);
      attempt.respond(await tpm.respond(await attempt.challenge));
      expect((await attempt.result).spiffe_id).toMatch(/\/spire\/agent\/tpm\//);
      tpm.cancel();
    }
  });
});
