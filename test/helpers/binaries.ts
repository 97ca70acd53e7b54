import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** Path of a built plugin; `npm test` builds first, so a missing file is a setup error. */
export function builtPlugin(name: string, group: 'bin' | 'test-bin' = 'bin'): string {
  const path = `${repoRoot}dist/${group}/${name}`;
  if (!existsSync(path)) throw new Error(`${path} is missing: run npm run build (npm test does it)`);
  return path;
}
