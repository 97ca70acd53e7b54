/**
 * Metrics through SPIRE's Metrics host service: the shipped tpm-server and edge-workload, launched as SPIRE launches
 * them, report every attestation (counter + timing, labelled by gRPC status and our error code, aggregated per second)
 * to the host's Metrics service over the go-plugin broker, and call nothing when SPIRE did not offer it; tpm-agent
 * reports its own part (evidence and challenge answers, on a real swtpm).
 * test/e2e/metrics.test.ts reads the same counters back from a real spire-server's Prometheus endpoint.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { attestThroughServer, PluginHarness, type MetricCall } from '../helpers/plugin-harness.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import { startSwtpm } from '../helpers/swtpm.js';
import { SoftAgent } from '../nodeattestor/soft-agent.js';

const launched: PluginHarness[] = [];
afterEach(async () => {
  for (const h of launched.splice(0)) await h.kill();
});

const trusted = new SoftAgent();
const untrusted = SoftAgent.of('p256', 'p256', 31);

async function tpmServer(hostServices?: string[]): Promise<PluginHarness> {
  const h = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
  launched.push(h);
  await h.init(hostServices);
  await h.configure(`ek_hash_allowlist = ["${trusted.ekHash}"]\nrequire_event_log = false`);
  return h;
}

const attest = (h: PluginHarness, agent: SoftAgent) => attestThroughServer(h, agent.payload(), (c) => Buffer.from(agent.respond(new Uint8Array(c))));

async function metricsUntil(h: PluginHarness, done: (calls: readonly MetricCall[]) => boolean): Promise<readonly MetricCall[]> {
  for (let i = 0; i < 200 && !done(h.metricCalls); i++) await new Promise((r) => setTimeout(r, 25));
  return h.metricCalls;
}

describe('tpm-server reports node attestations to SPIRE', () => {
  it('an admitted node: one node_attestation counter and one timing (ms) with status OK', async () => {
    const h = await tpmServer();
    const before = Date.now();
    await expect(attest(h, trusted)).resolves.toMatchObject({ can_reattest: true });
    const took = Date.now() - before;
    const calls = await metricsUntil(h, (c) => c.length >= 2);
    expect(calls.map((c) => [c.method, c.key.join('.')])).toEqual([
      ['IncrCounter', 'edge_attestors.node_attestation'],
      ['AddSample', 'edge_attestors.node_attestation.duration'],
    ]);
    for (const c of calls) expect(c.labels).toEqual({ status: 'OK', code: 'none' });
    expect(calls[0]!.val).toBe(1);
    // The attestation's duration in milliseconds, measured inside the plugin: within what the caller saw.
    expect(calls[1]!.val).toBeGreaterThanOrEqual(0);
    expect(calls[1]!.val).toBeLessThanOrEqual(took);
  });
  it('a refused node is counted by the status SPIRE saw and the reason code', async () => {
    const h = await tpmServer();
    await expect(attest(h, untrusted)).rejects.toMatchObject({ code: 7 });
    const calls = await metricsUntil(h, (c) => c.length >= 2);
    expect(calls.find((c) => c.method === 'IncrCounter')).toMatchObject({ key: ['edge_attestors', 'node_attestation'], labels: { status: 'PERMISSION_DENIED', code: 'ERR_EK_UNTRUSTED' } });
  });
  it('malformed input is counted as INVALID_ARGUMENT', async () => {
    const h = await tpmServer();
    await expect(attestThroughServer(h, new TextEncoder().encode('{"v":1,"ek_pub":"!!"}'), () => Buffer.alloc(0))).rejects.toMatchObject({ code: 3 });
    const calls = await metricsUntil(h, (c) => c.length >= 2);
    expect(calls.find((c) => c.method === 'IncrCounter')?.labels['status']).toBe('INVALID_ARGUMENT');
  });
  it('nothing is sent when SPIRE did not offer the Metrics service, and attestation is unaffected', async () => {
    const h = await tpmServer([ServiceNames.agentStore]);
    await expect(attest(h, trusted)).resolves.toMatchObject({ can_reattest: true });
    await new Promise((r) => setTimeout(r, 1_500)); // past one flush interval
    expect(h.metricCalls).toEqual([]);
  });
});

describe('edge-workload reports workload attestations to SPIRE', () => {
  async function edgeWorkload(): Promise<PluginHarness> {
    const h = await PluginHarness.launch({ binary: builtPlugin('edge-workload'), type: 'WorkloadAttestor', env: { KUBERNETES_SERVICE_HOST: undefined } });
    launched.push(h);
    await h.init();
    await h.configure('pod_source = "none"');
    return h;
  }
  const counters = (calls: readonly MetricCall[]) => calls.filter((c) => c.method === 'IncrCounter');

  it('each Attest is counted with its outcome', async () => {
    const h = await edgeWorkload();
    await expect(h.unary(ServiceNames.workloadAttestor, 'Attest', { pid: process.pid })).resolves.toBeDefined();
    await expect(h.unary(ServiceNames.workloadAttestor, 'Attest', { pid: 0 })).rejects.toMatchObject({ code: 3 });
    const calls = await metricsUntil(h, (c) => counters(c).length >= 2);
    expect(counters(calls).map((c) => [c.key.join('.'), c.labels, c.val])).toEqual([
      ['edge_attestors.workload_attestation', { status: 'OK', code: 'none' }, 1],
      ['edge_attestors.workload_attestation', { status: 'INVALID_ARGUMENT', code: 'ERR_PID' }, 1],
    ]);
  });
  it('a burst is aggregated: one counter call with the sum, and at most 16 timing samples per series', async () => {
    const h = await edgeWorkload();
    await Promise.all(Array.from({ length: 200 }, () => h.unary(ServiceNames.workloadAttestor, 'Attest', { pid: process.pid })));
    const calls = await metricsUntil(h, (c) => counters(c).reduce((n, x) => n + (x.val ?? 0), 0) >= 200);
    expect(counters(calls).reduce((n, x) => n + (x.val ?? 0), 0)).toBe(200);
    // 200 Attests in well under the 1 s flush interval: a handful of calls, not 400.
    expect(counters(calls).length).toBeLessThanOrEqual(3);
    const samples = calls.filter((c) => c.method === 'AddSample');
    expect(samples.length).toBeGreaterThan(0);
    expect(samples.length).toBeLessThanOrEqual(16 * counters(calls).length);
  });
});

describe('tpm-agent reports its evidence to SPIRE', () => {
  const LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
  const evidence = (calls: readonly MetricCall[]) => calls.filter((c) => c.method === 'IncrCounter' && c.key.join('.') === 'edge_attestors.agent_evidence');

  it('the payload and the challenge answer, each counted and timed with step and outcome', async () => {
    const work = mkdtempSync(join(tmpdir(), 'agent-metrics-'));
    const tpm = await startSwtpm();
    try {
      const log = new Uint8Array(readFileSync(LOG));
      await simulateMeasuredBoot(tpm.tcti, log);
      writeFileSync(join(work, 'log.bin'), log);
      writeFileSync(join(work, 'ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
      const agent = await PluginHarness.launch({ binary: builtPlugin('tpm-agent'), type: 'NodeAttestor' });
      launched.push(agent);
      await agent.init();
      await agent.configure(`tpm_tcti = "${tpm.tcti}"\nevent_log_path = "${join(work, 'log.bin')}"\nek_kind = "rsa"`);
      const server = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
      launched.push(server);
      await server.init();
      await server.configure(`ek_ca_path = "${join(work, 'ca.pem')}"`);
      await expect(relayAttestation(agent, server)).resolves.toMatchObject({ attributes: { can_reattest: true } });
      const calls = await metricsUntil(agent, (c) => evidence(c).length >= 2);
      expect(evidence(calls).map((c) => c.labels).sort((a, b) => (a['step']! < b['step']! ? -1 : 1))).toEqual([
        { step: 'challenge', status: 'OK', code: 'none' },
        { step: 'payload', status: 'OK', code: 'none' },
      ]);
      expect(calls.filter((c) => c.method === 'AddSample' && c.key.join('.') === 'edge_attestors.agent_evidence.duration')).toHaveLength(2);
    } finally {
      await tpm.stop();
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('a TPM that cannot be reached: the payload step is counted with the error code', async () => {
    const agent = await PluginHarness.launch({ binary: builtPlugin('tpm-agent'), type: 'NodeAttestor' });
    launched.push(agent);
    await agent.init();
    await agent.configure('tpm_tcti = "swtpm:path=/nonexistent/tpm.sock"\nek_kind = "rsa"');
    const call = agent.client(ServiceNames.agentNodeAttestor)['AidAttestation']!() as grpc.ClientDuplexStream<object, object>;
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      call.on('error', resolve);
      call.on('data', () => undefined);
    });
    expect(err.code).not.toBe(grpc.status.OK);
    const calls = await metricsUntil(agent, (c) => evidence(c).length >= 1);
    const [payload] = evidence(calls);
    expect(payload?.labels['step']).toBe('payload');
    expect(payload?.labels['status']).toBe(grpc.status[err.code]);
    expect(payload?.labels['code']).toMatch(/^ERR_/);
  });
});
