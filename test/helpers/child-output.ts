/** Collects a child process's JSON-lines stdout as it arrives (our demo services and test clients log that way). */
import type { ChildProcess } from 'node:child_process';

/** The parsed lines so far, each with `at` (arrival time, ms); lines that are not JSON objects are skipped. */
export function jsonLines(child: ChildProcess): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  let buf = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const p of parts) {
      try {
        const parsed = JSON.parse(p) as unknown;
        if (typeof parsed === 'object' && parsed !== null) out.push({ at: Date.now(), ...(parsed as Record<string, unknown>) });
      } catch {
        /* not a JSON line */
      }
    }
  });
  return out;
}
