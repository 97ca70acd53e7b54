#!/usr/bin/env node
// `npm run release`: builds (unless --no-build), then writes per platform
//   <out>/spire-edge-attestors-<version>-linux-<arch>.tar.gz
// holding one top directory with bin/ (the Node single executables), docs/, examples/, the project files, the
// licences of what the binaries contain (THIRD_PARTY_LICENSES, LICENSE.node), the container image Dockerfiles
// (images/, with .dockerignore at the top: the unpacked archive is their build context) and SHA256SUMS (`sha256sum -c` form, one
// line per file in the archive). <out> (default dist/release) also gets SHA256SUMS for the archives. The archives are
// reproducible: sorted entries, root owner, mtime of the last commit (or SOURCE_DATE_EPOCH), gzip without a timestamp.
//   node scripts/release.mjs [--no-build] [--out DIR] [--arch x64,arm64]
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SEA_ARCHS, SEA_NODE_VERSION } from './sea.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const argv = process.argv.slice(2);
const option = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const out = resolve(root, option('--out') ?? 'dist/release');
const archs = option('--arch')?.split(',') ?? SEA_ARCHS;
const BINARIES = ['tpm-server', 'tpm-agent', 'edge-workload', 'spire-edge-attest'];
const PROJECT_FILES = ['README.md', 'LICENSE', 'NOTICE', 'CHANGELOG.md', 'SECURITY.md'];
/** The images built from an unpacked archive (the greeter demo service is built from the repository instead). */
const IMAGE_FILES = ['spire-server.Dockerfile', 'spire-agent.Dockerfile'];

const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const log = (msg) => process.stderr.write(`[release] ${msg}\n`);
const sha256 = (path) => createHash('sha256').update(readFileSync(path)).digest('hex');

function filesUnder(dir) {
  return readdirSync(dir)
    .flatMap((name) => {
      const p = join(dir, name);
      return statSync(p).isDirectory() ? filesUnder(p) : [p];
    })
    .sort();
}

function sourceDateEpoch() {
  if (process.env.SOURCE_DATE_EPOCH) return process.env.SOURCE_DATE_EPOCH;
  try {
    return execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: root, encoding: 'utf8' }).trim();
  } catch {
    return '0';
  }
}

if (!argv.includes('--no-build')) {
  log('building (node scripts/build.mjs)');
  execFileSync(process.execPath, [join(root, 'scripts/build.mjs'), '--quiet'], { cwd: root, stdio: 'inherit' });
}

mkdirSync(out, { recursive: true });
const mtime = sourceDateEpoch();
const archives = [];
for (const arch of archs) {
  const name = `spire-edge-attestors-${version}-linux-${arch}`;
  const stage = join(out, name);
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(join(stage, 'bin'), { recursive: true });
  for (const bin of BINARIES) {
    const sea = join(root, 'dist/sea', `linux-${arch}`, bin);
    if (!existsSync(sea)) throw new Error(`${sea} is missing: run npm run build`);
    copyFileSync(sea, join(stage, 'bin', bin));
  }
  for (const file of PROJECT_FILES) copyFileSync(join(root, file), join(stage, file));
  copyFileSync(join(root, 'dist/THIRD_PARTY_LICENSES'), join(stage, 'THIRD_PARTY_LICENSES'));
  const nodeLicence = join(root, `node_modules/.cache/sea-runtime/node-linux-${arch}-${SEA_NODE_VERSION}/LICENSE`);
  if (!existsSync(nodeLicence)) throw new Error(`${nodeLicence} is missing: run npm run build`);
  copyFileSync(nodeLicence, join(stage, 'LICENSE.node'));
  cpSync(join(root, 'docs'), join(stage, 'docs'), { recursive: true });
  cpSync(join(root, 'examples'), join(stage, 'examples'), { recursive: true });
  // The archive's SPIRE configs pin the checksums of the archive's own binaries (the repository's carry placeholders).
  for (const conf of filesUnder(join(stage, 'examples')).filter((f) => f.endsWith('.conf'))) {
    const text = readFileSync(conf, 'utf8');
    const pinned = text.replace(/(plugin_cmd\s*=\s*"[^"]*\/([\w-]+)"\s*\n\s*plugin_checksum\s*=\s*")[0-9a-fA-F]{64}(")/g, (all, head, name, tail) =>
      existsSync(join(stage, 'bin', name)) ? `${head}${sha256(join(stage, 'bin', name))}${tail}` : all,
    );
    writeFileSync(conf, pinned);
  }
  // The unpacked archive is the build context of the container images (images/*.Dockerfile).
  mkdirSync(join(stage, 'images'));
  for (const f of IMAGE_FILES) copyFileSync(join(root, 'kubeedge-demo/images', f), join(stage, 'images', f));
  copyFileSync(join(root, 'kubeedge-demo/images/.dockerignore'), join(stage, '.dockerignore'));

  const sums = filesUnder(stage).map((f) => `${sha256(f)}  ${relative(stage, f)}`);
  writeFileSync(join(stage, 'SHA256SUMS'), sums.join('\n') + '\n');

  const archive = join(out, `${name}.tar.gz`);
  log(`writing ${relative(root, archive)}`);
  execFileSync(
    'tar',
    ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', `--mtime=@${mtime}`, '--mode=u+rwX,go+rX,go-w',
      '--use-compress-program=gzip -n -6', '-C', out, '-cf', archive, name],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  rmSync(stage, { recursive: true, force: true });
  archives.push({ file: `${name}.tar.gz`, sha256: sha256(archive) });
}
const lines = archives.map((a) => `${a.sha256}  ${a.file}`);
writeFileSync(join(out, 'SHA256SUMS'), lines.join('\n') + '\n');
for (const line of lines) process.stderr.write(`${line}\n`);
