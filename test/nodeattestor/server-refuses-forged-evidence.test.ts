/**
 * The server attestor against a fake or compromised agent, in-process: the agent's TPM is software
 * (soft-agent.ts), so it can send what a real TPM never signs. Each test names the security property; the
 * honest-path counterparts with a real swtpm are in server.test.ts and the shipped-binary attacks in
 * test/adversarial/.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { decodeChallenge } from '../../src/nodeattestor/wire.js';
import { createLogger } from '../../src/plugin/log.js';
import type { ServerAttestIo } from '../../src/plugin/types.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { parseCredentialFile } from '../../src/tpm/activation.js';
import { toHex } from '../../src/tpm/bytes.js';
import { PcrSelection } from '../../src/tpm/pcrs.js';
import { hierarchyQualifiedName, publicName, qualifiedName } from '../../src/tpm/public.js';
import { AK_ATTRIBUTES, softActivateCredential, softEk, softKey } from '../tpm/soft-tpm.js';
import { SoftAgent } from './soft-agent.js';
import { TPMA_OBJECT } from '../../src/tpm/constants.js';

const core = { trustDomain: 'example.org' };

function logger() {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }), lines };
}

async function server(agent: SoftAgent, config: Record<string, unknown> = {}, log = logger().log): Promise<TpmServerAttestor> {
  const s = new TpmServerAttestor(log);
  await s.configure({ ek_hash_allowlist: [agent.ekHash], require_event_log: false, ...config }, core);
  return s;
}

/** io that fails the test if the server sends a challenge: refusals before MakeCredential must not cost one. */
const noChallenge: ServerAttestIo = {
  signal: new AbortController().signal,
  challenge: () => Promise.reject(new Error('the server sent a challenge to an agent it should have refused first')),
};

describe('an honest soft TPM is admitted with exactly its identity', () => {
  it('agent ID is /spire/agent/<plugin_name>/<EK hash>, with pub_hash and every quoted PCR as selectors', async () => {
    const pcr7 = new Uint8Array(32).fill(0x77);
    const agent = new SoftAgent({ pcrs: new Map([[7, pcr7]]) });
    const attrs = await (await server(agent)).attest(agent.payload(), agent.io());
    expect(attrs.spiffeId).toBe(`spiffe://example.org/spire/agent/tpm/${agent.ekHash}`);
    expect(attrs.canReattest).toBe(true);
    expect(attrs.selectorValues).toContain(`pub_hash:${agent.ekHash}`);
    expect(attrs.selectorValues).toContain(`pcr:sha256:7:${toHex(pcr7)}`);
    expect(attrs.selectorValues.filter((s) => s.startsWith('pcr:sha256:'))).toHaveLength(10); // the default selection 0-9
    expect(attrs.selectorValues.some((s) => s.startsWith('secureboot:'))).toBe(false); // no log, no boot facts
  });
  it('plugin_name is the agent-ID path segment; selector_pcrs limits the PCR selectors', async () => {
    const agent = new SoftAgent();
    const attrs = await (await server(agent, { plugin_name: 'edge_tpm', selector_pcrs: [7, 0] })).attest(agent.payload(), agent.io());
    expect(attrs.spiffeId).toBe(`spiffe://example.org/spire/agent/edge_tpm/${agent.ekHash}`);
    expect(attrs.selectorValues.filter((s) => s.startsWith('pcr:'))).toEqual([`pcr:sha256:0:${'00'.repeat(32)}`, `pcr:sha256:7:${'00'.repeat(32)}`]);
  });
  it('the challenge carries a fresh 32-byte nonce, the configured PCR selection and a credential only this EK and AK open', async () => {
    const agent = new SoftAgent();
    const s = await server(agent, { pcr_selection: 'sha256:0,7' });
    const challenges: Uint8Array[] = [];
    for (let i = 0; i < 2; i++) await s.attest(agent.payload(), agent.io({}, { onChallenge: (b) => challenges.push(b) }));
    const [a, b] = challenges.map((c) => decodeChallenge(c));
    expect(a!.nonce).toHaveLength(32);
    expect(toHex(a!.nonce)).not.toBe(toHex(b!.nonce));
    expect(a!.pcrs).toBe('sha256:0,7');
    const credential = parseCredentialFile(a!.credential);
    expect(softActivateCredential(agent.ek, publicName(agent.ak.pub), credential)).toHaveLength(32);
    expect(() => softActivateCredential(agent.ek, publicName(softKey('rsa', { slot: 5 }).pub), credential)).toThrow(/integrity/);
  });
});

describe('refusals before any challenge: an unproven client costs no MakeCredential', () => {
  it('the server refuses to attest before it is configured (FAILED_PRECONDITION)', async () => {
    const err = await new TpmServerAttestor(logger().log).attest(new SoftAgent().payload(), noChallenge).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_NOT_CONFIGURED', grpcCode: GrpcCode.FAILED_PRECONDITION });
  });
  it('an EK that is neither allowlisted nor certified is PERMISSION_DENIED', async () => {
    const agent = new SoftAgent();
    const s = await server(SoftAgent.of('p256', 'rsa', 3));
    const err = await s.attest(agent.payload(), noChallenge).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
  });
  it('no event log while require_event_log is on (the default) is PERMISSION_DENIED naming the rule', async () => {
    const agent = new SoftAgent();
    const s = await server(agent, { require_event_log: true });
    const err = await s.attest(agent.payload(), noChallenge).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_EVENTLOG_MISSING', grpcCode: GrpcCode.PERMISSION_DENIED, fields: { rule: 'require_event_log' } });
    expect(err.message).toMatch(/^node [0-9a-f]{16}: no measured-boot event log/);
    const byDefault = new TpmServerAttestor(logger().log);
    await byDefault.configure({ ek_hash_allowlist: [agent.ekHash] }, core);
    await expect(byDefault.attest(agent.payload(), noChallenge)).rejects.toMatchObject({ code: 'ERR_EVENTLOG_MISSING' });
  });
  it('an AK that is not restricted is PERMISSION_DENIED: nothing is bound to a key that could sign a forged quote', async () => {
    const agent = new SoftAgent({ ak: softKey('rsa', { slot: 2, attributes: AK_ATTRIBUTES & ~TPMA_OBJECT.RESTRICTED }) });
    const err = await (await server(agent)).attest(agent.payload(), noChallenge).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_AK_NOT_RESTRICTED', grpcCode: GrpcCode.PERMISSION_DENIED });
  });
});

describe('a forged response is refused with PERMISSION_DENIED', () => {
  async function refusedWith(forgery: Parameters<SoftAgent['io']>[0], code: string, agent = new SoftAgent(), config: Record<string, unknown> = {}) {
    const { log, lines } = logger();
    const err = await (await server(agent, config, log)).attest(agent.payload(), agent.io(forgery)).catch((e) => e);
    expect(err).toMatchObject({ code, grpcCode: GrpcCode.PERMISSION_DENIED });
    const decision = lines.find((l) => l['@message'] === 'Attestation decision')!;
    expect(decision).toMatchObject({ outcome: 'refused', code, agent_id: `spiffe://example.org/spire/agent/tpm/${agent.ekHash}`, ek_hash: agent.ekHash });
    return { err, decision };
  }
  it('a secret the agent could not decrypt (no EK private key): credential activation fails', async () => {
    const { err, decision } = await refusedWith({ response: () => ({ secret: new Uint8Array(randomBytes(32)) }) }, 'ERR_CREDENTIAL_SECRET');
    expect(err.message).toMatch(/credential activation failed: the AK is not in the TPM holding this EK/);
    expect(decision['rule']).toBe('credential activation');
  });
  it('a secret of the wrong length fails the same way (no length oracle, no crash)', async () => {
    await refusedWith({ response: (_c, honest) => ({ secret: honest.secret!.subarray(0, 16) }) }, 'ERR_CREDENTIAL_SECRET');
  });
  it('a quote over an older nonce is refused', async () => {
    await refusedWith({ quote: () => ({ nonce: new Uint8Array(32).fill(1) }) }, 'ERR_QUOTE_NONCE');
  });
  it('a quote signed by another key than the AK whose credential was activated is refused', async () => {
    await refusedWith({ signer: softKey('rsa', { slot: 6 }) }, 'ERR_QUOTE_SIGNATURE');
  });
  it('a quote whose qualified signer names the AK under another EK is refused', async () => {
    const agent = new SoftAgent();
    const otherEk = softEk('p256', 107);
    await refusedWith({ quote: () => ({ qualifiedSigner: qualifiedName(qualifiedName(hierarchyQualifiedName(), otherEk.pub), agent.ak.pub) }) }, 'ERR_QUOTE_SIGNER', agent);
  });
  it('a quote over fewer PCRs than the server asked for is refused', async () => {
    await refusedWith(
      { quote: () => ({ selection: PcrSelection.parse('sha256:0,1'), values: [new Uint8Array(32), new Uint8Array(32)] }) },
      'ERR_QUOTE_SELECTION',
    );
  });
  it('a SHA-1 quote is refused', async () => {
    await refusedWith({ quote: () => ({ hash: HashAlg.SHA1 }), signer: undefined }, 'ERR_QUOTE_HASH_NOT_ALLOWED');
  });
});
