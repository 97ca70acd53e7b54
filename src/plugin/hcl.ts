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

const INT_OUT_OF_RANGE = /strconv\.ParseInt: parsing "(-?(?:0[xX][0-9a-fA-F]+|\d+))": value out of range/;
const MAX_QUOTED_INTEGERS = 32;

/**
 * The GopherJS build of the HCL1 parser parses integers as 32-bit, so `ak_handle = 0x81010002` (or the decimal
 * form SPIRE re-prints) fails although SPIRE's own 64-bit parse accepted it. Such a literal is turned into a
 * string and parsed again; the plugin's schema then reads it (persistent handles accept both forms).
 */
function quoteOutOfRangeInteger(text: string, literal: string): string | undefined {
  const escaped = literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const token = new RegExp(`([=\\[,]\\s*)${escaped}(?=\\s*(?:[,\\]\\n\\r}#]|//|$))`, 'g');
  const rewritten = text.replace(token, `$1"${literal}"`);
  return rewritten === text ? undefined : rewritten;
}

async function parseHcl(original: string): Promise<unknown> {
  const hcl = await hclParser();
  let text = original;
  let output: string;
  for (let attempt = 0; ; attempt++) {
    let failure: string | undefined;
    try {
      output = hcl.parse(text);
    } catch (err) {
      failure = String((err as Error)?.message ?? err);
      output = '';
    }
    const literal = INT_OUT_OF_RANGE.exec(failure ?? output)?.[1];
    const retry = literal !== undefined && attempt < MAX_QUOTED_INTEGERS ? quoteOutOfRangeInteger(text, literal) : undefined;
    if (retry !== undefined) {
      text = retry;
      continue;
    }
    if (failure !== undefined) throw hclError(failure);
    break;
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
