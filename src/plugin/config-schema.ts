/**
 * Typed config validation shared by every plugin: zod schemas plus the HCL1 quirks
 * (a block decodes to a one-element list) and errors that name the key and what was expected.
 */
import { z } from 'zod';
import { InvalidConfig } from '../errors.js';

export { z };

/** Accepts `key { ... }` (HCL1 gives `[{...}]`) and `key = { ... }` alike; more than one block is an error. */
export function block<T extends z.ZodType>(schema: T) {
  return z.preprocess((value) => (Array.isArray(value) && value.length === 1 ? value[0] : value), schema);
}

const DURATION_UNIT_MS: Readonly<Record<string, number>> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go `time.ParseDuration` syntax ("500ms", "1m30s"), or a number of seconds. Milliseconds, or undefined if invalid. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * 1000 : undefined;
  const s = value.trim();
  if (s === '0') return 0;
  if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s)) return undefined;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * DURATION_UNIT_MS[m[2]!]!;
  return total;
}

/** A duration setting (see parseDuration); yields whole milliseconds. */
export function duration() {
  return z.union([z.number(), z.string()]).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as "30s" or "5m" (or a number of seconds), got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return Math.round(ms);
  });
}

function describePath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${String(part)}` : String(part);
  return out;
}

/** Formats zod issues as "key: what was expected" lines. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        const where = issue.path.length ? ` in ${describePath(issue.path)}` : '';
        return issue.keys.map((k) => `unknown key "${k}"${where}`).join('; ');
      }
      const key = issue.path.length ? `key "${describePath(issue.path)}"` : 'plugin data';
      return `${key}: ${issue.message.replace(/^Invalid input: /, '')}`;
    })
    .join('; ');
}

/** Validates raw plugin data against a schema; throws InvalidConfig (INVALID_ARGUMENT) naming each bad key. */
export function parseConfig<T extends z.ZodType>(schema: T, raw: unknown, pluginName: string): z.output<T> {
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', `${pluginName}: invalid configuration: ${describeIssues(result.error)}`);
  }
  return result.data;
}
