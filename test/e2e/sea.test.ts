/**
 * The single-executable plugins (Node 24 embedded, dist/sea/linux-x64/) under real SPIRE: declared by plugin_cmd
 * with their own plugin_checksum, which then covers runtime and code. The agent gets its SVID through TPM
 * attestation, re-attests, and a workload in a pod gets its SVID through the SEA edge-workload. Each plugin's first
 * Configure log line says it runs as a single executable, with the checksum SPIRE verified.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';
import { makePod, PodCgroups, startFakeKubelet, type FakeKubelet } from '../helpers/edge-node.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { NO_SPIRE_NOTE, sha256File, tpmAgentPath, SpireAgent, SpireServer, spireUnderTest } from '../helpers/spire.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const installs = spireUnderTest();
const sea = (name: string) => `${repoRoot}dist/sea/linux-x64/${name}`;
const TD = 'edge.example';

if (installs.length === 0) {
  describe('single-executable plugins under real SPIRE', () => {
    it('run under every pinned SPIRE version', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

describe.each(installs.map((s) => [s.version, s] as const))('single-executable plugins under real SPIRE %s', (_v, spire) => {
  let work: string;
  let tpm: SwtpmHandle;
  let kubelet: FakeKubelet;
  let server: SpireServer;
  let agent: SpireAgent;
  const cgroups = new PodCgroups();
  const pod = makePod({ name: 'sensor-gateway', namespace: 'edge', serviceAccount: 'sensor' }, 'edge-node-1');

  beforeAll(async () => {
    for (const b of ['tpm-server', 'tpm-agent', 'edge-workload']) if (!existsSync(sea(b))) throw new Error(`${sea(b)} is missing: npm run build writes it`);
    work = mkdtempSync(join(tmpdir(), 'e2e-sea-'));
    tpm = await startSwtpm();
    const log = new Uint8Array(readFileSync(`${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`));
    await simulateMeasuredBoot(tpm.tcti, log);
    writeFileSync(join(work, 'bbm'), log);
    writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
    kubelet = await startFakeKubelet(join(work, 'kubelet'), () => [pod]);
    server = await SpireServer.start({
      spire,
      dir: join(work, 'server'),
      trustDomain: TD,
      agentTtl: '20s',
      plugins: [{ type: 'NodeAttestor', name: 'tpm', cmd: sea('tpm-server'), data: { ek_ca_path: [join(work, 'ek-ca.pem')] } }],
    });
    agent = await SpireAgent.start({
      spire,
      dir: join(work, 'agent'),
      server,
      plugins: [
        { type: 'NodeAttestor', name: 'tpm', cmd: sea('tpm-agent'), data: { tpm_tcti: tpm.tcti, event_log_path: join(work, 'bbm') } },
        {
          type: 'WorkloadAttestor',
          name: 'k8s',
          cmd: sea('edge-workload'),
          data: { pod_source: 'kubelet', kubelet_host: '127.0.0.1', kubelet_secure_port: kubelet.port, kubelet_ca_path: kubelet.caPath, kubelet_token_path: kubelet.tokenPath, node_name: 'edge-node-1' },
        },
      ],
    });
  }, 180_000);

  afterAll(async () => {
    await cgroups.cleanup();
    await agent?.stop();
    await server?.stop();
    await kubelet?.close();
    await tpm?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('each plugin reports form "sea" and the checksum SPIRE verified', () => {
    for (const [proc, name] of [[server, 'tpm-server'], [agent, 'tpm-agent'], [agent, 'edge-workload']] as const) {
      const line = proc.logs.find((l) => l.msg === 'Configuring plugin' && String(l['subsystem_name']).endsWith(`.${name}`));
      expect(line, `${name}: ${proc.proc.tail()}`).toMatchObject({ form: 'sea', build_sha256: sha256File(sea(name)) });
    }
  });

  it('the agent SVID is issued through TPM attestation and renewed by re-attestation', async () => {
    const [listed] = await server.agents();
    expect(listed!.id.path).toBe(tpmAgentPath(tpm.ekCertRsaDer));
    expect(listed!.selectors.map((s) => `${s.type}:${s.value}`)).toContain('tpm:secureboot:enabled');
    await agent.proc.waitForLog((l) => l.msg === 'Successfully reattested node', 60_000, 're-attestation', true);
  }, 90_000);

  it('a workload in a pod gets its SVID through the SEA edge-workload', async () => {
    const agentId = (await server.agents())[0]!;
    const id = `spiffe://${TD}/ns/edge/sa/sensor`;
    await server.createEntry(['-parentID', `spiffe://${TD}${agentId.id.path}`, '-spiffeID', id, '-selector', 'k8s:ns:edge', '-selector', 'k8s:sa:sensor']);
    let got: string | undefined;
    for (let i = 0; i < 60 && got === undefined; i++) {
      const child = cgroups.spawn(pod, spire.agent, ['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-write', work, '-timeout', '3s']);
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      if (code === 0) got = new X509Certificate(readFileSync(join(work, 'svid.0.pem'))).subjectAltName;
      else await new Promise((r) => setTimeout(r, 500));
    }
    expect(got).toBe(`URI:${id}`);
  }, 60_000);
});
