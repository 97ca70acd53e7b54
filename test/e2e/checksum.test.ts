/**
 * plugin_checksum is enforced by SPIRE itself (go-plugin's SecureConfig, before the process starts): a wrong
 * checksum stops spire-server from loading our plugin, with SPIRE's own error, and the plugin never runs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { builtPlugin } from '../helpers/binaries.js';
import { NO_SPIRE_NOTE, sha256File, SpireServer, spireUnderTest, type SpireInstall } from '../helpers/spire.js';

const installs = spireUnderTest();
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function serverWithChecksum(spire: SpireInstall, checksum: string): Promise<SpireServer> {
  const dir = mkdtempSync(join(tmpdir(), 'e2e-checksum-'));
  dirs.push(dir);
  return SpireServer.start({
    spire,
    dir,
    waitReady: false,
    plugins: [{ type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-server'), checksum, data: { ek_hash_allowlist: ['00'.repeat(32)] } }],
  });
}

if (installs.length === 0) {
  describe('plugin_checksum under real SPIRE', () => {
    it('is enforced by every pinned SPIRE version', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(installs.map((s) => [s.version, s] as [string, SpireInstall]))('plugin_checksum under real SPIRE %s', (_v, spire) => {
  it('a wrong checksum: spire-server refuses to load the plugin with its own error and exits', async () => {
    const real = sha256File(builtPlugin('tpm-server'));
    const wrong = (real[0] === '0' ? '1' : '0') + real.slice(1);
    const server = await serverWithChecksum(spire, wrong);
    const exit = await server.proc.exited;
    expect(exit.code).not.toBe(0);
    const crashed = server.logs.find((l) => l.msg === 'Server crashed');
    expect(crashed?.['error']).toBe('failed to load plugin "tpm": failed to launch plugin: checksums did not match');
    // The plugin process was never started.
    expect(server.logs.some((l) => l.msg === 'plugin started')).toBe(false);
  });

  it('the real checksum: spire-server loads the plugin and serves', async () => {
    const server = await serverWithChecksum(spire, sha256File(builtPlugin('tpm-server')));
    try {
      await server.proc.waitForLog((l) => l.msg === 'Plugin loaded' && l['plugin_name'] === 'tpm', 60_000, 'plugin loaded');
      expect(server.logs.some((l) => l.msg === 'Plugin checksum not configured')).toBe(false);
    } finally {
      await server.stop();
    }
  });
});
