/**
 * The CLI and the server must agree on which policies are acceptable: a policy that `policy create` writes with
 * its defaults configures a default `tpm-server`, and `policy check` never says PASS for a policy file the server
 * refuses at Configure. Most real event logs are multi-bank (sha1, sha256, sha384), which is where they disagreed.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { settingsHcl } from '../helpers/spire.js';
import { runCli } from './run-cli.js';

const MULTI_BANK_LOG = `${repoRoot}test/fixtures/eventlog/gtt-cos-85-amd-sev.bin`;
const ALLOWLIST = ['ab'.repeat(32)];

let work: string;
const harnesses: PluginHarness[] = [];

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'cli-server-'));
});

afterAll(async () => {
  for (const h of harnesses.splice(0)) await h.kill();
  rmSync(work, { recursive: true, force: true });
});

async function configureServer(settings: Record<string, unknown>): Promise<unknown> {
  const h = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
  harnesses.push(h);
  await h.init();
  return h.configure(settingsHcl(settings)).then(
    () => 'configured',
    (err: grpc.ServiceError) => err,
  );
}

describe('policy create and the server agree on banks', () => {
  it('the fixture log is multi-bank', async () => {
    const res = await runCli(['eventlog', 'inspect', MULTI_BANK_LOG, '--json']);
    expect((JSON.parse(res.stdout) as { banks: string[] }).banks).toEqual(['sha1', 'sha256', 'sha384']);
  });

  it('by default pins only the banks the default server quotes, and that server accepts the file', async () => {
    const out = join(work, 'default.yaml');
    const created = await runCli(['policy', 'create', '--from-eventlog', MULTI_BANK_LOG, '--name', 'golden', '--out', out]);
    expect(created.code, created.stderr).toBe(0);
    const doc = parseYaml(readFileSync(out, 'utf8')) as { policies: { pcrs: Record<string, unknown> }[] };
    expect(Object.keys(doc.policies[0]!.pcrs)).toEqual(['sha256']);
    expect(await configureServer({ ek_hash_allowlist: ALLOWLIST, policy_path: out })).toBe('configured');

    const check = await runCli(['policy', 'check', '--policy', out, '--eventlog', MULTI_BANK_LOG, '--json']);
    expect(check.code, check.stderr).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ passed: true, pcrs: 'sha256:0,1,2,3,4,5,6,7,8,9' });
  });

  it('--banks pins other banks; the default server refuses that file, and policy check says FAIL, not PASS', async () => {
    const out = join(work, 'all-banks.yaml');
    const created = await runCli(['policy', 'create', '--from-eventlog', MULTI_BANK_LOG, '--banks', 'sha1,sha256,sha384', '--out', out]);
    expect(created.code, created.stderr).toBe(0);
    const doc = parseYaml(readFileSync(out, 'utf8')) as { policies: { pcrs: Record<string, unknown> }[] };
    expect(Object.keys(doc.policies[0]!.pcrs)).toEqual(['sha1', 'sha256', 'sha384']);

    const refused = (await configureServer({ ek_hash_allowlist: ALLOWLIST, policy_path: out })) as grpc.ServiceError;
    expect(refused.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(refused.details).toMatch(/sha1:0.*does not quote/);

    const check = await runCli(['policy', 'check', '--policy', out, '--eventlog', MULTI_BANK_LOG, '--json']);
    expect(check.code).toBe(1);
    const result = JSON.parse(check.stdout) as { passed: boolean; configure_error?: string };
    expect(result.passed).toBe(false);
    expect(result.configure_error).toMatch(/sha1:0.*does not quote/);
    const text = await runCli(['policy', 'check', '--policy', out, '--eventlog', MULTI_BANK_LOG]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/the server would refuse this policy file at Configure/);

    // With a server that quotes those banks, both agree again.
    const selection = ['sha1', 'sha256', 'sha384'].map((b) => `${b}:0,1,2,3,4,5,6,7,8,9`).join('+');
    expect(await configureServer({ ek_hash_allowlist: ALLOWLIST, policy_path: out, pcr_selection: selection })).toBe('configured');
    const matching = await runCli(['policy', 'check', '--policy', out, '--eventlog', MULTI_BANK_LOG, '--pcrs', selection, '--json']);
    expect(matching.code, matching.stdout).toBe(0);
  });

  it('a bank the log does not replay, or an unknown bank, is refused', async () => {
    const sha256Only = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
    const missing = await runCli(['policy', 'create', '--from-eventlog', sha256Only, '--banks', 'sha1']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/\[ERR_POLICY_CREATE\]: policy create: the event log has no sha1 bank \(it has sha256\)/);
    const unknown = await runCli(['policy', 'create', '--from-eventlog', sha256Only, '--banks', 'md5']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--banks: unknown PCR bank "md5"/);
  });
});
