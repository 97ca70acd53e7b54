/**
 * Per-node IMA state for incremental re-attestation: how many entries of a node's measurement list the server has
 * verified (and found allowed), PCR 10 per bank after them, the TPM boot identity of the quote that covered them
 * (TPMS_CLOCK_INFO resetCount/restartCount), and the digest of the policy and keys the verdicts came from.
 *
 * The state only ever lets the server skip work; it never admits anything by itself: an increment must still replay
 * from the stored PCR 10 to the value in a fresh quote. It is still security state (a forged "verified up to entry N"
 * would skip the policy check of entries 0..N-1), so:
 *  - memory holds at most `maxNodes` nodes, least recently attested evicted first (with its file);
 *  - with a directory, each node's state is one file, written atomically (temp file 0600, fsync, rename), at most
 *    MAX_STATE_FILE_BYTES, and authenticated with HMAC-SHA256 under a key kept in the same directory (0600). A file
 *    that is too large, does not parse, names another node or fails its MAC is ignored: that node sends its whole
 *    list at its next attestation. (The MAC catches corruption and edits by anyone who cannot read the key; the
 *    directory must be as private as the datastore, since whoever reads the key can forge state.)
 *
 * @module
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../plugin/types.js';
import { IMA_HASH_SIZES, type ImaHashName } from '../tpm/ima/hash.js';
import { MAX_IMA_ENTRIES } from '../tpm/ima/log.js';

export const MAX_STATE_FILE_BYTES = 128 * 1024;
/** Keys learnt from ima-buf keyring entries that a node's state carries (beyond them the node is verified in full). */
export const MAX_LEARNT_KEYS = 16;
export const MAX_LEARNT_KEY_BYTES = 4096;
const STATE_VERSION = 1;
const KEY_FILE = 'ima-state.key';
const KEY_BYTES = 32;
const STATE_FILE = /^[0-9a-f]{64}\.json$/;

export interface NodeImaState {
  readonly agentId: string;
  /** Entries verified from the start of the list (the next increment starts here). */
  readonly offset: number;
  /** PCR 10 per bank after those entries. */
  readonly pcr: ReadonlyMap<ImaHashName, Uint8Array>;
  readonly resetCount: number;
  readonly restartCount: number;
  /** sha256 (hex) of the policy and keys the entries were judged by (ImaGate.basis). */
  readonly basis: string;
  /** Encoded keys the verified entries loaded onto the IMA keyring (for later ima-sig signatures). */
  readonly learntKeys: readonly Uint8Array[];
  /** When the whole list was last verified from entry 0, and when the state last advanced. */
  readonly fullVerifiedAt: Date;
  readonly updatedAt: Date;
}

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const fileSchema = z.strictObject({
  v: z.literal(STATE_VERSION),
  agent_id: z.string().min(1).max(2048),
  offset: z.number().int().min(0).max(MAX_IMA_ENTRIES),
  pcr10: z.partialRecord(z.enum(['sha1', 'sha256', 'sha384', 'sha512', 'sm3_256']), z.string().regex(/^(?:[0-9a-f]{2}){20,64}$/)),
  reset_count: z.number().int().min(0).max(0xffffffff),
  restart_count: z.number().int().min(0).max(0xffffffff),
  basis: hex64,
  learnt_keys: z.array(z.string().max(Math.ceil(MAX_LEARNT_KEY_BYTES / 3) * 4 + 4)).max(MAX_LEARNT_KEYS),
  full_verified_at: z.iso.datetime(),
  updated_at: z.iso.datetime(),
  mac: hex64,
});
type StateFile = z.output<typeof fileSchema>;

export interface ImaStateStoreOptions {
  readonly maxNodes: number;
  /** Persist here (created 0700 when missing); memory only when absent. */
  readonly dir?: string | undefined;
  readonly log: Logger;
}

export class ImaStateStore {
  /** Map order is recency: least recently used first. */
  readonly #nodes = new Map<string, NodeImaState>();
  readonly #options: ImaStateStoreOptions;
  #ready: Promise<Buffer | undefined> | undefined;
  /** The MAC key once the directory is usable; undefined: memory only. */
  #key: Buffer | undefined;

  constructor(options: ImaStateStoreOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#nodes.size;
  }

  /** The node's state, or undefined (no state, evicted, or its file was not trustworthy). */
  async get(agentId: string): Promise<NodeImaState | undefined> {
    await this.#open();
    const state = this.#nodes.get(agentId);
    if (state) this.#touch(agentId, state);
    return state;
  }

  async put(state: NodeImaState): Promise<void> {
    const key = await this.#open();
    if (state.learntKeys.length > MAX_LEARNT_KEYS || state.learntKeys.some((k) => k.length > MAX_LEARNT_KEY_BYTES)) {
      // Too much to carry: this node is verified in full every time instead.
      await this.drop(state.agentId, 'its IMA list loads more keyring keys than the state carries');
      return;
    }
    this.#touch(state.agentId, state);
    while (this.#nodes.size > this.#options.maxNodes) {
      const oldest = this.#nodes.keys().next().value as string;
      this.#nodes.delete(oldest);
      this.#options.log.debug('IMA state evicted', { agent_id: oldest, ima_state_max_nodes: this.#options.maxNodes });
      await this.#unlink(oldest);
    }
    if (key && this.#options.dir) await this.#write(this.#options.dir, key, state);
  }

  /** Forgets a node (its next attestation sends the whole list). */
  async drop(agentId: string, reason: string): Promise<void> {
    await this.#open();
    if (this.#nodes.delete(agentId)) this.#options.log.info('IMA state dropped; the next attestation verifies the whole list', { agent_id: agentId, reason });
    await this.#unlink(agentId);
  }

  #touch(agentId: string, state: NodeImaState): void {
    this.#nodes.delete(agentId);
    this.#nodes.set(agentId, state);
  }

  /** Loads the directory once, at first use (Validate never touches it). */
  #open(): Promise<Buffer | undefined> {
    this.#ready ??= this.#options.dir ? this.#load(this.#options.dir) : Promise.resolve(undefined);
    return this.#ready;
  }

  async #load(dir: string): Promise<Buffer | undefined> {
    const log = this.#options.log;
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const key = await loadOrCreateKey(dir, log);
      this.#key = key;
      const loaded: NodeImaState[] = [];
      for (const name of await readdir(dir)) {
        if (!STATE_FILE.test(name)) continue;
        const state = await readStateFile(join(dir, name), name, key).catch((err: Error) => {
          log.warn('IMA state file ignored; that node sends its whole list at its next attestation', { file: name, reason: err.message });
          return undefined;
        });
        if (state) loaded.push(state);
      }
      loaded.sort((a, b) => a.updatedAt.getTime() - b.updatedAt.getTime());
      for (const state of loaded) this.#nodes.set(state.agentId, state);
      while (this.#nodes.size > this.#options.maxNodes) {
        const oldest = this.#nodes.keys().next().value as string;
        this.#nodes.delete(oldest);
        await this.#unlink(oldest);
      }
      log.info('IMA state loaded', { dir, nodes: this.#nodes.size, ima_state_max_nodes: this.#options.maxNodes });
      return key;
    } catch (err) {
      this.#key = undefined;
      // Without a usable directory the state lives in memory only: slower after a restart, never less safe.
      log.error('IMA state directory unusable; keeping IMA state in memory only', { dir, reason: (err as Error).message });
      return undefined;
    }
  }

  async #write(dir: string, key: Buffer, state: NodeImaState): Promise<void> {
    const file = join(dir, fileName(state.agentId));
    const temp = join(dir, `.${fileName(state.agentId)}.${randomBytes(6).toString('hex')}.tmp`);
    const bytes = Buffer.from(JSON.stringify(toFile(state, key)));
    try {
      const handle = await open(temp, 'wx', 0o600);
      try {
        await handle.writeFile(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      this.#options.log.warn('IMA state not persisted (kept in memory)', { agent_id: state.agentId, reason: (err as Error).message });
    }
  }

  async #unlink(agentId: string): Promise<void> {
    const dir = this.#options.dir;
    if (!dir || !this.#key) return;
    await unlink(join(dir, fileName(agentId))).catch(() => undefined);
  }
}

function fileName(agentId: string): string {
  return `${createHash('sha256').update(agentId).digest('hex')}.json`;
}

async function loadOrCreateKey(dir: string, log: Logger): Promise<Buffer> {
  const path = join(dir, KEY_FILE);
  try {
    const key = await readFile(path);
    if (key.length === KEY_BYTES) return key;
    log.warn('IMA state key has the wrong size; replacing it (every node sends its whole list once)', { path });
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const key = randomBytes(KEY_BYTES);
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.writeFile(key);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return key;
}

/** Every field but the MAC, in a fixed order: the bytes the MAC covers. */
function macInput(f: Omit<StateFile, 'mac'>): string {
  const pcr = Object.keys(f.pcr10)
    .sort()
    .map((b) => [b, f.pcr10[b as ImaHashName]]);
  return JSON.stringify([f.v, f.agent_id, f.offset, pcr, f.reset_count, f.restart_count, f.basis, f.learnt_keys, f.full_verified_at, f.updated_at]);
}

const mac = (key: Buffer, f: Omit<StateFile, 'mac'>): string => createHmac('sha256', key).update(macInput(f)).digest('hex');

function toFile(state: NodeImaState, key: Buffer): StateFile {
  const body = {
    v: STATE_VERSION,
    agent_id: state.agentId,
    offset: state.offset,
    pcr10: Object.fromEntries([...state.pcr].map(([b, v]) => [b, Buffer.from(v).toString('hex')])) as Partial<Record<ImaHashName, string>>,
    reset_count: state.resetCount,
    restart_count: state.restartCount,
    basis: state.basis,
    learnt_keys: state.learntKeys.map((k) => Buffer.from(k).toString('base64')),
    full_verified_at: state.fullVerifiedAt.toISOString(),
    updated_at: state.updatedAt.toISOString(),
  } as const;
  return { ...body, mac: mac(key, body) };
}

async function readStateFile(path: string, name: string, key: Buffer): Promise<NodeImaState> {
  const info = await stat(path);
  if (!info.isFile()) throw new Error('not a regular file');
  if (info.size > MAX_STATE_FILE_BYTES) throw new Error(`${info.size} bytes, more than ${MAX_STATE_FILE_BYTES}`);
  const bytes = await readFile(path);
  if (bytes.length > MAX_STATE_FILE_BYTES) throw new Error(`more than ${MAX_STATE_FILE_BYTES} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new Error('not JSON');
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) throw new Error(`not an IMA state file: ${parsed.error.issues[0]?.path.join('.') || 'message'}: ${parsed.error.issues[0]?.message}`);
  const f = parsed.data;
  const { mac: stored, ...body } = f;
  const expected = Buffer.from(mac(key, body), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(stored, 'hex'))) throw new Error('MAC does not verify (corrupt, edited, or written under another key)');
  if (fileName(f.agent_id) !== name) throw new Error('names another node than its file name');
  const pcr = new Map<ImaHashName, Uint8Array>();
  for (const [bank, value] of Object.entries(f.pcr10) as [ImaHashName, string][]) {
    if (value.length !== IMA_HASH_SIZES[bank] * 2) throw new Error(`pcr10.${bank} has the wrong size`);
    pcr.set(bank, new Uint8Array(Buffer.from(value, 'hex')));
  }
  if (pcr.size === 0) throw new Error('no PCR 10 value');
  return {
    agentId: f.agent_id,
    offset: f.offset,
    pcr,
    resetCount: f.reset_count,
    restartCount: f.restart_count,
    basis: f.basis,
    learntKeys: f.learnt_keys.map((k) => new Uint8Array(Buffer.from(k, 'base64'))),
    fullVerifiedAt: new Date(f.full_verified_at),
    updatedAt: new Date(f.updated_at),
  };
}
