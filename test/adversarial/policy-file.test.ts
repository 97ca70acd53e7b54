/**
 * Attack class F7: a small hostile policy file (alias expansion, deep nesting, a pattern whose matching explodes)
 * must not take tpm-server down. The shipped plugin refuses each at Configure with INVALID_ARGUMENT naming the file,
 * and keeps serving: a good configuration afterwards attests a node.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPlugin } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { AttackLab, goldenEvents, hcl, writeLog } from './kit.js';

const lab = new AttackLab();
let node: SwtpmHandle;
let logPath: string;

beforeAll(async () => {
  const events = goldenEvents();
  node = await lab.bootNode(events);
  logPath = lab.file('eventlog.bin', writeLog(events));
}, 120_000);

afterAll(() => lab.cleanup());

const laughs = [
  'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
  ...'bcdefghi'.split('').map((n, i) => `${n}: &${n} [${Array(9).fill(`*${'abcdefgh'[i]}`).join(',')}]`),
  'policies: [{ name: a, secure_boot: true }]',
].join('\n');

describe('F7: hostile policy files fail Configure, typed and named, and the plugin lives on', () => {
  it.each([
    ['alias expansion ("billion laughs", under 1 KB)', laughs, /not valid YAML\/JSON: .*alias/i],
    ['10,000 nested flow sequences', `policies: [{ name: a, secure_boot: true }]\nx: ${'['.repeat(10_000)}${']'.repeat(10_000)}`, /nested deeper than 12 levels/],
    ['deep block nesting', `policies:\n${Array.from({ length: 200 }, (_, i) => `${'  '.repeat(i)}- `).join('\n')}x`, /nested deeper than 12 levels/],
    ['a file over 256 KiB', `# ${'x'.repeat(300 * 1024)}\npolicies: [{ name: a, secure_boot: true }]`, /larger than 262144 bytes/],
    ['a backtracking kernel_cmdline pattern', 'policies: [{ name: a, kernel_cmdline: ["^(a|aa)*$"] }]', /kernel_cmdline\.0: pattern could take unbounded time to match/],
    ['a repetition bomb', 'policies: [{ name: a, kernel_cmdline: ["(?:(?:.{0,1000}){0,1000}){0,1000}"] }]', /pattern could take unbounded time to match/],
    ['a policy without rules (admits everyone)', 'policies: [{ name: everyone }]', /policies\.0: policy "everyone" has no rules/],
  ])('%s', async (_name, text, pattern) => {
    const policyPath = lab.file('hostile.yaml', text);
    const server = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
    try {
      await server.init();
      const err = (await server.configure(hcl({ ek_ca_path: [lab.caDir], policy_path: policyPath })).catch((e) => e)) as grpc.ServiceError;
      expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err.details).toContain(`policy file ${policyPath}`);
      expect(err.details).toMatch(pattern);
      // Still alive and serving: a good configuration attests the node.
      await server.configure(hcl({ ek_ca_path: [lab.caDir], require_event_log: false }));
      const agent = await lab.agent(node, logPath);
      expect((await relayAttestation(agent, server)).attributes.spiffe_id).toMatch(/spire\/agent\/tpm\//);
      expect(server.child.exitCode).toBeNull();
    } finally {
      await server.kill();
    }
  });
});
