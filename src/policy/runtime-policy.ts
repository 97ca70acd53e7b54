/**
 * Keylime-compatible IMA runtime policies (Keylime 7.x `keylime-policy create runtime` JSON) and their verdicts.
 * Pure: bytes in, policy out; entries in, violations out.
 *
 * Policy shape (docs/ima.md):
 * ```json
 * { "meta": {"version": 1, "generator": ...}, "release": 0,
 *   "digests": {"/usr/bin/bash": ["<hex>", "sha256:<hex>"]},   // allowed file digests per path
 *   "excludes": ["^/tmp/.*"],                                  // paths (Python re.match: anchored at the start)
 *   "keyrings": {".ima": ["<hex>"]},                           // allowed ima-buf key digests per keyring
 *   "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
 *   "ima-buf": {"<name>": ["<hex>"]}, "verification-keys": "" }
 * ```
 * or the same JSON as the payload of a DSSE envelope (payloadType application/vnd.keylime+json), accepted only when
 * it verifies with a configured key.
 *
 * Verdicts follow Keylime's (keylime/ima/ima.py): for `ima`/`ima-ng` (and the container templates): excluded, or
 * the digest is listed for the path; for `ima-sig`: a signature that verifies with a configured key wins, else the
 * `ima-ng` rule; for `ima-buf`: a key loaded onto a keyring must be listed under `keyrings` (and then joins the
 * keyring for later signatures), other buffers under `ima-buf`. No policy and no keyring accepts everything; a
 * malformed signature header fails whatever the rules.
 *
 * @module
 */
import { createHash, createPublicKey, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { AttestationRefused, InvalidConfig } from '../errors.js';
import { isImaHashName, type ImaHashName } from '../tpm/ima/hash.js';
import type { ImaEntry } from '../tpm/ima/log.js';
import { ImaKeyring, parseImaSignature, verifyImaSignature } from '../tpm/ima/signature.js';

export const ERR_RUNTIME_POLICY_INVALID = 'ERR_RUNTIME_POLICY_INVALID';
export const ERR_RUNTIME_POLICY_VIOLATION = 'ERR_IMA_RUNTIME_POLICY_VIOLATION';

/** Bounds: Keylime users report 20 MiB allowlists, so allow 64 MiB and a million paths. */
export const MAX_RUNTIME_POLICY_BYTES = 64 * 1024 * 1024;
export const MAX_POLICY_PATHS = 1_000_000;
export const MAX_DIGESTS_PER_PATH = 64;
export const MAX_EXCLUDES = 1024;
export const MAX_EXCLUDE_LENGTH = 1024;
const MAX_PATH_LENGTH = 8192;
const DSSE_PAYLOAD_TYPE = 'application/vnd.keylime+json';
const TOP_LEVEL_KEYS = new Set(['meta', 'release', 'digests', 'excludes', 'keyrings', 'ima', 'ima-buf', 'verification-keys']);

/** Keylime's meta.generator values (RUNTIME_POLICY_GENERATOR). */
export const RUNTIME_POLICY_GENERATORS: Readonly<Record<number, string>> = Object.freeze({
  0: 'Unknown',
  1: 'EmptyAllowList',
  2: 'CompatibleAllowList',
  3: 'LegacyAllowList',
});

export interface RuntimePolicy {
  readonly name: string;
  readonly meta: Readonly<Record<string, unknown>>;
  /** meta.generator as "Name (n)", e.g. "CompatibleAllowList (2)"; undefined when absent. */
  readonly generator: string | undefined;
  /** path → allowed digests, each "hex" (any algorithm) or "alg:hex". */
  readonly digests: ReadonlyMap<string, ReadonlySet<string>>;
  readonly excludes: readonly string[];
  /** One regex for all excludes, anchored at the start (Python re.match), or undefined when there are none. */
  readonly exclude: RegExp | undefined;
  readonly keyrings: ReadonlyMap<string, ReadonlySet<string>>;
  readonly imaBuf: ReadonlyMap<string, ReadonlySet<string>>;
  readonly ignoredKeyrings: readonly string[];
  readonly logHashAlg: ImaHashName;
  /** sha256 of the policy JSON as read (the payload, for a DSSE envelope). */
  readonly sha256: string;
  /** True when it came in a DSSE envelope that verified. */
  readonly signed: boolean;
}

export interface RuntimePolicyReadOptions {
  readonly name?: string;
  /** Expected sha256 (hex) of the file: refused when it differs ("Checksum of runtime policy does not match"). */
  readonly sha256?: string;
  /** DSSE verification keys: when given, only a signed policy that verifies with one of them is accepted. */
  readonly verificationKeys?: readonly KeyObject[];
}

function invalid(name: string, what: string): never {
  throw new InvalidConfig(ERR_RUNTIME_POLICY_INVALID, `runtime policy "${name}": ${what}`, { fields: { policy: name } });
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function digestMap(value: unknown, name: string, field: string): Map<string, Set<string>> {
  if (value === undefined) return new Map();
  if (!isObject(value)) invalid(name, `${field} must be an object {path: [digests]}`);
  const entries = Object.entries(value);
  if (entries.length > MAX_POLICY_PATHS) invalid(name, `${field} has ${entries.length} paths, more than ${MAX_POLICY_PATHS}`);
  const out = new Map<string, Set<string>>();
  for (const [path, list] of entries) {
    if (path.length > MAX_PATH_LENGTH) invalid(name, `${field}: a path is longer than ${MAX_PATH_LENGTH}`);
    if (!Array.isArray(list) || list.length > MAX_DIGESTS_PER_PATH) invalid(name, `${field}["${path.slice(0, 200)}"] must be a list of at most ${MAX_DIGESTS_PER_PATH} digests`);
    const set = new Set<string>();
    for (const d of list) {
      if (typeof d !== 'string' || !/^(?:[a-z0-9_]{2,16}:)?(?:[0-9a-fA-F]{2}){16,64}$/.test(d)) invalid(name, `${field}["${path.slice(0, 200)}"]: "${String(d).slice(0, 80)}" is not a hex digest`);
      set.add(d.toLowerCase());
    }
    out.set(path, set);
  }
  return out;
}

function compileExcludes(excludes: readonly string[], name: string): RegExp | undefined {
  if (excludes.length === 0) return undefined;
  try {
    // Keylime joins them as "(a)|(b)" and uses re.match, which anchors at the start only.
    return new RegExp(`^(?:${excludes.map((e) => `(?:${e})`).join('|')})`);
  } catch (err) {
    return invalid(name, `excludes: not a valid regular expression (${(err as Error).message.slice(0, 200)})`);
  }
}

function readDsse(envelope: Record<string, unknown>, keys: readonly KeyObject[] | undefined, name: string): Uint8Array {
  if (!keys || keys.length === 0) invalid(name, 'is a DSSE envelope but no verification key is configured');
  if (envelope.payloadType !== DSSE_PAYLOAD_TYPE) invalid(name, `DSSE payloadType must be ${DSSE_PAYLOAD_TYPE}`);
  if (typeof envelope.payload !== 'string' || !Array.isArray(envelope.signatures) || envelope.signatures.length === 0 || envelope.signatures.length > 16) {
    invalid(name, 'DSSE envelope needs a payload and 1..16 signatures');
  }
  const payload = Buffer.from(envelope.payload, 'base64');
  const type = Buffer.from(DSSE_PAYLOAD_TYPE);
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload]);
  for (const s of envelope.signatures as unknown[]) {
    if (!isObject(s) || typeof s.sig !== 'string') continue;
    const sig = Buffer.from(s.sig, 'base64');
    for (const key of keys) {
      const alg = key.asymmetricKeyType === 'ed25519' ? null : 'sha256';
      try {
        if (verify(alg, pae, key, sig)) return payload;
      } catch {
        // wrong key type for this signature: try the next key
      }
    }
  }
  return invalid(name, 'DSSE signature does not verify with any configured key');
}

/** Parses a runtime policy (plain JSON or DSSE envelope). Throws InvalidConfig naming what is wrong. */
export function parseRuntimePolicy(bytes: Uint8Array, options: RuntimePolicyReadOptions = {}): RuntimePolicy {
  const name = options.name ?? 'runtime-policy';
  if (bytes.length > MAX_RUNTIME_POLICY_BYTES) invalid(name, `${bytes.length} bytes exceeds ${MAX_RUNTIME_POLICY_BYTES}`);
  if (options.sha256 !== undefined) {
    const actual = createHash('sha256').update(bytes).digest();
    const expected = Buffer.from(options.sha256, 'hex');
    if (expected.length !== 32 || !timingSafeEqual(actual, expected)) invalid(name, 'Checksum of runtime policy does not match');
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    invalid(name, `is not JSON (${(err as Error).message.slice(0, 200)})`);
  }
  if (!isObject(json)) invalid(name, 'must be a JSON object');
  let signed = false;
  let payloadBytes = bytes;
  if ('payload' in json && 'signatures' in json) {
    payloadBytes = readDsse(json, options.verificationKeys, name);
    signed = true;
    try {
      json = JSON.parse(Buffer.from(payloadBytes).toString('utf8'));
    } catch {
      invalid(name, 'DSSE payload is not JSON');
    }
    if (!isObject(json)) invalid(name, 'DSSE payload must be a JSON object');
  } else if (options.verificationKeys && options.verificationKeys.length > 0) {
    invalid(name, 'is not signed, and a verification key is configured');
  }
  const policy = json as Record<string, unknown>;
  for (const key of Object.keys(policy)) if (!TOP_LEVEL_KEYS.has(key)) invalid(name, `unknown key "${key.slice(0, 64)}"`);
  const meta = policy.meta === undefined ? {} : isObject(policy.meta) ? policy.meta : invalid(name, 'meta must be an object');
  if (meta.version !== undefined && meta.version !== 1) invalid(name, `meta.version ${String(meta.version)} is not supported (1)`);
  const excludes = policy.excludes ?? [];
  if (!Array.isArray(excludes) || excludes.length > MAX_EXCLUDES || !excludes.every((e) => typeof e === 'string' && e.length <= MAX_EXCLUDE_LENGTH)) {
    invalid(name, `excludes must be at most ${MAX_EXCLUDES} strings of at most ${MAX_EXCLUDE_LENGTH} characters`);
  }
  const ima = policy.ima === undefined ? {} : isObject(policy.ima) ? policy.ima : invalid(name, 'ima must be an object');
  const ignored = ima.ignored_keyrings ?? [];
  if (!Array.isArray(ignored) || ignored.length > 256 || !ignored.every((k) => typeof k === 'string')) invalid(name, 'ima.ignored_keyrings must be a list of keyring names');
  const logHashAlg = ima.log_hash_alg ?? 'sha1';
  if (typeof logHashAlg !== 'string' || !isImaHashName(logHashAlg)) invalid(name, `ima.log_hash_alg "${String(logHashAlg).slice(0, 32)}" is not supported`);
  if (ima.dm_policy !== undefined && ima.dm_policy !== null) invalid(name, 'ima.dm_policy (device-mapper rules) is not supported');
  return {
    name,
    meta,
    generator: typeof meta.generator === 'number' ? `${RUNTIME_POLICY_GENERATORS[meta.generator] ?? 'Unknown'} (${meta.generator})` : undefined,
    digests: digestMap(policy.digests, name, 'digests'),
    excludes: excludes as string[],
    exclude: compileExcludes(excludes as string[], name),
    keyrings: digestMap(policy.keyrings, name, 'keyrings'),
    imaBuf: digestMap(policy['ima-buf'], name, 'ima-buf'),
    ignoredKeyrings: ignored as string[],
    logHashAlg,
    sha256: createHash('sha256').update(payloadBytes).digest('hex'),
    signed,
  };
}

/** Loads PEM public keys (DSSE verification keys or IMA signing keys). */
export function publicKeyFromPem(pem: string | Uint8Array, what: string): KeyObject {
  try {
    return createPublicKey(typeof pem === 'string' ? pem : Buffer.from(pem));
  } catch (err) {
    throw new InvalidConfig(ERR_RUNTIME_POLICY_INVALID, `${what}: not a public key (${(err as Error).message.slice(0, 120)})`);
  }
}

export type RuntimeRule = 'not-in-policy' | 'digest-not-allowed' | 'invalid-signature' | 'malformed-signature' | 'keyring-not-allowed' | 'ima-buf-not-allowed';

export interface RuntimeViolation {
  readonly entry: number;
  readonly path: string;
  /** "alg:hex" as logged. */
  readonly digest: string;
  readonly rule: RuntimeRule;
  readonly message: string;
}

export interface RuntimeVerdict {
  readonly violations: readonly RuntimeViolation[];
  /** Entries evaluated. */
  readonly checked: number;
  /** Keys learnt from ima-buf keyring entries (key ids, hex). */
  readonly keysAdded: readonly string[];
}

export interface RuntimeEvaluation {
  /** No policy: only signatures (when a keyring is given) are checked. */
  readonly policy?: RuntimePolicy;
  /** IMA signing keys; undefined = no keyring (Keylime's "no keyring": signatures are not required). */
  readonly keyring?: ImaKeyring;
  /** Stop after this many violations (default 100). */
  readonly maxViolations?: number;
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

function listed(set: ReadonlySet<string> | undefined, alg: ImaHashName, digestHex: string): boolean {
  return set !== undefined && (set.has(digestHex) || set.has(`${alg}:${digestHex}`));
}

/** Evaluates entries (in log order: keyring entries add keys for later signatures). */
export function evaluateRuntimePolicy(entries: readonly ImaEntry[], evaluation: RuntimeEvaluation): RuntimeVerdict {
  const { policy } = evaluation;
  const keyring = evaluation.keyring?.clone();
  const max = evaluation.maxViolations ?? 100;
  const violations: RuntimeViolation[] = [];
  const keysAdded: string[] = [];
  let checked = 0;
  for (const e of entries) {
    if (violations.length >= max) break;
    checked++;
    const digestHex = hex(e.digest);
    const observed = `${e.digestAlg}:${digestHex}`;
    const violate = (rule: RuntimeRule, message: string): void => {
      violations.push({ entry: e.index, path: e.path, digest: observed, rule, message: `IMA entry ${e.index} "${e.path.slice(0, 256)}" (${observed}): ${message}` });
    };
    const excluded = (): boolean => policy?.exclude !== undefined && policy.exclude.test(e.path);
    const ngRule = (map: ReadonlyMap<string, ReadonlySet<string>> | undefined, mapName: string): void => {
      if (policy === undefined || map === undefined || excluded()) return;
      const allowed = map.get(e.path);
      if (allowed === undefined) violate(mapName === 'digests' ? 'not-in-policy' : mapName === 'keyrings' ? 'keyring-not-allowed' : 'ima-buf-not-allowed', `not in the runtime policy's ${mapName}`);
      else if (!listed(allowed, e.digestAlg, digestHex)) violate(mapName === 'digests' ? 'digest-not-allowed' : mapName === 'keyrings' ? 'keyring-not-allowed' : 'ima-buf-not-allowed', `digest not in the runtime policy's ${mapName} for this path`);
    };
    if (e.template === 'ima-sig' && e.signature !== undefined && e.signature.length > 0) {
      const header = parseImaSignature(e.signature);
      if (typeof header === 'string') {
        violate('malformed-signature', `signature ${header}`);
        continue;
      }
      if (keyring !== undefined) {
        if (excluded()) continue;
        if (verifyImaSignature(e.signature, e.digest, e.digestAlg, keyring).ok) continue;
      }
      if (policy !== undefined) ngRule(policy.digests, 'digests');
      else if (keyring !== undefined) violate('invalid-signature', 'signature could not be validated and there is no runtime policy');
      continue;
    }
    if (e.template === 'ima-sig' && policy === undefined && keyring !== undefined) {
      // Unsigned file, no policy, a keyring: nothing allows it.
      violate('invalid-signature', 'file has no signature and there is no runtime policy');
      continue;
    }
    if (e.template === 'ima-buf') {
      const key = e.buffer === undefined ? undefined : new ImaKeyring().addEncoded(e.buffer, `ima-buf ${e.path}`);
      if (key !== undefined) {
        const ignored = policy?.ignoredKeyrings ?? [];
        if (ignored.includes('*') || ignored.includes(e.path)) continue;
        const before = violations.length;
        ngRule(policy?.keyrings, 'keyrings');
        if (violations.length === before && keyring !== undefined) {
          keyring.add(key.key, key.source, key.keyId);
          keysAdded.push(key.keyId.toString(16).padStart(8, '0'));
        }
        continue;
      }
      ngRule(policy?.imaBuf, 'ima-buf');
      continue;
    }
    ngRule(policy?.digests, 'digests');
  }
  return { violations, checked, keysAdded };
}

/** The error a node or workload check raises for the first violation. */
export function runtimePolicyViolation(policyName: string, v: RuntimeViolation): AttestationRefused {
  return new AttestationRefused(ERR_RUNTIME_POLICY_VIOLATION, `runtime policy "${policyName}": ${v.message} [rule ${v.rule}]`, {
    fields: { policy: policyName, entry: v.entry, path: v.path.slice(0, 256), digest: v.digest, rule: v.rule },
  });
}

/** The file-digest algorithm a log uses (Keylime's detection for `create runtime`): the one its entries share. */
export function detectFileDigestAlg(entries: readonly ImaEntry[]): ImaHashName | undefined {
  const algs = new Set(entries.filter((e) => e.path !== 'boot_aggregate' || !e.digest.every((b) => b === 0)).map((e) => e.digestAlg));
  const [only] = algs;
  return algs.size === 1 ? only : undefined;
}

