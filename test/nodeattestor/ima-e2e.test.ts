/**
 * Node-level IMA through both built plugins against a real swtpm: the test writes synthetic ima-ng / ima-cgpath
 * measurement lists, extends their template digests into PCR 10 (sha256) as the kernel would, and the server
 * verifies the list against PCR 10 in the quote and checks the runtime policy.
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { settingsHcl } from '../helpers/spire.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import { extendPcrs, startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';
import { imaDigest, type ImaEntry } from '../../src/tpm/ima/index.js';
import { decodePayload, decodeResponse } from '../../src/nodeattestor/wire.js';
import { fileDigest, synthEntries, toAsciiList, toBinaryList, type SynthEntry } from '../tpm/ima/synth.js';

const BOOT_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const POD_CGROUP = '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1f2e_3d4c.slice/cri-containerd-0123abcd.scope';

let work: string;
let tpm: SwtpmHandle;
const harnesses: PluginHarness[] = [];

async function plugin(name: 'tpm-server' | 'tpm-agent', settings: Record<string, unknown>): Promise<PluginHarness> {
  const h = await PluginHarness.launch({ binary: builtPlugin(name), type: 'NodeAttestor' });
  harnesses.push(h);
  await h.init();
  await h.configure(settingsHcl(settings));
  return h;
}

async function expectRefused(promise: Promise<unknown>, code: grpc.status, pattern: RegExp) {
  const err = (await promise.catch((e) => e)) as grpc.ServiceError & { side?: string };
  expect(err).toBeInstanceOf(Error);
  expect({ side: err.side, code: err.code }).toEqual({ side: 'server', code });
  expect(err.details).toMatch(pattern);
}

const SPECS: SynthEntry[] = [
  { template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' },
  { template: 'ima-ng', path: '/usr/bin/app', content: 'app v1', digestAlg: 'sha256' },
  { template: 'ima-ng', path: '/etc/app.conf', content: 'port=1', digestAlg: 'sha256' },
  { template: 'ima-cgpath', path: '/app/server', content: 'server v1', digestAlg: 'sha256', cgroup: POD_CGROUP },
  { template: 'ima-ng', path: '/tmp/scratch', content: 'anything', digestAlg: 'sha256', invalidate: true },
];
const entries = synthEntries(SPECS);
let extended = 0;
async function extendUpTo(n: number, list: readonly ImaEntry[] = entries): Promise<void> {
  await extendPcrs(
    tpm.tcti,
    list.slice(extended, n).map((e) => ({
      pcr: 10,
      bank: 'sha256' as const,
      digestHex: Buffer.from(e.invalidated ? Buffer.alloc(32, 0xff) : imaDigest('sha256', e.templateData)).toString('hex'),
    })),
  );
  extended = n;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ima-e2e-'));
  tpm = await startSwtpm();
  const bootLog = new Uint8Array(readFileSync(BOOT_LOG));
  await simulateMeasuredBoot(tpm.tcti, bootLog);
  writeFileSync(join(work, 'bios.bin'), bootLog);
  writeFileSync(join(work, 'ca.pem'), `${tpm.rootCaPem}\n${tpm.intermediateCaPem}`);
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  const policy = {
    meta: { version: 1, generator: 0 },
    release: 0,
    digests: {
      boot_aggregate: ['00'.repeat(32)],
      '/usr/bin/app': [hex(fileDigest('sha256', 'app v1'))],
      '/etc/app.conf': [hex(fileDigest('sha256', 'port=1'))],
      '/app/server': [hex(fileDigest('sha256', 'server v1'))],
    },
    excludes: ['^/tmp/'],
    keyrings: {},
    ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null },
    'ima-buf': {},
    'verification-keys': '',
  };
  writeFileSync(join(work, 'runtime-policy.json'), JSON.stringify(policy));
}, 120_000);

afterAll(async () => {
  for (const h of harnesses.splice(0)) await h.kill();
  await tpm?.stop();
  rmSync(work, { recursive: true, force: true });
});

const serverSettings = () => ({
  ek_ca_path: join(work, 'ca.pem'),
  pcr_selection: 'sha256:0,1,2,3,4,5,6,7,8,9,10',
  ima_policy_path: join(work, 'runtime-policy.json'),
  ima_policy_name: 'edge-runtime',
});

describe('node-level IMA: log verified against PCR 10 in the quote, runtime policy enforced', () => {
  it('an allowed log (binary, then ASCII) attests with ima:entries and ima:policy; a changed log is refused at re-attestation', async () => {
    const server = await plugin('tpm-server', serverSettings());
    const imaPath = join(work, 'binary_runtime_measurements');
    writeFileSync(imaPath, '');
    const agent = await plugin('tpm-agent', { tpm_tcti: tpm.tcti, ek_kind: 'rsa', event_log_path: join(work, 'bios.bin'), ima_log_path: imaPath });

    await extendUpTo(3);
    writeFileSync(imaPath, toBinaryList(entries.slice(0, 3)));
    let s = (await relayAttestation(agent, server)).attributes.selector_values;
    expect(s).toContain('ima:entries:3');
    expect(s).toContain('ima:policy:edge-runtime');

    // A reordered log no longer replays to PCR 10. (A server without IMA state for the node: `server` verified
    // entries 0..2 already and asks only for the entries after them; test/nodeattestor/ima-incremental.test.ts.)
    const stateless = await plugin('tpm-server', serverSettings());
    writeFileSync(imaPath, toBinaryList([entries[1]!, entries[0]!, entries[2]!]));
    await expectRefused(relayAttestation(agent, stateless), grpc.status.PERMISSION_DENIED, /does not replay to the quoted PCR 10/);

    // The container entry (ima-cgpath) and an invalidated excluded entry, in the ASCII form.
    await extendUpTo(5);
    writeFileSync(imaPath, toAsciiList(entries));
    s = (await relayAttestation(agent, server)).attributes.selector_values;
    expect(s).toContain('ima:entries:5');
    expect(s).toContain('ima:policy:edge-runtime');

    // A log cut before the last entry does not match the PCR, which has it.
    writeFileSync(imaPath, toBinaryList(entries).subarray(0, toBinaryList(entries).length - 3));
    await expectRefused(relayAttestation(agent, server), grpc.status.PERMISSION_DENIED, /does not replay/);

    // An entry after the quote (the kernel appended it after the quote) is pending: not counted, not yet judged.
    writeFileSync(imaPath, toBinaryList(synthEntries([...SPECS, { template: 'ima-ng', path: '/usr/bin/extra', content: 'x' }])));
    s = (await relayAttestation(agent, server)).attributes.selector_values;
    expect(s).toContain('ima:entries:5');

    // A substituted entry (consistent template hash, different file) the TPM never saw.
    writeFileSync(imaPath, toBinaryList(synthEntries([SPECS[0]!, { ...SPECS[1]!, content: 'app v2' }, ...SPECS.slice(2)])));
    await expectRefused(relayAttestation(agent, stateless), grpc.status.PERMISSION_DENIED, /does not replay/);
  });

  it('a tampered executable, measured and extended, denies the node naming entry, path, digest and rule', async () => {
    const server = await plugin('tpm-server', serverSettings());
    const imaPath = join(work, 'ima-tampered.bin');
    writeFileSync(imaPath, '');
    const agent = await plugin('tpm-agent', { tpm_tcti: tpm.tcti, ek_kind: 'rsa', event_log_path: join(work, 'bios.bin'), ima_log_path: imaPath });
    const tampered = synthEntries([...SPECS, { template: 'ima-ng', path: '/usr/bin/app', content: 'app TAMPERED', digestAlg: 'sha256' }]);
    await extendUpTo(6, tampered);
    writeFileSync(imaPath, toBinaryList(tampered));
    const digest = Buffer.from(fileDigest('sha256', 'app TAMPERED')).toString('hex');
    await expectRefused(
      relayAttestation(agent, server),
      grpc.status.PERMISSION_DENIED,
      new RegExp(`runtime policy "edge-runtime": IMA entry 5 "/usr/bin/app" \\(sha256:${digest}\\).*\\[rule digest-not-allowed\\]`),
    );
  });

  it('a file measured while the attestation runs (before the quote) is covered: the agent reads the log after quoting', async () => {
    const fresh = await startSwtpm();
    try {
      await simulateMeasuredBoot(fresh.tcti, new Uint8Array(readFileSync(BOOT_LOG)));
      const list = synthEntries([...SPECS.slice(0, 3), { template: 'ima-ng', path: '/usr/bin/app', content: 'app v1', digestAlg: 'sha256' }]);
      const extend = (e: ImaEntry) =>
        execFileSync('tpm2_pcrextend', [`10:sha256=${Buffer.from(imaDigest('sha256', e.templateData)).toString('hex')}`], { env: { ...process.env, TPM2TOOLS_TCTI: fresh.tcti } });
      list.slice(0, 3).forEach(extend);
      const imaPath = join(work, 'ima-race.bin');
      writeFileSync(imaPath, toBinaryList(list.slice(0, 3)));
      writeFileSync(join(work, 'fresh-ca.pem'), `${fresh.rootCaPem}\n${fresh.intermediateCaPem}`);
      const server = await plugin('tpm-server', { ...serverSettings(), ek_ca_path: join(work, 'fresh-ca.pem') });
      const agent = await plugin('tpm-agent', { tpm_tcti: fresh.tcti, ek_kind: 'rsa', event_log_path: join(work, 'bios.bin'), ima_log_path: imaPath });
      const result = await relayAttestation(agent, server, {
        // After the agent sent its payload, before it quotes: the kernel measures one more file.
        challenge: (c) => {
          extend(list[3]!);
          writeFileSync(imaPath, toBinaryList(list));
          return c;
        },
      });
      expect(result.attributes.selector_values).toContain('ima:entries:4');
      expect(decodePayload(result.payload).ima_log).toBeUndefined();
      expect(decodeResponse(result.responses[0]!).ima_log).toEqual(new Uint8Array(toBinaryList(list)));
    } finally {
      await fresh.stop();
    }
  });

  it('no IMA log while a runtime policy is set is refused; a policy without PCR 10 quoted is a config error', async () => {
    const server = await plugin('tpm-server', serverSettings());
    const agent = await plugin('tpm-agent', { tpm_tcti: tpm.tcti, ek_kind: 'rsa', event_log_path: join(work, 'bios.bin') });
    await expectRefused(relayAttestation(agent, server), grpc.status.PERMISSION_DENIED, /no IMA log was sent/);
    const h = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
    harnesses.push(h);
    await h.init();
    const err = (await h.configure(`ek_ca_path = "${join(work, 'ca.pem')}"\nima_policy_path = "${join(work, 'runtime-policy.json')}"`).catch((e) => e)) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/ima_policy_path needs PCR 10 in pcr_selection/);
  });
});
