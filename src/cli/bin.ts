// `spire-edge-attest` entry point (bundled to dist/bin/spire-edge-attest by scripts/build.mjs). Not a plugin: no
// handshake cookie, and it may write to stdout. The exit code is set, not forced, so stdout drains first.
import { main } from './main.js';

process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0); // `… | head`: the reader is gone, stop quietly
  throw err;
});

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
