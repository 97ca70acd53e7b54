/**
 * `spire-agent validate` / `spire-server validate` must catch everything Configure would, and list every problem at
 * once. Both built plugins are launched as SPIRE launches them; each config is sent to Validate and to Configure of
 * the same plugin, and the answers must agree.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';

let work: string;
const plugins = new Map<string, PluginHarness>();

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'validate-'));
  writeFileSync(join(work, 'log.bin'), Buffer.alloc(64));
  writeFileSync(join(work, 'README.md'), '# not a certificate\n');
  writeFileSync(join(work, 'bad-policy.yaml'), 'policies:\n  - name: x\n    secureboot: true\n');
  mkdirSync(join(work, 'ca'));
  writeFileSync(join(work, 'ca', 'README.md'), '# EK CAs go here\n');
  for (const name of ['tpm-agent', 'tpm-server']) {
    const h = await PluginHarness.launch({ binary: builtPlugin(name), type: 'NodeAttestor' });
    await h.init();
    plugins.set(name, h);
  }
}, 60_000);

afterAll(async () => {
  for (const h of plugins.values()) await h.kill();
  rmSync(work, { recursive: true, force: true });
});

interface Answers {
  readonly valid: boolean;
  readonly notes: string[];
  readonly configure: 'ok' | grpc.ServiceError;
}

async function both(name: 'tpm-agent' | 'tpm-server', hcl: string): Promise<Answers> {
  const h = plugins.get(name)!;
  const request = { core_configuration: { trust_domain: 'example.org' }, hcl_configuration: hcl };
  const validated = await h.unary<{ valid: boolean; notes: string[] }>(ServiceNames.config, 'Validate', request);
  const configure = await h.configure(hcl).then(
    () => 'ok' as const,
    (err: grpc.ServiceError) => err,
  );
  return { valid: validated.valid, notes: validated.notes ?? [], configure };
}

const W = () => work;

describe('Validate catches what Configure rejects (tpm-agent)', () => {
  it.each([
    ['a misspelt tcti', () => 'tpm_tcti = "devcie:/dev/tpmrm0"', /key "tpm_tcti": invalid tcti .*unsupported tcti "devcie"/],
    ['a malformed tcti', () => 'tpm_tcti = "device:tpmrm0"', /key "tpm_tcti": invalid tcti .*path must be absolute/],
    ['a missing ek_intermediates file', () => 'ek_intermediates = ["/nonexistent/intermediate.pem"]', /key "ek_intermediates": cannot read \/nonexistent\/intermediate.pem: ENOENT/],
    ['an ek_intermediates file with no certificate', () => `ek_intermediates = ["${W()}/README.md"]`, /key "ek_intermediates": .*README.md (is not a PEM or DER certificate|holds no PEM certificate)/],
    ['a missing event_log_path', () => 'event_log_path = "/nonexistent/binary_bios_measurements"', /key "event_log_path": \/nonexistent\/binary_bios_measurements: no such file/],
    ['a missing tpm.work_dir', () => 'tpm { work_dir = "/nonexistent/work" }', /key "tpm.work_dir": \/nonexistent\/work: no such directory/],
    ['a tpm_timeout out of range', () => 'tpm_timeout = "20m"', /key "tpm_timeout": must be between 1s and 10m/],
    ['a typo in a key', () => 'tpm_tcit = "device:/dev/tpmrm0"', /unknown key "tpm_tcit" \(did you mean "tpm_tcti"\?\)/],
  ])('%s', async (_what, hcl, message) => {
    const answers = await both('tpm-agent', hcl());
    expect(answers.valid).toBe(false);
    expect(answers.notes.join('\n')).toMatch(message);
    expect((answers.configure as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((answers.configure as grpc.ServiceError).details).toMatch(message);
  });

  it('lists every problem at once, one note each, and Configure names them all', async () => {
    const hcl = [
      'tpm_tcti = "devcie:/dev/tpmrm0"',
      'ek_intermediates = ["/nonexistent/intermediate.pem"]',
      'event_log_path = "/nonexistent/log"',
      'tpm { work_dir = "/nonexistent/work" }',
    ].join('\n');
    const answers = await both('tpm-agent', hcl);
    expect(answers.valid).toBe(false);
    expect(answers.notes).toHaveLength(4);
    for (const key of ['tpm_tcti', 'ek_intermediates', 'event_log_path', 'tpm.work_dir']) {
      expect(answers.notes.filter((n) => n.includes(`key "${key}"`)), key).toHaveLength(1);
    }
    const details = (answers.configure as grpc.ServiceError).details;
    expect(details).toMatch(/4 configuration problems/);
    for (const key of ['tpm_tcti', 'ek_intermediates', 'event_log_path', 'tpm.work_dir']) expect(details).toContain(`key "${key}"`);
  });

  it.each([
    ['an unquoted persistent handle (32-bit HCL integers overflow)', 'ak_handle = 0x81000a02'],
    ['a decimal persistent handle, as SPIRE re-prints it', 'ak_handle = 2164263234'],
    ['a Go duration for tpm_timeout', 'tpm_timeout = "45s"'],
    ['a number of seconds for tpm_timeout', 'tpm_timeout = 30'],
  ])('accepts %s in both', async (_what, hcl) => {
    const answers = await both('tpm-agent', `event_log_path = "${W()}/log.bin"\n${hcl}`);
    expect(answers).toEqual({ valid: true, notes: [], configure: 'ok' });
  });
});

describe('Validate catches what Configure rejects (tpm-server)', () => {
  const allow = `ek_hash_allowlist = ["${'ab'.repeat(32)}"]`;
  it.each([
    ['a missing CA path', () => 'ek_ca_path = "/nonexistent/ca"', /ek_ca_path: \/nonexistent\/ca/],
    ['a CA directory holding only a README', () => `ek_ca_path = "${W()}/ca"`, /directory holds no certificate/],
    ['a bad pcr_selection', () => `${allow}\npcr_selection = "sha256:0,99"`, /key "pcr_selection"/],
    ['a zero nonce_ttl', () => `${allow}\nnonce_ttl = "0s"`, /key "nonce_ttl": must be between 1s and 10m/],
    ['a policy file with a bad key, named', () => `${allow}\npolicy_path = "${W()}/bad-policy.yaml"`, /policy file \/.*bad-policy.yaml: policies\.0\.secureboot: unknown key "secureboot" \(did you mean "secure_boot"\?\)/],
    ['a top-level typo', () => `${allow}\npolicy = "/etc/spire/boot-policy.yaml"`, /unknown key "policy" \(did you mean "policy_path"\?\)/],
  ])('%s', async (_what, hcl, message) => {
    const answers = await both('tpm-server', hcl());
    expect(answers.valid).toBe(false);
    expect(answers.notes.join('\n')).toMatch(message);
    expect((answers.configure as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((answers.configure as grpc.ServiceError).details).toMatch(message);
  });

  it('lists every problem at once', async () => {
    const hcl = ['ek_ca_path = "/nonexistent/ca"', 'pcr_selection = "sha256:0,99"', 'policy_path = "/nonexistent/policy.yaml"'].join('\n');
    const answers = await both('tpm-server', hcl);
    expect(answers.valid).toBe(false);
    expect(answers.notes).toHaveLength(3);
    for (const key of ['ek_ca_path', 'pcr_selection', 'policy_path']) expect(answers.notes.filter((n) => n.includes(key)), key).toHaveLength(1);
  });

  it('a good configuration passes both', async () => {
    const policy = `${repoRoot}examples/tpm-node-attestation/boot-policy.yaml`;
    expect(await both('tpm-server', `${allow}\npolicy_path = "${policy}"\nnonce_ttl = "30s"`)).toEqual({ valid: true, notes: [], configure: 'ok' });
  });
});
