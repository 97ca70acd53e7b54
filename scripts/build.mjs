#!/usr/bin/env node
// Builds one self-contained executable file per plugin into dist/bin/ (a single bundled
// CommonJS file with a node shebang: plugin_checksum then covers all of our code), and the
// conformance test plugins into dist/test-bin/, and the `spire-edge-attest` CLI (src/cli/bin.ts)
// into dist/bin/. Prints each file's sha256 for plugin_checksum.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const quiet = process.argv.includes('--quiet');

const groups = [
  { dir: 'plugins', out: 'dist/bin' },
  { dir: 'test/plugins', out: 'dist/test-bin' },
];
/** Single entry points outside the plugin directories (the CLI is not a plugin but ships the same way). */
const extraEntries = [
  { src: 'src/cli/bin.ts', out: 'dist/bin', name: 'spire-edge-attest' },
  { src: 'src/revocation/bin.ts', out: 'dist/bin', name: 'spire-edge-revoker' },
];

const jobs = [];
for (const { dir, out } of groups) {
  const srcDir = join(root, dir);
  if (!existsSync(srcDir)) continue;
  const entries = readdirSync(srcDir).filter((f) => f.endsWith('.ts')).sort();
  for (const entry of entries) jobs.push({ src: join(srcDir, entry), out, name: basename(entry, '.ts') });
}
for (const { src, out, name } of extraEntries) jobs.push({ src: join(root, src), out, name });

const results = [];
for (const { src, out, name } of jobs) {
  mkdirSync(join(root, out), { recursive: true });
  const outfile = join(root, out, name);
  await build({
    entryPoints: [src],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    keepNames: true,
    legalComments: 'none',
    banner: { js: '#!/usr/bin/env node' },
    logLevel: 'error',
  });
  chmodSync(outfile, 0o755);
  const sha256 = createHash('sha256').update(readFileSync(outfile)).digest('hex');
  results.push({ file: `${out}/${name}`, sha256 });
}
// The bundles are CommonJS; this keeps them so when run in place under our "type": "module" root.
writeFileSync(join(root, 'dist/package.json'), '{ "type": "commonjs" }\n');
writeFileSync(join(root, 'dist/checksums.json'), JSON.stringify(results, null, 2) + '\n');
if (!quiet) {
  for (const r of results) process.stderr.write(`${r.sha256}  ${r.file}\n`);
}
