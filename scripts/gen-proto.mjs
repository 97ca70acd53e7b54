#!/usr/bin/env node
// Compiles proto/**/*.proto into one protobufjs JSON descriptor that the runtime bundles
// (src/plugin/generated/descriptors.json). With --check it only verifies the file is current.
import { readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const protoDir = join(root, 'proto');
const outFile = join(root, 'src/plugin/generated/descriptors.json');

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.proto') ? [p] : [];
  });
}

const files = walk(protoDir).map((p) => relative(protoDir, p)).sort();
const pbRoot = new protobuf.Root();
pbRoot.resolvePath = (_origin, target) => {
  // Well-known types ship with protobufjs; everything else lives under proto/.
  if (target.startsWith('google/protobuf/')) return target;
  return join(protoDir, target);
};
pbRoot.loadSync(files, { keepCase: true });
pbRoot.resolveAll();
const json = JSON.stringify(pbRoot.toJSON({ keepComments: false }), null, 1) + '\n';

if (process.argv.includes('--check')) {
  const current = readFileSync(outFile, 'utf8');
  if (current !== json) {
    process.stderr.write('src/plugin/generated/descriptors.json is stale: run npm run proto\n');
    process.exit(1);
  }
} else {
  writeFileSync(outFile, json);
  process.stderr.write(`wrote ${relative(root, outFile)} from ${files.length} proto files\n`);
}
