#!/usr/bin/env node
// npm run spire:install [-- <version>... | --newest]
//
// Builds the real spire-server and spire-agent that the end-to-end tests, the demo and the benchmarks run, from the
// Go modules pinned in tools/spire/<version>/ (go.mod + go.sum, one module per SPIRE version because each release
// pins its own dependency graph). Binaries land in .cache/spire/<version>/; .cache/spire/installed.json lists them.
// It also builds the other Go programs the tests use, pinned the same way in tools/<name>/ (kustomize, which
// renders kubeedge-demo's overlays), into .cache/tools/.
//
// - Idempotent: a version whose binaries exist and whose go.sum has not changed since they were built is skipped.
// - SPIRE_BIN_DIR=/path: use the spire-server and spire-agent already there instead of building (recorded as such).
// - Progress: a first build compiles about 1,500 packages and takes minutes on 2 cores, so a line is printed every
//   few seconds with the packages compiled so far.
//
// The Go module proxy serves SPIRE only by exact version (no version list), which is why the modules pin
// `tool github.com/spiffe/spire/cmd/...` at an exact version. The checksum database does not answer for some of
// SPIRE's dependencies here, so GOSUMDB is off: the committed go.sum is what pins every module's content, and
// -mod=readonly makes the build fail rather than accept anything go.sum does not already name.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const toolsDir = join(root, 'tools/spire');
const cacheDir = join(root, '.cache/spire');
const manifestPath = join(cacheDir, 'installed.json');

const log = (s) => process.stderr.write(`[spire:install] ${s}\n`);

/** The pinned versions, newest first. */
export function pinnedVersions() {
  return readdirSync(toolsDir)
    .filter((d) => /^v\d+\.\d+\.\d+$/.test(d) && existsSync(join(toolsDir, d, 'go.mod')))
    .sort((a, b) => compareSemver(b, a));
}

function compareSemver(a, b) {
  const pa = a.slice(1).split('.').map(Number);
  const pb = b.slice(1).split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

function versionOf(binary) {
  // `spire-server --version` prints the version on stderr (both binaries, every release we pin).
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  const m = /(\d+\.\d+\.\d+\S*)/.exec(out);
  if (r.status !== 0 || !m) throw new Error(`${binary} --version failed (exit ${r.status}): ${out || r.error?.message}`);
  return m[1];
}

function readManifest() {
  try {
    return JSON.parse(readFileSync(manifestPath, 'utf8'));
  } catch {
    return { spire: [] };
  }
}

function writeManifest(manifest) {
  mkdirSync(cacheDir, { recursive: true });
  manifest.spire.sort((a, b) => compareSemver(`v${b.version.replace(/-.*/, '')}`, `v${a.version.replace(/-.*/, '')}`));
  writeFileSync(manifestPath, JSON.stringify(manifest, null, 2) + '\n');
}

function goEnv() {
  return {
    ...process.env,
    CGO_ENABLED: '1', // the sqlite3 datastore driver is cgo
    GOSUMDB: 'off',
    GOFLAGS: '-mod=readonly',
    GOTOOLCHAIN: process.env.GOTOOLCHAIN ?? 'local',
  };
}

function fmtElapsed(ms) {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

async function build(version) {
  const moduleDir = join(toolsDir, version);
  const outDir = join(cacheDir, version);
  const stamp = createHash('sha256')
    .update(readFileSync(join(moduleDir, 'go.mod')))
    .update(readFileSync(join(moduleDir, 'go.sum')))
    .digest('hex');
  const stampPath = join(outDir, 'stamp');
  const server = join(outDir, 'spire-server');
  const agent = join(outDir, 'spire-agent');
  if (existsSync(server) && existsSync(agent) && existsSync(stampPath) && readFileSync(stampPath, 'utf8').trim() === stamp) {
    log(`${version}: up to date in ${outDir}`);
    return { version: versionOf(server), pinned: version, dir: outDir, source: 'built' };
  }
  if (spawnSync('go', ['version'], { stdio: 'ignore' }).status !== 0) {
    throw new Error('Go is not installed: install Go ≥ 1.26 to build SPIRE, or set SPIRE_BIN_DIR to existing binaries');
  }
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const pkgs = ['github.com/spiffe/spire/cmd/spire-server', 'github.com/spiffe/spire/cmd/spire-agent'];

  // `go list -deps` downloads exactly the modules the two commands need (not `go mod download`, which also asks
  // for modules of the graph that are never built, some of which the proxy does not serve).
  log(`${version}: resolving packages (downloads modules on a fresh machine)…`);
  const list = spawnSync('go', ['list', '-deps', ...pkgs], { cwd: moduleDir, env: goEnv(), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (list.status !== 0) throw new Error(`go list failed in ${moduleDir}:\n${list.stderr}`);
  const total = list.stdout.split('\n').filter(Boolean).length;

  const tag = version.slice(1);
  const ldflags = `-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=${tag}`;
  log(`${version}: building spire-server and spire-agent (${total} packages; the first build takes several minutes)…`);
  const started = Date.now();
  let compiled = 0;
  const ticker = setInterval(() => log(`${version}: ${compiled}/${total} packages compiled, ${fmtElapsed(Date.now() - started)}`), 10_000);
  try {
    await run('go', ['build', '-v', '-trimpath', `-ldflags=${ldflags}`, '-o', `${outDir}/`, ...pkgs], moduleDir, (line) => {
      if (/^[\w.\-/]+$/.test(line)) compiled++;
    });
  } finally {
    clearInterval(ticker);
  }
  const built = versionOf(server);
  if (built !== tag) throw new Error(`${server} reports version ${built}, expected ${tag}`);
  writeFileSync(stampPath, stamp + '\n');
  log(`${version}: built in ${fmtElapsed(Date.now() - started)} → ${outDir}`);
  return { version: built, pinned: version, dir: outDir, source: 'built' };
}

function run(cmd, args, cwd, onStderrLine) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: goEnv(), stdio: ['ignore', 'inherit', 'pipe'] });
    let tail = '';
    let partial = '';
    child.stderr.setEncoding('utf8').on('data', (chunk) => {
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        onStderrLine(line);
        if (!/^[\w.\-/]+$/.test(line)) tail = (tail + line + '\n').slice(-8000);
      }
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.slice(0, 2).join(' ')} failed (${code ?? signal}) in ${cwd}:\n${tail}${partial}`));
    });
  });
}

/** Another pinned Go program (tools/<name>/go.mod) → .cache/tools/<name>, rebuilt when its go.sum changes. */
async function buildTool(name, pkg) {
  const moduleDir = join(root, 'tools', name);
  const outDir = join(root, '.cache/tools');
  const out = join(outDir, name);
  const stampPath = `${out}.stamp`;
  const stamp = createHash('sha256').update(readFileSync(join(moduleDir, 'go.mod'))).update(readFileSync(join(moduleDir, 'go.sum'))).digest('hex');
  if (existsSync(out) && existsSync(stampPath) && readFileSync(stampPath, 'utf8').trim() === stamp) {
    log(`${name}: up to date (${out})`);
    return;
  }
  mkdirSync(outDir, { recursive: true });
  log(`${name}: building ${pkg}…`);
  const started = Date.now();
  await run('go', ['build', '-trimpath', '-ldflags=-s -w', '-o', out, pkg], moduleDir, () => undefined);
  writeFileSync(stampPath, stamp + '\n');
  log(`${name}: built in ${fmtElapsed(Date.now() - started)} → ${out}`);
}

function useExisting(dir) {
  const server = join(dir, 'spire-server');
  const agent = join(dir, 'spire-agent');
  for (const b of [server, agent]) if (!existsSync(b)) throw new Error(`SPIRE_BIN_DIR=${dir} has no ${b}`);
  const version = versionOf(server);
  const agentVersion = versionOf(agent);
  if (agentVersion !== version) throw new Error(`SPIRE_BIN_DIR: spire-server is ${version} but spire-agent is ${agentVersion}`);
  log(`using SPIRE ${version} from SPIRE_BIN_DIR=${dir}`);
  return { version, pinned: null, dir, source: 'SPIRE_BIN_DIR' };
}

async function main() {
  const manifest = readManifest();
  const keep = (entry) => {
    manifest.spire = manifest.spire.filter((e) => e.dir !== entry.dir);
    manifest.spire.push(entry);
    writeManifest(manifest);
  };
  if (process.env.SPIRE_BIN_DIR) {
    keep(useExisting(process.env.SPIRE_BIN_DIR));
    await buildTool('kustomize', 'sigs.k8s.io/kustomize/kustomize/v5');
    return;
  }
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const pinned = pinnedVersions();
  for (const v of wanted) if (!pinned.includes(v)) throw new Error(`${v} is not pinned; pinned: ${pinned.join(', ')}`);
  const chosen = process.argv.includes('--newest') ? pinned.slice(0, 1) : wanted.length > 0 ? wanted : pinned;
  for (const v of chosen) keep(await build(v));
  if (wanted.length === 0 && !process.argv.includes('--newest')) await buildTool('kustomize', 'sigs.k8s.io/kustomize/kustomize/v5');
  log(`ready: ${manifest.spire.map((e) => `${e.version} (${e.dir})`).join(', ')}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    log(`failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
