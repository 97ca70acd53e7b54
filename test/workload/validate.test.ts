/**
 * The built edge-workload plugin: `spire-agent validate` catches what Configure rejects, lists every problem at once,
 * and suggests the nearest key for a typo.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';

let h: PluginHarness;

beforeAll(async () => {
  h = await PluginHarness.launch({ binary: builtPlugin('edge-workload'), type: 'WorkloadAttestor' });
  await h.init();
}, 60_000);

afterAll(async () => {
  await h?.kill();
});

async function both(hcl: string): Promise<{ valid: boolean; notes: string[]; configure: 'ok' | grpc.ServiceError }> {
  const request = { core_configuration: { trust_domain: 'example.org' }, hcl_configuration: hcl };
  const v = await h.unary<{ valid: boolean; notes: string[] }>(ServiceNames.config, 'Validate', request);
  const configure = await h.configure(hcl).then(
    () => 'ok' as const,
    (err: grpc.ServiceError) => err,
  );
  return { valid: v.valid, notes: v.notes ?? [], configure };
}

describe('edge-workload Validate and Configure agree', () => {
  it('a proc_path that does not exist is refused by both', async () => {
    const answers = await both('pod_source = "none"\nproc_path = "/nonexistent/proc"');
    expect(answers.valid).toBe(false);
    expect(answers.notes.join('\n')).toMatch(/"proc_path": \/nonexistent\/proc is not a directory/);
    expect((answers.configure as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('every problem at once, one note each, with "did you mean"', async () => {
    const answers = await both('pod_source = "none"\npoll_intervall = "5s"\nkubelet_secure_port = "x"');
    expect(answers.valid).toBe(false);
    expect(answers.notes).toHaveLength(2);
    expect(answers.notes.join('\n')).toMatch(/unknown key "poll_intervall" \(did you mean "poll_interval"\?\)/);
    expect(answers.notes.join('\n')).toMatch(/key "kubelet_secure_port"/);
    expect((answers.configure as grpc.ServiceError).details).toMatch(/2 problems/);
  });

  it('a good configuration passes both', async () => {
    expect(await both('pod_source = "none"\nproc_path = "/proc"')).toEqual({ valid: true, notes: [], configure: 'ok' });
  });
});
