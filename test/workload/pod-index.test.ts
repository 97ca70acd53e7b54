/** The pod index on its own, with an in-memory source: single-flight under a slow source, retries, staleness. */
import { describe, expect, it } from 'vitest';
import { GrpcCode } from '../../src/errors.js';
import { PodIndex } from '../../src/workload/pod-index.js';
import type { PodListResult, PodSource } from '../../src/workload/pod-source.js';
import type { K8sPod } from '../../src/workload/k8s-types.js';
import { recordingLogger } from './helpers.js';

const UID = '2c48913c-b29f-11e7-9350-020968147796';
const CID = 'a'.repeat(64);
const pod = (cids: string[]): K8sPod => ({
  metadata: { uid: UID, name: 'p', namespace: 'ns' },
  spec: { serviceAccountName: 'sa', nodeName: 'n' },
  status: { containerStatuses: cids.map((c, i) => ({ name: `c${i}`, containerID: `containerd://${c}`, image: 'i', imageID: 'i@sha256:' + '0'.repeat(64) })) },
});

function source(opts: { delayMs: number; items: () => K8sPod[]; fail?: () => boolean }): PodSource & { calls: number } {
  const s = {
    name: 'kubelet' as const,
    endpoint: 'memory',
    calls: 0,
    close() {},
    async list(): Promise<PodListResult> {
      s.calls++;
      await new Promise((r) => setTimeout(r, opts.delayMs));
      if (opts.fail?.()) throw new Error('down');
      return { items: opts.items(), bytes: 100 };
    },
  };
  return s;
}
const sig = (): AbortSignal => new AbortController().signal;

describe('PodIndex', () => {
  it('50 concurrent misses against a slow source share one request', async () => {
    const src = source({ delayMs: 80, items: () => [pod([])] });
    const idx = new PodIndex({ source: src, log: recordingLogger(), pollIntervalMs: 3_600_000, maxStalenessMs: 7_200_000 });
    await idx.start();
    await new Promise((r) => setTimeout(r, 100));
    const before = src.calls;
    const rs = await Promise.allSettled(Array.from({ length: 50 }, () => idx.resolve({ containerId: CID, podUid: UID }, 0, sig())));
    expect(rs.every((r) => r.status === 'rejected' && (r.reason as any).grpcCode === GrpcCode.DEADLINE_EXCEEDED)).toBe(true);
    expect(src.calls - before).toBe(1);
    idx.close();
  });
  it('a container that appears later is found by the backoff retries before the deadline', async () => {
    let present = false;
    const src = source({ delayMs: 1, items: () => [pod(present ? [CID] : [])] });
    const idx = new PodIndex({ source: src, log: recordingLogger(), pollIntervalMs: 3_600_000, maxStalenessMs: 7_200_000 });
    await idx.start();
    setTimeout(() => (present = true), 150);
    const r = await idx.resolve({ containerId: CID, podUid: UID }, 5_000, sig());
    expect(r.container?.status.name).toBe('c0');
    expect(src.calls).toBeGreaterThan(2);
    idx.close();
  });
  it('two pods claiming one container: FAILED_PRECONDITION', async () => {
    const other: K8sPod = { ...pod([CID]), metadata: { uid: '11111111-b29f-11e7-9350-020968147796', name: 'q', namespace: 'ns' } };
    const src = source({ delayMs: 1, items: () => [pod([CID]), other] });
    const idx = new PodIndex({ source: src, log: recordingLogger(), pollIntervalMs: 3_600_000, maxStalenessMs: 7_200_000 });
    await idx.start();
    const e = await idx.resolve({ containerId: CID }, 0, sig()).catch((x) => x);
    expect(e.code).toBe('ERR_WORKLOAD_DUPLICATE_CONTAINER');
    expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
    idx.close();
  });
  it('staleness is measured on an injected clock', async () => {
    let now = 0;
    let down = false;
    const log = recordingLogger();
    const src = source({ delayMs: 0, items: () => [pod([CID])], fail: () => down });
    const idx = new PodIndex({ source: src, log, pollIntervalMs: 3_600_000, maxStalenessMs: 1000, now: () => now });
    await idx.start();
    down = true;
    now = 500;
    expect(await idx.refresh()).toBe(false);
    expect(idx.status().ageMs).toBe(500);
    expect((await idx.resolve({ containerId: CID, podUid: UID }, 0, sig())).container).toBeDefined();
    expect(log.lines.some((l) => l.level === 'warn' && l.fields?.['snapshot_age_ms'] === 500)).toBe(true);
    now = 1001;
    const e = await idx.resolve({ containerId: CID, podUid: UID }, 0, sig()).catch((x) => x);
    expect(e.code).toBe('ERR_WORKLOAD_SNAPSHOT_STALE');
    idx.close();
  });
});
