/**
 * The layering the design depends on, checked on the import graph:
 *  - src/tpm/ verifiers are pure: only node:crypto/node:buffer, @peculiar/x509 and our own modules; hardware
 *    and files are reached only through tools.ts (tpm2-tools) and ek-store-loader.ts (ek_ca_path);
 *  - only src/workload/procfs.ts reads /proc;
 *  - plugin code never writes to stdout (SPIRE reads only the handshake line there); fd 1 is written only by the
 *    handshake (serve.ts) and by `--version` before the cookie check (build-info.ts).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/binaries.js';

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm)].map(
    (m) => m[1] ?? m[2] ?? m[3]!,
  );
}

const src = join(repoRoot, 'src');
const rel = (f: string) => relative(repoRoot, f);

describe('architecture', () => {
  it('src/tpm verifiers import no I/O: only tools.ts and ek-store-loader.ts touch processes or files', () => {
    const impure = new Set(['src/tpm/tools.ts', 'src/tpm/tcti.ts', 'src/tpm/ek-store-loader.ts']);
    const allowedExternal = new Set(['node:crypto', 'node:buffer', '@peculiar/x509', 'reflect-metadata']);
    const offenders: string[] = [];
    for (const file of files(join(src, 'tpm'))) {
      if (impure.has(rel(file))) continue;
      for (const spec of imports(file)) {
        if (spec.startsWith('.')) continue;
        if (!allowedExternal.has(spec)) offenders.push(`${rel(file)} imports ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('the server verifier and the policy engine never run tpm2-tools', () => {
    const offenders = [...files(join(src, 'policy')), join(src, 'nodeattestor/server.ts'), join(src, 'nodeattestor/ek-trust.ts')]
      .filter((f) => imports(f).some((s) => s.endsWith('/tools.js') || s === 'node:child_process'))
      .map(rel);
    expect(offenders).toEqual([]);
  });

  it('only src/workload/procfs.ts reads /proc (config.ts only names the default root)', () => {
    const code = (f: string) => readFileSync(f, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    const offenders = files(src)
      .filter((f) => rel(f) !== 'src/workload/procfs.ts')
      .filter((f) => /['"`]\/proc\//.test(code(f)) || (rel(f) !== 'src/workload/config.ts' && /['"`]\/proc['"`]/.test(code(f))))
      .map(rel);
    expect(offenders).toEqual([]);
  });

  it('plugin code never writes to stdout', () => {
    const offenders = [...files(src), ...files(join(repoRoot, 'plugins'))]
      .filter((f) => !rel(f).startsWith('src/cli/') && rel(f) !== 'src/revocation/bin.ts')
      .filter((f) => /console\.(log|info|table|dir)\(|process\.stdout\.write/.test(readFileSync(f, 'utf8')))
      .map(rel);
    expect(offenders).toEqual([]);
  });

  it('fd 1 is written only by the handshake and the --version answer', () => {
    const writers = [...files(src), ...files(join(repoRoot, 'plugins'))]
      .filter((f) => !rel(f).startsWith('src/cli/'))
      .filter((f) => /writeSync\(\s*(1|process\.stdout\.fd)\b/.test(readFileSync(f, 'utf8')))
      .map(rel)
      .sort();
    expect(writers).toEqual(['src/plugin/build-info.ts', 'src/plugin/serve.ts']);
  });

  it('plugins/ entry points are thin: they check the cookie before loading the runtime', () => {
    for (const file of files(join(repoRoot, 'plugins'))) {
      const text = readFileSync(file, 'utf8');
      expect(text.indexOf('requireHandshakeEnvironment('), rel(file)).toBeGreaterThan(-1);
      expect(text.split('\n').length, rel(file)).toBeLessThan(25);
      // No static import of the runtime: it must load after the cookie check.
      expect(/^import .*serve\.js/m.test(text), rel(file)).toBe(false);
    }
  });
});
