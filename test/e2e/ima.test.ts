/**
 * Node-level IMA on real SPIRE (each pinned version): unmodified spire-server and spire-agent load our tpm-server and
 * tpm-agent. The node's IMA measurement list is written by the test and extended into swtpm PCR 10 as the kernel
 * would. A clean node is attested with `tpm:ima:policy:<name>`; its re-attestations (agent SVID rotation, short TTL)
 * send only the new entries; once a file the runtime policy does not allow is measured, the next re-attestation is
 * refused and SPIRE's logs name the entry; after a reboot into a clean list, the server asks for the whole list in a
 * second challenge round and the node is admitted again.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest, tpmAgentPath, type SpireInstall, type SpireLogLine } from '../helpers/spire.js';
import { extendPcrs, startSwtpm, tpm2, type SwtpmHandle } from '../helpers/swtpm.js';
import { imaDigest, type ImaEntry } from '../../src/tpm/ima/index.js';
import { fileDigest, synthEntries, toBinaryList, type SynthEntry } from '../tpm/ima/synth.js';

const BOOT_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const TD = 'edge.example';
/** The agent re-attests at about half its SVID's life. */
const AGENT_TTL_S = 16;
const FILES = ['/usr/bin/sensor', '/usr/lib/libc.so.6', '/etc/sensor.conf', '/usr/bin/uploader'];
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const installs = spireUnderTest();

if (installs.length === 0) {
  describe('node-level IMA on real SPIRE', () => {
    it('runs against every pinned SPIRE version', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(installs.map((spire) => [spire.version, spire] as [string, SpireInstall]))('node-level IMA on real SPIRE %s', (_version, spire) => {
  let work: string;
  let tpm: SwtpmHandle;
  let server: SpireServer;
  let agent: SpireAgent;
  let imaPath: string;
  const list: ImaEntry[] = [];
  const decisions = (outcome: string) => (l: SpireLogLine) => l.msg === 'Attestation decision' && l['outcome'] === outcome;

  /** The kernel measuring files: appended to the list, extended into PCR 10 (sha256). */
  async function measure(specs: readonly SynthEntry[]): Promise<void> {
    const added = synthEntries(specs).map((e, i) => ({ ...e, index: list.length + i }));
    await extendPcrs(tpm.tcti, added.map((e) => ({ pcr: 10, bank: 'sha256' as const, digestHex: hex(imaDigest('sha256', e.templateData)) })));
    list.push(...added);
    writeFileSync(imaPath, toBinaryList(list));
  }
  const allowed = (path: string): SynthEntry => ({ template: 'ima-ng', path, content: `${path} v1`, digestAlg: 'sha256' });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), `e2e-ima-${spire.version}-`));
    tpm = await startSwtpm();
    const boot = new Uint8Array(readFileSync(BOOT_LOG));
    await simulateMeasuredBoot(tpm.tcti, boot);
    writeFileSync(join(work, 'bios.bin'), boot);
    writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
    const digests: Record<string, string[]> = { boot_aggregate: ['00'.repeat(32)] };
    for (const f of FILES) digests[f] = [hex(fileDigest('sha256', `${f} v1`))];
    const policy = { meta: { version: 1, generator: 0 }, release: 0, digests, excludes: ['^/tmp/'], keyrings: {}, ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null }, 'ima-buf': {}, 'verification-keys': '' };
    writeFileSync(join(work, 'runtime-policy.json'), JSON.stringify(policy));
    imaPath = join(work, 'binary_runtime_measurements');
    await measure([{ template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' }, ...FILES.slice(0, 3).map(allowed)]);

    server = await SpireServer.start({
      spire,
      dir: join(work, 'server'),
      trustDomain: TD,
      agentTtl: `${AGENT_TTL_S}s`,
      plugins: [
        {
          type: 'NodeAttestor',
          name: 'tpm',
          cmd: builtPlugin('tpm-server'),
          data: {
            ek_ca_path: [join(work, 'ek-ca.pem')],
            pcr_selection: 'sha256:0,1,2,3,4,5,6,7,8,9,10',
            ima_policy_path: join(work, 'runtime-policy.json'),
            ima_policy_name: 'edge-runtime',
            ima_state_dir: join(work, 'ima-state'),
            log_level: 'debug',
          },
        },
      ],
    });
    agent = await SpireAgent.start({
      spire,
      dir: join(work, 'agent'),
      server,
      plugins: [{ type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-agent'), data: { tpm_tcti: tpm.tcti, event_log_path: join(work, 'bios.bin'), ima_log_path: imaPath, ima_chunk_bytes: 4096 } }, { type: 'WorkloadAttestor', name: 'unix', data: {} }],
    });
  }, 180_000);

  afterAll(async () => {
    await agent?.stop();
    await server?.stop();
    await tpm?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('a node whose IMA list is clean is attested with tpm:ima:policy:<name> and tpm:ima:entries:<n>', async () => {
    const [listed] = await server.agents();
    expect(listed!.id.path).toBe(tpmAgentPath(tpm.ekCertRsaDer));
    const selectors = listed!.selectors.map((s) => `${s.type}:${s.value}`);
    expect(selectors).toEqual(expect.arrayContaining(['tpm:ima:policy:edge-runtime', 'tpm:ima:entries:4']));
    const first = server.proc.logs.find(decisions('accepted'))!;
    expect(first).toMatchObject({ ima_offset: 0, ima_total: 4, ima_entries_sent: 4, ima_entries_verified: 4 });
  });

  it('SVID rotation re-attests incrementally: only the entries measured since are sent, every entry is counted', async () => {
    await measure([allowed(FILES[3]!), allowed(FILES[0]!)]);
    const line = await server.proc.waitForLog((l) => decisions('accepted')(l) && l['ima_offset'] === 4, 3 * AGENT_TTL_S * 1000, 'incremental re-attestation', true);
    expect(line).toMatchObject({ ima_total: 6, ima_entries_sent: 2, ima_entries_verified: 2 });
    await agent.proc.waitForLog((l) => l.msg === 'Successfully reattested node', 3 * AGENT_TTL_S * 1000, 're-attestation');
    const selectors = (await server.agents())[0]!.selectors.map((s) => `${s.type}:${s.value}`);
    expect(selectors).toEqual(expect.arrayContaining(['tpm:ima:policy:edge-runtime', 'tpm:ima:entries:6']));
  }, 3 * AGENT_TTL_S * 1000 + 10_000);

  it('a file the runtime policy does not allow, once measured, gets the node refused at its next re-attestation, naming the entry', async () => {
    const index = list.length;
    await measure([{ template: 'ima-ng', path: '/usr/bin/sensor', content: 'sensor TAMPERED', digestAlg: 'sha256' }]);
    const named = new RegExp(`IMA entry ${index} "/usr/bin/sensor" \\(sha256:${hex(fileDigest('sha256', 'sensor TAMPERED'))}\\).*\\[rule digest-not-allowed\\]`);
    const refusal = await server.proc.waitForLog(decisions('refused'), 3 * AGENT_TTL_S * 1000, 'refused re-attestation', true);
    expect(refusal).toMatchObject({ code: 'ERR_IMA_RUNTIME_POLICY_VIOLATION', ima_offset: 6 });
    expect(String(refusal['reason'])).toMatch(named);
    // SPIRE's own lines carry it too: the server's failed AttestAgent call, the agent's failed re-attestation.
    const spireOwn = (l: SpireLogLine) => l['external'] !== true && Object.values(l).some((v) => typeof v === 'string' && named.test(v));
    await server.proc.waitForLog(spireOwn, 10_000, "spire-server's log naming the entry");
    await agent.proc.waitForLog(spireOwn, 3 * AGENT_TTL_S * 1000, "spire-agent's log naming the entry");
  }, 6 * AGENT_TTL_S * 1000 + 30_000);

  it('repaired by a reboot into a clean list longer than the stored offset: the server asks for the whole list, in chunks, in further challenge rounds through SPIRE, and the node re-attests', async () => {
    await tpm2(tpm.tcti, 'tpm2_shutdown', []);
    await tpm.restart();
    await simulateMeasuredBoot(tpm.tcti, new Uint8Array(readFileSync(BOOT_LOG)));
    list.length = 0;
    // 121 entries (about 12 KB) with the agent's ima_chunk_bytes at 4096: the whole list takes several messages, as a
    // list past SPIRE's 4 MiB per agent message would.
    await measure([{ template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' }, ...Array.from({ length: 120 }, (_, i) => allowed(FILES[i % FILES.length]!))]);
    const line = await server.proc.waitForLog(decisions('accepted'), 4 * AGENT_TTL_S * 1000, 're-attestation after the reboot', true);
    expect(line).toMatchObject({ ima_offset: 6, ima_total: 121, ima_entries_sent: 121, ima_entries_verified: 121 });
    expect(Number(line['ima_chunks'])).toBeGreaterThanOrEqual(3);
    expect(String(line['ima_resend'])).toMatch(/TPM was reset or restarted/);
    await agent.proc.waitForLog((l) => l.msg === 'Successfully reattested node', 3 * AGENT_TTL_S * 1000, 're-attestation', true);
    const selectors = (await server.agents())[0]!.selectors.map((s) => `${s.type}:${s.value}`);
    expect(selectors).toEqual(expect.arrayContaining(['tpm:ima:policy:edge-runtime', 'tpm:ima:entries:121']));
  }, 8 * AGENT_TTL_S * 1000);
});
