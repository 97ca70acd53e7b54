import { describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { block, duration, parseConfig, z } from '../../src/plugin/config-schema.js';
import { decodePluginData } from '../../src/plugin/hcl.js';

// The forms SPIRE produces (spire-plugin-protocol.md §3.3): re-printed HCL1 with no outer braces,
// quoted keys from JSON server.conf files, blank-line separated items, nested indented blocks.
describe('decodePluginData', () => {
  it('"" (no plugin_data, or plugin_data {}) is an empty object', async () => {
    expect(await decodePluginData('')).toEqual({});
    expect(await decodePluginData('  \n')).toEqual({});
  });

  it('quoted keys as produced from a JSON server.conf', async () => {
    expect(await decodePluginData('"foo" = "bar"')).toEqual({ foo: 'bar' });
  });

  it('the printer form with lists and nested blocks', async () => {
    const text = 'ek_ca_path = "/etc/spire/ek-ca.pem"\n\nhash_algs = ["sha256"]\n\npcrs {\n  index = [0, 7]\n}';
    expect(await decodePluginData(text)).toEqual({ ek_ca_path: '/etc/spire/ek-ca.pem', hash_algs: ['sha256'], pcrs: [{ index: [0, 7] }] });
  });

  it('repeated blocks, numbers, booleans and heredocs', async () => {
    const text = 'a = 1\nb = true\nc = 1.5\nd { e = "x" }\nd { e = "y" }\nf = <<EOT\nline\nEOT\n';
    expect(await decodePluginData(text)).toEqual({ a: 1, b: true, c: 1.5, d: [{ e: 'x' }, { e: 'y' }], f: 'line\n' });
  });

  it('plugin_data_file content in JSON is accepted verbatim', async () => {
    expect(await decodePluginData('{"a": {"b": [1, 2]}}\n')).toEqual({ a: { b: [1, 2] } });
  });

  it.each([
    ['HCL syntax error', 'a = = 1'],
    ['bare string literal (plugin_data = "DATA1")', '"DATA1"'],
    ['JSON that is not an object', '{"a": 1'],
    ['JSON array', '[1, 2]'],
  ])('rejects %s with INVALID_ARGUMENT', async (_name, text) => {
    await expect(decodePluginData(text)).rejects.toMatchObject({ code: 'ERR_CONFIG_SYNTAX', grpcCode: GrpcCode.INVALID_ARGUMENT });
  });
});

describe('config schema helpers', () => {
  const schema = z.strictObject({ timeout: duration().default(1000), sub: block(z.strictObject({ n: z.number() })).optional() });

  it('parses Go-style durations and numbers of seconds', () => {
    expect(parseConfig(schema, { timeout: '1m30s' }, 't').timeout).toBe(90_000);
    expect(parseConfig(schema, { timeout: '250ms' }, 't').timeout).toBe(250);
    expect(parseConfig(schema, { timeout: 2 }, 't').timeout).toBe(2000);
    expect(parseConfig(schema, {}, 't').timeout).toBe(1000);
  });

  it('accepts a block as HCL1 delivers it (a one-element list) or as an object', () => {
    expect(parseConfig(schema, { sub: [{ n: 1 }] }, 't').sub).toEqual({ n: 1 });
    expect(parseConfig(schema, { sub: { n: 2 } }, 't').sub).toEqual({ n: 2 });
  });

  it.each([
    [{ timeout: 'soon' }, /key "timeout": expected a duration/],
    [{ sub: [{ n: 1 }, { n: 2 }] }, /key "sub"/],
    [{ extra: 1 }, /unknown key "extra"/],
    [{ sub: { n: 'x' } }, /key "sub.n"/],
  ])('names the bad key: %j', (raw, message) => {
    let caught: unknown;
    try {
      parseConfig(schema, raw, 't');
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code: 'ERR_CONFIG_INVALID', grpcCode: GrpcCode.INVALID_ARGUMENT });
    expect((caught as Error).message).toMatch(message);
  });
});
