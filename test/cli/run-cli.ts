/** Runs the built `spire-edge-attest` as an operator does: a child process, with its exit code and output. */
import { execFile } from 'node:child_process';
import { builtPlugin } from '../helpers/binaries.js';

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCli(args: readonly string[], options: { cwd?: string } = {}): Promise<CliRun> {
  const bin = builtPlugin('spire-edge-attest');
  return new Promise((resolve, reject) => {
    execFile(bin, [...args], { timeout: 120_000, maxBuffer: 64 * 1024 * 1024, ...(options.cwd ? { cwd: options.cwd } : {}) }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(err);
        return;
      }
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}
