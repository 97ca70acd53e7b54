/**
 * Measured-boot policy files: parse and validate strictly (unknown keys are refused, naming the key).
 *
 * File shape (YAML or JSON; documented in docs/cli.md):
 * ```yaml
 * policies:
 *   - name: golden-node
 *     pcrs: { sha256: { "0": "<hex>", "7": "<hex>" } }   # quote-verified PCR values must equal these
 *     secure_boot: true                                    # Secure Boot must be verifiably enabled
 *     boot_applications: ["<hex>", ...]                    # every verified PCR 4 EFI application digest in the list
 *     kernels: ["<hex>", ...]                              # every verified kernel image digest (PCR 9) in the list
 *     kernel_cmdline: ["^.*ro quiet.*$"]                   # every verified kernel command line matches one regex
 *     boot_loader: grub                                    # GRUB measurements must be present
 * ```
 * Digests may be of any bank (sha1/sha256/sha384/sha512, told apart by length), but a SHA-1 entry in
 * `boot_applications` or `kernels` never matches (SHA-1 collisions: see pcr-integrity.ts COLLISION_RESISTANT_BANKS).
 *
 * @module
 */
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { nearestKey } from '../did-you-mean.js';
import { InvalidConfig } from '../errors.js';
import { HashAlg } from '../tpm/alg.js';

export const ERR_POLICY_INVALID = 'ERR_POLICY_INVALID';
/** Largest policy file accepted (real ones are a few KiB: digests and a handful of patterns). */
export const MAX_POLICY_FILE_BYTES = 256 * 1024;
/** Deepest YAML nesting accepted (the format needs 5: policies → item → pcrs → bank → index). */
export const MAX_POLICY_DEPTH = 12;
/** Longest kernel command-line pattern accepted. */
export const MAX_PATTERN_LENGTH = 4096;
/** Largest `{n}` / `{n,m}` bound in a pattern. */
export const MAX_PATTERN_REPEAT = 1000;
const MAX_PCR_INDEX = 23;

export interface MeasuredBootPolicy {
  readonly name: string;
  /** Required PCR values: bank → index → lower-case hex. */
  readonly pcrs: ReadonlyMap<string, ReadonlyMap<number, string>>;
  /** True: Secure Boot must be verifiably enabled. False: no requirement. */
  readonly secureBoot: boolean;
  /** Allowed EFI boot-application digests (lower-case hex), or undefined for no rule. */
  readonly bootApplications: ReadonlySet<string> | undefined;
  /** Allowed kernel image digests (lower-case hex), or undefined for no rule. */
  readonly kernels: ReadonlySet<string> | undefined;
  /** Kernel command-line patterns, or undefined for no rule. */
  readonly kernelCmdline: readonly RegExp[] | undefined;
  /** Required boot loader, or undefined for no rule. */
  readonly bootLoader: 'grub' | undefined;
}

const hexDigest = z
  .string()
  .transform((s) => s.toLowerCase())
  .refine((s) => /^([0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{96}|[0-9a-f]{128})$/.test(s), {
    message: 'must be a hex SHA-1/256/384/512 digest',
  });

const policySchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be 1-128 characters [A-Za-z0-9._-]'),
  pcrs: z.record(z.string(), z.record(z.string(), hexDigest)).optional(),
  secure_boot: z.boolean().optional(),
  boot_applications: z.array(hexDigest).optional(),
  kernels: z.array(hexDigest).optional(),
  kernel_cmdline: z.array(z.string().min(1).max(MAX_PATTERN_LENGTH)).optional(),
  boot_loader: z.literal('grub').optional(),
});

const policyFileSchema = z.strictObject({
  policies: z.array(policySchema).min(1),
});

/**
 * Nesting depth of the YAML text, counted before parsing: block levels (a stack of indentation widths, so any
 * indentation style counts one level per step), `- ` entries, and flow brackets outside quotes. The YAML parser
 * recurses per level, so depth is bounded before it runs.
 */
function textDepth(text: string): number {
  let deepest = 0;
  const indents: number[] = [];
  for (const line of text.split('\n')) {
    const body = line.trimStart();
    if (body === '' || body.startsWith('#')) continue;
    const indent = line.length - body.length;
    while (indents.length > 0 && indents[indents.length - 1]! >= indent) indents.pop();
    indents.push(indent);
    let depth = indents.length;
    let quote: string | undefined;
    for (let i = indent; i < line.length; i++) {
      const c = line[i]!;
      if (quote) {
        if (c === '\\' && quote === '"') i++;
        else if (c === quote) quote = undefined;
      } else if (c === '"' || c === "'") quote = c;
      else if (c === '#') break;
      else if (c === '[' || c === '{') deepest = Math.max(deepest, ++depth);
      else if (c === ']' || c === '}') depth--;
      else if (c === '-' && (line[i + 1] === ' ' || i + 1 === line.length)) deepest = Math.max(deepest, ++depth); // "- - - x"
    }
    deepest = Math.max(deepest, depth);
  }
  return deepest;
}

/** Nesting depth of a parsed value (the text check is approximate; this one is exact). */
function valueDepth(value: unknown, limit: number): number {
  if (value === null || typeof value !== 'object') return 0;
  if (limit <= 0) return 1;
  let deepest = 0;
  for (const child of Object.values(value)) deepest = Math.max(deepest, valueDepth(child, limit - 1));
  return deepest + 1;
}

/**
 * Refuses patterns whose matching time can explode (kernel command lines come from the node being judged):
 * a repeated group (`*`, `+`, `{n,}`, `{n,m}` with m > 1) may hold neither a quantifier nor an alternation, no
 * backreferences, and no `{n}` bound above MAX_PATTERN_REPEAT. Returns what is wrong, or undefined.
 */
export function unsafePatternReason(pattern: string): string | undefined {
  // For each open group: whether it contains a quantifier or `|`.
  const groups: { risky: boolean }[] = [];
  let inClass = false;
  let lastGroupRisky: boolean | undefined; // the group that just closed, if the next token may quantify it
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    let closed: boolean | undefined;
    if (c === '\\') {
      const next = pattern[i + 1] ?? '';
      if (/[1-9]/.test(next) || next === 'k') return `backreference \\${next} at ${i}`;
      i++;
    } else if (inClass) {
      if (c === ']') inClass = false;
    } else if (c === '[') inClass = true;
    else if (c === '(') groups.push({ risky: false });
    else if (c === ')') closed = groups.pop()?.risky ?? false;
    else if (c === '|') {
      if (groups.length > 0) groups[groups.length - 1]!.risky = true;
    } else if (c === '*' || c === '+' || c === '?' || c === '{') {
      let repeats = c !== '?';
      let end = i;
      if (c === '{') {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i));
        if (m) {
          const max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
          if (Number(m[1]) > MAX_PATTERN_REPEAT || (max !== Infinity && max > MAX_PATTERN_REPEAT)) return `repetition bound above ${MAX_PATTERN_REPEAT} at ${i}`;
          repeats = max > 1;
          end = i + m[0].length - 1;
        }
      }
      if (repeats && lastGroupRisky === true) return `a repeated group holds a quantifier or an alternation (before ${i})`;
      if (groups.length > 0) groups[groups.length - 1]!.risky = true;
      i = end;
      if (pattern[i + 1] === '?') i++; // lazy
    }
    lastGroupRisky = closed;
    if (closed === true && groups.length > 0) groups[groups.length - 1]!.risky = true;
  }
  return undefined;
}

function invalid(path: readonly PropertyKey[], what: string, source: string): InvalidConfig {
  const at = path.length > 0 ? path.map(String).join('.') : '(top level)';
  return new InvalidConfig(ERR_POLICY_INVALID, `${source}: ${at}: ${what}`, { fields: { path: at, file: source } });
}

/**
 * Parses and validates a policy file (YAML, of which JSON is a subset). Throws InvalidConfig naming `source` (the
 * file) and the key. Size, nesting depth and aliases are bounded before and while parsing.
 */
export function parsePolicyFile(text: string, source = 'policy file'): MeasuredBootPolicy[] {
  const bad = (path: readonly PropertyKey[], what: string) => invalid(path, what, source);
  if (Buffer.byteLength(text, 'utf8') > MAX_POLICY_FILE_BYTES) throw bad([], `larger than ${MAX_POLICY_FILE_BYTES} bytes`);
  if (textDepth(text) > MAX_POLICY_DEPTH) throw bad([], `nested deeper than ${MAX_POLICY_DEPTH} levels`);
  let document: unknown;
  try {
    // A policy file has no use for aliases; refusing them all rules out alias expansion ("billion laughs").
    // logLevel silent: the yaml library would print warnings (an unknown tag) as raw stderr lines, which a plugin's
    // hclog stream must never carry; a warning is refused below instead, as a file we do not fully understand.
    const doc = parseDocument(text, { uniqueKeys: true, logLevel: 'silent' });
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) throw problem;
    document = doc.toJS({ maxAliasCount: 0 });
  } catch (err) {
    throw new InvalidConfig(ERR_POLICY_INVALID, `${source}: not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`, {
      cause: err,
      fields: { file: source },
    });
  }
  if (valueDepth(document, MAX_POLICY_DEPTH + 1) > MAX_POLICY_DEPTH) throw bad([], `nested deeper than ${MAX_POLICY_DEPTH} levels`);
  const parsed = policyFileSchema.safeParse(document);
  if (!parsed.success) {
    // An unknown key explains a missing one (`policy:` for `policies:`), so it is reported first.
    const issue = parsed.error.issues.find((i) => i.code === 'unrecognized_keys') ?? parsed.error.issues[0]!;
    if (issue.code === 'unrecognized_keys') {
      const key = issue.keys[0]!;
      const known = issue.path.length === 0 ? Object.keys(policyFileSchema.shape) : Object.keys(policySchema.shape);
      const near = nearestKey(key, known);
      throw bad([...issue.path, key], `unknown key "${key}"${near ? ` (did you mean "${near}"?)` : ''}`);
    }
    throw bad(issue.path, issue.message.replace(/^Invalid input: /, ''));
  }

  const names = new Set<string>();
  return parsed.data.policies.map((raw, i) => {
    if (names.has(raw.name)) throw bad(['policies', i, 'name'], `duplicate policy name "${raw.name}"`);
    names.add(raw.name);
    const policy = toPolicy(raw, ['policies', i], bad);
    const hasRule =
      policy.pcrs.size > 0 || policy.secureBoot || policy.bootApplications || policy.kernels || policy.kernelCmdline || policy.bootLoader;
    // A policy without rules would admit every node as policy:<name>.
    if (!hasRule) throw bad(['policies', i], `policy "${raw.name}" has no rules`);
    return policy;
  });
}

type RawPolicy = z.infer<typeof policySchema>;

function toPolicy(raw: RawPolicy, at: (string | number)[], invalid: (path: readonly PropertyKey[], what: string) => InvalidConfig): MeasuredBootPolicy {
  const pcrs = new Map<string, Map<number, string>>();
  for (const [bank, values] of Object.entries(raw.pcrs ?? {})) {
    const alg = HashAlg.ALL.find((a) => a.name === bank);
    if (!alg) throw invalid([...at, 'pcrs', bank], `unknown PCR bank "${bank}" (sha1, sha256, sha384, sha512)`);
    const bankValues = new Map<number, string>();
    for (const [indexText, hex] of Object.entries(values)) {
      const index = Number(indexText);
      if (!/^\d{1,2}$/.test(indexText) || index > MAX_PCR_INDEX) {
        throw invalid([...at, 'pcrs', bank, indexText], `PCR index must be 0..${MAX_PCR_INDEX}`);
      }
      if (hex.length !== alg.size * 2) throw invalid([...at, 'pcrs', bank, indexText], `a ${bank} value is ${alg.size} bytes`);
      bankValues.set(index, hex);
    }
    pcrs.set(bank, bankValues);
  }
  const kernelCmdline = raw.kernel_cmdline?.map((pattern, i) => {
    const unsafe = unsafePatternReason(pattern);
    if (unsafe !== undefined) throw invalid([...at, 'kernel_cmdline', i], `pattern could take unbounded time to match: ${unsafe}`);
    try {
      return new RegExp(pattern, 'u');
    } catch (err) {
      throw invalid([...at, 'kernel_cmdline', i], `invalid regular expression: ${(err as Error).message}`);
    }
  });
  return {
    name: raw.name,
    pcrs,
    secureBoot: raw.secure_boot ?? false,
    bootApplications: raw.boot_applications ? new Set(raw.boot_applications) : undefined,
    kernels: raw.kernels ? new Set(raw.kernels) : undefined,
    kernelCmdline,
    bootLoader: raw.boot_loader,
  };
}

/** The file document for policies (inverse of parsePolicyFile), for writing YAML/JSON. */
export function policiesToDocument(policies: readonly MeasuredBootPolicy[]): { policies: Record<string, unknown>[] } {
  return {
    policies: policies.map((p) => {
      const doc: Record<string, unknown> = { name: p.name };
      if (p.pcrs.size > 0) {
        doc.pcrs = Object.fromEntries(
          [...p.pcrs].map(([bank, values]) => [bank, Object.fromEntries([...values].sort(([a], [b]) => a - b).map(([i, v]) => [String(i), v]))]),
        );
      }
      if (p.secureBoot) doc.secure_boot = true;
      if (p.bootApplications) doc.boot_applications = [...p.bootApplications];
      if (p.kernels) doc.kernels = [...p.kernels];
      if (p.kernelCmdline) doc.kernel_cmdline = p.kernelCmdline.map((r) => r.source);
      if (p.bootLoader) doc.boot_loader = p.bootLoader;
      return doc;
    }),
  };
}
