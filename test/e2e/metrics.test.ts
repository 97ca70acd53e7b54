/**
 * Our metrics in SPIRE's own telemetry: an unmodified spire-server with a Prometheus sink loads the built
 * tpm-server; nodes attest through the server's Agent API (AttestAgent, as spire-agent calls it) with a software
 * TPM's evidence; the server's /metrics endpoint then shows our node_attestation counter and timing, under SPIRE's
 * prefix, labelled by outcome: what an operator scrapes and alerts on. Then a real spire-agent with tpm-agent on a
 * swtpm and edge-workload shows the agent side on its own /metrics: the TPM evidence steps and a workload attestation.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestAgent } from '../helpers/agent-api.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { freePort, NO_SPIRE_NOTE, SpireAgent, SpireServer, spireUnderTest, type SpireInstall } from '../helpers/spire.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';
import { SoftAgent } from '../nodeattestor/soft-agent.js';

const installs = spireUnderTest();
const TD = 'metrics.example';

if (installs.length === 0) {
  describe('metrics under real SPIRE', () => {
    it('runs against every pinned SPIRE version', ({ skip }) => skip(NO_SPIRE_NOTE));
  });
}

/** The samples of one metric family from a Prometheus text exposition, with their labels. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

describe.each(installs.map((spire) => [spire.version, spire] as [string, SpireInstall]))('metrics under real SPIRE %s', (_version, spire) => {
  let work: string;
  let server: SpireServer;
  let metricsPort: number;
  let tpm: SwtpmHandle;
  const trusted = new SoftAgent();
  const untrusted = SoftAgent.of('p256', 'p256', 41);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), `metrics-spire-${spire.version}-`));
    metricsPort = await freePort();
    tpm = await startSwtpm();
    writeFileSync(join(work, 'ek-ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
    server = await SpireServer.start({
      spire,
      dir: join(work, 'server'),
      trustDomain: TD,
      telemetry: { Prometheus: { host: '127.0.0.1', port: metricsPort } },
      plugins: [
        {
          type: 'NodeAttestor',
          name: 'tpm',
          cmd: builtPlugin('tpm-server'),
          // The soft TPM by hash (it sends no log); the swtpm node by its EK chain, with its measured-boot log.
          data: { ek_hash_allowlist: [trusted.ekHash], ek_ca_path: join(work, 'ek-ca.pem'), require_event_log: false },
        },
      ],
    });
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    await tpm?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const answer = (agent: SoftAgent) => async (challenge: Buffer) => Buffer.from(agent.respond(new Uint8Array(challenge)));

  async function scrape(name: string, until: (s: ReturnType<typeof samples>) => boolean, port = metricsPort): Promise<ReturnType<typeof samples>> {
    let found: ReturnType<typeof samples> = [];
    for (let i = 0; i < 100; i++) {
      const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '');
      found = samples(text, name);
      if (until(found)) return found;
      await new Promise((r) => setTimeout(r, 100));
    }
    return found;
  }

  it('an admitted and a refused node show up in spire_server_edge_attestors_node_attestation by outcome', async () => {
    await expect(attestAgent(server, Buffer.from(trusted.payload()), answer(trusted))).resolves.toMatchObject({
      spiffeId: `spiffe://${TD}/spire/agent/tpm/${trusted.ekHash}`,
    });
    await expect(attestAgent(server, Buffer.from(untrusted.payload()), answer(untrusted))).rejects.toMatchObject({ code: 7 });

    const counter = 'spire_server_edge_attestors_node_attestation';
    const byOutcome = await scrape(counter, (s) => s.some((x) => x.labels['status'] === 'PERMISSION_DENIED'));
    expect(byOutcome.find((x) => x.labels['status'] === 'OK')).toMatchObject({ labels: { code: 'none' }, value: 1 });
    expect(byOutcome.find((x) => x.labels['status'] === 'PERMISSION_DENIED')).toMatchObject({ labels: { code: 'ERR_EK_UNTRUSTED' }, value: 1 });

    // The timing is a summary in milliseconds; one sample per attestation, per outcome.
    const timings = await scrape(`${counter}_duration_count`, (s) => s.length >= 2);
    expect(timings.map((t) => [t.labels['status'], t.value]).sort()).toEqual([
      ['OK', 1],
      ['PERMISSION_DENIED', 1],
    ]);
  }, 120_000);

  it('a real spire-agent: tpm-agent reports its evidence steps and edge-workload each workload attestation', async () => {
    const log = new Uint8Array(readFileSync(`${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`));
    await simulateMeasuredBoot(tpm.tcti, log);
    writeFileSync(join(work, 'bios_measurements'), log);
    const agentMetricsPort = await freePort();
    const agent = await SpireAgent.start({
      spire,
      dir: join(work, 'agent'),
      server,
      telemetry: { Prometheus: { host: '127.0.0.1', port: agentMetricsPort } },
      plugins: [
        { type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-agent'), data: { tpm_tcti: tpm.tcti, event_log_path: join(work, 'bios_measurements') } },
        { type: 'WorkloadAttestor', name: 'k8s', cmd: builtPlugin('edge-workload'), data: { pod_source: 'none' } },
      ],
    });
    try {
      const steps = await scrape('spire_agent_edge_attestors_agent_evidence', (s) => s.length >= 2, agentMetricsPort);
      expect(steps.map((x) => [x.labels['step'], x.labels['status'], x.value]).sort()).toEqual([
        ['challenge', 'OK', 1],
        ['payload', 'OK', 1],
      ]);
      // A Workload API call makes the agent attest the caller's PID through edge-workload (no entry: no SVID).
      await new Promise<void>((resolve) => {
        const child = spawn(spire.agent, ['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-timeout', '2s'], { stdio: 'ignore' });
        child.once('exit', () => resolve());
      });
      const workloads = await scrape('spire_agent_edge_attestors_workload_attestation', (s) => s.some((x) => x.labels['status'] === 'OK'), agentMetricsPort);
      expect(workloads.find((x) => x.labels['status'] === 'OK')?.value).toBeGreaterThanOrEqual(1);
    } finally {
      await agent.stop();
    }
  }, 180_000);
});
