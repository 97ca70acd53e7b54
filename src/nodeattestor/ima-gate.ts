/**
 * Node-level IMA runtime integrity for the tpm server attestor. The agent sends the IMA measurement list
 * (`ima_log_path`); the server verifies it against PCR 10 in the same quote (the list may run past the quote: only
 * the quoted prefix counts), checks the verified entries against the node's Keylime-compatible runtime policy, and
 * emits selectors. A violation refuses the node (PERMISSION_DENIED) naming the entry, path, digest and rule.
 *
 * Selectors (values under the plugin's `tpm` type, so entries use `tpm:ima:…`):
 *  - `ima:entries:<n>`: n measurement-list entries verified against the quoted PCR 10;
 *  - `ima:policy:<name>`: every verified entry is allowed by the runtime policy `<name>`.
 *
 * @module
 */
import { z } from 'zod';
import { AttestationRefused, InvalidConfig } from '../errors.js';
import { evaluateRuntimePolicy, parseRuntimePolicy, publicKeyFromPem, runtimePolicyViolation, type RuntimePolicy } from '../policy/runtime-policy.js';
import { IMA_PCR, ImaKeyring, parseImaLog, verifyImaAgainstPcr, type ImaBankValues, type ImaHashName } from '../tpm/ima/index.js';
import type { PcrSelection } from '../tpm/pcrs.js';
import type { QuotedPcrs } from '../tpm/quote.js';

/** Server configuration keys for IMA (merged into the tpm server schema). */
export const imaConfigShape = {
  /** Keylime runtime policy JSON (plain, or DSSE-signed when ima_policy_verification_key_path is set). */
  ima_policy_path: z.string().min(1).optional(),
  /** Name used in the `ima:policy:<name>` selector. */
  ima_policy_name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).default('runtime'),
  /** Expected sha256 of the policy file. */
  ima_policy_sha256: z.string().regex(/^[0-9a-fA-F]{64}$/).optional(),
  /** PEM public key the DSSE envelope must verify with. */
  ima_policy_verification_key_path: z.string().min(1).optional(),
  /** PEM public keys or X.509 certificates IMA file signatures (ima-sig) are checked against. */
  ima_signing_key_paths: z.array(z.string().min(1)).max(64).optional(),
} as const;

export interface ImaConfig {
  readonly ima_policy_path?: string | undefined;
  readonly ima_policy_name: string;
  readonly ima_policy_sha256?: string | undefined;
  readonly ima_policy_verification_key_path?: string | undefined;
  readonly ima_signing_key_paths?: readonly string[] | undefined;
}

export interface ImaGate {
  readonly policy: RuntimePolicy | undefined;
  readonly keyring: ImaKeyring | undefined;
  /** Quoted banks PCR 10 is verified in. */
  readonly banks: readonly ImaHashName[];
}

/** Loads the policy and keys; undefined when PCR 10 is not quoted and no policy is set (IMA is then ignored). */
export async function loadImaGate(config: ImaConfig, selection: PcrSelection, readFile: (p: string) => Promise<Uint8Array>): Promise<ImaGate | undefined> {
  const banks = selection.banks.filter((b) => b.indices.includes(IMA_PCR)).map((b) => b.hash.name as ImaHashName);
  if (!config.ima_policy_path) {
    if (config.ima_signing_key_paths || config.ima_policy_verification_key_path) {
      throw new InvalidConfig('ERR_CONFIG_INVALID', 'tpm server: IMA keys are set but ima_policy_path is not');
    }
    return banks.length ? { policy: undefined, keyring: undefined, banks } : undefined;
  }
  if (banks.length === 0) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: ima_policy_path needs PCR ${IMA_PCR} in pcr_selection (e.g. "sha256:0,1,2,3,4,5,6,7,8,9,10")`);
  }
  const read = async (path: string, key: string): Promise<Uint8Array> => {
    try {
      return await readFile(path);
    } catch (err) {
      throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "${key}": cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const verificationKeys = config.ima_policy_verification_key_path
    ? [publicKeyFromPem(await read(config.ima_policy_verification_key_path, 'ima_policy_verification_key_path'), 'ima_policy_verification_key_path')]
    : undefined;
  const policy = parseRuntimePolicy(await read(config.ima_policy_path, 'ima_policy_path'), {
    name: config.ima_policy_name,
    ...(config.ima_policy_sha256 ? { sha256: config.ima_policy_sha256 } : {}),
    ...(verificationKeys ? { verificationKeys } : {}),
  });
  let keyring: ImaKeyring | undefined;
  if (config.ima_signing_key_paths) {
    keyring = new ImaKeyring();
    for (const path of config.ima_signing_key_paths) {
      if (!keyring.addEncoded(await read(path, 'ima_signing_key_paths'), path)) {
        throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "ima_signing_key_paths": ${path} is not a public key or certificate`);
      }
    }
  }
  return { policy, keyring, banks };
}

/** Verifies the node's IMA log and returns its selectors; throws AttestationRefused naming what failed. */
export function checkNodeIma(gate: ImaGate, imaLog: Uint8Array | undefined, quoted: QuotedPcrs, node: string): string[] {
  if (!imaLog) {
    if (!gate.policy) return [];
    throw new AttestationRefused('ERR_IMA_LOG_MISSING', `node ${node}: no IMA log was sent and runtime policy "${gate.policy.name}" is set`, {
      fields: { rule: 'ima_policy_path' },
    });
  }
  const pcr10: ImaBankValues = new Map(gate.banks.map((b) => [b, quoted.get(b, IMA_PCR)!] as const).filter(([, v]) => v !== undefined));
  const log = parseImaLog(imaLog);
  let verified;
  try {
    ({ verified } = verifyImaAgainstPcr(log.entries, pcr10));
  } catch (err) {
    if (err instanceof AttestationRefused) {
      throw new AttestationRefused(err.code, `node ${node}: ${err.message}`, { fields: err.fields, cause: err });
    }
    throw err;
  }
  const selectors = [`ima:entries:${verified.length}`];
  if (gate.policy) {
    const verdict = evaluateRuntimePolicy(verified, { policy: gate.policy, ...(gate.keyring ? { keyring: gate.keyring } : {}), maxViolations: 1 });
    const [first] = verdict.violations;
    if (first) {
      const err = runtimePolicyViolation(gate.policy.name, first);
      throw new AttestationRefused(err.code, `node ${node}: ${err.message}`, { fields: err.fields });
    }
    selectors.push(`ima:policy:${gate.policy.name}`);
  }
  return selectors;
}
