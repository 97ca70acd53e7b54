/** The fuzzing property: an input either parses or is refused with one of our typed errors (src/errors.ts). */
import { isAttestorError } from '../../src/errors.js';

export type Outcome = { kind: 'ok' } | { kind: 'typed'; code: string } | { kind: 'crash'; error: unknown };

/** Runs `run` on `data`; any exception that is not an AttestorError (TypeError, RangeError, ...) is a crash. */
export async function classify(run: (data: Uint8Array) => unknown, data: Uint8Array): Promise<Outcome> {
  try {
    const r = run(data);
    if (r instanceof Promise) await r;
    return { kind: 'ok' };
  } catch (err) {
    return isAttestorError(err) ? { kind: 'typed', code: err.code } : { kind: 'crash', error: err };
  }
}

/** One line naming a crash: its class and message, and the first frame in our code. */
export function describeCrash(error: unknown): { signature: string; detail: string } {
  const e = error instanceof Error ? error : new Error(`non-Error thrown: ${String(error)}`);
  const frame = (e.stack ?? '').split('\n').find((l) => l.includes('/src/')) ?? (e.stack ?? '').split('\n')[1] ?? '';
  const where = frame.trim().replace(/^at /, '').replace(/file:\/\/[^)]*\/(src\/[^)]*)/, '$1');
  return { signature: `${e.name}: ${e.message.slice(0, 120)} @ ${where}`, detail: e.stack ?? String(e) };
}
