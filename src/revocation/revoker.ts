/**
 * The revoker: reads decision events in order and, for each refusal that is evidence against a node, bans its
 * agent in SPIRE and fences its Kubernetes Node (taint, then evictions). Each step is idempotent (it reads the
 * current state first), retried with backoff while SPIRE or the API server is unreachable, and audited. The
 * event's position is committed only once every step finished, so an outage or a kill loses nothing: the event
 * is handled again, and the steps already done report `already`.
 *
 * `approve` is the reverse for one node: it deletes the agent record (which lifts the ban, so the node can attest
 * again) and removes the taint.
 */
import { mkdir, open, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../plugin/types.js';
import type { RevokerConfig } from './config.js';
import { isTransientKube, kubeStatus, type NodeFence } from './kube.js';
import { isTransient, type AgentRecord, type SpireAgentApi } from './spire-api.js';
import { EventTail } from './tail.js';
import { eventSchema, type RevokerEvent } from './event.js';
import { startReceiver } from './receiver.js';

export { eventSchema, type RevokerEvent } from './event.js';

export type AuditResult = 'done' | 'already' | 'dry_run' | 'not_found' | 'no_node' | 'failed' | 'skipped' | 'disabled';

export interface AuditEntry {
  readonly time: string;
  readonly action: 'ban' | 'taint' | 'evict' | 'unban' | 'untaint' | 'skip' | 'gap' | 'delete_pod';
  readonly result: AuditResult;
  readonly agent_id?: string;
  readonly ek_hash?: string;
  readonly node?: string;
  readonly event_id?: string;
  readonly detail?: string;
  readonly attempts?: number;
  readonly dry_run?: boolean;
  readonly pods?: readonly string[];
  readonly pod_uid?: string;
}

/** Append-only, fsync'd per line: the audit trail must survive the crash that the offset recovers from. */
export class AuditLog {
  readonly path: string;
  constructor(path: string) {
    this.path = path;
  }
  async write(entry: Omit<AuditEntry, 'time'>): Promise<void> {
    const handle = await open(this.path, 'a', 0o600);
    try {
      await handle.write(JSON.stringify({ time: new Date().toISOString(), ...entry }) + '\n');
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

interface FenceRecord {
  readonly node?: string;
  readonly ek_hash?: string;
  readonly event_id: string;
  readonly fenced_at: string;
}

/** Which nodes this revoker fenced, so `approve` finds the Node even when no mapping answers any more. */
class FenceState {
  readonly #path: string;
  constructor(path: string) {
    this.#path = path;
  }
  async read(): Promise<Record<string, FenceRecord>> {
    try {
      return JSON.parse(await readFile(this.#path, 'utf8')) as Record<string, FenceRecord>;
    } catch {
      return {};
    }
  }
  async update(fn: (s: Record<string, FenceRecord>) => void): Promise<void> {
    const state = await this.read();
    fn(state);
    await writeFile(`${this.#path}.tmp`, JSON.stringify(state, null, 2) + '\n', { mode: 0o600, flush: true });
    await rename(`${this.#path}.tmp`, this.#path);
  }
}

export class Aborted extends Error {}

export interface RevokerParts {
  readonly config: RevokerConfig;
  readonly log: Logger;
  readonly spire?: SpireAgentApi;
  readonly fence?: NodeFence;
}

export class Revoker {
  readonly #config: RevokerConfig;
  readonly #log: Logger;
  readonly #spire: SpireAgentApi | undefined;
  readonly #fence: NodeFence | undefined;
  readonly audit: AuditLog;
  readonly #fences: FenceState;
  readonly #tail: EventTail;
  #signal: AbortSignal | undefined;

  constructor(parts: RevokerParts) {
    this.#config = parts.config;
    this.#log = parts.log;
    this.#spire = parts.spire;
    this.#fence = parts.fence;
    this.audit = new AuditLog(join(parts.config.state_dir, 'audit.jsonl'));
    this.#fences = new FenceState(join(parts.config.state_dir, 'fenced.json'));
    this.#tail = new EventTail(parts.config.events_file, join(parts.config.state_dir, 'offset.json'));
    this.#tail.onGap = (message) => {
      this.#log.error('Decision events lost to rotation', { detail: message });
      void this.audit.write({ action: 'gap', result: 'failed', detail: message });
    };
  }

  async #prepare(): Promise<void> {
    await mkdir(this.#config.state_dir, { recursive: true, mode: 0o700 });
  }

  /** Follows the file until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    this.#signal = signal;
    await this.#prepare();
    const position = await this.#tail.load();
    this.#log.info('Revoker started', { events_file: this.#config.events_file, resume: position ? JSON.stringify(position) : 'start', dry_run: this.#config.dry_run });
    const receiver = this.#config.webhook_listen ? await startReceiver(this.#config, this.#log) : undefined;
    signal.addEventListener('abort', () => void receiver?.close(), { once: true });
    while (!signal.aborted) {
      const handled = await this.drain().catch((err: unknown) => {
        if (err instanceof Aborted) return 0;
        throw err;
      });
      if (handled === 0) await this.#sleep(this.#config.poll_interval).catch(() => undefined);
    }
  }

  /** Handles every complete line there is now; returns how many. */
  async drain(): Promise<number> {
    await this.#prepare();
    if (!this.#tail.position) await this.#tail.load();
    let count = 0;
    for (let line = await this.#tail.next(); line; line = await this.#tail.next()) {
      await this.#handleLine(line.text, `${line.file}@${line.next.offset}`);
      await this.#tail.commit(line.next);
      count++;
    }
    return count;
  }

  async #handleLine(text: string, where: string): Promise<void> {
    let event: RevokerEvent;
    try {
      const parsed = eventSchema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `${i.path.join('.') || 'event'}: ${i.message}`).join('; '));
      event = parsed.data;
    } catch (err) {
      const detail = `${where}: ${(err as Error).message}`.slice(0, 1024);
      this.#log.warn('Malformed decision event skipped', { detail });
      await this.audit.write({ action: 'skip', result: 'skipped', detail: `malformed: ${detail}` });
      return;
    }
    if (event.outcome !== 'refused') return;
    if (event.workload) {
      await this.#actOnWorkload(event, event.workload);
      return;
    }
    const base = { agent_id: event.agent_id, ek_hash: event.ek_hash, event_id: event.event_id };
    if (!event.agent_id) {
      await this.audit.write({ action: 'skip', result: 'skipped', ...base, detail: `refused before the EK was trusted (${event.code}): no agent to act on` });
      return;
    }
    if (event.code && this.#config.ignore_codes.includes(event.code)) {
      await this.audit.write({ action: 'skip', result: 'skipped', ...base, detail: `code ${event.code} is in ignore_codes` });
      return;
    }
    this.#log.warn('Acting on refused attestation', { ...base, code: event.code, rule: event.rule });
    await this.#act(event.agent_id, event.ek_hash, event.event_id, `${event.code ?? 'refused'}: ${event.rule ?? ''}`);
  }

  /** A workload refusal (edge-workload IMA): the node stays, the pod goes, so its controller replaces it. */
  async #actOnWorkload(event: RevokerEvent, w: NonNullable<RevokerEvent['workload']>): Promise<void> {
    const pod = w.pod_namespace && w.pod_name ? `${w.pod_namespace}/${w.pod_name}` : undefined;
    const base = { event_id: event.event_id, ...(w.pod_uid ? { pod_uid: w.pod_uid } : {}), ...(w.node_name ? { node: w.node_name } : {}), ...(pod ? { pods: [pod] } : {}), ...(this.#config.dry_run ? { dry_run: true } : {}) };
    if (event.code && this.#config.ignore_codes.includes(event.code)) {
      await this.audit.write({ action: 'skip', result: 'skipped', ...base, detail: `code ${event.code} is in ignore_codes` });
      return;
    }
    const k8s = this.#config.kubernetes;
    const fence = this.#fence;
    if (!fence || !k8s || !k8s.delete_pods) {
      await this.audit.write({ action: 'delete_pod', result: 'disabled', ...base });
      return;
    }
    if (!w.pod_namespace || !w.pod_name) {
      await this.audit.write({ action: 'delete_pod', result: 'skipped', ...base, detail: 'the event names no pod (a container outside Kubernetes)' });
      return;
    }
    this.#log.warn('Acting on refused workload: deleting its pod', { event_id: event.event_id, pod_uid: w.pod_uid, node: w.node_name, pod, code: event.code, rule: event.rule, path: w.path, digest: w.digest });
    if (this.#config.dry_run) {
      await this.audit.write({ action: 'delete_pod', result: 'dry_run', ...base });
      return;
    }
    const { pod_namespace: namespace, pod_name: name } = w;
    const r = await this.#retry('kubernetes delete pod', () => fence.deletePod(namespace, name, w.pod_uid), isTransientKube);
    await this.audit.write({
      action: 'delete_pod',
      result: r.ok ? (r.value === 'deleted' ? 'done' : 'already') : 'failed',
      ...base,
      attempts: r.attempts,
      detail: r.ok ? `${w.rule ?? event.rule ?? 'refused'}: ${w.path ?? ''} (${w.digest ?? ''})`.slice(0, 1024) : r.error,
    });
  }

  async #act(agentId: string, ekHash: string | undefined, eventId: string, reason: string): Promise<void> {
    const dry = this.#config.dry_run;
    const base = { agent_id: agentId, ek_hash: ekHash, event_id: eventId, ...(dry ? { dry_run: true } : {}) };
    let record: AgentRecord | undefined;
    if (this.#spire) {
      const spire = this.#spire;
      const got = await this.#retry('spire get agent', () => spire.get(agentId), isTransient);
      record = got.ok ? got.value : undefined;
    }
    const node = await this.#nodeFor(agentId, ekHash, record);

    // 1. Ban: read first, so a duplicate event finds the agent banned and does nothing.
    if (!this.#spire || !this.#config.spire?.ban) await this.audit.write({ action: 'ban', result: 'disabled', ...base });
    else if (!record) await this.audit.write({ action: 'ban', result: 'not_found', ...base, detail: 'SPIRE has no such agent' });
    else if (record.banned) await this.audit.write({ action: 'ban', result: 'already', ...base });
    else if (dry) await this.audit.write({ action: 'ban', result: 'dry_run', ...base });
    else {
      const spire = this.#spire;
      const r = await this.#retry('spire ban agent', () => spire.ban(agentId), isTransient);
      await this.audit.write({ action: 'ban', result: r.ok ? 'done' : 'failed', ...base, attempts: r.attempts, ...(r.ok ? {} : { detail: r.error }) });
    }

    // 2. Fence the Node.
    const k8s = this.#config.kubernetes;
    const fence = this.#fence;
    if (!fence || !k8s) {
      await this.audit.write({ action: 'taint', result: 'disabled', ...base });
    } else if (!node) {
      this.#log.error('No Node for the refused agent: it is not fenced', base);
      await this.audit.write({ action: 'taint', result: 'no_node', ...base, detail: 'no node_mapping answered' });
    } else {
      const withNode = { ...base, node };
      if (!k8s.taint) await this.audit.write({ action: 'taint', result: 'disabled', ...withNode });
      else if (dry) await this.audit.write({ action: 'taint', result: 'dry_run', ...withNode });
      else {
        const r = await this.#retry('kubernetes taint node', () => fence.taint(node, reason), isTransientKube);
        await this.audit.write({ action: 'taint', result: r.ok ? (r.value === 'added' ? 'done' : 'already') : r.status === 404 ? 'not_found' : 'failed', ...withNode, attempts: r.attempts, ...(r.ok ? {} : { detail: r.error }) });
      }
      if (!k8s.evict) await this.audit.write({ action: 'evict', result: 'disabled', ...withNode });
      else if (dry) await this.audit.write({ action: 'evict', result: 'dry_run', ...withNode });
      else {
        const r = await this.#retry('kubernetes evict pods', () => fence.evictPods(node, k8s.evict_daemonsets), isTransientKube);
        await this.audit.write({
          action: 'evict',
          result: r.ok ? (r.value.evicted.length ? 'done' : 'already') : 'failed',
          ...withNode,
          attempts: r.attempts,
          ...(r.ok ? { pods: r.value.evicted } : { detail: r.error }),
        });
      }
    }
    if (!dry) {
      await this.#fences.update((s) => {
        s[agentId] = { ...(node ? { node } : {}), ...(ekHash ? { ek_hash: ekHash } : {}), event_id: eventId, fenced_at: new Date().toISOString() };
      });
    }
  }

  /** docs/revocation.md "Agent ID to Node": static registration, then a verified selector, then the EK-hash label. */
  async #nodeFor(agentId: string, ekHash: string | undefined, record: AgentRecord | undefined): Promise<string | undefined> {
    const mapping = this.#config.node_mapping;
    const hash = ekHash ?? /\/([0-9a-f]{64})$/.exec(agentId)?.[1];
    const fromStatic = mapping.static[agentId] ?? (hash ? mapping.static[hash] : undefined);
    if (fromStatic) return fromStatic;
    if (mapping.selector && record) {
      const [type, ...rest] = mapping.selector.split(':');
      const prefix = rest.join(':');
      const hit = record.selectors.find((s) => s.type === type && s.value.startsWith(prefix) && s.value.length > prefix.length);
      if (hit) return hit.value.slice(prefix.length);
    }
    if (mapping.label && hash && this.#fence) {
      const fence = this.#fence;
      const r = await this.#retry('kubernetes find node by label', () => fence.nodeByEkHash(hash), isTransientKube);
      if (r.ok && r.value) return r.value;
    }
    return undefined;
  }

  /**
   * Retries transient failures with exponential backoff, without limit (the event stays uncommitted meanwhile);
   * a permanent failure is returned for the audit log. Aborting the revoker aborts the wait.
   */
  async #retry<T>(what: string, fn: () => Promise<T>, transient: (err: unknown) => boolean): Promise<{ ok: true; value: T; attempts: number } | { ok: false; error: string; status: number; attempts: number }> {
    let delay = this.#config.retry.initial;
    for (let attempt = 1; ; attempt++) {
      try {
        return { ok: true, value: await fn(), attempts: attempt };
      } catch (err) {
        const error = (err as Error).message?.slice(0, 512) ?? String(err);
        if (!transient(err)) {
          this.#log.error(`${what} failed`, { error, attempt });
          return { ok: false, error, status: kubeStatus(err), attempts: attempt };
        }
        this.#log.warn(`${what} failed, retrying`, { error, attempt, retry_in_ms: delay });
        await this.#sleep(delay);
        delay = Math.min(delay * 2, this.#config.retry.max);
      }
    }
  }

  #sleep(ms: number): Promise<void> {
    const signal = this.#signal;
    if (signal?.aborted) return Promise.reject(new Aborted('revoker stopping'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(new Aborted('revoker stopping'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Lifts the fence of the node named by an agent ID or an EK hash. Returns what was done, for the CLI. */
  async approve(target: string): Promise<AuditEntry[]> {
    await this.#prepare();
    const fences = await this.#fences.read();
    const isHash = /^[0-9a-f]{64}$/.test(target);
    if (!isHash && !target.startsWith('spiffe://')) throw new Error(`"${target}" is neither an agent ID (spiffe://…) nor a 64-hex EK hash`);
    const ids = new Set<string>();
    if (isHash) {
      for (const [id, f] of Object.entries(fences)) if (f.ek_hash === target || id.endsWith(`/${target}`)) ids.add(id);
      if (this.#spire) for (const id of await this.#spire.findBySuffix(target)) ids.add(id);
    } else ids.add(target);
    const done: AuditEntry[] = [];
    const write = async (e: Omit<AuditEntry, 'time'>) => {
      await this.audit.write(e);
      done.push({ time: new Date().toISOString(), ...e });
    };
    if (ids.size === 0) {
      await write({ action: 'unban', result: 'not_found', ek_hash: target, detail: 'no such agent in SPIRE or in the fence state' });
      return done;
    }
    const dry = this.#config.dry_run;
    for (const agentId of ids) {
      const ekHash = fences[agentId]?.ek_hash ?? /\/([0-9a-f]{64})$/.exec(agentId)?.[1];
      const base = { agent_id: agentId, ek_hash: ekHash, ...(dry ? { dry_run: true } : {}) };
      if (this.#spire) {
        if (dry) await write({ action: 'unban', result: 'dry_run', ...base });
        else {
          const deleted = await this.#spire.delete(agentId);
          await write({ action: 'unban', result: deleted ? 'done' : 'not_found', ...base, detail: deleted ? 'agent record deleted: the node may attest again' : undefined });
        }
      }
      const node = fences[agentId]?.node ?? (await this.#nodeFor(agentId, ekHash, undefined));
      if (this.#fence && this.#config.kubernetes) {
        if (!node) await write({ action: 'untaint', result: 'no_node', ...base });
        else if (dry) await write({ action: 'untaint', result: 'dry_run', ...base, node });
        else {
          const r = await this.#fence.untaint(node);
          await write({ action: 'untaint', result: r === 'removed' ? 'done' : 'already', ...base, node });
        }
      }
      if (!dry) await this.#fences.update((s) => void delete s[agentId]);
    }
    return done;
  }

  async fenced(): Promise<Record<string, FenceRecord>> {
    return this.#fences.read();
  }
}
