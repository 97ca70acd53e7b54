/**
 * Every repository path that README.md and docs/*.md name exists: `code` spans that start with a top-level folder of
 * the repository, and relative Markdown links. Build outputs (dist/) are checked too: `npm test` builds first.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';

const DOCS = ['README.md', ...readdirSync(join(repoRoot, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** Top-level entries of the repository (hidden ones such as .ci included), which a path must start with. */
const TOP = readdirSync(repoRoot).filter((name) => name !== 'node_modules' && name !== '.git');

/** Repository paths named in a Markdown file: code spans rooted at a top-level entry, and relative links. */
export function namedPaths(markdown: string, file: string): string[] {
  const out = new Set<string>();
  // Code spans; fenced blocks are skipped (commands and configs, checked by their own tests).
  const prose = markdown.replace(/```[\s\S]*?```/g, '');
  for (const m of prose.matchAll(/`([^`\s]+)`/g)) {
    const span = m[1]!.replace(/^\.\//, '');
    const first = span.split('/')[0]!;
    if (!span.includes('/') || !TOP.includes(first)) continue;
    if (/[<>*{}$]|\.\.\./.test(span)) continue; // a pattern or placeholder, not a path
    out.add(span.replace(/[.,:;]+$/, ''));
  }
  for (const m of prose.matchAll(/\]\(([^)\s#]+)(?:#[^)]*)?\)/g)) {
    const target = m[1]!;
    if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
    out.add(relative(repoRoot, join(repoRoot, dirname(file), target)) + (target.endsWith('/') ? '/' : ''));
  }
  return [...out].sort();
}

describe('paths named in the docs exist', () => {
  it('finds the paths it should (the extractor works)', () => {
    const sample = 'See `src/tpm/` and `src/cli/main.ts`, [cli](cli.md), `dist/bin/*`, `npm test`, [x](https://e.org/a).';
    expect(namedPaths(sample, 'docs/x.md')).toEqual(['docs/cli.md', 'src/cli/main.ts', 'src/tpm/']);
  });

  it('the docs do name paths (README.md alone names a dozen)', () => {
    expect(namedPaths(readFileSync(join(repoRoot, 'README.md'), 'utf8'), 'README.md').length).toBeGreaterThan(10);
  });

  it.each(DOCS)('%s', (file) => {
    const paths = namedPaths(readFileSync(join(repoRoot, file), 'utf8'), file);
    const missing = paths.filter((p) => !existsSync(join(repoRoot, p)));
    expect(missing, `${file} names paths that do not exist`).toEqual([]);
  });
});
