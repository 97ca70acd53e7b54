/**
 * EventTail on real files: resume from the committed offset, follow the writer's size rotation by inode (finish
 * <path>.1 before the new <path>), never return a partial line, and report a gap when the committed file is gone.
 */
import { appendFileSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventTail } from '../../src/revocation/tail.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tail-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function readAll(tail: EventTail, commit = true): Promise<string[]> {
  const out: string[] = [];
  for (let l = await tail.next(); l; l = await tail.next()) {
    out.push(l.text);
    if (commit) await tail.commit(l.next);
  }
  return out;
}

describe('EventTail', () => {
  it('returns whole lines only, and resumes after the last committed one in a new instance', async () => {
    const path = join(dir, 'e.jsonl');
    writeFileSync(path, 'one\ntwo\nthr');
    const a = new EventTail(path, join(dir, 'offset.json'));
    await a.load();
    expect(await readAll(a)).toEqual(['one', 'two']);
    appendFileSync(path, 'ee\nfour\n');
    const b = new EventTail(path, join(dir, 'offset.json'));
    expect(await b.load()).toMatchObject({ offset: 8 });
    expect(await readAll(b)).toEqual(['three', 'four']);
  });

  it('an uncommitted line is read again after a restart (at-least-once)', async () => {
    const path = join(dir, 'e.jsonl');
    writeFileSync(path, 'one\ntwo\n');
    const a = new EventTail(path, join(dir, 'offset.json'));
    await a.load();
    const first = (await a.next())!;
    await a.commit(first.next);
    await a.next(); // "two" read, then the process dies before committing
    const b = new EventTail(path, join(dir, 'offset.json'));
    await b.load();
    expect(await readAll(b)).toEqual(['two']);
  });

  it('follows a rotation: finishes the rotated file, then reads the new one from its start', async () => {
    const path = join(dir, 'e.jsonl');
    writeFileSync(path, 'a1\na2\n');
    const tail = new EventTail(path, join(dir, 'offset.json'));
    await tail.load();
    expect((await tail.next())!.text).toBe('a1');
    await tail.commit({ ino: (await tail.next())!.next.ino, offset: 3 }); // committed after a1 only
    appendFileSync(path, 'a3\n');
    renameSync(path, `${path}.1`); // the writer rotates
    writeFileSync(path, 'b1\nb2\n');
    const resumed = new EventTail(path, join(dir, 'offset.json'));
    await resumed.load();
    expect(await readAll(resumed)).toEqual(['a2', 'a3', 'b1', 'b2']);
  });

  it('reports a gap when the committed file was rotated away, and goes on with the oldest file there is', async () => {
    const path = join(dir, 'e.jsonl');
    writeFileSync(path, 'old\n');
    const tail = new EventTail(path, join(dir, 'offset.json'));
    await tail.load();
    await tail.commit({ ino: 999_999_999, offset: 1 });
    const gaps: string[] = [];
    tail.onGap = (m) => gaps.push(m);
    expect(await readAll(tail)).toEqual(['old']);
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatch(/inode 999999999 was rotated away/);
  });
});
