/**
 * Decodes the `hcl_configuration` SPIRE sends into a plain object.
 *
 * SPIRE re-prints `plugin_data` as HCL v1 (keys may be quoted, as JSON server.conf files produce;
 * nested blocks; lists), sends "" when there is no data, and sends `plugin_data_file` verbatim, so
 * JSON must be accepted too. HCL1 is parsed by js-hcl-parser, a build of HashiCorp's own HCL v1
 * parser; it is loaded lazily because it is large and only needed at Configure.
 */
import { InvalidConfig } from '../errors.js';

type HclParser = { parse(text: string): string };
let parser: HclParser | undefined;

async function hclParser(): Promise<HclParser> {
  // A literal dynamic import: bundled into the single-file plugin, but evaluated only on first use.
  parser ??= ((await import('js-hcl-parser')) as { default: HclParser }).default;
  return parser;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

async function parseHcl(text: string): Promise<unknown> {
  const hcl = await hclParser();
  let output: string;
  try {
    output = hcl.parse(text);
  } catch (err) {
    throw hclError(String((err as Error)?.message ?? err));
  }
  // The GopherJS build reports some errors by returning the message instead of throwing.
  try {
    return JSON.parse(output);
  } catch {
    throw hclError(output);
  }
}

function hclError(detail: string): InvalidConfig {
  return new InvalidConfig('ERR_CONFIG_SYNTAX', `plugin data is not valid HCL: ${detail.replace(/^unable to parse JSON: /, '')}`);
}

/** Returns the configuration object; throws InvalidConfig (INVALID_ARGUMENT) on anything else. */
export async function decodePluginData(text: string): Promise<Record<string, unknown>> {
  const trimmed = text.trim();
  if (trimmed === '') return {};
  let decoded: unknown;
  if (trimmed.startsWith('{')) {
    try {
      decoded = JSON.parse(trimmed);
    } catch (err) {
      throw new InvalidConfig('ERR_CONFIG_SYNTAX', `plugin data is not valid JSON: ${(err as Error).message}`);
    }
  } else if (/^"(?:[^"\\]|\\.)*"$/.test(trimmed)) {
    decoded = trimmed; // `plugin_data = "DATA"`: SPIRE forwards a bare HCL string literal
  } else {
    decoded = await parseHcl(text);
  }
  if (!isPlainObject(decoded)) {
    throw new InvalidConfig(
      'ERR_CONFIG_SYNTAX',
      'plugin data must be a block of key = value settings (got a bare value; use plugin_data { ... })',
    );
  }
  return decoded;
}
