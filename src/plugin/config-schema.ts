/**
 * Typed config validation shared by every plugin: zod schemas plus the HCL1 quirks
 * (a block decodes to a one-element list) and errors that name the key and what was expected.
 */
import { z } from 'zod';
import { nearestKey } from '../did-you-mean.js';
import { InvalidConfig, InvalidConfigList } from '../errors.js';

export { nearestKey };

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

/** The keys of an object schema at `path` (through optional/default/refine wrappers), for "did you mean". */
function knownKeys(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let current: unknown = schema;
  const unwrap = (s: unknown): unknown => {
    for (let i = 0; i < 10 && s && typeof s === 'object'; i++) {
      const def = (s as { def?: { innerType?: unknown; in?: unknown; out?: unknown; type?: string } }).def;
      if (!def) break;
      if (def.innerType) s = def.innerType;
      else if (def.type === 'pipe') s = (def.in as { def?: { type?: string } })?.def?.type === 'transform' ? def.out : def.in;
      else break;
    }
    return s;
  };
  current = unwrap(current);
  for (const part of path) {
    const shape = (current as { shape?: Record<string, unknown> })?.shape;
    if (!shape || typeof part !== 'string') return [];
    current = unwrap(shape[part]);
  }
  const shape = (current as { shape?: Record<string, unknown> })?.shape;
  return shape ? Object.keys(shape) : [];
}

/** One "key: what was expected" line per zod issue. */
export function issueMessages(error: z.ZodError, schema?: z.ZodType): string[] {
  return error.issues.flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') {
      const where = issue.path.length ? ` in ${describePath(issue.path)}` : '';
      const known = schema ? knownKeys(schema, issue.path) : [];
      return issue.keys.map((k) => {
        const near = nearestKey(k, known);
        return `unknown key "${k}"${where}${near ? ` (did you mean "${near}"?)` : ''}`;
      });
    }
    const key = issue.path.length ? `key "${describePath(issue.path)}"` : 'plugin data';
    return [`${key}: ${issue.message.replace(/^Invalid input: /, '')}`];
  });
}

/** Formats zod issues as "key: what was expected" lines. */
export function describeIssues(error: z.ZodError, schema?: z.ZodType): string {
  return issueMessages(error, schema).join('; ');
}

/**
 * Validates raw plugin data against a schema; throws InvalidConfig (INVALID_ARGUMENT) naming each bad key, or an
 * InvalidConfigList when there are several, so Validate lists each one.
 */
export function parseConfig<T extends z.ZodType>(schema: T, raw: unknown, pluginName: string): z.output<T> {
  const result = schema.safeParse(raw);
  if (!result.success) {
    const problems = issueMessages(result.error, schema);
    const message = `${pluginName}: invalid configuration: ${problems.join('; ')}`;
    if (problems.length > 1) {
      throw new InvalidConfigList('ERR_CONFIG_INVALID', message, problems.map((p) => `${pluginName}: invalid configuration: ${p}`));
    }
    throw new InvalidConfig('ERR_CONFIG_INVALID', message);
  }
  return result.data;
}

/**
 * Collects the configuration problems of independent checks instead of stopping at the first, so Configure and
 * Validate report everything wrong at once. Errors that are not InvalidConfig (bugs, I/O we did not expect) pass
 * through unchanged.
 */
export class ConfigProblems {
  readonly #pluginName: string;
  readonly #errors: InvalidConfig[] = [];

  constructor(pluginName: string) {
    this.#pluginName = pluginName;
  }

  /** Runs one check; its InvalidConfig is recorded and `undefined` returned. */
  async check<T>(run: () => T | Promise<T>): Promise<T | undefined> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof InvalidConfigList) {
        this.#errors.push(...err.problems.map((p) => new InvalidConfig(err.code, p)));
        return undefined;
      }
      if (err instanceof InvalidConfig) {
        this.#errors.push(err);
        return undefined;
      }
      throw err;
    }
  }

  add(error: InvalidConfig): void {
    this.#errors.push(error);
  }

  get count(): number {
    return this.#errors.length;
  }

  /** Throws what was recorded; for a check whose result the rest depends on (at least one problem is recorded). */
  fail(): never {
    this.throwIfAny();
    throw new InvalidConfig('ERR_CONFIG_INVALID', `${this.#pluginName}: invalid configuration`);
  }

  /** Throws the one problem as it was, or all of them as an InvalidConfigList. */
  throwIfAny(): void {
    if (this.#errors.length === 1) throw this.#errors[0]!;
    if (this.#errors.length > 1) {
      const problems = this.#errors.map((e) => e.message);
      throw new InvalidConfigList(
        'ERR_CONFIG_INVALID',
        `${this.#pluginName}: ${problems.length} configuration problems: ${problems.map((p, i) => `(${i + 1}) ${p}`).join(' ')}`,
        problems,
      );
    }
  }
}
