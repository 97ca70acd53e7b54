#!/usr/bin/env node
// Builds one self-contained executable file per plugin into dist/bin/ (a single bundled
// CommonJS file with a node shebang: plugin_checksum then covers all of our code), and the
// conformance test plugins into dist/test-bin/, and the `spire-edge-attest` CLI (src/cli/bin.ts)
// into dist/bin/. Then a Node single-executable application (scripts/sea.mjs) of each dist/bin binary into
// dist/sea/linux-<arch>/ (skip with --no-sea). Prints each file's sha256 for plugin_checksum.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSeas } from './sea.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const quiet = process.argv.includes('--quiet');
const withSea = !process.argv.includes('--no-sea');

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
/** node_modules package directories bundled into the shipped binaries (dist/bin), for dist/THIRD_PARTY_LICENSES. */
const bundledPackages = new Set();
for (const { src, out, name } of jobs) {
  mkdirSync(join(root, out), { recursive: true });
  const outfile = join(root, out, name);
  const { metafile } = await build({
    metafile: true,
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
  if (out === 'dist/bin') {
    for (const input of Object.keys(metafile.inputs)) {
      const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
      if (m) bundledPackages.add(m[1]);
    }
  }
  const sha256 = createHash('sha256').update(readFileSync(outfile)).digest('hex');
  results.push({ file: `${out}/${name}`, sha256 });
}
if (withSea) {
  const bundles = results
    .filter((r) => r.file.startsWith('dist/bin/'))
    .map((r) => ({ name: basename(r.file), file: join(root, r.file) }));
  results.push(...(await buildSeas({ root, bundles })));
}
writeFileSync(join(root, 'dist/THIRD_PARTY_LICENSES'), thirdPartyLicenses([...bundledPackages]));
// The bundles are CommonJS; this keeps them so when run in place under our "type": "module" root.
writeFileSync(join(root, 'dist/package.json'), '{ "type": "commonjs" }\n');
writeFileSync(join(root, 'dist/checksums.json'), JSON.stringify(results, null, 2) + '\n');
if (!quiet) {
  for (const r of results) process.stderr.write(`${r.sha256}  ${r.file}\n`);
}

/** Bundling drops the packages' own notices (legalComments: 'none'), so their licences ship in one file instead. */
function thirdPartyLicenses(dirs) {
  const packages = dirs
    .map((dir) => {
      const manifest = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'));
      const licenceFile = readdirSync(join(root, dir)).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
      const text = licenceFile
        ? readFileSync(join(root, dir, licenceFile), 'utf8').trim()
        : `(the package ships no licence file; its package.json says "${manifest.license ?? 'nothing'}")`;
      return { id: `${manifest.name}@${manifest.version}`, license: manifest.license ?? 'UNKNOWN', text };
    })
    .sort((a, b) => a.id.localeCompare(b.id));
  const unique = packages.filter((p, i) => i === 0 || packages[i - 1].id !== p.id);
  const header = 'Third-party packages bundled into the spire-edge-attestors binaries, with their licences.\n';
  return header + unique.map((p) => `\n${'='.repeat(78)}\n${p.id} (${p.license})\n${'='.repeat(78)}\n\n${p.text}\n`).join('');
}
