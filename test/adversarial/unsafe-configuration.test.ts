/**
 * Attack class F12: configuration values that silently weaken the server. `plugin_name = ".."` makes agent IDs
 * with a dot-dot path segment, `nonce_ttl = 0` (or hours) breaks freshness, and an unbounded per-EK challenge count
 * lets one EK pin the server. The shipped tpm-server refuses each at Configure with INVALID_ARGUMENT naming the key.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPlugin } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { AttackLab, goldenEvents, hcl } from './kit.js';

const lab = new AttackLab();

beforeAll(async () => {
  await lab.bootNode(goldenEvents()); // only for the EK CA files
}, 120_000);

afterAll(() => lab.cleanup());

describe('F12: unsafe configuration values fail Configure', () => {
  it.each([
    ['plugin_name ".."', { plugin_name: '..' }, /plugin_name/],
    ['plugin_name "."', { plugin_name: '.' }, /plugin_name/],
    ['plugin_name ""', { plugin_name: '' }, /plugin_name/],
    ['nonce_ttl 0', { nonce_ttl: 0 }, /key "nonce_ttl": must be between 1s and 10m/],
    ['nonce_ttl "0s"', { nonce_ttl: '0s' }, /key "nonce_ttl": must be between 1s and 10m/],
    ['nonce_ttl "24h"', { nonce_ttl: '24h' }, /key "nonce_ttl": must be between 1s and 10m/],
    ['max_pending_challenges_per_ek 0', { max_pending_challenges_per_ek: 0 }, /max_pending_challenges_per_ek/],
    ['max_pending_challenges_per_ek 100000', { max_pending_challenges_per_ek: 100_000 }, /max_pending_challenges_per_ek/],
  ])('%s', async (_name, settings, pattern) => {
    const server = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
    try {
      await server.init();
      const err = (await server.configure(hcl({ ek_ca_path: [lab.caDir], require_event_log: false, ...settings })).catch((e) => e)) as grpc.ServiceError;
      expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err.details).toMatch(pattern);
      await server.configure(hcl({ ek_ca_path: [lab.caDir], require_event_log: false })); // and a sane one is fine
    } finally {
      await server.kill();
    }
  });
});
