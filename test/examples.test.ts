/**
 * Keeps examples/ and kubeedge-demo/ honest: every SPIRE config there parses with HashiCorp's HCL1 parser
 * (the same path Configure uses), and the plugin_data of each of our plugins validates against that plugin's
 * own schema. Policy files parse with the policy parser.
 */
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../src/nodeattestor/agent.js';
import { serverConfigSchema } from '../src/nodeattestor/server.js';
import { parseConfig } from '../src/plugin/config-schema.js';
import { decodePluginData } from '../src/plugin/hcl.js';
import { parsePolicyFile } from '../src/policy/policy.js';
import { loadRevokerConfig } from '../src/revocation/config.js';
import { parseConfig as parseWorkloadConfig } from '../src/workload/config.js';
import { repoRoot } from './helpers/binaries.js';

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

const validators: Record<string, (data: Record<string, unknown>) => void> = {
  'tpm-server': (d) => void parseConfig(serverConfigSchema, withoutLogLevel(d), 'tpm server'),
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

  const revokerConfigs = files(join(repoRoot, 'examples'), 'revoker.yaml');
  it.each(revokerConfigs.map((f) => [relative(repoRoot, f), f]))('%s is a valid spire-edge-revoker configuration', async (_n, file) => {
    const config = await loadRevokerConfig(file);
    expect(config.spire?.admin_socket).toBeDefined();
  });

  it.each(files(join(repoRoot, 'examples'), '.yaml').filter((f) => !revokerConfigs.includes(f)).map((f) => [relative(repoRoot, f), f]))('%s is a valid policy file', (_n, file) => {
    expect(parsePolicyFile(readFileSync(file, 'utf8')).length).toBeGreaterThan(0);
  });
});
