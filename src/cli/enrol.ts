/**
 * `spire-edge-attest enrol list | approve | revoke` on the file enrolment store (src/nodeattestor/enrolment.ts).
 * Every change records who and when (`updated_by`, `updated_at`), so the store is its own audit trail.
 */
import { userInfo } from 'node:os';
import { readStore, updateStore, type EnrolmentFile, type EnrolmentRecord, type EnrolmentState } from '../nodeattestor/enrolment.js';

export interface EnrolRow extends EnrolmentRecord {
  readonly ek_hash: string;
}

export async function enrolList(path: string, state?: EnrolmentState): Promise<EnrolRow[]> {
  const store = await readStore(path);
  return Object.entries(store.nodes)
    .filter(([, r]) => !state || r.state === state)
    .map(([ek_hash, r]) => ({ ek_hash, ...r }))
    .sort((a, b) => a.state.localeCompare(b.state) || a.ek_hash.localeCompare(b.ek_hash));
}

export function formatEnrolList(rows: readonly EnrolRow[]): string {
  if (rows.length === 0) return 'no nodes\n';
  return rows.map((r) => `${r.state.padEnd(8)} ${r.ek_hash}  ${r.updated_at}${r.updated_by ? ` by ${r.updated_by}` : ''}${r.note ? `  (${r.note})` : ''}`).join('\n') + '\n';
}

/**
 * Moves one node to `to`. Approving a node never seen creates it approved (pre-enrolment from `ek-hash`);
 * revoking one never seen creates it revoked, so it can never turn up as pending.
 */
export async function enrolSet(path: string, ekHash: string, to: 'approved' | 'revoked', note: string | undefined, now = new Date()): Promise<{ from: EnrolmentState | 'absent'; record: EnrolmentRecord }> {
  let from: EnrolmentState | 'absent' = 'absent';
  const by = `${safeUser()} (spire-edge-attest)`;
  const store: EnrolmentFile = await updateStore(path, (s) => {
    const current = s.nodes[ekHash];
    from = current?.state ?? 'absent';
    s.nodes[ekHash] = {
      ...(current ?? {}),
      state: to,
      updated_at: now.toISOString(),
      updated_by: by,
      ...(note !== undefined ? { note } : {}),
    };
  });
  return { from, record: store.nodes[ekHash]! };
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}
