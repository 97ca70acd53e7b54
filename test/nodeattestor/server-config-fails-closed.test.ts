/**
 * Security property: a tpm-server configuration that would weaken attestation is refused at Configure (and by
 * Validate) with INVALID_ARGUMENT naming the key, and a risky but legal one is warned about. In-process, so the
 * refusals are checked against the attestor class itself (validate.test.ts checks the same through the binary).
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import { SoftAgent } from './soft-agent.js';

const core = { trustDomain: 'example.org' };
const agent = new SoftAgent();
const allow = { ek_hash_allowlist: [agent.ekHash] };
let work: string;
let policyPath: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'server-config-'));
  policyPath = join(work, 'policy.yaml');
  writeFileSync(policyPath, `policies:\n  - name: zero7\n    pcrs:\n      sha256:\n        "7": "${'00'.repeat(32)}"\n`);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function logger() {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }), lines };
}

async function refusedAtConfigure(raw: Record<string, unknown>, message: RegExp): Promise<void> {
  const configure = await new TpmServerAttestor(logger().log).configure(raw, core).catch((e) => e);
  expect(configure).toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT });
  expect(configure.message).toMatch(message);
  const validate = await new TpmServerAttestor(logger().log).validate(raw, core).catch((e) => e);
  expect(validate, 'Validate refuses what Configure refuses').toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT });
}

describe('Configure refuses what would weaken attestation', () => {
  it('no EK trust at all (neither ek_ca_path nor a non-empty ek_hash_allowlist)', async () => {
    await refusedAtConfigure({}, /set ek_ca_path, ek_hash_allowlist or both/);
    await refusedAtConfigure({ ek_hash_allowlist: [] }, /set ek_ca_path, ek_hash_allowlist or both/);
  });
  it('an allowlist entry that is not a sha256 hex digest', async () => {
    await refusedAtConfigure({ ek_hash_allowlist: ['abc'] }, /ek_hash_allowlist.*expected 64 hex digits/);
  });
  it.each([
    ['0s', 'a nonce that is never fresh'],
    ['999ms', 'below 1s'],
    ['601s', 'above 10m'],
  ])('nonce_ttl %s (%s)', async (ttl) => {
    await refusedAtConfigure({ ...allow, nonce_ttl: ttl }, /nonce_ttl.*must be between 1s and 10m/);
  });
  it.each(['..', '.', 'a/b', ''])('plugin_name %j (a path segment of every agent ID)', async (name) => {
    await refusedAtConfigure({ ...allow, plugin_name: name }, /plugin_name/);
  });
  it('enrolment = "required" without an enrolment store', async () => {
    await refusedAtConfigure({ ...allow, enrolment: 'required' }, /enrolment = "required" needs enrolment_path/);
  });
  it('a PCR selection that does not parse names the key', async () => {
    await refusedAtConfigure({ ...allow, pcr_selection: 'sha256:0,99' }, /key "pcr_selection"/);
    const err = await new TpmServerAttestor(logger().log).configure({ ...allow, pcr_selection: 'sha256:0,99' }, core).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_CONFIG_INVALID' });
  });
  it('a bad PCR selection beside a good policy file is still a configuration error, not a crash', async () => {
    await refusedAtConfigure({ ...allow, pcr_selection: 'sha256:0,99', policy_path: policyPath }, /key "pcr_selection"/);
  });
  it('several problems are reported together, counted, under the plugin name', async () => {
    const err = await new TpmServerAttestor(logger().log).configure({ ...allow, pcr_selection: 'sha256:99', policy_path: join(work, 'missing.yaml') }, core).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT, code: 'ERR_CONFIG_INVALID' });
    expect(err.message).toMatch(/^tpm server: 2 configuration problems: \(1\) /);
  });
  it('max_pending_challenges_per_ek outside 1..64', async () => {
    await refusedAtConfigure({ ...allow, max_pending_challenges_per_ek: 0 }, /max_pending_challenges_per_ek/);
    await refusedAtConfigure({ ...allow, max_pending_challenges_per_ek: 65 }, /max_pending_challenges_per_ek/);
  });
  it('an empty or empty-list ek_ca_path', async () => {
    await refusedAtConfigure({ ek_ca_path: '' }, /ek_ca_path/);
    await refusedAtConfigure({ ek_ca_path: [] }, /ek_ca_path/);
    await refusedAtConfigure({ ...allow, ek_ca_path: [''] }, /ek_ca_path/);
  });
  it.each([[[24]], [[-1]], [[1.5]]])('selector_pcrs %j (not a PCR index)', async (pcrs) => {
    await refusedAtConfigure({ ...allow, selector_pcrs: pcrs }, /selector_pcrs/);
  });
  it('unknown policy_match, legacy_agents or enrolment modes, and an empty policy_path or enrolment_path', async () => {
    await refusedAtConfigure({ ...allow, policy_match: 'some' }, /policy_match/);
    await refusedAtConfigure({ ...allow, legacy_agents: 'maybe' }, /legacy_agents/);
    await refusedAtConfigure({ ...allow, enrolment: 'optional' }, /enrolment/);
    await refusedAtConfigure({ ...allow, policy_path: '' }, /policy_path/);
    await refusedAtConfigure({ ...allow, enrolment: 'required', enrolment_path: '' }, /enrolment_path/);
  });
  it('an allowlist entry with anything before or after the 64 hex digits', async () => {
    await refusedAtConfigure({ ek_hash_allowlist: [`${agent.ekHash}0`] }, /expected 64 hex digits/);
    await refusedAtConfigure({ ek_hash_allowlist: [`0${agent.ekHash}`] }, /expected 64 hex digits/);
  });
  it('plugin_name ".." is refused because it is a path segment of agent IDs', async () => {
    await refusedAtConfigure({ ...allow, plugin_name: '..' }, /must not be "\." or "\.\." \(it is a path segment of agent IDs\)/);
  });
  it('a policy file that cannot be read is refused on its own (a missing policy never means no policy)', async () => {
    await refusedAtConfigure({ ...allow, policy_path: join(work, 'missing.yaml') }, /missing\.yaml/);
  });
  it('a policy that needs PCRs the selection does not quote', async () => {
    await refusedAtConfigure({ ...allow, policy_path: policyPath, pcr_selection: 'sha256:0,1' }, /7/);
  });
  it('every message names the plugin', async () => {
    for (const raw of [{}, { ...allow, pcr_selection: 'sha256:99' }, { ...allow, nonce_ttl: '0s' }]) {
      const err = await new TpmServerAttestor(logger().log).configure(raw, core).catch((e) => e);
      expect(err.message).toMatch(/^tpm server: /);
    }
    const err = await new TpmServerAttestor(logger().log).configure({ ...allow, pcr_selection: 'sha256:99' }, core).catch((e) => e);
    expect(err.message).toMatch(/^tpm server: key "pcr_selection": /);
  });
  it('an unknown key (a typo would silently drop a setting)', async () => {
    await refusedAtConfigure({ ...allow, require_eventlog: false }, /require_eventlog/);
  });
  it('a bad selection and a missing policy file are both reported at once', async () => {
    await refusedAtConfigure({ ...allow, pcr_selection: 'sha256:99', policy_path: join(work, 'missing.yaml') }, /pcr_selection[\s\S]*missing\.yaml|missing\.yaml[\s\S]*pcr_selection/);
  });
  it('a failed reconfiguration keeps the previous, valid configuration', async () => {
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ...allow, require_event_log: false }, core);
    await expect(server.configure({ ...allow, nonce_ttl: '0s' }, core)).rejects.toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT });
    await expect(server.attest(agent.payload(), agent.io())).resolves.toMatchObject({ canReattest: true });
  });
});

describe('Validate accepts a good configuration and Configure applies it', () => {
  it('every documented mode can be set explicitly', async () => {
    for (const extra of [{ policy_match: 'any' }, { policy_match: 'all' }, { policy_match: 'report' }, { legacy_agents: 'allow' }, { legacy_agents: 'deny' }, { enrolment: 'off' }]) {
      await expect(new TpmServerAttestor(logger().log).configure({ ...allow, policy_path: policyPath, ...extra }, core)).resolves.toBeUndefined();
    }
  });
  it('a file in an ek_ca_path directory that is not a certificate is skipped with a warning naming it', async () => {
    const dir = join(work, 'ca-dir');
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(process.cwd(), 'test/fixtures/ekcerts/ca/gce/tpm_ek_root_1.cer.der'), join(dir, 'root.der'));
    writeFileSync(join(dir, 'README.txt'), 'not a certificate');
    const { log, lines } = logger();
    await new TpmServerAttestor(log).configure({ ek_ca_path: dir }, core);
    expect(lines).toContainEqual(expect.objectContaining({ '@level': 'warn', '@message': expect.stringMatching(/not a certificate/), path: join(dir, 'README.txt') }));
  });
  it('EK CAs alone are enough trust to configure', async () => {
    const ca = join(process.cwd(), 'test/fixtures/ekcerts/ca/gce/tpm_ek_root_1.cer.der');
    await expect(new TpmServerAttestor(logger().log).configure({ ek_ca_path: ca }, core)).resolves.toBeUndefined();
    await expect(new TpmServerAttestor(logger().log).configure({ ek_ca_path: [ca] }, core)).resolves.toBeUndefined();
  });
  it('attesting before Configure says so', async () => {
    const err = await new TpmServerAttestor(logger().log).attest(agent.payload(), agent.io()).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_NOT_CONFIGURED', grpcCode: GrpcCode.FAILED_PRECONDITION, message: 'tpm server attestor is not configured' });
  });
  it('validate returns no notes and does not configure', async () => {
    const server = new TpmServerAttestor(logger().log);
    expect(await server.validate({ ...allow, policy_path: policyPath }, core)).toEqual([]);
    await expect(server.attest(agent.payload(), agent.io())).rejects.toMatchObject({ code: 'ERR_NOT_CONFIGURED' });
  });
  it('reconfiguring replaces the EK trust: an EK removed from the allowlist is refused from then on', async () => {
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ...allow, require_event_log: false }, core);
    await expect(server.attest(agent.payload(), agent.io())).resolves.toMatchObject({ canReattest: true });
    await server.configure({ ek_hash_allowlist: [SoftAgent.of('p256', 'rsa', 4).ekHash], require_event_log: false }, core);
    await expect(server.attest(agent.payload(), agent.io())).rejects.toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
  });
});

describe('risky but legal settings are warned about at Configure', () => {
  it('a boot policy with require_event_log = false: nodes without a log skip it', async () => {
    const { log, lines } = logger();
    await new TpmServerAttestor(log).configure({ ...allow, policy_path: policyPath, require_event_log: false }, core);
    expect(lines).toContainEqual(expect.objectContaining({ '@level': 'warn', '@message': expect.stringMatching(/require_event_log is false: nodes without an event log skip boot policies/) }));
  });
  it('legacy agents allowed while policies are enforced: they will be refused', async () => {
    const { log, lines } = logger();
    await new TpmServerAttestor(log).configure({ ...allow, policy_path: policyPath, legacy_agents: 'allow' }, core);
    expect(lines).toContainEqual(expect.objectContaining({ '@level': 'warn', '@message': expect.stringMatching(/legacy_agents is "allow" but boot policies are enforced/) }));
  });
  it('no warning for the safe defaults, nor for legacy agents with report-only policies', async () => {
    const { log, lines } = logger();
    await new TpmServerAttestor(log).configure({ ...allow, policy_path: policyPath }, core);
    await new TpmServerAttestor(log).configure({ ...allow, policy_path: policyPath, legacy_agents: 'allow', policy_match: 'report' }, core);
    await new TpmServerAttestor(log).configure({ ...allow, legacy_agents: 'allow' }, core);
    await new TpmServerAttestor(log).configure({ ...allow, require_event_log: false }, core);
    expect(lines.filter((l) => l['@level'] === 'warn')).toEqual([]);
  });
});
