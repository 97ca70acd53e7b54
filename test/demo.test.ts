/**
 * `npm run demo` is the main job: on real SPIRE it must show an agent SVID, a workload SVID, an mTLS exchange, a
 * re-attesting rotation and a boot change that loses the identity, print only plugin checksums, and leave no
 * cgroup behind.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/binaries.js';
import { cgroupRoot } from './helpers/edge-node.js';
import { NO_SPIRE_NOTE, spireUnderTest } from './helpers/spire.js';

const installs = spireUnderTest();

describe('npm run demo', () => {
  it('on real SPIRE: SVIDs issued, mTLS, re-attestation, then the identity lost; nothing left behind', async ({ skip }) => {
    if (installs.length === 0) return skip(NO_SPIRE_NOTE);
    const out = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'scripts/demo.ts', '--no-build'], { cwd: repoRoot, timeout: 240_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: stdout + stderr });
      });
    });
    expect(out.code, out.stdout).toBe(0);
    const s = out.stdout;
    expect(s).toMatch(/real SPIRE \d+\.\d+\.\d+/);
    expect(s).toMatch(/agent SVID: spiffe:\/\/edge\.example\/spire\/agent\/tpm\/[0-9a-f]{64}/);
    expect(s).toMatch(/serial \d+, expires 20\d\d-/);
    expect(s).toContain('spire-agent api fetch x509 → spiffe://edge.example/ns/edge/sa/sensor');
    expect(s).toMatch(/greeter-client → greeter-server: HTTP 200/);
    expect(s).toMatch(/re-attested: decision "accepted".*new agent SVID serial \d+/);
    expect(s).toMatch(/next re-attestation refused after \d+ ms: rule /);
    expect(s).toMatch(/spire-agent exited \(code 1\)/);
    // Only the three plugins' checksums, not the CLI's or the test plugins'.
    const checksums = s.split('\n').filter((l) => l.includes('plugin_checksum = '));
    expect(checksums.map((l) => l.trim().split(/\s+/)[0]).sort()).toEqual(['dist/bin/edge-workload', 'dist/bin/tpm-agent', 'dist/bin/tpm-server']);
    // Every pod cgroup the demo made is gone (other tests may be making their own meanwhile, so only these count).
    const cleaned = /cleaned up: processes stopped, (\d+) cgroup directories removed \(([^)]*)\)/.exec(s);
    expect(cleaned, 'the demo reports its cleanup').not.toBeNull();
    const podDirs = cleaned![2]!.split(', ').filter(Boolean);
    expect(podDirs.length).toBe(3);
    for (const d of podDirs) {
      expect(d.startsWith(`${cgroupRoot()}/kubepods/besteffort/pod`)).toBe(true);
      expect(existsSync(d), d).toBe(false);
    }
  }, 300_000);
});
