// Node single-executable applications (SEA) of the bundled binaries, used by scripts/build.mjs.
//
// Each SEA is the official Node 24 LTS binary from the npm registry package node-linux-<arch> (pinned version and
// integrity below; nothing comes from anywhere else) with our bundle injected by postject. The edge host then needs
// no Node, and plugin_checksum covers the runtime and our code together.
//
// The blob is always made by the x64 Node of the same version (the one that runs here); the blob format depends on
// the Node version, not the CPU, as long as neither a startup snapshot nor a code cache is embedded.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** Security updates: bump to the next 24.x patch (and its integrity from `npm view node-linux-<arch>@<v> dist.integrity`), rebuild. */
export const SEA_NODE_VERSION = '24.22.3';
const RUNTIME_INTEGRITY = {
  x64: 'sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==',
  arm64: 'sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==',
};
export const SEA_ARCHS = Object.keys(RUNTIME_INTEGRITY);
/** Node's SEA fuse; postject flips it so the binary looks for its blob. */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/**
 * V8 flags baked into every SEA (measured with bench/memory.ts; figures in bench/README.md). A 1 MiB semi-space suits a
 * long-lived server that allocates little per call (by default the young generation grows to tens of MiB);
 * --optimize-for-size makes V8 prefer compact heap and code over speed. No old-space cap: a 64 MiB message must not
 * be able to crash the plugin.
 */
export const SEA_EXEC_ARGV = ['--max-semi-space-size=1', '--optimize-for-size'];

const require = createRequire(import.meta.url);

function sha256File(path) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => hash.update(d))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

function integrityOf(path) {
  return `sha512-${createHash('sha512').update(readFileSync(path)).digest('base64')}`;
}

/** The pinned Node binary for `arch`, fetched once with `npm pack` into node_modules/.cache and checked against its integrity. */
export function seaRuntime(root, arch) {
  const expected = RUNTIME_INTEGRITY[arch];
  if (!expected) throw new Error(`no pinned Node runtime for linux-${arch}`);
  const cache = join(root, 'node_modules/.cache/sea-runtime');
  const dir = join(cache, `node-linux-${arch}-${SEA_NODE_VERSION}`);
  const node = join(dir, 'bin/node');
  if (existsSync(node)) return node;
  mkdirSync(cache, { recursive: true });
  const tgz = join(cache, `node-linux-${arch}-${SEA_NODE_VERSION}.tgz`);
  if (!existsSync(tgz)) {
    execFileSync('npm', ['pack', `node-linux-${arch}@${SEA_NODE_VERSION}`, '--pack-destination', cache, '--silent'], {
      cwd: cache,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }
  const actual = integrityOf(tgz);
  if (actual !== expected) {
    rmSync(tgz, { force: true });
    throw new Error(`node-linux-${arch}@${SEA_NODE_VERSION}: integrity ${actual} does not match the pinned ${expected}`);
  }
  const tmp = mkdtempSync(join(cache, 'extract-'));
  try {
    execFileSync('tar', ['-xzf', tgz, '-C', tmp, 'package/bin/node', 'package/LICENSE'], { stdio: ['ignore', 'ignore', 'inherit'] });
    rmSync(dir, { recursive: true, force: true });
    renameSync(join(tmp, 'package'), dir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return node;
}

/**
 * Builds dist/sea/linux-<arch>/<name> for every bundle and arch. A SEA whose inputs (bundle, runtime, flags, postject)
 * are unchanged since the last build is kept, so repeated `npm run build` stays fast.
 * @param {{ root: string, bundles: { name: string, file: string }[], archs?: string[] }} options
 * @returns {Promise<{ file: string, sha256: string, arch: string }[]>}
 */
export async function buildSeas({ root, bundles, archs = SEA_ARCHS }) {
  const postjectCli = require.resolve('postject/dist/cli.js');
  const postjectVersion = require('postject/package.json').version;
  const blobMaker = seaRuntime(root, 'x64');
  const stampDir = join(root, 'node_modules/.cache/sea-build');
  const work = join(root, 'node_modules/.cache/sea-work');
  mkdirSync(stampDir, { recursive: true });
  mkdirSync(work, { recursive: true });
  const results = [];
  for (const arch of archs) {
    const runtime = seaRuntime(root, arch);
    const outDir = join(root, 'dist/sea', `linux-${arch}`);
    mkdirSync(outDir, { recursive: true });
    for (const { name, file } of bundles) {
      const config = {
        main: file,
        output: join(work, `${name}-${arch}.blob`),
        disableExperimentalSEAWarning: true,
        // Cross-arch blobs must not carry a snapshot or code cache (V8 data for one CPU).
        useSnapshot: false,
        useCodeCache: false,
        execArgv: SEA_EXEC_ARGV,
        // NODE_OPTIONS and command-line Node flags must not reach the runtime: a SEA runs only the code inside it.
        execArgvExtension: 'none',
      };
      const key = createHash('sha256')
        .update(JSON.stringify({ ...config, main: undefined, output: undefined, SEA_NODE_VERSION, arch, postjectVersion }))
        .update(readFileSync(file))
        .digest('hex');
      const out = join(outDir, name);
      const stamp = join(stampDir, `${arch}-${name}.json`);
      if (existsSync(out) && existsSync(stamp)) {
        const previous = JSON.parse(readFileSync(stamp, 'utf8'));
        if (previous.key === key && previous.sha256 === (await sha256File(out))) {
          results.push({ file: `dist/sea/linux-${arch}/${name}`, sha256: previous.sha256, arch });
          continue;
        }
      }
      const configFile = join(work, `${name}-${arch}.sea.json`);
      writeFileSync(configFile, JSON.stringify(config, null, 2));
      try {
        execFileSync(blobMaker, ['--experimental-sea-config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (err) {
        throw new Error(`SEA blob for ${name} (linux-${arch}) failed: ${err.stderr?.toString() ?? err.message}`);
      }
      const tmp = `${out}.tmp`;
      copyFileSync(runtime, tmp);
      chmodSync(tmp, 0o755);
      // postject (LIEF) prints warnings about ELF note sections it does not know; show its output only when it fails.
      // The injection itself is checked by running the SEA in the tests.
      try {
        execFileSync(process.execPath, [postjectCli, tmp, 'NODE_SEA_BLOB', config.output, '--sentinel-fuse', SEA_FUSE], {
          stdio: ['ignore', 'pipe', 'pipe'],
          maxBuffer: 16 * 1024 * 1024,
        });
      } catch (err) {
        rmSync(tmp, { force: true });
        throw new Error(`postject failed for ${name} (linux-${arch}): ${err.stderr?.toString() ?? err.message}`);
      }
      renameSync(tmp, out);
      rmSync(config.output, { force: true });
      const sha256 = await sha256File(out);
      writeFileSync(stamp, JSON.stringify({ key, sha256 }) + '\n');
      results.push({ file: `dist/sea/linux-${arch}/${name}`, sha256, arch });
    }
  }
  return results;
}
