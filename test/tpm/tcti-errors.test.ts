/**
 * When tpm2-tools cannot reach the TPM, the error says why (the tss2 library's cause, not only "Could not load
 * tcti") and hints at the fix. Real tpm2-tools against real missing devices, sockets and permissions.
 */
import * as grpc from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { GrpcCode, TpmToolFailed } from '../../src/errors.js';
import { Tpm2Tools } from '../../src/tpm/tools.js';
import { builtPlugin } from '../helpers/binaries.js';
import { aidAttestation, PluginHarness } from '../helpers/plugin-harness.js';

function absentDevice(): string {
  for (let i = 70; i < 99; i++) if (!existsSync(`/dev/tpmrm${i}`)) return `/dev/tpmrm${i}`;
  throw new Error('no free /dev/tpmrmN name');
}

/** A character device only root may open: opening it as nobody fails with EACCES before any I/O. */
function rootOnlyDevice(): string | undefined {
  for (const name of ['hwrng', 'cpu_dma_latency', 'btrfs-control', ...readdirSync('/dev')]) {
    const path = `/dev/${name}`;
    try {
      const s = statSync(path);
      if (s.isCharacterDevice() && s.uid === 0 && (s.mode & 0o077) === 0 && /^[A-Za-z0-9._-]+$/.test(name)) return path;
    } catch {
      // vanished or unreadable: try the next one
    }
  }
  return undefined;
}

function run(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, _stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: typeof err?.code === 'number' ? err.code : 0, stderr });
    });
  });
}

const harnesses: PluginHarness[] = [];
afterAll(async () => {
  for (const h of harnesses.splice(0)) await h.kill();
});

describe('tpm2-tools errors carry their cause', () => {
  it('a missing device: ENOENT and a hint to check firmware and driver', async () => {
    const device = absentDevice();
    const tpm = new Tpm2Tools({ tcti: `device:${device}` });
    const err = (await tpm.properties().catch((e) => e)) as TpmToolFailed;
    tpm.close();
    expect(err).toBeInstanceOf(TpmToolFailed);
    expect(err.grpcCode).toBe(GrpcCode.INTERNAL);
    expect(err.message).toContain(`could not load TCTI "device:${device}": Failed to open specified TCTI device file ${device}: No such file or directory`);
    expect(err.message).toMatch(/hint: .* does not exist: check that the TPM is enabled in firmware/);
  });

  it('no simulator at a socket: the connection failure and a hint', async () => {
    const tpm = new Tpm2Tools({ tcti: 'swtpm:path=/tmp/no-such-swtpm.sock' });
    const err = (await tpm.properties().catch((e) => e)) as TpmToolFailed;
    tpm.close();
    expect(err.message).toMatch(/Failed to connect to \/tmp\/no-such-swtpm\.sock/);
    expect(err.message).toMatch(/hint: nothing answers at \/tmp\/no-such-swtpm\.sock/);
  });

  it('a device the user may not open: EACCES and the tss group hint (built CLI run as nobody)', async () => {
    const device = rootOnlyDevice();
    const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
    const ready = device !== undefined && setpriv !== undefined && process.getuid?.() === 0;
    if (!ready) {
      // Needs root, setpriv and a root-only device node; CI has them, so their absence there is a failure.
      expect(process.env['CI'], 'CI must run this as root with setpriv and a root-only /dev node').not.toBe('true');
      return;
    }
    const res = await run(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, builtPlugin('spire-edge-attest'), 'ek-hash', '--tcti', `device:${device}`]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`Failed to open specified TCTI device file ${device}: Permission denied`);
    expect(res.stderr).toMatch(/hint: this user cannot open .*tss/);
  });

  it('through the built tpm-agent: the attestation fails INTERNAL with the cause and the hint', async () => {
    const device = absentDevice();
    const h = await PluginHarness.launch({ binary: builtPlugin('tpm-agent'), type: 'NodeAttestor' });
    harnesses.push(h);
    await h.init();
    await h.configure(`tpm_tcti = "device:${device}"\nek_kind = "rsa"`);
    const err = (await aidAttestation(h, async () => undefined).catch((e) => e)) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.INTERNAL);
    expect(err.details).toContain(`${device}: No such file or directory`);
    expect(err.details).toMatch(/hint: .*enabled in firmware/);
  });
});
