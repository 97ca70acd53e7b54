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
 * Digests may be of any bank (sha1/sha256/sha384/sha512, told apart by length).
 *
 * @module
 */
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { nearestKey } from '../did-you-mean.js';
import { InvalidConfig } from '../errors.js';
import { HashAlg } from '../tpm/alg.js';

export const ERR_POLICY_INVALID = 'ERR_POLICY_INVALID';
/** Largest policy file accepted. */
export const MAX_POLICY_FILE_BYTES = 1 << 20;
/** Longest kernel command-line pattern accepted. */
export const MAX_PATTERN_LENGTH = 4096;
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

function invalid(path: readonly PropertyKey[], what: string): InvalidConfig {
  const at = path.length > 0 ? path.map(String).join('.') : '(top level)';
  return new InvalidConfig(ERR_POLICY_INVALID, `policy file: ${at}: ${what}`, { fields: { path: at } });
}

/** Parses and validates a policy file (YAML, of which JSON is a subset). Throws InvalidConfig naming the key. */
export function parsePolicyFile(text: string): MeasuredBootPolicy[] {
  if (text.length > MAX_POLICY_FILE_BYTES) throw invalid([], `larger than ${MAX_POLICY_FILE_BYTES} bytes`);
  let document: unknown;
  try {
    document = parseYaml(text, { uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    throw new InvalidConfig(ERR_POLICY_INVALID, `policy file: not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`, {
      cause: err,
    });
  }
  const parsed = policyFileSchema.safeParse(document);
  if (!parsed.success) {
    // An unknown key explains a missing one (`policy:` for `policies:`), so it is reported first.
    const issue = parsed.error.issues.find((i) => i.code === 'unrecognized_keys') ?? parsed.error.issues[0]!;
    if (issue.code === 'unrecognized_keys') {
      const key = issue.keys[0]!;
      const known = issue.path.length === 0 ? Object.keys(policyFileSchema.shape) : Object.keys(policySchema.shape);
      const near = nearestKey(key, known);
      throw invalid([...issue.path, key], `unknown key "${key}"${near ? ` (did you mean "${near}"?)` : ''}`);
    }
    throw invalid(issue.path, issue.message.replace(/^Invalid input: /, ''));
  }

  const names = new Set<string>();
  return parsed.data.policies.map((raw, i) => {
    if (names.has(raw.name)) throw invalid(['policies', i, 'name'], `duplicate policy name "${raw.name}"`);
    names.add(raw.name);
    return toPolicy(raw, ['policies', i]);
  });
}

type RawPolicy = z.infer<typeof policySchema>;

function toPolicy(raw: RawPolicy, at: (string | number)[]): MeasuredBootPolicy {
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
