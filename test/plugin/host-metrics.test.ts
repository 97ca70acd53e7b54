/**
 * HostMetrics against a real gRPC Metrics service on a unix socket (what SPIRE serves on the broker): aggregation is
 * exact for counters, timings are bounded samples, every bound drops and counts instead of growing, and an
 * unreachable or refusing host never throws into the attestation that recorded the metric.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/plugin/log.js';
import { HostMetrics } from '../../src/plugin/metrics.js';
import { serviceDefinition, ServiceNames } from '../../src/plugin/protos.js';

interface Received {
  method: string;
  key: string[];
  val: number;
  labels: Record<string, string>;
}

let dir: string;
let target: string;
let server: grpc.Server;
let refuse = false;
const received: Received[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'host-metrics-'));
  target = `unix:${join(dir, 'host.sock')}`;
  server = new grpc.Server();
  const record = (method: string) => (call: grpc.ServerUnaryCall<any, object>, cb: grpc.sendUnaryData<object>) => {
    if (refuse) return cb({ code: grpc.status.UNAVAILABLE, details: 'telemetry is restarting' });
    const r = call.request as { key: string[]; val: number; labels: { name: string; value: string }[] };
    received.push({ method, key: r.key, val: r.val, labels: Object.fromEntries(r.labels.map((l) => [l.name, l.value])) });
    cb(null, {});
  };
  server.addService(serviceDefinition(ServiceNames.metrics), {
    IncrCounter: record('IncrCounter'),
    AddSample: record('AddSample'),
    MeasureSince: record('MeasureSince'),
    SetGauge: record('SetGauge'),
    EmitKey: record('EmitKey'),
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
});
afterAll(() => {
  server?.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

function logger() {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }), lines };
}

async function settled(n: number): Promise<Received[]> {
  for (let i = 0; i < 200 && received.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  return received.splice(0);
}

describe('HostMetrics', () => {
  it('counters are summed per series (labels in any order are one series) and sent at flush', async () => {
    const m = new HostMetrics(async () => target, logger().log, () => true);
    for (let i = 0; i < 5; i++) m.incrCounter(['k', 'a'], { status: 'OK', code: 'none' });
    m.incrCounter(['k', 'a'], { code: 'none', status: 'OK' }, 10);
    m.incrCounter(['k', 'a'], { status: 'PERMISSION_DENIED', code: 'ERR_X' });
    expect(received).toEqual([]); // nothing before the flush
    m.flush();
    const got = await settled(2);
    expect(got.map((r) => [r.method, r.key.join('.'), r.labels['status'], r.val]).sort()).toEqual([
      ['IncrCounter', 'k.a', 'OK', 15],
      ['IncrCounter', 'k.a', 'PERMISSION_DENIED', 1],
    ]);
    m.close();
  });

  it('timings: the elapsed milliseconds, at most 16 samples per series and flush, each one a real sample', async () => {
    const m = new HostMetrics(async () => target, logger().log, () => true);
    const started = Date.now() - 250;
    for (let i = 0; i < 1000; i++) m.measureSince(['t'], started, { status: 'OK' });
    m.flush();
    const got = await settled(16);
    expect(got).toHaveLength(16);
    for (const r of got) {
      expect(r.method).toBe('AddSample');
      expect(r.val).toBeGreaterThanOrEqual(250);
      expect(r.val).toBeLessThan(60_000);
    }
    m.close();
  });

  it('the timer flushes by itself within about a second', async () => {
    const m = new HostMetrics(async () => target, logger().log, () => true);
    m.incrCounter(['timer'], {});
    const got = await settled(1);
    expect(got.map((r) => r.key.join('.'))).toEqual(['timer']);
    m.close();
  });

  it('close() sends what is pending, all of it, and ignores what comes after', async () => {
    const m = new HostMetrics(async () => target, logger().log, () => true);
    m.incrCounter(['at-close'], {}, 3);
    for (let i = 0; i < 300; i++) m.incrCounter(['at-close', 'series'], { i: String(i) }); // more than run at once
    m.close();
    m.incrCounter(['after-close'], {});
    const got = await settled(301);
    expect(got).toHaveLength(301);
    expect(got.find((r) => r.key.join('.') === 'at-close')?.val).toBe(3);
    await new Promise((r) => setTimeout(r, 1_200));
    expect(received.filter((r) => r.key[0] === 'after-close')).toEqual([]);
  });

  it('not offered by SPIRE: nothing is kept and nothing is sent', async () => {
    const m = new HostMetrics(async () => target, logger().log, () => false);
    m.incrCounter(['off'], {});
    m.measureSince(['off'], Date.now(), {});
    m.flush();
    await new Promise((r) => setTimeout(r, 100));
    expect(received).toEqual([]);
    expect(m.dropped).toBe(0);
  });

  it('more than 512 distinct series: the rest are dropped and counted, with one warning', async () => {
    const { log, lines } = logger();
    const m = new HostMetrics(async () => target, log, () => true);
    for (let i = 0; i < 600; i++) m.incrCounter(['many'], { i: String(i) });
    expect(m.dropped).toBe(88);
    expect(lines.filter((l) => l['@message'] === 'Metric dropped' && l['@level'] === 'warn')).toHaveLength(1);
    m.flush();
    expect((await settled(512)).length).toBe(512);
    m.close();
  });

  it('an unreachable host or one that refuses: dropped and counted, never thrown', async () => {
    const { log, lines } = logger();
    const unreachable = new HostMetrics(() => Promise.reject(new Error('no ConnInfo from SPIRE')), log, () => true);
    unreachable.incrCounter(['lost'], {});
    expect(() => unreachable.flush()).not.toThrow();
    for (let i = 0; i < 100 && unreachable.dropped === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(unreachable.dropped).toBe(1);
    expect(lines.find((l) => l['@message'] === 'Metric dropped')).toMatchObject({ reason: 'host services unreachable' });

    refuse = true;
    try {
      const refused = new HostMetrics(async () => target, logger().log, () => true);
      refused.incrCounter(['refused'], {});
      refused.flush();
      for (let i = 0; i < 100 && refused.dropped === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(refused.dropped).toBe(1);
      refused.close();
    } finally {
      refuse = false;
    }
  });
});
