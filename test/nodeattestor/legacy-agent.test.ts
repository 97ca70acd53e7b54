/**
 * Migration from spiffe/spire-tpm-plugin: the built tpm-server, launched as SPIRE launches it, attesting a
 * client that speaks spire-tpm-plugin's agent protocol against a real swtpm (test/helpers/legacy-tpm-agent.ts;
 * the real Go agent could not be built here, see that file).
 */
import * as grpc from '@grpc/grpc-js';
import { createHash, createPublicKey } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyCommand } from '../../src/cli/policy-create.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { LegacyTpmAgent } from '../helpers/legacy-tpm-agent.js';
import { attestThroughServer, PluginHarness } from '../helpers/plugin-harness.js';
import { settingsHcl } from '../helpers/spire.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;

let work: string;
let tpmA: SwtpmHandle;
let tpmB: SwtpmHandle;
let agentA: LegacyTpmAgent;
let agentB: LegacyTpmAgent;
let caDir: string;
let policyPath: string;
const harnesses: PluginHarness[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'legacy-agent-test-'));
  [tpmA, tpmB] = await Promise.all([startSwtpm(), startSwtpm()]);
  agentA = new LegacyTpmAgent(tpmA.tcti);
  agentB = new LegacyTpmAgent(tpmB.tcti);
  caDir = join(work, 'ca');
  mkdirSync(caDir);
  writeFileSync(join(caDir, 'root.pem'), tpmA.rootCaPem);
  writeFileSync(join(caDir, 'intermediate.pem'), tpmA.intermediateCaPem);
  policyPath = join(work, 'policy.yaml');
  writeFileSync(policyPath, createPolicyCommand(new Uint8Array(readFileSync(LOG)), { pcrs: [0, 7], name: 'golden' }));
}, 120_000);

afterAll(async () => {
  for (const h of harnesses.splice(0)) await h.kill();
  agentA?.close();
  agentB?.close();
  await Promise.all([tpmA?.stop(), tpmB?.stop()]);
  rmSync(work, { recursive: true, force: true });
});

const hcl = settingsHcl;

async function server(settings: Record<string, unknown>): Promise<PluginHarness> {
  const h = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
  harnesses.push(h);
  await h.init();
  await h.configure(hcl({ ek_ca_path: caDir, ...settings }));
  return h;
}

const pubHash = (agent: LegacyTpmAgent) => createHash('sha256').update(agent.ekSpki!).digest('hex');

async function expectStatus(promise: Promise<unknown>, code: grpc.status, pattern: RegExp) {
  const err = (await promise.catch((e) => e)) as grpc.ServiceError;
  expect(err).toBeInstanceOf(Error);
  expect({ code: err.code, details: err.details }).toEqual({ code, details: expect.stringMatching(pattern) });
}

describe('spire-tpm-plugin agents on tpm-server', () => {
  it('admits a legacy agent with legacy_agents = "allow": same agent ID, pub_hash, legacy_agent:true, no boot selectors', async () => {
    const h = await server({ legacy_agents: 'allow' });
    const result = await attestThroughServer(h, await agentA.payload(), (c) => agentA.answer(c));
    const hash = pubHash(agentA);
    expect(result.challenges).toBe(1);
    expect(result.spiffe_id).toBe(`spiffe://example.org/spire/agent/tpm/${hash}`);
    expect(result.can_reattest).toBe(true);
    expect(result.selector_values).toEqual(
      expect.arrayContaining([`pub_hash:${hash}`, 'legacy_agent:true', 'ek_manufacturer:id:00001014', 'ek_ca:swtpm-localca-rootca']),
    );
    expect(result.selector_values.filter((s) => /^(policy|pcr|secureboot|kernel_cmdline_sha256):/.test(s))).toEqual([]);
  });

  it('admits an allowlisted legacy agent that sends no certificate, as spire-tpm-plugin hash_path would', async () => {
    const noCert = new LegacyTpmAgent(tpmB.tcti, { sendCertificate: false, akHandle: 0x81010021 });
    try {
      const payload = await noCert.payload();
      const h = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
      harnesses.push(h);
      await h.init();
      await h.configure(hcl({ ek_hash_allowlist: [pubHash(noCert)], legacy_agents: 'allow' }));
      const result = await attestThroughServer(h, payload, (c) => noCert.answer(c));
      expect(result.selector_values.sort()).toEqual([`pub_hash:${pubHash(noCert)}`, 'legacy_agent:true'].sort());
    } finally {
      noCert.close();
    }
  });

  it('admits a legacy agent with an ECC P-256 EK (default template), allowlisted by hash', async () => {
    const ecc = new LegacyTpmAgent(tpmB.tcti, { ekKind: 'ecc-p256', sendCertificate: false, akHandle: 0x81010022 });
    try {
      const payload = await ecc.payload();
      const key = createPublicKey({ key: Buffer.from(ecc.ekSpki!), format: 'der', type: 'spki' });
      expect({ type: key.asymmetricKeyType, curve: key.asymmetricKeyDetails?.namedCurve }).toEqual({ type: 'ec', curve: 'prime256v1' });
      const h = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
      harnesses.push(h);
      await h.init();
      await h.configure(hcl({ ek_hash_allowlist: [pubHash(ecc)], legacy_agents: 'allow' }));
      const result = await attestThroughServer(h, payload, (c) => ecc.answer(c));
      expect(result.spiffe_id).toBe(`spiffe://example.org/spire/agent/tpm/${pubHash(ecc)}`);
      expect(result.selector_values).toContain('legacy_agent:true');
    } finally {
      ecc.close();
    }
  });

  it('refuses legacy agents by default (legacy_agents = "deny") with PermissionDenied naming the rule', async () => {
    const h = await server({});
    await expectStatus(
      attestThroughServer(h, await agentA.payload(), (c) => agentA.answer(c)),
      grpc.status.PERMISSION_DENIED,
      /spire-tpm-plugin's attestation payload and legacy_agents is "deny".*docs\/migration\.md/,
    );
    // The audit line names the rule and the full EK hash, so the operator can tell which nodes still run the old agent.
    const parse = (l: string): Record<string, unknown> => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    };
    const decision = () => h.stderrLines.map(parse).find((l) => l['@message'] === 'Attestation decision');
    for (let i = 0; i < 100 && !decision(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(decision()).toMatchObject({ outcome: 'refused', code: 'ERR_LEGACY_AGENT_DENIED', rule: 'legacy_agents', legacy_agent: true, ek_hash: pubHash(agentA) });
  });

  it('a legacy agent cannot pass a boot policy: refused when enforced, no policy:* selector in report mode', async () => {
    const enforced = await server({ legacy_agents: 'allow', policy_path: policyPath, policy_match: 'any' });
    await expectStatus(
      attestThroughServer(enforced, await agentA.payload(), (c) => agentA.answer(c)),
      grpc.status.PERMISSION_DENIED,
      /boot policies are enforced .* sends no quote or event log/,
    );
    const report = await server({ legacy_agents: 'allow', policy_path: policyPath, policy_match: 'report' });
    const result = await attestThroughServer(report, await agentA.payload(), (c) => agentA.answer(c));
    expect(result.selector_values).toContain('legacy_agent:true');
    expect(result.selector_values.some((s) => s.startsWith('policy:'))).toBe(false);
  });

  it('refuses a wrong credential answer', async () => {
    const h = await server({ legacy_agents: 'allow' });
    const flipped = async (c: Buffer) => {
      const answer = JSON.parse((await agentA.answer(c)).toString()) as { Secret: string };
      const secret = Buffer.from(answer.Secret, 'base64');
      secret[0]! ^= 1;
      return Buffer.from(JSON.stringify({ Secret: secret.toString('base64') }));
    };
    await expectStatus(attestThroughServer(h, await agentA.payload(), flipped), grpc.status.PERMISSION_DENIED, /credential activation failed/);
  });

  it("refuses node A's EK with node B's AK: neither TPM can open the credential, a guess is refused", async () => {
    const h = await server({ legacy_agents: 'allow' });
    const a = JSON.parse((await agentA.payload()).toString()) as { EK: string; AK: unknown };
    const b = JSON.parse((await agentB.payload()).toString()) as { EK: string; AK: unknown };
    const spliced = Buffer.from(JSON.stringify({ EK: a.EK, AK: b.AK }));
    let activationErrors = 0;
    const answer = async (c: Buffer) => {
      for (const agent of [agentA, agentB]) await agent.answer(c).catch(() => activationErrors++);
      return Buffer.from(JSON.stringify({ Secret: Buffer.alloc(32).toString('base64') }));
    };
    await expectStatus(attestThroughServer(h, spliced, answer), grpc.status.PERMISSION_DENIED, /credential activation failed/);
    expect(activationErrors).toBe(2);
  });

  it.each([
    ['creation data that does not match the attested creation hash', (p: any) => ({ ...p, AK: { ...p.AK, CreateData: Buffer.alloc(115).toString('base64') } }), /creation hash does not match/],
    ['a TPM 1.2 AK', (p: any) => ({ ...p, AK: { ...p.AK, CreateData: null } }), /TPM 1\.2 is not supported/],
    ['an EK field without a PUBLIC KEY block', (p: any) => ({ ...p, EK: Buffer.from('hello').toString('base64') }), /field "EK"/],
    ['an unknown field', (p: any) => ({ ...p, Extra: 1 }), /unknown field\(s\) Extra/],
  ])('answers InvalidArgument for %s', async (_name, tamper, pattern) => {
    const h = await server({ legacy_agents: 'allow' });
    const payload = Buffer.from(JSON.stringify(tamper(JSON.parse((await agentA.payload()).toString()))));
    await expectStatus(attestThroughServer(h, payload, (c) => agentA.answer(c)), grpc.status.INVALID_ARGUMENT, pattern);
  });
});
