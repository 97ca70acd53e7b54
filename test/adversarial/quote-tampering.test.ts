/**
 * Attack class: quote tampering. Root on a trusted node lets the TPM answer honestly, then edits the quote: flipped
 * bits anywhere in TPMS_ATTEST or the signature, a weaker signature hash, a genuine AK-signed attestation of another
 * type over the same nonce (TPM2_GetTime), or a quote from a key that is in this TPM and activates with
 * this EK but is not the EK's child (wrong qualifiedSigner). The shipped tpm-server refuses each with
 * PERMISSION_DENIED naming the check that failed.
 *
 * A wrong `magic` can only reach the server with a signature over it, and a restricted AK never signs a forged
 * TPM_GENERATED_VALUE structure (TPM 2.0 Part 1, 36.7): the flipped-magic case is refused by the signature; the magic
 * check behind it is tested in-process (test/tpm/quote.test.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, decodeResponse, encodePayload, encodeResponse, type ChallengeResponse } from '../../src/nodeattestor/wire.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { AGENT_AK_HANDLE, AttackLab, expectRefused, genuineAttestation, goldenEvents, hex32, NodeRoot, readChallenge, writeLog } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
let node: SwtpmHandle;
let root: NodeRoot;
let server: PluginHarness;
let agent: PluginHarness;

beforeAll(async () => {
  const events = goldenEvents();
  node = await lab.bootNode(events);
  root = new NodeRoot(node);
  const logPath = lab.file('eventlog.bin', writeLog(events));
  server = await lab.server(undefined);
  agent = await lab.agent(node, logPath);
  expect((await genuineAttestation(agent, server)).attributes.spiffe_id).toMatch(/\/spire\/agent\/tpm\//);
}, 120_000);

afterAll(() => lab.cleanup());

/** A genuine attestation whose response the attacker rewrites after the TPM produced it. */
type EditedResponse = Parameters<typeof encodeResponse>[0];
function tampered(edit: (r: ChallengeResponse, challenge: Buffer) => EditedResponse | Promise<EditedResponse>): Promise<unknown> {
  return (async () => {
    const tpm = openAgentSession(agent);
    const attempt = openServerAttempt(server, await tpm.payload);
    const challenge = await attempt.challenge;
    const genuine = decodeResponse(await tpm.respond(challenge));
    attempt.respond(Buffer.from(encodeResponse(await edit(genuine, challenge))));
    try {
      return await attempt.result;
    } finally {
      tpm.cancel();
    }
  })();
}

const flip = (bytes: Uint8Array, at: number, mask = 0x01): Uint8Array => {
  const out = Uint8Array.from(bytes);
  out[at < 0 ? out.length + at : at]! ^= mask;
  return out;
};

// TPMS_ATTEST: magic(4) type(2) TPM2B qualifiedSigner(2+34) TPM2B extraData(2+32) clockInfo(17) firmwareVersion(8)
// TPML_PCR_SELECTION TPM2B pcrDigest.
const ATTEST_FIELDS: Array<[string, number]> = [
  ['magic', 0],
  ['type', 5],
  ['qualifiedSigner', 2 + 4 + 2 + 10],
  ['extraData (the nonce)', 6 + 36 + 2 + 5],
  ['clockInfo', 6 + 36 + 34 + 3],
  ['firmwareVersion', 6 + 36 + 34 + 17 + 7],
  ['pcrDigest', -1],
];

describe('quote tampering: only the TPM-signed quote of this AK, over this nonce, counts', () => {
  it.each(ATTEST_FIELDS)('a flipped bit in TPMS_ATTEST.%s: PERMISSION_DENIED, signature', async (_field, at) => {
    await expectRefused(
      tampered((r) => ({ ...r, attest: flip(r.attest, at) })),
      grpc.status.PERMISSION_DENIED,
      /quote: signature does not verify with the AK/,
    );
  });

  it('a flipped bit in the signature: PERMISSION_DENIED, signature', async () => {
    await expectRefused(tampered((r) => ({ ...r, signature: flip(r.signature, -3) })), grpc.status.PERMISSION_DENIED, /quote: signature does not verify/);
  });

  it('the signature hash relabelled as SHA-1 (TPMT_SIGNATURE.hash): PERMISSION_DENIED, hash not allowed', async () => {
    const sha1 = (sig: Uint8Array) => Uint8Array.from([...sig.subarray(0, 2), 0x00, 0x04, ...sig.subarray(4)]);
    await expectRefused(tampered((r) => ({ ...r, signature: sha1(r.signature) })), grpc.status.PERMISSION_DENIED, /quote: signature hash sha1 is not allowed/);
  });

  it('a genuine AK-signed TPM2_GetTime over the nonce instead of a quote: PERMISSION_DENIED, type', async () => {
    const err = await expectRefused(
      tampered(async (r, challenge) => {
        const time = await root.getTime(AGENT_AK_HANDLE, readChallenge(challenge).nonce);
        return { ...r, attest: time.attest, signature: time.signature };
      }),
      grpc.status.PERMISSION_DENIED,
    );
    expect(err.details).toMatch(/quote: TPMS_ATTEST type 0x8019 is not TPM_ST_ATTEST_QUOTE/);
  });

  it("a restricted signing key in this TPM but under the owner's storage key (activates with the EK, quotes honestly): PERMISSION_DENIED, qualifiedSigner", async () => {
    const handle = 0x81000b01;
    const akPub = await root.createKey({ handle, parent: 'owner-srk', attributes: 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign' });
    const genuine = decodePayload(await openAgentSession(agent).payload);
    const attempt = openServerAttempt(server, Buffer.from(encodePayload({ ...genuine, ak_pub: akPub })));
    const challenge = readChallenge(await attempt.challenge);
    // Every step the TPM can do, it does: the credential opens, the quote is real and over the right nonce and PCRs.
    const secret = await root.activate(handle, challenge.credential);
    const quote = await root.tools.quote({ akHandle: handle, selection: challenge.pcrs, nonce: challenge.nonce });
    attempt.respond(Buffer.from(encodeResponse({ secret, attest: quote.attest, signature: quote.signature, pcr_values: quote.pcrValues })));
    await expectRefused(attempt.result, grpc.status.PERMISSION_DENIED, /quote: qualifiedSigner is not the expected AK/);
    await root.run('tpm2_evictcontrol', ['-C', 'o', '-c', hex32(handle)]);
  });

  it('control: the untouched response attests', async () => {
    expect(await tampered((r) => r)).toMatchObject({ spiffe_id: expect.stringMatching(/\/spire\/agent\/tpm\//) });
  });
});
