/**
 * `npm run demo` on this machine: it must leave no cgroup behind (it creates kubepods/besteffort/pod<uid>/<cid>
 * under the cgroup v1 pids hierarchy) and print a plugin_checksum only for the plugins, not for the CLI or the test
 * plugins. Only these two properties are checked, so the demo's story can change freely.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';

const PIDS_V1 = '/sys/fs/cgroup/pids';

function runDemo(): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(join(repoRoot, 'node_modules/.bin/tsx'), ['scripts/demo.ts'], { cwd: repoRoot, timeout: 240_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

describe('npm run demo', () => {
  it('prints only plugin checksums and leaves no cgroup behind', async () => {
    const canCgroup = existsSync(join(PIDS_V1, 'cgroup.procs')) && process.getuid?.() === 0;
    if (!canCgroup) expect(process.env['CI'], 'CI runs as root on cgroup v1 with the pids hierarchy').not.toBe('true');
    const kubepodsBefore = existsSync(join(PIDS_V1, 'kubepods'));
    const podsBefore = kubepodsBefore && existsSync(join(PIDS_V1, 'kubepods/besteffort')) ? new Set(readdirSync(join(PIDS_V1, 'kubepods/besteffort'))) : new Set<string>();

    const res = await runDemo();
    expect(res.code, res.stderr).toBe(0);

    const printed = [...res.stdout.matchAll(/(\S+)\s+plugin_checksum = "[0-9a-f]{64}"/g)].map((m) => m[1]);
    const plugins = readdirSync(join(repoRoot, 'plugins'))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => `dist/bin/${f.slice(0, -3)}`);
    expect(printed.sort()).toEqual(plugins.sort());

    if (canCgroup) {
      // The workload step really ran in a cgroup (otherwise the check below would prove nothing).
      expect(res.stdout).not.toMatch(/skipped: cannot create a cgroup/);
      // Other test runs on this machine create kubepods cgroups too: blame the demo only for what is its own,
      // pod<uuid>/<sha256(uuid)>, and for an empty kubepods tree it created.
      const besteffort = join(PIDS_V1, 'kubepods/besteffort');
      const pods = existsSync(besteffort) ? readdirSync(besteffort).filter((d) => d.startsWith('pod')) : [];
      const demoPods = pods.filter((d) => !podsBefore.has(d) && existsSync(join(besteffort, d, createHash('sha256').update(d.slice(3)).digest('hex'))));
      expect(demoPods, 'pod cgroups the demo left').toEqual([]);
      if (!kubepodsBefore && existsSync(join(PIDS_V1, 'kubepods'))) {
        expect(pods.length, 'the demo left an empty /sys/fs/cgroup/pids/kubepods tree').toBeGreaterThan(0);
      }
    }
  }, 300_000);
});
