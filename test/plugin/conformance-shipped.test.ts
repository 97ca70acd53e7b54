/**
 * Every shipped plugin binary, in both shipped forms (the bundled script under the host Node, and the Node 24
 * single executable from dist/sea/linux-x64), loaded exactly as SPIRE loads it (see test/helpers/plugin-harness.ts): cookie,
 * handshake, clean stdout, health, broker, Init service names, Configure (empty, valid with quoted keys,
 * invalid), Deinit + Shutdown, and hclog JSON on stderr. Plugin-specific behaviour is tested elsewhere.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin } from '../helpers/binaries.js';
import { checkHclogLine, PluginHarness } from '../helpers/plugin-harness.js';
import { seaBinary } from '../release/artifacts.js';

interface Shipped {
  name: 'tpm-server' | 'tpm-agent' | 'edge-workload';
  type: 'NodeAttestor' | 'WorkloadAttestor';
  service: string;
  /** What "" (no plugin_data) does: the server must refuse to trust nothing, the others have safe defaults. */
  empty: 'ok' | 'invalid';
  /** A valid configuration as SPIRE re-prints it from a JSON server.conf: quoted keys. */
  validQuoted: string;
  invalid: string;
}

const SHIPPED: Shipped[] = [
  {
    name: 'tpm-server',
    type: 'NodeAttestor',
    service: ServiceNames.serverNodeAttestor,
    empty: 'invalid',
    validQuoted: `"ek_hash_allowlist" = ["${'ab'.repeat(32)}"]\n\n"require_event_log" = false\n\n"log_level" = "debug"`,
    invalid: 'ek_hash_allowlist = ["not-a-hash"]',
  },
  {
    name: 'tpm-agent',
    type: 'NodeAttestor',
    service: ServiceNames.agentNodeAttestor,
    empty: 'ok',
    validQuoted: '"tpm_tcti" = "swtpm:path=/nonexistent/tpm.sock"\n\n"ek_kind" = "rsa"\n\n"log_level" = "debug"',
    invalid: 'ek_kind = "dsa"',
  },
  {
    name: 'edge-workload',
    type: 'WorkloadAttestor',
    service: ServiceNames.workloadAttestor,
    empty: 'ok',
    validQuoted: '"pod_source" = "none"\n\n"proc_path" = "/proc"\n\n"log_level" = "debug"',
    invalid: 'pod_source = "carrier-pigeon"',
  },
];

const FORMS = [
  { form: 'script', binary: (name: Shipped['name']) => builtPlugin(name) },
  { form: 'sea', binary: (name: Shipped['name']) => seaBinary(name) },
] as const;
const CASES = SHIPPED.flatMap((p) => FORMS.map(({ form, binary }) => ({ ...p, form, binary: binary(p.name) })));
type Case = (typeof CASES)[number];

const launched: PluginHarness[] = [];
afterEach(async () => {
  for (const h of launched.splice(0)) await h.kill();
});

async function launch(p: Case, env?: Record<string, string | undefined>): Promise<PluginHarness> {
  const h = await PluginHarness.launch({ binary: p.binary, type: p.type, ...(env ? { env } : {}) });
  launched.push(h);
  return h;
}

describe.each(CASES)('$name ($form) as SPIRE loads it', (p) => {
  it('refuses to run without its magic cookie or under the wrong plugin type', async () => {
    const missing = await PluginHarness.launch({ binary: p.binary, type: p.type, env: { [p.type]: undefined } }).catch((e) => e);
    expect(missing.code).toBe(1);
    const other = p.type === 'NodeAttestor' ? 'WorkloadAttestor' : 'NodeAttestor';
    const wrongType = await PluginHarness.launch({ binary: p.binary, type: other, env: { [p.type]: undefined } }).catch((e) => e);
    expect(wrongType.code).toBe(1);
  });

  it('handshakes, serves health and the broker, and names exactly its services in Init', async () => {
    const h = await launch(p);
    expect(h.handshakeLine).toMatch(/^1\|1\|unix\|\/\S+\|grpc\|$/);
    expect(await h.unary(ServiceNames.health, 'Check', { service: 'plugin' })).toEqual({ status: 'SERVING' });
    const init = await h.init();
    expect([...init.plugin_service_names].sort()).toEqual([p.service, ServiceNames.config].sort());
  });

  it(`Configure: "" is ${p.empty === 'ok' ? 'accepted' : 'refused (fail closed)'}, quoted keys are accepted, bad values are INVALID_ARGUMENT`, async () => {
    const h = await launch(p);
    await h.init();
    if (p.empty === 'ok') await expect(h.configure('')).resolves.toEqual({});
    else await expect(h.configure('')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(h.configure(p.validQuoted)).resolves.toEqual({});
    const err = await h.configure(p.invalid).catch((e) => e);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/key "|unknown key|expected/);
    await expect(h.configure('this is = not { HCL')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });

  it("unloads like SPIRE: Deinit, Shutdown, exits 0 by itself (its 1.5 s guard keeps it inside SPIRE's 2 s), socket removed; stdout clean; stderr is hclog JSON", async () => {
    const h = await launch(p);
    await h.init();
    await h.configure(p.validQuoted);
    const result = await h.unload(10_000);
    expect(result).toMatchObject({ code: 0, killed: false });
    expect(existsSync(h.handshake.address)).toBe(false);
    expect(h.extraStdout).toEqual([]);
    expect(h.stderrLines.length).toBeGreaterThan(0);
    expect(h.stderrLines.map(checkHclogLine).filter(Boolean)).toEqual([]);
  });
});
