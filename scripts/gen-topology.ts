// Writes the SPIRE .conf files that the kustomize bases and overlays in kubeedge-demo/ embed, from
// kubeedge-demo/topology.ts (the functions the e2e tests run). With --check it only verifies they are current.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generatedConfigs } from '../kubeedge-demo/topology.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const check = process.argv.includes('--check');
const stale: string[] = [];
for (const [path, text] of Object.entries(generatedConfigs())) {
  const file = join(root, path);
  let current: string | undefined;
  try {
    current = readFileSync(file, 'utf8');
  } catch {
    current = undefined;
  }
  if (current === text) continue;
  if (check) stale.push(path);
  else {
    writeFileSync(file, text);
    process.stderr.write(`wrote ${path}\n`);
  }
}
if (stale.length > 0) {
  process.stderr.write(`stale (run npm run topology): ${stale.join(', ')}\n`);
  process.exit(1);
}
