/**
 * The linux-arm64 single executables, run under qemu user-mode emulation (qemu-aarch64 with the Debian arm64 cross
 * libraries): each completes the go-plugin handshake, Init and Configure, and unloads cleanly. This is what shows that
 * a blob made by the x64 Node works in the arm64 Node of the same version. Needs `qemu-user`, `libc6-arm64-cross`,
 * `libstdc++6-arm64-cross` and `libgcc-s1-arm64-cross`; without them the test fails when CI=true and is skipped, with
 * a message, on a developer machine.
 */
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { PLUGINS, seaBinary, sha256File } from './artifacts.js';

const QEMU = '/usr/bin/qemu-aarch64';
const SYSROOT = '/usr/aarch64-linux-gnu';
const available = existsSync(QEMU) && existsSync(`${SYSROOT}/lib/ld-linux-aarch64.so.1`) && existsSync(`${SYSROOT}/lib/libstdc++.so.6`);
const MISSING = `${QEMU} or the arm64 cross libraries in ${SYSROOT} are missing: apt-get install qemu-user libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross`;

if (!available && process.env['CI'] !== 'true') process.stderr.write(`[sea-arm64-qemu] skipped: ${MISSING}\n`);

const TYPE = { 'tpm-server': 'NodeAttestor', 'tpm-agent': 'NodeAttestor', 'edge-workload': 'WorkloadAttestor' } as const;
const HCL = {
  'tpm-server': `ek_hash_allowlist = ["${'ef'.repeat(32)}"]`,
  'tpm-agent': 'ek_kind = "rsa"',
  'edge-workload': 'pod_source = "none"',
} as const;

const launched: PluginHarness[] = [];
afterEach(async () => {
  for (const h of launched.splice(0)) await h.kill();
});

describe.runIf(available || process.env['CI'] === 'true')('linux-arm64 SEA plugins under qemu-aarch64', () => {
  it('the emulator and the arm64 libraries are installed', () => {
    expect(available, MISSING).toBe(true);
  });

  it.each(PLUGINS)('%s: handshake, health, Init, Configure (build info names the arm64 file), unload', async (name) => {
    expect(available, MISSING).toBe(true);
    const binary = seaBinary(name, 'arm64');
    const h = await PluginHarness.launch({ binary: QEMU, args: ['-L', SYSROOT, binary], type: TYPE[name], startTimeoutMs: 90_000 });
    launched.push(h);
    expect(h.handshakeLine).toMatch(/^1\|1\|unix\|\/\S+\|grpc\|$/);
    expect(await h.unary(ServiceNames.health, 'Check', { service: 'plugin' })).toEqual({ status: 'SERVING' });
    await h.init();
    await expect(h.configure(HCL[name])).resolves.toEqual({});
    const infoLine = () => h.stderrLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['@message'] === 'Configuring plugin');
    for (let i = 0; i < 200 && !infoLine(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(infoLine()).toMatchObject({ form: 'sea', file: binary, build_sha256: sha256File(binary) });
    expect(infoLine()!['node']).toMatch(/^v24\./);
    const result = await h.unload(10_000);
    expect(result.code).toBe(0);
    expect(h.extraStdout).toEqual([]);
  }, 180_000);
});
