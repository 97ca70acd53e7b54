/**
 * @module workload/ima-log
 *
 * The node's IMA measurement list as the workload attestor trusts it: only the prefix that replays to the local
 * TPM's PCR 10 (read through tpm2-tools), kept in memory and extended incrementally. Each refresh reads PCR 10
 * first, then only the bytes after the verified prefix, and verifies only the new entries from the cached PCR value
 * (the list may run past PCR 10 while the kernel appends: those entries wait for the next refresh). The cached
 * entries are what the TPM vouched for; the file's earlier bytes are never read again, so rewriting them changes
 * nothing. Entries are indexed by path (standard kernels) and by container (ima-cgpath / ima-dep-cgn cgroups,
 * parsed by the same cgroup locator the attestor uses). Bounded by MAX_IMA_LOG_BYTES and MAX_IMA_ENTRIES.
 */
import { timingSafeEqual } from 'node:crypto';
import { open } from 'node:fs/promises';
import { AttestationRefused, MalformedInput } from '../errors.js';
import {
  IMA_HASH_SIZES,
  MAX_IMA_ENTRIES,
  MAX_IMA_LOG_BYTES,
  parseImaLog,
  verifyImaAgainstPcr,
  type ImaEntry,
  type ImaHashName,
} from '../tpm/ima/index.js';
import { parseCgroupPath } from './cgroup.js';

export const ERR_IMA_LOG_UNVERIFIED = 'ERR_WORKLOAD_IMA_LOG_UNVERIFIED';

/** An entry made by a process in a container, as its cgroup path or name says. */
export interface ContainerEntry {
  readonly entry: ImaEntry;
  /** Only `ima-cgpath` paths carry the pod UID. */
  readonly podUid?: string;
}

export interface VerifiedImaLog {
  readonly count: number;
  /** True once any verified entry uses ima-cgpath or ima-dep-cgn (a container-aware kernel). */
  readonly containerTemplates: boolean;
  byPath(path: string): readonly ImaEntry[];
  byContainer(containerId: string): readonly ContainerEntry[];
  /** Container-template entries whose cgroup named no container or an ambiguous one (attributed to nobody). */
  readonly unattributed: number;
}

export interface ImaLogVerifierOptions {
  readonly logPath: string;
  readonly bank: ImaHashName;
  /** PCR 10 in `bank`, read from the TPM. */
  readonly readPcr10: () => Promise<Uint8Array>;
  readonly maxEntries?: number;
}

/** The bank of a binary list's template hashes: `binary_runtime_measurements_<alg>`, else SHA-1. */
function templateHashAlgOf(path: string): ImaHashName | undefined {
  const m = /_(sha1|sha256|sha384|sha512|sm3_256)$/.exec(path);
  return m ? (m[1] as ImaHashName) : undefined;
}

async function readFrom(path: string, offset: number, max: number): Promise<Uint8Array> {
  const handle = await open(path, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      // securityfs lists report size 0: read until EOF, bounded.
      const buf = Buffer.allocUnsafe(1 << 20);
      const { bytesRead } = await handle.read(buf, 0, buf.length, offset + total);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > max) {
        throw new MalformedInput(ERR_IMA_LOG_UNVERIFIED, `IMA log ${path}: longer than ${MAX_IMA_LOG_BYTES} bytes`, { fields: { rule: 'ima-log-size' } });
      }
      chunks.push(buf.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks);
  } finally {
    await handle.close();
  }
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && timingSafeEqual(a, b);

export class ImaLogVerifier {
  readonly #opts: ImaLogVerifierOptions;
  readonly #maxEntries: number;
  readonly #byPath = new Map<string, ImaEntry[]>();
  readonly #byContainer = new Map<string, ContainerEntry[]>();
  #count = 0;
  #unattributed = 0;
  #containerTemplates = false;
  /** Bytes of the list covered by verified entries: the next read starts here. */
  #consumed = 0;
  #pcr: Uint8Array;
  #inflight: Promise<VerifiedImaLog> | undefined;

  constructor(opts: ImaLogVerifierOptions) {
    this.#opts = opts;
    this.#maxEntries = Math.min(opts.maxEntries ?? MAX_IMA_ENTRIES, MAX_IMA_ENTRIES);
    this.#pcr = new Uint8Array(IMA_HASH_SIZES[opts.bank]);
  }

  /** Entries verified so far and the list offset they end at (for logs and tests). */
  get state(): { entries: number; offset: number } {
    return { entries: this.#count, offset: this.#consumed };
  }

  /** Brings the verified prefix up to the current PCR 10; concurrent callers share one refresh. */
  refresh(): Promise<VerifiedImaLog> {
    this.#inflight ??= this.#refresh().finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  #snapshot(): VerifiedImaLog {
    const byPath = this.#byPath;
    const byContainer = this.#byContainer;
    return {
      count: this.#count,
      containerTemplates: this.#containerTemplates,
      unattributed: this.#unattributed,
      byPath: (p) => byPath.get(p) ?? [],
      byContainer: (id) => byContainer.get(id) ?? [],
    };
  }

  async #refresh(): Promise<VerifiedImaLog> {
    const { bank, logPath } = this.#opts;
    // PCR first, then the list: entries appended in between only make the list longer than PCR 10.
    const pcr = await this.#opts.readPcr10();
    if (pcr.length !== IMA_HASH_SIZES[bank]) {
      throw new AttestationRefused(ERR_IMA_LOG_UNVERIFIED, `PCR 10 ${bank} read from the TPM has ${pcr.length} bytes, expected ${IMA_HASH_SIZES[bank]}`);
    }
    if (equal(pcr, this.#pcr)) return this.#snapshot();
    const tail = await readFrom(logPath, this.#consumed, MAX_IMA_LOG_BYTES - this.#consumed);
    const alg = templateHashAlgOf(logPath);
    const log = parseImaLog(tail, { ...(alg ? { templateHashAlg: alg } : {}), maxEntries: this.#maxEntries - this.#count + 1 });
    if (this.#count + log.entries.length > this.#maxEntries) {
      throw new AttestationRefused(ERR_IMA_LOG_UNVERIFIED, `IMA log ${logPath}: more than ${this.#maxEntries} entries`, { fields: { rule: 'ima-log-entries' } });
    }
    let verified: readonly ImaEntry[];
    try {
      ({ verified } = verifyImaAgainstPcr(log.entries, new Map([[bank, pcr]]), { initial: new Map([[bank, this.#pcr]]) }));
    } catch (err) {
      const what = (err as Error).message;
      throw new AttestationRefused(ERR_IMA_LOG_UNVERIFIED, `IMA log ${logPath} after entry ${this.#count} (offset ${this.#consumed}): ${what}`, {
        fields: { rule: 'ima-pcr10', entries: this.#count, offset: this.#consumed },
        cause: err,
      });
    }
    const base = this.#count;
    for (const e of verified) this.#add({ ...e, index: base + e.index, offset: this.#consumed + e.offset });
    this.#consumed += verified.length === log.entries.length ? log.consumed : log.entries[verified.length]!.offset;
    this.#pcr = pcr;
    return this.#snapshot();
  }

  #add(e: ImaEntry): void {
    this.#count++;
    const list = this.#byPath.get(e.path);
    if (list) list.push(e);
    else this.#byPath.set(e.path, [e]);
    if (e.template !== 'ima-cgpath' && e.template !== 'ima-dep-cgn') return;
    this.#containerTemplates = true;
    let match;
    try {
      // ima-cgpath logs the full cgroup path; ima-dep-cgn only the cgroup's name (the last path segment).
      match = parseCgroupPath(e.template === 'ima-cgpath' ? (e.cgroup ?? '') : `/${e.cgroup ?? ''}`);
    } catch {
      match = undefined; // an ambiguous (nested) path attributes the entry to nobody
    }
    if (!match) {
      // Host processes (cgroup "/", system.slice, …) belong to no container; a kubepods path that names none is odd.
      if ((e.cgroup ?? '').includes('kubepods')) this.#unattributed++;
      return;
    }
    const key = match.containerId.toString();
    const item: ContainerEntry = { entry: e, ...(match.podUid ? { podUid: match.podUid.toString() } : {}) };
    const entries = this.#byContainer.get(key);
    if (entries) entries.push(item);
    else this.#byContainer.set(key, [item]);
  }
}
