/**
 * Runtime conformance: a built plugin binary, launched as SPIRE's go-plugin client launches it.
 * See test/helpers/plugin-harness.ts for what is mirrored from SPIRE and go-plugin.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin } from '../helpers/binaries.js';
import { attestThroughServer, checkHclogLine, PluginHarness } from '../helpers/plugin-harness.js';

const binary = builtPlugin('conformance-nodeattestor', 'test-bin');
const reverse = (b: Buffer) => Buffer.from([...b].reverse());
const launched: PluginHarness[] = [];

async function launch(options: Partial<Parameters<typeof PluginHarness.launch>[0]> = {}): Promise<PluginHarness> {
  const h = await PluginHarness.launch({ binary, type: 'NodeAttestor', ...options });
  launched.push(h);
  return h;
}

afterEach(async () => {
  for (const h of launched.splice(0)) await h.kill();
});

describe('process launch and handshake', () => {
  it('refuses to run without the magic cookie, exits 1, prints nothing on stdout', async () => {
    const err = await PluginHarness.launch({ binary, type: 'NodeAttestor', env: { NodeAttestor: undefined } }).catch((e) => e);
    expect(err.message).toMatch(/plugin exited before we could connect/);
    expect(err.code).toBe(1);
    expect(err.stderr.join('\n')).toMatch(/not meant to be run directly/);
  });

  it('refuses a wrong cookie value and a wrong plugin type', async () => {
    const wrongValue = await PluginHarness.launch({ binary, type: 'NodeAttestor', env: { NodeAttestor: 'WorkloadAttestor' } }).catch((e) => e);
    expect(wrongValue.code).toBe(1);
    // Declared under the wrong type: SPIRE sets WorkloadAttestor=WorkloadAttestor only.
    const wrongType = await PluginHarness.launch({ binary, type: 'WorkloadAttestor' }).catch((e) => e);
    expect(wrongType.code).toBe(1);
  });

  it('refuses protocol versions it does not speak', async () => {
    const err = await PluginHarness.launch({ binary, type: 'NodeAttestor', env: { PLUGIN_PROTOCOL_VERSIONS: '2,3' } }).catch((e) => e);
    expect(err.code).toBe(1);
  });

  it('writes exactly one go-plugin handshake line and nothing else on stdout', async () => {
    const h = await launch();
    expect(h.handshakeLine).toMatch(/^1\|1\|unix\|\/[^|]+\/plugin\.sock\|grpc\|$/);
    expect(h.handshake.rest).toEqual(['']); // empty server-cert field, no multiplex field
    await h.init();
    await h.configure('shared_secret = "s"');
    await attestThroughServer(h, Buffer.from('node-1'), reverse);
    expect(h.extraStdout).toEqual([]);
  });

  it('serves the socket from a fresh 0700 directory', async () => {
    const { statSync } = await import('node:fs');
    const { dirname } = await import('node:path');
    const h = await launch();
    expect(statSync(dirname(h.handshake.address)).mode & 0o777).toBe(0o700);
    expect(statSync(h.handshake.address).isSocket()).toBe(true);
  });
});

describe('go-plugin services', () => {
  it('reports health SERVING for "plugin" and "" and NOT_FOUND for others', async () => {
    const h = await launch();
    expect(await h.unary(ServiceNames.health, 'Check', { service: 'plugin' })).toEqual({ status: 'SERVING' });
    expect(await h.unary(ServiceNames.health, 'Check', { service: '' })).toEqual({ status: 'SERVING' });
    await expect(h.unary(ServiceNames.health, 'Check', { service: 'nope' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('accepts ConnInfo on the broker stream and dials host services through it', async () => {
    const h = await launch({ hostServices: { attestedAgents: new Set(['spiffe://example.org/spire/agent/conformance/node-2']) } });
    await h.init();
    await h.configure('shared_secret = "s"\ntofu = true');
    const first = await attestThroughServer(h, Buffer.from('node-1'), reverse);
    expect(first.spiffe_id).toBe('spiffe://example.org/spire/agent/conformance/node-1');
    // node-2 already has an attested-node record according to our AgentStore: TOFU refuses.
    await expect(attestThroughServer(h, Buffer.from('node-2'), reverse)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(h.hostServiceCalls).toEqual([
      'GetAgentInfo:spiffe://example.org/spire/agent/conformance/node-1',
      'GetAgentInfo:spiffe://example.org/spire/agent/conformance/node-2',
    ]);
  });

  it('Init returns exactly the implemented service names; Deinit succeeds', async () => {
    const h = await launch();
    const res = await h.init();
    expect([...res.plugin_service_names].sort()).toEqual([ServiceNames.serverNodeAttestor, ServiceNames.config].sort());
    expect(await h.unary(ServiceNames.init, 'Deinit', {})).toEqual({});
  });

  it('Shutdown makes the process exit 0 by itself and removes the socket', async () => {
    const h = await launch();
    await h.init();
    const result = await h.unload(10_000);
    expect(result).toMatchObject({ code: 0, killed: false });
    expect(existsSync(h.handshake.address)).toBe(false);
  });

  it('ignores SIGINT (Ctrl-C reaches the whole process group)', async () => {
    const h = await launch();
    h.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 200));
    expect(await h.unary(ServiceNames.health, 'Check', { service: 'plugin' })).toEqual({ status: 'SERVING' });
  });

  it('keeps the stdio stream open and silent', async () => {
    const h = await launch();
    const call = h.client(ServiceNames.stdio)['StreamStdio']!({}) as grpc.ClientReadableStream<unknown>;
    const received: unknown[] = [];
    call.on('data', (d) => received.push(d));
    call.on('error', () => undefined);
    await new Promise((r) => setTimeout(r, 150));
    expect(received).toEqual([]);
    call.cancel();
  });
});

describe('Configure', () => {
  it('accepts an empty configuration ("" = no plugin_data) and then validates on use', async () => {
    const h = await launch();
    await h.init();
    // The schema requires shared_secret, so "" is rejected with a message naming the key.
    await expect(h.configure('')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/shared_secret/) });
  });

  it('accepts valid HCL1 with quoted keys (JSON server.conf), nested blocks and lists', async () => {
    const h = await launch();
    await h.init();
    await h.configure('"shared_secret" = "s3cr3t"\n\n"rounds" = 2\n\npcrs {\n  index = [0, 7]\n}\n\nlog_level = "debug"');
    const attrs = await attestThroughServer(h, Buffer.from('edge-7'), reverse);
    expect(attrs.challenges).toBe(2);
    expect(attrs.selector_values).toEqual(['node:edge-7', 'pcrs:0,7']);
    expect(attrs.can_reattest).toBe(true);
  });

  it('accepts plugin_data_file contents in JSON verbatim', async () => {
    const h = await launch();
    await h.init();
    await h.configure('{\n  "shared_secret": "s",\n  "rounds": 0,\n  "pcrs": {"index": [1]}\n}\n');
    const attrs = await attestThroughServer(h, Buffer.from('edge-8'), reverse);
    expect(attrs.challenges).toBe(0);
    expect(attrs.selector_values).toContain('pcrs:1');
  });

  it.each([
    ['HCL syntax error', 'shared_secret = = "x"', /not valid HCL/],
    ['unknown key', 'shared_secret = "s"\nsharde_secret = "t"', /unknown key "sharde_secret"/],
    ['wrong type', 'shared_secret = "s"\nrounds = "two"', /key "rounds"/],
    ['out of range in a nested block', 'shared_secret = "s"\npcrs { index = [24] }', /key "pcrs.index\[0\]"/],
    ['bare value instead of a block', '"DATA1"', /block of key = value/],
    ['bad log level', 'shared_secret = "s"\nlog_level = "loud"', /log_level/],
  ])('rejects %s with InvalidArgument naming the problem', async (_name, hcl, message) => {
    const h = await launch();
    await h.init();
    const err = await h.configure(hcl).catch((e) => e);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(message);
  });

  it('rejects a missing or malformed trust domain', async () => {
    const h = await launch();
    await h.init();
    await expect(h.configure('shared_secret = "s"', '')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(h.configure('shared_secret = "s"', 'Example.ORG')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });

  it('Validate returns notes instead of failing', async () => {
    const h = await launch();
    const ok = await h.unary(ServiceNames.config, 'Validate', { core_configuration: { trust_domain: 'example.org' }, hcl_configuration: 'shared_secret = "s"' });
    expect(ok).toEqual({ valid: true, notes: [] });
    const bad = await h.unary(ServiceNames.config, 'Validate', { core_configuration: { trust_domain: 'example.org' }, hcl_configuration: 'bogus = 1' });
    expect(bad.valid).toBe(false);
    expect(bad.notes.join()).toMatch(/bogus/);
  });
});

describe('errors and robustness', () => {
  it('maps typed errors to their codes and survives bad input', async () => {
    const h = await launch();
    await h.init();
    await h.configure('shared_secret = "s"');
    await expect(attestThroughServer(h, Buffer.from('NOT A NODE'), reverse)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(attestThroughServer(h, Buffer.from('node-1'), (b) => b)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    // Still alive and attesting.
    const ok = await attestThroughServer(h, Buffer.from('node-1'), reverse);
    expect(ok.spiffe_id).toMatch(/node-1$/);
  });

  it('refuses an Attest stream whose first message is not a payload', async () => {
    const h = await launch();
    await h.init();
    await h.configure('shared_secret = "s"');
    const call = h.client(ServiceNames.serverNodeAttestor)['Attest']!() as grpc.ClientDuplexStream<any, any>;
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      call.on('error', resolve);
      call.on('data', () => undefined);
      call.write({ challenge_response: Buffer.from('x') });
    });
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('tolerates SPIRE cancelling a stream mid-challenge', async () => {
    const h = await launch();
    await h.init();
    await h.configure('shared_secret = "s"\nrounds = 3');
    const call = h.client(ServiceNames.serverNodeAttestor)['Attest']!() as grpc.ClientDuplexStream<any, any>;
    call.on('error', () => undefined);
    await new Promise<void>((resolve) => {
      call.on('data', () => {
        call.cancel();
        resolve();
      });
      call.write({ payload: Buffer.from('node-1') });
    });
    const ok = await attestThroughServer(h, Buffer.from('node-2'), reverse);
    expect(ok.challenges).toBe(3);
  });

  it('accepts messages larger than grpc-js 4 MiB default (event logs can be megabytes)', async () => {
    const h = await launch();
    await h.init();
    await h.configure('shared_secret = "s"');
    const big = Buffer.alloc(6 * 1024 * 1024, 0x61);
    const err = await attestThroughServer(h, big, reverse).catch((e) => e);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT); // reached the plugin's payload check, not a size limit
  });
});

describe('logging', () => {
  it('every stderr line is hclog JSON that go-plugin parses, with string fields', async () => {
    const h = await launch();
    await h.init();
    await h.configure('shared_secret = "s"\nlog_level = "debug"');
    await attestThroughServer(h, Buffer.from('node-1'), reverse);
    await attestThroughServer(h, Buffer.from('BAD'), reverse).catch(() => undefined);
    await h.unload();
    expect(h.stderrLines.length).toBeGreaterThan(2);
    const problems = h.stderrLines.map(checkHclogLine).filter(Boolean);
    expect(problems).toEqual([]);
    const attested = h.stderrLines.map((l) => JSON.parse(l)).find((e) => e['@message'] === 'Node attested');
    expect(attested).toMatchObject({ '@level': 'info', '@module': 'conformance', node: 'node-1' });
  });
});

describe('distribution', () => {
  it('the built file is self-contained: it runs from a directory with no node_modules', async () => {
    const { copyFileSync, mkdtempSync, rmSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'portable-'));
    try {
      const copy = join(dir, 'conformance-nodeattestor');
      copyFileSync(binary, copy);
      const { chmodSync } = await import('node:fs');
      chmodSync(copy, 0o755);
      expect(readFileSync(copy, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
      const h = await PluginHarness.launch({ binary: copy, type: 'NodeAttestor' });
      launched.push(h);
      await h.init();
      await h.configure('"shared_secret" = "s"\npcrs { index = [7] }'); // loads the bundled HCL1 parser
      const attrs = await attestThroughServer(h, Buffer.from('node-9'), reverse);
      expect(attrs.selector_values).toContain('pcrs:7');
      // Only Node built-ins are required at run time.
      const requires = [...readFileSync(copy, 'utf8').matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]!);
      // isBuiltin, not builtinModules: node:-only modules such as node:sea are not in that list.
      const { isBuiltin } = await import('node:module');
      expect(requires.filter((r) => !isBuiltin(r))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
