// `spire-edge-revoker` entry point (bundled to dist/bin/spire-edge-revoker by scripts/build.mjs). Not a plugin: it
// may write to stdout. SIGTERM/SIGINT stop `run` between steps; the committed offset makes the next start resume.
import { main } from './main.js';

const controller = new AbortController();
const running = process.argv[2] === 'run';
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    controller.abort();
    // Only `run` stops gracefully; a one-shot command (approve, status) is simply ended.
    if (!running) process.exit(sig === 'SIGTERM' ? 143 : 130);
  });
}

void main(process.argv.slice(2), {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
  signal: controller.signal,
}).then((code) => {
  process.exitCode = code;
  // The gRPC channel and timers would keep the loop alive after `run` returns.
  setImmediate(() => process.exit(code));
});
