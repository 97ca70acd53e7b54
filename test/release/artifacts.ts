/**
 * Paths of release artifacts written by `npm run build` (dist/sea) and `npm run release` (dist/release). `npm test`
 * builds first, so a missing SEA is a setup error and fails loudly, like builtPlugin.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { repoRoot } from '../helpers/binaries.js';

export const PLUGINS = ['tpm-server', 'tpm-agent', 'edge-workload'] as const;
export const BINARIES = [...PLUGINS, 'spire-edge-attest'] as const;
export type BinaryName = (typeof BINARIES)[number];

/** The single executable for `name`; only linux-x64 runs here (linux-arm64 is built, not run). */
export function seaBinary(name: BinaryName, arch: 'x64' | 'arm64' = 'x64'): string {
  const path = `${repoRoot}dist/sea/linux-${arch}/${name}`;
  if (!existsSync(path)) throw new Error(`${path} is missing: run npm run build (npm test does it)`);
  return path;
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export function packageVersion(): string {
  return (JSON.parse(readFileSync(`${repoRoot}package.json`, 'utf8')) as { version: string }).version;
}
