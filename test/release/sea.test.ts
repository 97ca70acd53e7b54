/**
 * The Node single executables (dist/sea): self-contained. Each plugin SEA, copied alone into an empty directory and
 * started there with no `node` on PATH and a hostile NODE_OPTIONS, completes the go-plugin handshake and a
 * Configure, maps no file but itself and system libraries, and never runs the NODE_OPTIONS code. The linux-arm64 ones
 * are checked here as files (AArch64 ELF, fuse flipped, our bundle embedded) and run in sea-arm64-qemu.test.ts.
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { BINARIES, PLUGINS, seaBinary, sha256File } from './artifacts.js';

const FUSE_ON = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2:1';
const ELF_MACHINE = { x64: 62, arm64: 183 } as const;

const TYPE = { 'tpm-server': 'NodeAttestor', 'tpm-agent': 'NodeAttestor', 'edge-workload': 'WorkloadAttestor' } as const;
const HCL = {
  'tpm-server': `ek_hash_allowlist = ["${'cd'.repeat(32)}"]`,
  'tpm-agent': 'ek_kind = "rsa"',
  'edge-workload': 'pod_source = "none"',
} as const;

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function noNodeOn(path: string): boolean {
  return path.split(delimiter).every((dir) => !existsSync(join(dir, 'node')));
}

describe('linux-x64 SEA plugins are self-contained', () => {
  it.each(PLUGINS)('%s: from an empty directory, no node on PATH, NODE_OPTIONS ignored: handshake, Init, Configure, unload', async (name) => {
    const home = mkdtempSync(join(tmpdir(), 'sea-alone-'));
    const cwd = mkdtempSync(join(tmpdir(), 'sea-cwd-'));
    const emptyBin = mkdtempSync(join(tmpdir(), 'sea-path-'));
    cleanups.push(() => {
      for (const d of [home, cwd, emptyBin]) rmSync(d, { recursive: true, force: true });
    });
    const binary = join(home, name);
    copyFileSync(seaBinary(name), binary);
    expect(statSync(binary).mode & 0o111).not.toBe(0);
    const marker = join(home, 'node-options-ran');
    const hostile = join(home, 'hostile.cjs');
    writeFileSync(hostile, `require('fs').writeFileSync(${JSON.stringify(marker)}, 'ran')\n`);
    const env = { PATH: emptyBin, NODE_OPTIONS: `--require ${hostile}`, NODE_PATH: home, HOME: cwd, PWD: cwd };
    expect(noNodeOn(env.PATH)).toBe(true);

    // The harness spawns in our working directory: move into the empty one for the launch.
    const previous = process.cwd();
    process.chdir(cwd);
    let h: PluginHarness;
    try {
      h = await PluginHarness.launch({ binary, type: TYPE[name], env });
    } finally {
      process.chdir(previous);
    }
    cleanups.push(() => h.kill());
    expect(h.handshakeLine).toMatch(/^1\|1\|unix\|\/\S+\|grpc\|$/);
    expect(await h.unary(ServiceNames.health, 'Check', { service: 'plugin' })).toEqual({ status: 'SERVING' });
    await h.init();
    await expect(h.configure(HCL[name])).resolves.toEqual({});
    // plugin_checksum of the copy is the checksum of the build: runtime and code are one file.
    const infoLine = () => h.stderrLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['@message'] === 'Configuring plugin');
    for (let i = 0; i < 100 && !infoLine(); i++) await new Promise((r) => setTimeout(r, 20)); // stderr may trail the gRPC reply
    const info = infoLine();
    expect(info).toMatchObject({ form: 'sea', file: binary, build_sha256: sha256File(seaBinary(name)) });

    // Nothing mapped but the executable itself and system libraries (no .node addon, no other file).
    const maps = readFileSync(`/proc/${h.child.pid}/maps`, 'utf8')
      .split('\n')
      .map((l) => l.split(/\s+/).slice(5).join(' '))
      .filter((f) => f.startsWith('/'));
    const foreign = [...new Set(maps)].filter((f) => f !== binary && !/^\/(usr\/)?lib(64|x32)?\//.test(f));
    expect(foreign).toEqual([]);

    const result = await h.unload(10_000);
    expect(result).toMatchObject({ code: 0, killed: false });
    expect(existsSync(marker)).toBe(false);
    expect(readdirSync(home).sort()).toEqual(['hostile.cjs', name].sort());
  });

  it.each(BINARIES)('%s: the SEA fuse is flipped and the bundle is embedded byte for byte', (name) => {
    const sea = readFileSync(seaBinary(name));
    expect(sea.includes(FUSE_ON)).toBe(true);
    expect(sea.includes(readFileSync(builtPlugin(name)))).toBe(true);
  });
});

describe('linux-arm64 SEAs as files', () => {
  it.each(BINARIES)('%s: AArch64 ELF with the SEA fuse flipped and the same bundle as x64', (name) => {
    const sea = readFileSync(seaBinary(name, 'arm64'));
    expect(sea.subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    expect(sea.readUInt16LE(18)).toBe(ELF_MACHINE.arm64);
    expect(readFileSync(seaBinary(name)).readUInt16LE(18)).toBe(ELF_MACHINE.x64);
    expect(sea.includes(FUSE_ON)).toBe(true);
    expect(sea.includes(readFileSync(builtPlugin(name)))).toBe(true);
  });
});
