/**
 * What `npm pack` ships: the four bundled binaries, dist/package.json (keeps them CommonJS), the docs, the examples and
 * the project files; nothing from test/ (fixtures, test plugins), src/ or dist/sea; and no install dependencies,
 * because every binary is one bundle that needs only Node's built-in modules.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { BINARIES } from './artifacts.js';

interface PackResult {
  name: string;
  version: string;
  files: { path: string; mode: number }[];
}

function packDryRun(): Promise<PackResult> {
  return new Promise((resolve, reject) => {
    // --ignore-scripts: prepack would rebuild dist/bin under the feet of tests running the binaries in parallel.
    execFile('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: repoRoot, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr }));
      else resolve((JSON.parse(stdout) as PackResult[])[0]!);
    });
  });
}

function filesUnder(dir: string): string[] {
  return readdirSync(join(repoRoot, dir)).flatMap((name) => {
    const p = join(repoRoot, dir, name);
    return statSync(p).isDirectory() ? filesUnder(relative(repoRoot, p)) : [relative(repoRoot, p)];
  });
}

describe('npm pack', () => {
  it('ships exactly the binaries, docs, examples and project files', async () => {
    const pack = await packDryRun();
    const expected = [
      'package.json',
      'README.md',
      'LICENSE',
      'NOTICE',
      'CHANGELOG.md',
      'SECURITY.md',
      'dist/package.json',
      'dist/THIRD_PARTY_LICENSES',
      ...BINARIES.map((b) => `dist/bin/${b}`),
      'dist/bin/spire-edge-revoker',
      ...filesUnder('docs'),
      ...filesUnder('examples'),
    ].sort();
    expect(pack.files.map((f) => f.path).sort()).toEqual(expected);
    for (const b of BINARIES) expect(pack.files.find((f) => f.path === `dist/bin/${b}`)!.mode & 0o111, b).not.toBe(0);
    expect(pack.files.filter((f) => /^(test|src|dist\/(sea|test-bin))\/|fixtures|\.provenance$/.test(f.path))).toEqual([]);
  });

  it("the revoker (a daemon, not a plugin) needs nothing beyond Node built-ins but the optional modules its Kubernetes client probes for", () => {
    const code = readFileSync(builtPlugin('spire-edge-revoker'), 'utf8');
    const required = new Set([...code.matchAll(/\brequire\(\s*["'`]([^"'`]+)["'`]\s*\)/g)].map((m) => m[1]!).filter((r) => !isBuiltin(r)));
    // ws, node-fetch and debug try these and carry on without them (each require sits in a try/catch).
    expect([...required].sort()).toEqual(['bufferutil', 'encoding', 'supports-color', 'utf-8-validate']);
  });

  it('declares no install dependencies and is publishable; the binaries need nothing but Node built-ins', () => {
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest['private']).toBeUndefined();
    expect(manifest['dependencies']).toBeUndefined();
    expect(manifest['optionalDependencies']).toBeUndefined();
    expect(manifest['peerDependencies']).toBeUndefined();
    for (const b of BINARIES) {
      const code = readFileSync(builtPlugin(b), 'utf8');
      const required = [...code.matchAll(/\brequire\(\s*["'`]([^"'`]+)["'`]\s*\)/g)].map((m) => m[1]!);
      expect(required.length, b).toBeGreaterThan(0);
      expect(required.filter((r) => !isBuiltin(r)), b).toEqual([]);
      // And no require of a computed name that the scan above could not see.
      expect(/\brequire\(\s*[^"'`\s)]/.test(code.replace(/\brequire\(\s*["'`][^"'`]+["'`]\s*\)/g, '')), b).toBe(false);
    }
  });
});
