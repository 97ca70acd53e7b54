/**
 * Keeps examples/ and kubeedge-demo/ honest: every SPIRE config there parses with HashiCorp's HCL1 parser
 * (the same path Configure uses), and the plugin_data of each of our plugins validates against that plugin's
 * own schema. Policy files parse with the policy parser.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../src/nodeattestor/agent.js';
import { serverConfigSchema } from '../src/nodeattestor/server.js';
import { parseConfig } from '../src/plugin/config-schema.js';
import { decodePluginData } from '../src/plugin/hcl.js';
import { parsePolicyFile } from '../src/policy/policy.js';
import { loadRevokerConfig } from '../src/revocation/config.js';
import { parseConfig as parseWorkloadConfig } from '../src/workload/config.js';
import { builtPlugin, repoRoot } from './helpers/binaries.js';
import { simulateMeasuredBoot } from './helpers/measured-boot.js';
import { PluginHarness } from './helpers/plugin-harness.js';
import { settingsHcl } from './helpers/spire.js';
import { relayAttestation } from './helpers/spire-relay.js';
import { startSwtpm, type SwtpmHandle } from './helpers/swtpm.js';

function files(dir: string, suffix: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p, suffix) : p.endsWith(suffix) ? [p] : [];
  });
}

interface PluginBlock {
  type: string;
  name: string;
  cmd: string;
  data: Record<string, unknown>;
}

/** HCL1 decodes `plugins { T "n" { ... } }` into nested one-element lists; walk them. */
function pluginBlocks(config: Record<string, unknown>): PluginBlock[] {
  const out: PluginBlock[] = [];
  const one = (v: unknown) => (Array.isArray(v) ? v : [v]) as Record<string, unknown>[];
  for (const plugins of one(config['plugins'] ?? [])) {
    for (const [type, byName] of Object.entries(plugins)) {
      for (const named of one(byName)) {
        for (const [name, bodies] of Object.entries(named)) {
          for (const body of one(bodies)) {
            const data = one(body['plugin_data'] ?? [{}])[0] ?? {};
            out.push({ type, name, cmd: String(body['plugin_cmd'] ?? ''), data });
          }
        }
      }
    }
  }
  return out;
}

/** `REPLACE_ME…` marks a value the operator must supply; the schema must then get a well-formed one. */
const PLACEHOLDER = /^REPLACE_ME/;
const PLACEHOLDER_STAND_INS: Record<string, unknown> = { ek_hash_allowlist: 'ab'.repeat(32) };

function withPlaceholdersFilled(d: Record<string, unknown>): Record<string, unknown> {
  const fill = (key: string, v: unknown): unknown => {
    if (Array.isArray(v)) return v.map((x) => fill(key, x));
    if (typeof v === 'string' && PLACEHOLDER.test(v)) {
      if (!(key in PLACEHOLDER_STAND_INS)) throw new Error(`placeholder for "${key}" has no stand-in in test/examples.test.ts`);
      return PLACEHOLDER_STAND_INS[key];
    }
    return v;
  };
  return Object.fromEntries(Object.entries(d).map(([k, v]) => [k, fill(k, v)]));
}

const validators: Record<string, (data: Record<string, unknown>) => void> = {
  'tpm-server': (d) => void parseConfig(serverConfigSchema, withoutLogLevel(withPlaceholdersFilled(d)), 'tpm server'),
  'tpm-agent': (d) => void parseConfig(agentConfigSchema, withoutLogLevel(d), 'tpm agent'),
  'edge-workload': (d) => void parseWorkloadConfig(withoutLogLevel(d), { NODE_NAME: 'edge-node-1', MY_NODE_NAME: 'edge-node-1' }),
};

/** log_level is handled by the runtime before the plugin's schema sees the data. */
function withoutLogLevel(d: Record<string, unknown>): Record<string, unknown> {
  const { log_level: _ignored, ...rest } = d;
  return rest;
}

const confs = [...files(join(repoRoot, 'examples'), '.conf'), ...files(join(repoRoot, 'kubeedge-demo'), '.conf')];

describe('example SPIRE configurations', () => {
  it('there are examples to check', () => {
    expect(confs.length).toBeGreaterThanOrEqual(3);
  });

  it.each(confs.map((f) => [relative(repoRoot, f), f]))('%s parses and our plugins validate', async (_name, file) => {
    const config = await decodePluginData(readFileSync(file, 'utf8'));
    const ours = pluginBlocks(config).filter((b) => validators[basename(b.cmd)]);
    expect(ours.length).toBeGreaterThan(0);
    for (const block of ours) {
      expect(() => validators[basename(block.cmd)]!(block.data), `${block.type} "${block.name}"`).not.toThrow();
      // Agent and server must agree on the node attestor name; "tpm" keeps spire-tpm-plugin IDs.
      if (block.type === 'NodeAttestor') expect(block.name).toBe('tpm');
    }
  });

  it.each(confs.map((f) => [relative(repoRoot, f), f]))('%s ships no trust decision: no real EK hash is allowlisted', async (_name, file) => {
    const config = await decodePluginData(readFileSync(file, 'utf8'));
    for (const block of pluginBlocks(config)) {
      const allowlist = block.data['ek_hash_allowlist'];
      if (allowlist === undefined) continue;
      for (const entry of [allowlist].flat()) expect(String(entry), `${block.name}: ek_hash_allowlist`).toMatch(PLACEHOLDER);
      // The placeholder itself must keep the plugin from starting, so it can never be left in by mistake.
      expect(() => parseConfig(serverConfigSchema, withoutLogLevel(block.data), 'tpm server')).toThrow(/ek_hash_allowlist/);
    }
  });

  const revokerConfigs = files(join(repoRoot, 'examples'), 'revoker.yaml');
  it.each(revokerConfigs.map((f) => [relative(repoRoot, f), f]))('%s is a valid spire-edge-revoker configuration', async (_n, file) => {
    const config = await loadRevokerConfig(file);
    expect(config.spire?.admin_socket).toBeDefined();
  });

  it.each(files(join(repoRoot, 'examples'), '.yaml').filter((f) => !revokerConfigs.includes(f)).map((f) => [relative(repoRoot, f), f]))('%s is a valid policy file', (_n, file) => {
    expect(parsePolicyFile(readFileSync(file, 'utf8')).length).toBeGreaterThan(0);
  });
});

/**
 * examples/tpm-node-attestation/README.md claims a node whose boot changes is refused. Check it with the example's
 * own server and agent plugin_data (only machine paths and the placeholder replaced) through the built plugins:
 * the golden node (the log the example policy was made from) is admitted, a Secure Boot node with another boot is
 * refused.
 */
describe('examples/tpm-node-attestation enforces what its README claims', () => {
  const EXAMPLE = join(repoRoot, 'examples/tpm-node-attestation');
  const GOLDEN_LOG = join(repoRoot, 'test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin');
  // Another machine, also with Secure Boot on, booting something else.
  const OTHER_SECURE_BOOT_LOG = join(repoRoot, 'test/fixtures/eventlog/gtt-cos-85-amd-sev.bin');
  let work: string;
  let golden: SwtpmHandle;
  let other: SwtpmHandle;
  const harnesses: PluginHarness[] = [];

  async function exampleData(file: string, cmd: string): Promise<Record<string, unknown>> {
    const block = pluginBlocks(await decodePluginData(readFileSync(join(EXAMPLE, file), 'utf8'))).find((b) => basename(b.cmd) === cmd);
    if (!block) throw new Error(`${file} has no ${cmd} block`);
    return block.data;
  }

  async function plugin(name: string, data: Record<string, unknown>): Promise<PluginHarness> {
    const h = await PluginHarness.launch({ binary: builtPlugin(name), type: 'NodeAttestor' });
    harnesses.push(h);
    await h.init();
    await h.configure(settingsHcl(data), 'edge.example');
    return h;
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'example-tpm-'));
    [golden, other] = await Promise.all([startSwtpm(), startSwtpm()]);
    await simulateMeasuredBoot(golden.tcti, new Uint8Array(readFileSync(GOLDEN_LOG)));
    await simulateMeasuredBoot(other.tcti, new Uint8Array(readFileSync(OTHER_SECURE_BOOT_LOG)));
    mkdirSync(join(work, 'tpm-ca'));
    writeFileSync(join(work, 'tpm-ca', 'golden.pem'), golden.rootCaPem + golden.intermediateCaPem);
    writeFileSync(join(work, 'tpm-ca', 'other.pem'), other.rootCaPem + other.intermediateCaPem);
  }, 120_000);

  afterAll(async () => {
    for (const h of harnesses.splice(0)) await h.kill();
    await Promise.all([golden?.stop(), other?.stop()]);
    rmSync(work, { recursive: true, force: true });
  });

  async function serverData(): Promise<Record<string, unknown>> {
    const { ek_hash_allowlist: placeholder, ...data } = await exampleData('server.conf', 'tpm-server');
    expect(String([placeholder].flat()[0])).toMatch(PLACEHOLDER); // trust comes from the CA here, as in step 2
    return { ...data, ek_ca_path: [join(work, 'tpm-ca')], policy_path: join(EXAMPLE, 'boot-policy.yaml') };
  }

  async function agentFor(tpm: SwtpmHandle, log: string): Promise<PluginHarness> {
    const data = await exampleData('agent.conf', 'tpm-agent');
    return plugin('tpm-agent', { ...data, tpm_tcti: tpm.tcti, event_log_path: log });
  }

  it('the README makes the claim this test checks', () => {
    expect(readFileSync(join(EXAMPLE, 'README.md'), 'utf8')).toMatch(/boot changes fails the policy .* PERMISSION_DENIED/s);
  });

  it('admits the golden node, with its policy selectors', async () => {
    const server = await plugin('tpm-server', await serverData());
    const agent = await agentFor(golden, GOLDEN_LOG);
    const { attributes } = await relayAttestation(agent, server);
    expect(attributes.selector_values).toEqual(expect.arrayContaining(['policy:golden', 'policy:any-secure-boot', 'secureboot:enabled']));
  });

  it('refuses a Secure Boot node whose boot differs, with PERMISSION_DENIED naming the golden policy', async () => {
    const server = await plugin('tpm-server', await serverData());
    const agent = await agentFor(other, OTHER_SECURE_BOOT_LOG);
    const err = (await relayAttestation(agent, server).catch((e) => e)) as grpc.ServiceError & { side?: string };
    expect(err).toBeInstanceOf(Error);
    expect({ side: err.side, code: err.code }).toEqual({ side: 'server', code: grpc.status.PERMISSION_DENIED });
    expect(err.details).toMatch(/policy "golden"/);
  });
});
