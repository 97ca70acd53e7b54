/**
 * Versions: one semver in package.json, src/version.ts and the CHANGELOG; every shipped binary, in both forms, answers
 * --version without SPIRE's environment; the CLI answers --help; each plugin's first log line at Configure names the
 * plugin, version, Node version and the sha256 of the very file SPIRE's plugin_checksum covers.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VERSION } from '../../src/version.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { BINARIES, PLUGINS, packageVersion, seaBinary, sha256File, type BinaryName } from './artifacts.js';

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
const SEA_NODE = /^v24\.\d+\.\d+$/;

function run(binary: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { env, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

/** Only PATH (the script form's shebang needs `node`): no magic cookie, nothing else of SPIRE's. */
const bareEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin' };

const FORMS = [
  { form: 'script', binary: (n: BinaryName) => builtPlugin(n), node: process.version, label: 'script' },
  { form: 'sea', binary: (n: BinaryName) => seaBinary(n), node: undefined, label: 'single executable' },
] as const;

describe('one version everywhere', () => {
  it('package.json, src/version.ts and the latest CHANGELOG entry agree on a semver version', () => {
    expect(packageVersion()).toMatch(SEMVER);
    expect(VERSION).toBe(packageVersion());
    const changelog = readFileSync(`${repoRoot}CHANGELOG.md`, 'utf8');
    const released = [...changelog.matchAll(/^## \[(\d[^\]]*)\] - (\d{4}-\d\d-\d\d)$/gm)].map((m) => m[1]);
    expect(released[0]).toBe(VERSION);
  });
});

describe.each(FORMS)('$form binaries', ({ binary, node, label }) => {
  it.each(BINARIES)('%s --version answers without SPIRE environment', async (name) => {
    const r = await run(binary(name), ['--version'], bareEnv);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const m = /^(\S+) (\S+) \(spire-edge-attestors; node (v[\d.]+)(?:; (.+))?\)\n$/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(m![1]).toBe(name);
    expect(m![2]).toBe(VERSION);
    if (node) expect(m![3]).toBe(node);
    else expect(m![3]).toMatch(SEA_NODE);
    if (name !== 'spire-edge-attest') expect(m![4]).toBe(label);
  });

  it('spire-edge-attest --help prints the usage and exits 0', async () => {
    const r = await run(binary('spire-edge-attest'), ['--help'], bareEnv);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: spire-edge-attest <command>/);
    expect(r.stdout).toContain('--version');
  });

  it('a plugin run by hand without --version still refuses (cookie), so --version is the only way in', async () => {
    const r = await run(binary('tpm-server'), [], bareEnv);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('missing or wrong magic cookie');
  });
});

const launched: PluginHarness[] = [];
afterEach(async () => {
  for (const h of launched.splice(0)) await h.kill();
});

const CONFIG: Record<(typeof PLUGINS)[number], { type: 'NodeAttestor' | 'WorkloadAttestor'; hcl: string }> = {
  'tpm-server': { type: 'NodeAttestor', hcl: `ek_hash_allowlist = ["${'ab'.repeat(32)}"]\nrequire_event_log = false` },
  'tpm-agent': { type: 'NodeAttestor', hcl: 'tpm_tcti = "swtpm:path=/nonexistent/tpm.sock"' },
  'edge-workload': { type: 'WorkloadAttestor', hcl: 'pod_source = "none"' },
};

async function waitForLines(h: PluginHarness, count: number): Promise<void> {
  for (let i = 0; i < 100 && h.stderrLines.length < count; i++) await new Promise((r) => setTimeout(r, 20));
}

describe.each(FORMS)('$form plugins: first log line at Configure', ({ form, binary, node }) => {
  it.each(PLUGINS)('%s logs plugin, version, Node and the sha256 of its own file', async (name) => {
    const file = binary(name);
    const h = await PluginHarness.launch({ binary: file, type: CONFIG[name].type });
    launched.push(h);
    await h.init();
    await waitForLines(h, h.stderrLines.length);
    const before = h.stderrLines.length;
    await h.configure(CONFIG[name].hcl);
    await waitForLines(h, before + 2);
    const first = JSON.parse(h.stderrLines[before]!) as Record<string, unknown>;
    expect(first).toMatchObject({
      '@level': 'info',
      '@message': 'Configuring plugin',
      '@module': name,
      plugin: name,
      version: VERSION,
      form,
      file,
      build_sha256: sha256File(file),
    });
    if (node) expect(first['node']).toBe(node);
    else expect(first['node']).toMatch(SEA_NODE);
    // And SPIRE's own line about the result comes after it.
    expect(h.stderrLines.slice(before + 1).some((l) => l.includes('"Plugin configured"'))).toBe(true);
    expect(existsSync(dirname(h.handshake.address))).toBe(true);
  });
});
