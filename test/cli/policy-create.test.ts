import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { GrpcCode, InvalidConfig } from '../../src/errors.js';
import { createPolicyCommand } from '../../src/cli/policy-create.js';
import { parsePolicyFile } from '../../src/policy/policy.js';
import { expectError } from '../tpm/expect-error.js';

const log = (name: string) => readFileSync(join(import.meta.dirname, '../fixtures/eventlog', `${name}.bin`));

describe('createPolicyCommand', () => {
  it('turns a golden log into a valid YAML policy with PCRs, Secure Boot, boot apps, kernel and command line', () => {
    const text = createPolicyCommand(log('gtt-cos-85-amd-sev'), { name: 'golden-node', pcrs: [0, 2, 4, 7] });
    const [policy] = parsePolicyFile(text);
    expect(policy!.name).toBe('golden-node');
    expect(policy!.pcrs.get('sha256')!.get(7)).toBe('3365d7fa2b024c852913c06e04ffbfa6ea5289f743bbf1a76f7ffdf21ed84793');
    // The default banks are the server's default pcr_selection's (sha256): the log's sha1 and sha384 are left out.
    expect([...policy!.pcrs.keys()]).toEqual(['sha256']);
    expect(policy!.secureBoot).toBe(true);
    expect([...policy!.bootApplications!]).toEqual([
      'dba8d69ffb244496ac8ab2950695d3da539d6ac5ec660fc6b4bdde245284cf23',
      'f7bad83f87940312e4642530a9a6242e88529dc37a497d7d4e7c1c070566d542',
      '6f6afb3caed004e727200a0c310731bd8ab4cd391b2d95cedf67d08e1e8e5e7e',
    ]);
    expect(policy!.kernelCmdline).toHaveLength(1);
    expect(policy!.bootLoader).toBe('grub');
    expect(Object.keys(parse(text).policies[0])).toEqual(['name', 'pcrs', 'secure_boot', 'boot_applications', 'kernels', 'kernel_cmdline', 'boot_loader']);
  });

  it('defaults to PCRs 0, 2, 4, 7 and omits secure_boot when the golden node had it off', () => {
    const [policy] = parsePolicyFile(createPolicyCommand(log('kl-binary_bios_measurements'), { name: 'kl' }));
    expect([...policy!.pcrs.get('sha256')!.keys()]).toEqual([0, 2, 4, 7]);
    expect(policy!.secureBoot).toBe(false);
  });

  it('a systemd-boot log yields the PCR 12 command line', () => {
    const [policy] = parsePolicyFile(createPolicyCommand(log('tt-event-sd-boot-fedora37'), { name: 'sd', pcrs: [12] }));
    expect(policy!.kernelCmdline!.map((r) => r.test(' console=ttyS0 console=tty0 efi=debug '))).toEqual([true]);
  });

  it('banks: pins the PCRs in exactly the banks asked for', () => {
    const [policy] = parsePolicyFile(createPolicyCommand(log('gtt-cos-85-amd-sev'), { name: 'g', pcrs: [7], banks: ['sha1', 'sha384'] }));
    expect([...policy!.pcrs.keys()]).toEqual(['sha1', 'sha384']);
    expect(policy!.pcrs.get('sha384')!.get(7)).toMatch(/^[0-9a-f]{96}$/);
  });

  it('an invalid policy name is InvalidConfig', () => {
    expectError(() => createPolicyCommand(log('gtt-cos-85-amd-sev'), { name: 'bad name!' }), InvalidConfig, 'ERR_POLICY_INVALID', GrpcCode.INVALID_ARGUMENT);
  });
});
