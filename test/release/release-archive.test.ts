/**
 * `npm run release` (scripts/release.mjs, run here with --no-build on the binaries `npm test` built): one archive per
 * platform with the single executables, SHA256SUMS, docs, examples and licences. The x64 archive is unpacked and
 * checked with `sha256sum -c`, and its binaries run; the arm64 one is listed and its binaries checked to be AArch64.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';
import { BINARIES, packageVersion, seaBinary, sha256File } from './artifacts.js';

function exec(cmd: string, args: string[], cwd = repoRoot): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      err ? reject(Object.assign(err, { stdout, stderr })) : resolve({ stdout, stderr }),
    );
  });
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

const version = packageVersion();
let out: string;
let unpacked: string;

beforeAll(async () => {
  out = mkdtempSync(join(tmpdir(), 'release-'));
  unpacked = mkdtempSync(join(tmpdir(), 'release-x64-'));
  await exec(process.execPath, ['scripts/release.mjs', '--no-build', '--out', out]);
  await exec('tar', ['-xzf', join(out, `spire-edge-attestors-${version}-linux-x64.tar.gz`), '-C', unpacked]);
}, 600_000);

afterAll(() => {
  for (const d of [out, unpacked]) if (d) rmSync(d, { recursive: true, force: true });
});

const expectedFiles = (top: string) =>
  [
    ...BINARIES.map((b) => `bin/${b}`),
    'README.md',
    'LICENSE',
    'NOTICE',
    'CHANGELOG.md',
    'SECURITY.md',
    'THIRD_PARTY_LICENSES',
    'LICENSE.node',
    'SHA256SUMS',
    '.dockerignore',
    'images/spire-server.Dockerfile',
    'images/spire-agent.Dockerfile',
    ...filesUnder(join(repoRoot, 'docs')).map((f) => relative(repoRoot, f)),
    ...filesUnder(join(repoRoot, 'examples')).map((f) => relative(repoRoot, f)),
  ]
    .map((f) => `${top}/${f}`)
    .sort();

describe('npm run release', () => {
  it('writes one archive per platform and a SHA256SUMS for them', () => {
    const names = readdirSync(out).sort();
    expect(names).toEqual(['SHA256SUMS', `spire-edge-attestors-${version}-linux-arm64.tar.gz`, `spire-edge-attestors-${version}-linux-x64.tar.gz`]);
    const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8').trim().split('\n');
    expect(sums.sort()).toEqual(names.filter((n) => n.endsWith('.tar.gz')).map((n) => `${sha256File(join(out, n))}  ${n}`).sort());
  });

  it('x64: exactly the binaries, docs, examples and licences under one top directory; SHA256SUMS verifies', async () => {
    const top = `spire-edge-attestors-${version}-linux-x64`;
    expect(filesUnder(unpacked).map((f) => relative(unpacked, f)).sort()).toEqual(expectedFiles(top));
    const { stdout } = await exec('sha256sum', ['-c', 'SHA256SUMS'], join(unpacked, top));
    expect(stdout.trim().split('\n')).toHaveLength(expectedFiles(top).length - 1);
    for (const b of BINARIES) expect(sha256File(join(unpacked, top, 'bin', b)), b).toBe(sha256File(seaBinary(b)));
  });

  it('x64: the unpacked binaries run and answer --version', async () => {
    const top = `spire-edge-attestors-${version}-linux-x64`;
    for (const b of BINARIES) {
      const { stdout } = await exec(join(unpacked, top, 'bin', b), ['--version'], unpacked);
      expect(stdout).toMatch(new RegExp(`^${b} ${version.replace(/\./g, '\\.')} \\(spire-edge-attestors; node v24\\.`));
    }
  });

  it('arm64: the same layout, AArch64 binaries, root-owned entries with one fixed mtime (reproducible)', async () => {
    const archive = join(out, `spire-edge-attestors-${version}-linux-arm64.tar.gz`);
    const top = `spire-edge-attestors-${version}-linux-arm64`;
    const { stdout } = await exec('tar', ['-tzvf', archive, '--numeric-owner']);
    const entries = stdout.trim().split('\n');
    const files = entries.filter((l) => l.startsWith('-')).map((l) => l.split(/\s+/).slice(5).join(' ')).sort();
    expect(files).toEqual(expectedFiles(top));
    for (const l of entries) expect(l.split(/\s+/)[1]).toBe('0/0');
    expect(new Set(entries.map((l) => l.split(/\s+/).slice(3, 5).join(' '))).size).toBe(1);
    const { stdout: head } = await exec('sh', ['-c', `tar -xzOf '${archive}' '${top}/bin/tpm-server' | head -c 20 | od -An -tx1`]);
    // ELF magic, 64-bit little-endian, e_machine 0xb7 (AArch64) at offset 18.
    expect(head.replace(/\s+/g, ' ').trim()).toMatch(/^7f 45 4c 46 02 01 .* b7 00$/);
  });
});

describe('container images built from the unpacked release archive', () => {
  const top = () => join(unpacked, `spire-edge-attestors-${version}-linux-x64`);
  const copies = (dockerfile: string) =>
    readFileSync(join(top(), 'images', dockerfile), 'utf8')
      .split('\n')
      .filter((l) => /^COPY\s/.test(l) && !/--from=/.test(l))
      .flatMap((l) => l.replace(/^COPY\s+/, '').split(/\s+/).filter((t) => !t.startsWith('--')).slice(0, -1));

  it.each(['spire-server.Dockerfile', 'spire-agent.Dockerfile'])('%s: every file it copies is in the archive, is a single executable, and is in SHA256SUMS', (dockerfile) => {
    const sources = copies(dockerfile);
    expect(sources.length).toBeGreaterThan(0);
    const sums = new Map(
      readFileSync(join(top(), 'SHA256SUMS'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => [l.slice(66), l.slice(0, 64)] as const),
    );
    for (const src of sources) {
      expect(statSync(join(top(), src)).isFile(), src).toBe(true);
      expect(sums.get(src), `${src} in SHA256SUMS`).toBe(sha256File(join(top(), src)));
      expect(sha256File(join(top(), src))).toBe(sha256File(seaBinary(src.replace(/^bin\//, '') as (typeof BINARIES)[number])));
    }
  });

  it("the archive's SPIRE configs pin the checksums of the archive's own binaries", () => {
    const confs = filesUnder(join(top(), 'examples')).filter((f) => f.endsWith('.conf'));
    let pinned = 0;
    for (const conf of confs) {
      for (const m of readFileSync(conf, 'utf8').matchAll(/plugin_cmd\s*=\s*"[^"]*\/([\w-]+)"\s*\n\s*plugin_checksum\s*=\s*"([0-9a-f]{64})"/g)) {
        expect(m[2], `${relative(top(), conf)}: ${m[1]}`).toBe(sha256File(join(top(), 'bin', m[1]!)));
        pinned++;
      }
    }
    expect(pinned).toBeGreaterThanOrEqual(4);
  });

  it('.dockerignore sends exactly the copied files as the build context', () => {
    const rules = readFileSync(join(top(), '.dockerignore'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(rules[0]).toBe('*');
    const allowed = rules.slice(1).map((r) => r.replace(/^!/, '')).sort();
    expect(allowed).toEqual([...new Set([...copies('spire-server.Dockerfile'), ...copies('spire-agent.Dockerfile')])].sort());
  });
});
