/**
 * Attack class: AK attributes. Credential activation proves only that a key with the AK's name sits in the TPM
 * holding the EK; what makes its signature mean "the TPM quoted these PCRs" is its attributes. Root on a trusted node
 * creates keys in the real TPM under the real EK that activate perfectly but are not attestation keys — a
 * non-restricted signing key that signs a forged quote, a duplicable (fixedTPM clear) restricted key — and also presents
 * the agent's real AK with one attribute changed. The shipped tpm-server refuses each before issuing a challenge,
 * with PERMISSION_DENIED naming the attribute.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, encodePayload, encodeResponse, type AttestationPayload } from '../../src/nodeattestor/wire.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { TPM_ALG, TPMA_OBJECT } from '../../src/tpm/constants.js';
import { PcrSelection } from '../../src/tpm/pcrs.js';
import { encodeTpm2bPublic, hierarchyQualifiedName, parseTpm2bPublic, qualifiedName, type PublicTemplate, type TpmPublic } from '../../src/tpm/public.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { buildAttest, softKey } from '../tpm/soft-tpm.js';
import { AttackLab, expectRefused, goldenEvents, hex32, NodeRoot, readChallenge, writeLog } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
let node: SwtpmHandle;
let root: NodeRoot;
let server: PluginHarness;
let genuine: AttestationPayload;
let agentAk: TpmPublic;

beforeAll(async () => {
  const events = goldenEvents();
  node = await lab.bootNode(events);
  root = new NodeRoot(node);
  server = await lab.server(undefined);
  const agent = await lab.agent(node, lab.file('eventlog.bin', writeLog(events)));
  genuine = decodePayload(await openAgentSession(agent).payload);
  agentAk = parseTpm2bPublic(genuine.ak_pub);
}, 120_000);

afterAll(() => lab.cleanup());

/** What the attacker does once a challenge comes: everything the TPM and a key of its choosing can do. */
type Answer = (challenge: ReturnType<typeof readChallenge>) => Promise<Buffer>;

/** Presents `akPub` as the AK; if the server ever issues a challenge, answers it with `answer`. */
async function attack(akPub: Uint8Array, answer?: Answer): Promise<{ result: Promise<unknown>; challenged: () => boolean }> {
  const attempt = openServerAttempt(server, Buffer.from(encodePayload({ ...genuine, ak_pub: akPub })));
  let challenged = false;
  attempt.challenge.then(
    async (raw) => {
      challenged = true;
      attempt.respond(answer ? await answer(readChallenge(raw)) : Buffer.from('{}'));
    },
    () => undefined,
  );
  return { result: attempt.result, challenged: () => challenged };
}

describe('AK attributes: a key that activates is not yet an attestation key', () => {
  it('a NON-restricted signing key under the real EK signs a forged quote over the nonce and the real PCRs: PERMISSION_DENIED, before any challenge', async () => {
    const handle = 0x81000b11;
    const keyPub = await root.createKey({ handle, parent: 'ek', attributes: 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign' });
    const key = parseTpm2bPublic(keyPub);
    const ekPublic = parseTpm2bPublic(genuine.ek_pub);
    // Were the AK accepted, this would be admitted: a real activation and a TPM signature over a structure the
    // attacker wrote (TPM_GENERATED_VALUE, our nonce, the right qualifiedSigner, any PCR digest it likes).
    const { result, challenged } = await attack(keyPub, async (c) => {
      const selection = PcrSelection.parse(c.pcrs);
      const pcrValues = await root.tools.readPcrs(selection);
      const values = Array.from({ length: pcrValues.length / 32 }, (_, i) => pcrValues.subarray(i * 32, i * 32 + 32));
      const attest = buildAttest({ selection, values, nonce: c.nonce, qualifiedSigner: qualifiedName(qualifiedName(hierarchyQualifiedName(), ekPublic), key) });
      const secret = await root.activate(handle, c.credential);
      return Buffer.from(encodeResponse({ secret, attest, signature: await root.sign(handle, attest), pcr_values: pcrValues }));
    });
    await expectRefused(result, grpc.status.PERMISSION_DENIED, /AK: not restricted/);
    expect(challenged()).toBe(false);
    await root.run('tpm2_evictcontrol', ['-C', 'o', '-c', hex32(handle)]);
  });

  it('a duplicable restricted key (fixedTPM and fixedParent clear) under the real EK that quotes honestly: PERMISSION_DENIED, fixedTPM', async () => {
    const handle = 0x81000b12;
    const keyPub = await root.createKey({ handle, parent: 'ek', attributes: 'sensitivedataorigin|userwithauth|restricted|sign' });
    const { result, challenged } = await attack(keyPub, async (c) => {
      const secret = await root.activate(handle, c.credential);
      const q = await root.tools.quote({ akHandle: handle, selection: c.pcrs, nonce: c.nonce });
      return Buffer.from(encodeResponse({ secret, attest: q.attest, signature: q.signature, pcr_values: q.pcrValues }));
    });
    const err = await expectRefused(result, grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/AK: fixedTPM is clear/);
    expect(challenged()).toBe(false);
    await root.run('tpm2_evictcontrol', ['-C', 'o', '-c', hex32(handle)]);
  });

  const withAk = (edit: (ak: TpmPublic) => Partial<PublicTemplate>) => () => encodeTpm2bPublic({ ...agentAk, ...edit(agentAk) } as PublicTemplate);
  const clear = (bit: number) => withAk((ak) => ({ attributes: ak.attributes & ~bit }));
  it.each([
    ['sign clear', clear(TPMA_OBJECT.SIGN_ENCRYPT), /AK: not a signing key/],
    ['restricted clear', clear(TPMA_OBJECT.RESTRICTED), /AK: not restricted/],
    ['fixedTPM clear', clear(TPMA_OBJECT.FIXED_TPM), /AK: fixedTPM is clear/],
    ['fixedParent clear', clear(TPMA_OBJECT.FIXED_PARENT), /AK: fixedParent is clear/],
    ['sensitiveDataOrigin clear (an imported, known private key)', clear(TPMA_OBJECT.SENSITIVE_DATA_ORIGIN), /AK: sensitiveDataOrigin is clear/],
    ['decrypt set (a storage key)', withAk((ak) => ({ attributes: ak.attributes | TPMA_OBJECT.DECRYPT })), /AK: decrypt is set/],
    ['nameAlg SHA-1', withAk(() => ({ nameAlg: HashAlg.SHA1 })), /AK: nameAlg sha1 is not allowed/],
    ['signing scheme ECDSA-SHA1', withAk(() => ({ scheme: { alg: TPM_ALG.ECDSA, hashAlg: HashAlg.SHA1 } })), /AK: signing scheme 0x18 is not supported/],
    ['signing scheme EC-Schnorr', withAk(() => ({ scheme: { alg: TPM_ALG.ECSCHNORR, hashAlg: HashAlg.SHA256 } })), /AK: signing scheme 0x1c is not supported/],
    ['an RSA-1024 key', () => encodeTpm2bPublic({ ...softKey('rsa', { slot: 9, rsaBits: 1024 }).pub } as PublicTemplate), /AK: RSA key of 1024 bits is below 2048/],
  ])("the agent's AK with %s: PERMISSION_DENIED naming the attribute, no challenge", async (_name, make, pattern) => {
    const { result, challenged } = await attack(make());
    await expectRefused(result, grpc.status.PERMISSION_DENIED, pattern);
    expect(challenged()).toBe(false);
  });

  it("control: the agent's AK unchanged gets a challenge", async () => {
    const attempt = openServerAttempt(server, Buffer.from(encodePayload(genuine)));
    expect(readChallenge(await attempt.challenge).nonce.length).toBe(32);
    attempt.cancel();
  });
});
