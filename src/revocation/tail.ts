/**
 * Follows the decision-event JSONL file from a committed position, across size rotation (<path> → <path>.1 → …).
 * A position names the file by inode, so after a rotation the reader finishes the file it was in (now <path>.1)
 * before it starts on the new <path>. The position is committed only after an event was fully handled, with an
 * atomic rename, so a crash re-reads at most the event in hand (the handlers are idempotent).
 */
import { open, readFile, rename, stat, writeFile } from 'node:fs/promises';

export interface Position {
  readonly ino: number;
  readonly offset: number;
}

export interface TailLine {
  /** The line without its newline; `undefined` with `oversized` when it was longer than the bound. */
  readonly text: string;
  /** Where the next line starts: commit this once the line is handled. */
  readonly next: Position;
  readonly file: string;
}

/** An event is a few KiB; a longer line is not one of ours and is skipped (reported as malformed). */
export const MAX_LINE_BYTES = 1 << 20;
const MAX_ROTATED = 100;

export class EventTail {
  readonly #path: string;
  readonly #offsetFile: string;
  #position: Position | undefined;
  /** Called when the committed file has been rotated away entirely: its unread events are lost. */
  onGap: (message: string) => void = () => undefined;

  constructor(path: string, offsetFile: string) {
    this.#path = path;
    this.#offsetFile = offsetFile;
  }

  get position(): Position | undefined {
    return this.#position;
  }

  async load(): Promise<Position | undefined> {
    try {
      const raw = JSON.parse(await readFile(this.#offsetFile, 'utf8')) as Partial<Position>;
      if (Number.isSafeInteger(raw.ino) && Number.isSafeInteger(raw.offset) && raw.offset! >= 0) this.#position = { ino: raw.ino!, offset: raw.offset! };
    } catch {
      this.#position = undefined; // no offset yet: start at the beginning of the oldest file
    }
    return this.#position;
  }

  async commit(position: Position): Promise<void> {
    const tmp = `${this.#offsetFile}.tmp`;
    await writeFile(tmp, JSON.stringify(position) + '\n', { mode: 0o600, flush: true });
    await rename(tmp, this.#offsetFile);
    this.#position = position;
  }

  /** Files newest first: <path>, <path>.1, …, with their inodes; absent ones left out. */
  async #files(): Promise<Array<{ file: string; ino: number; size: number }>> {
    const out: Array<{ file: string; ino: number; size: number }> = [];
    for (let i = 0; i <= MAX_ROTATED; i++) {
      const file = i === 0 ? this.#path : `${this.#path}.${i}`;
      const st = await stat(file).catch(() => undefined);
      if (!st) {
        if (i > 0) break;
        continue;
      }
      out.push({ file, ino: st.ino, size: st.size });
    }
    return out;
  }

  /** The next complete line after the current position, or undefined when there is none yet. */
  async next(): Promise<TailLine | undefined> {
    const files = await this.#files();
    if (files.length === 0) return undefined;
    let index = this.#position ? files.findIndex((f) => f.ino === this.#position!.ino) : -1;
    let offset = this.#position?.offset ?? 0;
    if (index < 0) {
      if (this.#position) this.onGap(`the event file with inode ${this.#position.ino} was rotated away before it was read to the end; continuing with ${files[files.length - 1]!.file}`);
      index = files.length - 1;
      offset = 0;
      this.#position = { ino: files[index]!.ino, offset: 0 };
    }
    for (;;) {
      const f = files[index]!;
      if (offset < f.size) {
        const line = await readLine(f.file, offset);
        if (line) return { ...line, file: f.file, next: { ino: f.ino, offset: line.end } };
        if (index === 0) return undefined; // the writer is mid-line (it writes whole lines; should not last)
      }
      if (index === 0) return undefined;
      // Finished a rotated file: move to the next newer one.
      index--;
      offset = 0;
      this.#position = { ino: files[index]!.ino, offset: 0 };
    }
  }
}

async function readLine(file: string, offset: number): Promise<{ text: string; end: number } | undefined> {
  const handle = await open(file, 'r');
  try {
    const chunk = Buffer.alloc(64 * 1024);
    const parts: Buffer[] = [];
    let total = 0;
    let pos = offset;
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, pos);
      if (bytesRead === 0) return undefined;
      const nl = chunk.subarray(0, bytesRead).indexOf(0x0a);
      if (nl >= 0) {
        parts.push(Buffer.from(chunk.subarray(0, nl)));
        total += nl;
        const end = pos + nl + 1;
        if (total > MAX_LINE_BYTES) return { text: '', end };
        return { text: Buffer.concat(parts).toString('utf8'), end };
      }
      total += bytesRead;
      if (total <= MAX_LINE_BYTES) parts.push(Buffer.from(chunk.subarray(0, bytesRead)));
      pos += bytesRead;
    }
  } finally {
    await handle.close();
  }
}
