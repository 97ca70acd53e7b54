/**
 * Enrolment with approval (docs/revocation.md): with `enrolment = "required"`, a node whose TPM evidence verified
 * is admitted only once an operator approved its EK. A node seen for the first time is recorded as `pending` and
 * refused; `approved` admits; `revoked` refuses for good (until approved again).
 *
 *   pending ──approve──▶ approved ──revoke──▶ revoked ──approve──▶ approved
 *
 * The store is one JSON file that every SPIRE server of the trust domain can mount (and an operator can read and
 * diff). The plugin re-reads it whenever its inode, size or mtime changed (hot reload, checked per attestation);
 * writers (the plugin adding a pending node, `spire-edge-attest enrol`) take a lock file and replace the file
 * atomically, so readers never see half a file and concurrent writers do not lose each other's changes.
 */
import { open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { AttestationRefused, InvalidConfig, SourceUnavailable } from '../errors.js';
import { z } from '../plugin/config-schema.js';

export type EnrolmentState = 'pending' | 'approved' | 'revoked';

export const MAX_STORE_BYTES = 16 * 1024 * 1024;
export const MAX_NODES = 100_000;
const LOCK_WAIT_MS = 5_000;
const LOCK_STALE_MS = 30_000;

const recordSchema = z.object({
  state: z.enum(['pending', 'approved', 'revoked']),
  agent_id: z.string().max(2048).optional(),
  first_seen: z.string().optional(),
  updated_at: z.string(),
  updated_by: z.string().max(256).optional(),
  note: z.string().max(1024).optional(),
});
export type EnrolmentRecord = z.output<typeof recordSchema>;

const storeSchema = z.object({
  version: z.literal(1),
  nodes: z.record(z.string().regex(/^[0-9a-f]{64}$/, 'keys are 64-hex EK hashes'), recordSchema),
});
export type EnrolmentFile = z.output<typeof storeSchema>;

export function emptyStore(): EnrolmentFile {
  return { version: 1, nodes: {} };
}

export function parseStore(text: string, path: string): EnrolmentFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InvalidConfig('ERR_ENROLMENT_STORE', `enrolment store ${path}: not JSON: ${(err as Error).message}`);
  }
  const nodes = (raw as { nodes?: unknown })?.nodes;
  if (nodes && typeof nodes === 'object') {
    const bad = Object.keys(nodes).find((k) => !/^[0-9a-f]{64}$/.test(k));
    if (bad !== undefined) throw new InvalidConfig('ERR_ENROLMENT_STORE', `enrolment store ${path}: nodes: key ${JSON.stringify(bad.slice(0, 80))} is not a 64-hex EK hash (keys are 64-hex EK hashes)`);
  }
  const parsed = storeSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InvalidConfig('ERR_ENROLMENT_STORE', `enrolment store ${path}: ${issue.path.join('.') || 'file'}: ${issue.message}`);
  }
  if (Object.keys(parsed.data.nodes).length > MAX_NODES) throw new InvalidConfig('ERR_ENROLMENT_STORE', `enrolment store ${path}: more than ${MAX_NODES} nodes`);
  return parsed.data;
}

export async function readStore(path: string): Promise<EnrolmentFile> {
  let text: string;
  try {
    const st = await stat(path);
    if (st.size > MAX_STORE_BYTES) throw new InvalidConfig('ERR_ENROLMENT_STORE', `enrolment store ${path}: larger than ${MAX_STORE_BYTES} bytes`);
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyStore();
    throw err;
  }
  return parseStore(text, path);
}

/** Runs `fn` on the store under the lock file and writes the result atomically. */
export async function updateStore(path: string, fn: (store: EnrolmentFile) => void): Promise<EnrolmentFile> {
  const lock = `${path}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const h = await open(lock, 'wx', 0o600);
      await h.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A writer that died leaves its lock behind; one older than any write could take is stale.
      const st = await stat(lock).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > LOCK_STALE_MS) await rm(lock, { force: true });
      else if (Date.now() > deadline) throw new SourceUnavailable('ERR_ENROLMENT_LOCKED', `enrolment store ${path}: locked by another writer (${lock})`);
      else await new Promise((r) => setTimeout(r, 25));
    }
  }
  try {
    const store = await readStore(path);
    fn(store);
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(store, null, 2) + '\n', { mode: 0o640, flush: true });
    await rename(tmp, path);
    return store;
  } finally {
    await rm(lock, { force: true });
  }
}

/** The plugin's view: hot-reloaded on change, records first-seen nodes as pending. */
export class EnrolmentGate {
  readonly #path: string;
  readonly #now: () => Date;
  #cached: { key: string; store: EnrolmentFile } | undefined;

  constructor(path: string, now: () => Date) {
    this.#path = path;
    this.#now = now;
  }

  async #current(): Promise<EnrolmentFile> {
    const st = await stat(this.#path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    const key = st ? `${st.ino}:${st.size}:${st.mtimeMs}` : 'absent';
    if (this.#cached?.key === key) return this.#cached.store;
    const store = await readStore(this.#path);
    this.#cached = { key, store };
    return store;
  }

  /** Checked at Configure: a store that does not parse fails closed there, not at the first node. */
  async check(): Promise<void> {
    await this.#current();
  }

  /**
   * Admits an approved node; records an unknown one as pending and refuses it; refuses pending and revoked ones.
   * A store that cannot be read refuses (UNAVAILABLE: the agent retries), it never admits.
   */
  async admit(ekHash: string, agentId: string, audit: Record<string, string | number | boolean | undefined>): Promise<void> {
    const node = ekHash.slice(0, 16);
    let store: EnrolmentFile;
    try {
      store = await this.#current();
    } catch (err) {
      throw new SourceUnavailable('ERR_ENROLMENT_STORE', `node ${node}: the enrolment store cannot be read: ${(err as Error).message}`, { fields: { rule: 'enrolment' } });
    }
    let record = store.nodes[ekHash];
    if (!record) {
      const now = this.#now().toISOString();
      try {
        const updated = await updateStore(this.#path, (s) => {
          s.nodes[ekHash] ??= { state: 'pending', agent_id: agentId, first_seen: now, updated_at: now, updated_by: 'tpm-server' };
        });
        record = updated.nodes[ekHash]!;
      } catch (err) {
        throw new SourceUnavailable('ERR_ENROLMENT_STORE', `node ${node}: could not record the node as pending: ${(err as Error).message}`, { fields: { rule: 'enrolment' } });
      }
    }
    audit['enrolment'] = record.state;
    if (record.state === 'approved') return;
    if (record.state === 'pending') {
      throw new AttestationRefused(
        'ERR_ENROLMENT_PENDING',
        `node ${node}: enrolment pending: the TPM verified, but an operator must approve EK ${ekHash} (spire-edge-attest enrol approve ${ekHash})`,
        { fields: { rule: 'enrolment: pending' } },
      );
    }
    throw new AttestationRefused('ERR_ENROLMENT_REVOKED', `node ${node}: enrolment revoked${record.note ? ` (${record.note})` : ''}`, {
      fields: { rule: 'enrolment: revoked' },
    });
  }
}
