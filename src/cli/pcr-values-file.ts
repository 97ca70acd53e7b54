/**
 * PCR values given to `eventlog inspect --pcrs FILE`, in either of two text forms (documented in docs/cli.md):
 * - the YAML that `tpm2_pcrread` prints (`sha256:` then `  0 : 0x…` lines), so an operator can pipe a node's
 *   `tpm2_pcrread sha256:0,1,2,3,4,5,6,7` into a file;
 * - JSON `{ "<bank>": { "<index>": "<hex>" } }`, the shape of the `pcrs` object that `eventlog inspect --json` and
 *   policy files use.
 * Values are claims, whatever the file says: nothing here is a quote. Pure: bytes in, values out, typed errors.
 *
 * @module
 */
import { parse as parseYaml } from 'yaml';
import { MalformedInput } from '../errors.js';
import { HashAlg } from '../tpm/alg.js';
import type { PcrBankValues } from '../tpm/replay.js';

export const ERR_CLI_PCRS_FILE = 'ERR_CLI_PCRS_FILE';
/** Largest PCR file accepted: 4 banks × 24 PCRs of SHA-512 in YAML is under 16 KiB. */
export const MAX_PCRS_FILE_BYTES = 64 * 1024;

function invalid(path: string, what: string): MalformedInput {
  return new MalformedInput(ERR_CLI_PCRS_FILE, `${path}: ${what} (give tpm2_pcrread output or JSON {"sha256": {"0": "<hex>"}})`, {
    fields: { path },
  });
}

/** Reads a tpm2_pcrread YAML or JSON PCR file. Every bank must be one we hash, every index 0..23, every value full size. */
export function parsePcrValuesFile(bytes: Uint8Array, path: string): PcrBankValues {
  if (bytes.length > MAX_PCRS_FILE_BYTES) throw invalid(path, `${bytes.length} bytes, more than ${MAX_PCRS_FILE_BYTES}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw invalid(path, 'not UTF-8 text');
  }
  let doc: unknown;
  try {
    // failsafe: every scalar stays a string, so `0x…` values are not read as (imprecise) numbers. JSON is YAML.
    doc = parseYaml(text, { schema: 'failsafe', maxAliasCount: 0, uniqueKeys: true });
  } catch (err) {
    throw invalid(path, `does not parse: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw invalid(path, 'expected a map of banks');
  const out = new Map<string, Map<number, Uint8Array>>();
  for (const [bankName, indices] of Object.entries(doc as Record<string, unknown>)) {
    const alg = HashAlg.ALL.find((a) => a.name === bankName.toLowerCase());
    if (!alg) throw invalid(path, `unknown PCR bank "${bankName.slice(0, 32)}"`);
    if (out.has(alg.name)) throw invalid(path, `bank ${alg.name} appears twice`);
    if (indices === null || typeof indices !== 'object' || Array.isArray(indices)) throw invalid(path, `bank ${alg.name}: expected a map of PCR index to value`);
    const values = new Map<number, Uint8Array>();
    for (const [indexText, value] of Object.entries(indices as Record<string, unknown>)) {
      if (!/^(0|[1-9][0-9]?)$/.test(indexText.trim()) || Number(indexText) > 23) throw invalid(path, `${alg.name}: "${indexText.slice(0, 8)}" is not a PCR index 0..23`);
      const index = Number(indexText);
      if (values.has(index)) throw invalid(path, `${alg.name}:${index} appears twice`);
      const hex = typeof value === 'string' ? value.trim().replace(/^0x/i, '') : '';
      if (!new RegExp(`^[0-9a-fA-F]{${alg.size * 2}}$`).test(hex)) throw invalid(path, `${alg.name}:${index} is not ${alg.size} bytes of hex`);
      values.set(index, Uint8Array.from(Buffer.from(hex, 'hex')));
    }
    if (values.size > 0) out.set(alg.name, values);
  }
  if (out.size === 0) throw invalid(path, 'holds no PCR value');
  return out;
}
