/**
 * Our metrics in SPIRE's own telemetry: an unmodified spire-server with a Prometheus sink loads the built
 * tpm-server; nodes attest through the server's Agent API (AttestAgent, as spire-agent calls it) with a software
 * TPM's evidence; the server's /metrics endpoint then shows our node_attestation counter and timing, under SPIRE's
 * prefix, labelled by outcome: what an operator scrapes and alerts on.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestAgent } from '../helpers/agent-api.js';
import { builtPlugin } from '../helpers/binaries.js';
import { freePort, NO_SPIRE_NOTE, SpireServer, spireUnderTest, type SpireInstall } from '../helpers/spire.js';
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
  const trusted = new SoftAgent();
  const untrusted = SoftAgent.of('p256', 'p256', 41);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), `metrics-spire-${spire.version}-`));
    metricsPort = await freePort();
    server = await SpireServer.start({
      spire,
      dir: join(work, 'server'),
      trustDomain: TD,
      telemetry: { Prometheus: { host: '127.0.0.1', port: metricsPort } },
      plugins: [{ type: 'NodeAttestor', name: 'tpm', cmd: builtPlugin('tpm-server'), data: { ek_hash_allowlist: [trusted.ekHash], require_event_log: false } }],
    });
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const answer = (agent: SoftAgent) => async (challenge: Buffer) => Buffer.from(agent.respond(new Uint8Array(challenge)));

  async function scrape(name: string, until: (s: ReturnType<typeof samples>) => boolean): Promise<ReturnType<typeof samples>> {
    let found: ReturnType<typeof samples> = [];
    for (let i = 0; i < 100; i++) {
      const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => '');
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
});
