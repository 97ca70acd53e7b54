/**
 * Container-level IMA in edge-workload, with real parts: a real swtpm whose PCR 10 is extended (tpm2_pcrextend)
 * with the template hashes of synthetic IMA lists our test code writes the way the kernel does; pods as real
 * cgroups holding real processes; a real HTTPS kubelet; the decision-event file sink; and the revoker deleting
 * the offending pod through a real HTTPS server speaking the Kubernetes API.
 *
 *  - cgroup mode (ima-cgpath): entries picked by the PID's container cgroup; allowed, tampered, unmeasured;
 *    incremental verification (only new entries are read; a rewritten prefix changes nothing); a list running
 *    past PCR 10; a list that does not replay to PCR 10 gives no IMA selector and a warning;
 *  - files mode (ima-ng): real processes whose executable (through /proc/<pid>/exe) is or is not allowed;
 *  - the built binary through the plugin runtime (go-plugin handshake, HCL Configure, Attest over gRPC).
 */
import { createHash, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { Revoker } from '../../src/revocation/revoker.js';
import { NodeFence, loadKubeConfig } from '../../src/revocation/kube.js';
import { revokerConfigSchema } from '../../src/revocation/config.js';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { DEFAULT_IMA_LOG_PATH, parseConfig } from '../../src/workload/config.js';
import { parseExecutableMappings } from '../../src/workload/ima.js';
import type { ImaEntry } from '../../src/tpm/ima/index.js';
import { builtPlugin } from '../helpers/binaries.js';
import { makePod, PodCgroups, startFakeKubelet, type FakeKubelet, type Pod } from '../helpers/edge-node.js';
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { extendPcrs, startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';
import { fileDigest, synthEntries, toBinaryList, type SynthEntry } from '../tpm/ima/synth.js';
import { recordingLogger, tempDir, type LogLine } from './helpers.js';

const NODE = 'edge-node-ima';
const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

if (process.getuid?.() !== 0) throw new Error('test/workload/ima.test.ts needs root: pods are real cgroups');

/** A node's IMA list: entries appended to a file and (unless told otherwise) extended into the TPM's PCR 10. */
class SyntheticIma {
  readonly entries: ImaEntry[] = [];
  constructor(
    readonly tpm: SwtpmHandle,
    readonly path: string,
  ) {
    writeFileSync(path, '');
  }
  async append(specs: readonly SynthEntry[], extend = true): Promise<ImaEntry[]> {
    const es = synthEntries(specs);
    appendFileSync(this.path, toBinaryList(es));
    this.entries.push(...es);
    if (extend) await extendPcrs(this.tpm.tcti, es.map((e) => ({ pcr: 10, bank: 'sha256' as const, digestHex: sha256(e.templateData) })));
    return es;
  }
}

function policy(digests: Record<string, string[]>): string {
  return JSON.stringify({ meta: { version: 1, generator: 1 }, release: 0, digests, excludes: ['^/tmp/scratch/'], keyrings: {}, ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null } });
}

async function waitForExec(pid: number, name: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if (readlinkSync(`/proc/${pid}/exe`).endsWith(`/${name}`)) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`pid ${pid} never exec'd ${name}`);
}

const cgPath = (pod: Pod): string => `/kubepods/besteffort/pod${pod.uid}/${pod.containerId}`;
const APP = 'app-v1 contents';
const LIB = 'libc contents';

let dir: { path: string; remove(): void };
let kubelet: FakeKubelet;
const pods: Pod[] = [];
const cgroups = new PodCgroups();

beforeAll(async () => {
  dir = tempDir('wl-ima-');
  kubelet = await startFakeKubelet(join(dir.path, 'kubelet'), () => pods);
});

afterAll(async () => {
  await cgroups.cleanup();
  await kubelet?.close();
  dir?.remove();
});

function baseConfig(extra: Record<string, unknown>): Record<string, unknown> {
  return {
    pod_source: 'kubelet',
    node_name: NODE,
    kubelet_host: '127.0.0.1',
    kubelet_secure_port: kubelet.port,
    kubelet_ca_path: kubelet.caPath,
    kubelet_token_path: kubelet.tokenPath,
    miss_retry_deadline: '3s',
    ...extra,
  };
}

async function attestor(config: Record<string, unknown>, lines: LogLine[]): Promise<EdgeWorkloadAttestor> {
  const a = new EdgeWorkloadAttestor({ log: recordingLogger(lines), host: { names: [], agentExists: async () => false } }, { env: {} });
  await a.configure(baseConfig(config), { trustDomain: 'edge.example' });
  return a;
}

const attest = (a: EdgeWorkloadAttestor, pid: number) => a.attest(pid, new AbortController().signal);
const imaOf = (selectors: readonly string[]) => selectors.filter((s) => /^(ima:|exe-sha256:)/.test(s)).sort();
const events = (path: string): Array<Record<string, any>> =>
  existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>) : [];

async function until<T>(what: string, probe: () => T | undefined | false): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('configuration', () => {
  it('is off without ima_* keys, and defaults the rest once one is set', () => {
    expect(parseConfig({}, {}).ima).toBeUndefined();
    expect(parseConfig({ decision_events: { file: { path: '/x' } } }, {}).ima).toBeUndefined();
    expect(parseConfig({ ima_tpm_tcti: 'swtpm:path=/run/swtpm.sock' }, {}).ima).toEqual({
      logPath: DEFAULT_IMA_LOG_PATH,
      policyName: 'runtime',
      tcti: 'swtpm:path=/run/swtpm.sock',
      pcrBank: 'sha256',
      mode: 'auto',
      fileSizeLimit: 256 * 1024 * 1024,
    });
    // HCL1 block form of the sinks.
    expect(parseConfig({ ima_log_path: '/l', decision_events: [{ file: [{ path: '/e.jsonl' }] }] }, {}).decisionEvents?.file?.path).toBe('/e.jsonl');
  });

  it('refuses policy settings without a policy, unknown banks and modes, naming the key', () => {
    expect(() => parseConfig({ ima_policy_name: 'x' }, {})).toThrow(/"ima_policy_name": only means something with ima_policy_path/);
    expect(() => parseConfig({ ima_pcr_bank: 'md5' }, {})).toThrow(/ima_pcr_bank/);
    expect(() => parseConfig({ ima_mode: 'guess' }, {})).toThrow(/ima_mode/);
    expect(() => parseConfig({ ima_policy_path: '/p', ima_policy_sha256: 'abc' }, {})).toThrow(/ima_policy_sha256/);
    expect(() => parseConfig({ ima_log_path: '/l', decision_events: {} }, {})).toThrow(/decision_events/);
  });

  it('Validate reads the policy and the TCTI (a bad one is InvalidConfig before any TPM is touched)', async () => {
    const a = new EdgeWorkloadAttestor({ log: recordingLogger(), host: { names: [], agentExists: async () => false } }, { env: {} });
    await expect(a.validate({ pod_source: 'none', ima_tpm_tcti: 'tcp:1.2.3.4' }, { trustDomain: 'edge.example' })).rejects.toMatchObject({ grpcCode: 3 });
    writeFileSync(join(dir.path, 'unsigned.json'), policy({}));
    writeFileSync(join(dir.path, 'not-a-key.pem'), 'nope');
    await expect(
      a.validate({ pod_source: 'none', ima_policy_path: join(dir.path, 'unsigned.json'), ima_policy_verification_key_path: join(dir.path, 'not-a-key.pem') }, { trustDomain: 'edge.example' }),
    ).rejects.toThrow(/ima_policy_verification_key_path: not a public key/);
    await expect(a.validate({ pod_source: 'none', ima_policy_path: join(dir.path, 'missing.json') }, { trustDomain: 'edge.example' })).rejects.toThrow(/"ima_policy_path": cannot read/);
    expect(await a.validate({ pod_source: 'none', ima_policy_path: join(dir.path, 'unsigned.json') }, { trustDomain: 'edge.example' })).toEqual([]);
  });

  it('a DSSE-signed policy is accepted with its verification key, an unsigned one refused, as on the server', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(dir.path, 'dsse.pub.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    const payload = Buffer.from(policy({ '/usr/bin/app': [hex(fileDigest('sha256', APP))] }));
    const type = 'application/vnd.keylime+json';
    const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${payload.length} `), payload]);
    const envelope = { payloadType: type, payload: payload.toString('base64'), signatures: [{ keyid: '', sig: cryptoSign(null, pae, privateKey).toString('base64') }] };
    writeFileSync(join(dir.path, 'signed.json'), JSON.stringify(envelope));
    const a = new EdgeWorkloadAttestor({ log: recordingLogger(), host: { names: [], agentExists: async () => false } }, { env: {} });
    const key = { ima_policy_verification_key_path: join(dir.path, 'dsse.pub.pem') };
    expect(await a.validate({ pod_source: 'none', ima_policy_path: join(dir.path, 'signed.json'), ...key }, { trustDomain: 'edge.example' })).toEqual([]);
    await expect(a.validate({ pod_source: 'none', ima_policy_path: join(dir.path, 'unsigned.json'), ...key }, { trustDomain: 'edge.example' })).rejects.toThrow(/is not signed, and a verification key is configured/);
    writeFileSync(join(dir.path, 'forged.json'), JSON.stringify({ ...envelope, payload: Buffer.from(policy({})).toString('base64') }));
    await expect(a.validate({ pod_source: 'none', ima_policy_path: join(dir.path, 'forged.json'), ...key }, { trustDomain: 'edge.example' })).rejects.toThrow(/DSSE signature does not verify/);
    await expect(
      a.validate({ pod_source: 'none', ima_policy_path: join(dir.path, 'unsigned.json'), ima_policy_sha256: sha256('something else') }, { trustDomain: 'edge.example' }),
    ).rejects.toThrow(/Checksum of runtime policy does not match/);
  });
});

describe('parseExecutableMappings', () => {
  it('keeps file-backed executable mappings, one per path, and drops " (deleted)"', () => {
    const maps = [
      '55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1311 /usr/bin/sleep',
      '55d0c0a02000-55d0c0a06000 r-xp 00002000 08:01 1311 /usr/bin/sleep',
      '7f0000000000-7f0000022000 r-xp 00000000 08:01 2222 /usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)',
      '7f0000100000-7f0000200000 r--p 00000000 08:01 3333 /usr/lib/locale/locale-archive',
      '7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]',
      '7f0000300000-7f0000301000 rwxp 00000000 00:00 0 ',
      '7f0000400000-7f0000401000 r-xp 00000000 08:01 4444 /opt/my app/lib with space.so',
    ].join('\n');
    expect(parseExecutableMappings(maps)).toEqual([
      { path: '/usr/bin/sleep', range: '55d0c0a02000-55d0c0a06000' },
      { path: '/usr/lib/x86_64-linux-gnu/libc.so.6', range: '7f0000000000-7f0000022000' },
      { path: '/opt/my app/lib with space.so', range: '7f0000400000-7f0000401000' },
    ]);
    expect(parseExecutableMappings(maps, 2)).toBeUndefined();
  });
});

describe('cgroup mode (ima-cgpath) on a real swtpm, real cgroups and real processes', () => {
  let tpm: SwtpmHandle;
  let ima: SyntheticIma;
  let a: EdgeWorkloadAttestor;
  const lines: LogLine[] = [];
  const good = makePod({ name: 'sensor', namespace: 'edge', serviceAccount: 'sensor' }, NODE);
  const bad = makePod({ name: 'tampered', namespace: 'edge', serviceAccount: 'tampered' }, NODE);
  const quiet = makePod({ name: 'unmeasured', namespace: 'edge', serviceAccount: 'quiet' }, NODE);
  const pids: Record<string, number> = {};
  let eventsPath: string;
  let sleepSha: string;

  beforeAll(async () => {
    tpm = await startSwtpm();
    pods.push(good, bad, quiet);
    for (const [k, pod] of Object.entries({ good, bad, quiet })) {
      const child = cgroups.spawn(pod, 'sleep', ['600']);
      await waitForExec(child.pid!, 'sleep');
      pids[k] = child.pid!;
    }
    sleepSha = sha256(readFileSync(readlinkSync(`/proc/${pids['good']}/exe`)));
    ima = new SyntheticIma(tpm, join(dir.path, 'cg-binary_runtime_measurements'));
    await ima.append([
      { template: 'ima-cgpath', path: 'boot_aggregate', content: 'boot', cgroup: '/' },
      { template: 'ima-cgpath', path: '/usr/sbin/containerd', content: 'containerd', cgroup: '/system.slice/containerd.service' },
      { template: 'ima-cgpath', path: '/usr/bin/app', content: APP, cgroup: cgPath(good) },
      { template: 'ima-cgpath', path: '/usr/lib/libc.so.6', content: LIB, cgroup: cgPath(good) },
      { template: 'ima-cgpath', path: '/tmp/scratch/x', content: 'excluded by the policy', cgroup: cgPath(good) },
      { template: 'ima-cgpath', path: '/usr/bin/app', content: 'app-v1 contents, patched by an intruder', cgroup: cgPath(bad) },
      // The good container's ID under another pod: not the good pod's (an ima-cgpath pod UID must agree too).
      { template: 'ima-cgpath', path: '/usr/bin/other', content: 'not allowed', cgroup: `/kubepods/besteffort/pod00000000-0000-4000-8000-00000000abcd/${good.containerId}` },
    ]);
    writeFileSync(
      join(dir.path, 'cg-policy.json'),
      policy({
        boot_aggregate: [hex(fileDigest('sha256', 'boot'))],
        '/usr/sbin/containerd': [hex(fileDigest('sha256', 'containerd'))],
        '/usr/bin/app': [hex(fileDigest('sha256', APP))],
        '/usr/lib/libc.so.6': [`sha256:${hex(fileDigest('sha256', LIB))}`],
      }),
    );
    eventsPath = join(dir.path, 'cg-events.jsonl');
    a = await attestor(
      {
        ima_log_path: ima.path,
        ima_policy_path: join(dir.path, 'cg-policy.json'),
        ima_policy_name: 'edge-runtime',
        ima_tpm_tcti: tpm.tcti,
        decision_events: [{ file: [{ path: eventsPath }] }],
      },
      lines,
    );
  }, 60_000);

  afterAll(async () => {
    await a?.close();
    await tpm?.stop();
  });

  it('a container whose every measured file is allowed gets ima:verified, ima:policy:<name> and exe-sha256', async () => {
    const s = await attest(a, pids['good']!);
    expect(s).toContain(`pod-uid:${good.uid}`);
    expect(imaOf(s)).toEqual([`exe-sha256:${sleepSha}`, 'ima:policy:edge-runtime', 'ima:verified']);
  });

  it('a container with a tampered file gets no ima:verified or ima:policy, and a decision event names it', async () => {
    const s = await attest(a, pids['bad']!);
    expect(s).toContain(`pod-uid:${bad.uid}`);
    expect(imaOf(s)).toEqual([`exe-sha256:${sleepSha}`]);
    const ev = await until('the violation event', () => events(eventsPath).find((e) => e.workload?.pod_uid === bad.uid));
    expect(ev).toMatchObject({
      version: 1,
      type: 'spire-edge.attestation.decision',
      outcome: 'refused',
      status: 'contraindicated',
      code: 'ERR_IMA_RUNTIME_POLICY_VIOLATION',
      rule: 'digest-not-allowed',
      subject: 'workload',
      workload: {
        pod_uid: bad.uid,
        pod_namespace: 'edge',
        pod_name: (bad.json as any).metadata.name,
        container_id: bad.containerId,
        container_name: 'main',
        pid: pids['bad'],
        path: '/usr/bin/app',
        digest: `sha256:${hex(fileDigest('sha256', 'app-v1 contents, patched by an intruder'))}`,
        rule: 'digest-not-allowed',
        policy: 'edge-runtime',
        entry: 5,
        mode: 'cgroup',
        node_name: NODE,
      },
    });
    expect(ev.reason).toMatch(/runtime policy "edge-runtime": IMA entry 5 "\/usr\/bin\/app" \(sha256:[0-9a-f]{64}\).*\[rule digest-not-allowed\]/);
    expect(ev.appraisal.executables.status).toBe('contraindicated');
    // The good pod caused no event.
    expect(events(eventsPath).filter((e) => e.workload?.pod_uid === good.uid)).toEqual([]);
    // The same violation again is not a second event (one per container, path, digest and rule).
    await attest(a, pids['bad']!);
    await new Promise((r) => setTimeout(r, 200));
    expect(events(eventsPath).filter((e) => e.workload?.pod_uid === bad.uid)).toHaveLength(1);
  });

  it('a container with no measured entry is not verified (the list does not cover it) and is no violation', async () => {
    const s = await attest(a, pids['quiet']!);
    expect(imaOf(s)).toEqual([`exe-sha256:${sleepSha}`]);
    expect(events(eventsPath).filter((e) => e.workload?.pod_uid === quiet.uid)).toEqual([]);
  });

  it('verifies incrementally: only new entries are read, a rewritten prefix changes nothing, entries past PCR 10 wait', async () => {
    // Corrupt the already verified prefix in place: the cached, TPM-anchored entries are what counts.
    const bytes = readFileSync(ima.path);
    bytes.fill(0x41, 0, 64);
    writeFileSync(ima.path, bytes);
    await ima.append([{ template: 'ima-cgpath', path: '/usr/lib/libc.so.6', content: LIB, cgroup: cgPath(quiet) }]);
    expect(imaOf(await attest(a, pids['quiet']!))).toEqual([`exe-sha256:${sleepSha}`, 'ima:policy:edge-runtime', 'ima:verified']);
    // Appended to the list but not (yet) extended into PCR 10: not trusted, the verified prefix still answers.
    const [late] = await ima.append([{ template: 'ima-cgpath', path: '/usr/bin/evil', content: 'evil', cgroup: cgPath(quiet) }], false);
    expect(imaOf(await attest(a, pids['quiet']!))).toEqual([`exe-sha256:${sleepSha}`, 'ima:policy:edge-runtime', 'ima:verified']);
    // A read racing the kernel: half an entry at the end is not an entry, and is read again once complete.
    const [half] = synthEntries([{ template: 'ima-cgpath', path: '/usr/lib/libc.so.6', content: LIB, cgroup: cgPath(good) }]);
    const halfBytes = toBinaryList([half!]);
    appendFileSync(ima.path, halfBytes.subarray(0, 30));
    expect(imaOf(await attest(a, pids['quiet']!))).toEqual([`exe-sha256:${sleepSha}`, 'ima:policy:edge-runtime', 'ima:verified']);
    // Once the kernel extends it, it is verified and judged: the container loses ima:verified.
    await extendPcrs(tpm.tcti, [{ pcr: 10, bank: 'sha256', digestHex: sha256(late!.templateData) }]);
    expect(imaOf(await attest(a, pids['quiet']!))).toEqual([`exe-sha256:${sleepSha}`]);
    appendFileSync(ima.path, halfBytes.subarray(30));
    await extendPcrs(tpm.tcti, [{ pcr: 10, bank: 'sha256', digestHex: sha256(half!.templateData) }]);
    expect(imaOf(await attest(a, pids['good']!))).toEqual([`exe-sha256:${sleepSha}`, 'ima:policy:edge-runtime', 'ima:verified']);
    const ev = await until('the second violation', () => events(eventsPath).find((e) => e.workload?.pod_uid === quiet.uid));
    expect(ev.workload).toMatchObject({ path: '/usr/bin/evil', rule: 'not-in-policy', entry: 8 });
  });

  it('a list that no longer replays to PCR 10 (an extend the list does not show) yields no IMA selector and a warning', async () => {
    await extendPcrs(tpm.tcti, [{ pcr: 10, bank: 'sha256', digestHex: sha256('an extend the list does not record') }]);
    const s = await attest(a, pids['good']!);
    expect(s).toContain(`pod-uid:${good.uid}`);
    expect(imaOf(s)).toEqual([]);
    const warn = lines.find((l) => l.level === 'warn' && /does not replay to TPM PCR 10/.test(l.message));
    expect(warn?.fields?.['reason']).toMatch(/does not replay to the quoted PCR 10: sha256 replays to [0-9a-f]{64}, quoted [0-9a-f]{64}/);
    expect(warn?.fields?.['pid']).toBe(pids['good']);
    // The same reason again soon after is logged at debug: every Workload API call attests, the log must not flood.
    expect(imaOf(await attest(a, pids['good']!))).toEqual([]);
    const same = (l: LogLine) => /does not replay to TPM PCR 10/.test(l.message) && l.fields?.['reason'] === warn?.fields?.['reason'];
    expect(lines.filter((l) => same(l) && l.level === 'warn')).toHaveLength(1);
    expect(lines.filter((l) => same(l) && l.level === 'debug')).toHaveLength(1);
  });

  it('the revoker deletes the pod a workload violation names (UID as a delete precondition), and only that pod', async () => {
    const kube: FakeKubeApi = await startFakeKubeApi(dir.path);
    try {
      const replacedBad = { ...(bad.json as any), metadata: { ...(bad.json as any).metadata } };
      kube.pods = [structuredClone(good.json) as any, structuredClone(replacedBad), structuredClone(quiet.json) as any];
      // The quiet pod was recreated under the same name since its event: another UID, so it must stay.
      (kube.pods[2]!.metadata as any).uid = '00000000-0000-4000-8000-000000000000';
      const config = revokerConfigSchema.parse({
        events_file: eventsPath,
        state_dir: join(dir.path, 'revoker-state'),
        kubernetes: { kubeconfig: kube.kubeconfigPath, taint: false, evict: false },
        node_mapping: { label: false },
        retry: { initial: 50, max: 200 },
      });
      const revoker = new Revoker({ config, log: recordingLogger(), fence: new NodeFence(loadKubeConfig({ kubeconfig: kube.kubeconfigPath, inCluster: false }), config.kubernetes!.taint_key) });
      expect(await revoker.drain()).toBeGreaterThanOrEqual(2);
      const deletes = kube.calls.filter((c) => c.method === 'DELETE');
      expect(deletes.map((c) => [c.path, (c.body as any)?.preconditions?.uid, c.status])).toEqual([
        [`/api/v1/namespaces/edge/pods/${(bad.json as any).metadata.name}`, bad.uid, 200],
        [`/api/v1/namespaces/edge/pods/${(quiet.json as any).metadata.name}`, quiet.uid, 409],
      ]);
      expect(kube.pods.map((p) => p.metadata.name).sort()).toEqual([(good.json as any).metadata.name, (quiet.json as any).metadata.name].sort());
      const audit = readFileSync(join(dir.path, 'revoker-state', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      expect(audit.filter((e) => e.action === 'delete_pod').map((e) => [e.pod_uid, e.result])).toEqual([
        [bad.uid, 'done'],
        [quiet.uid, 'already'],
      ]);
      expect(kube.calls.some((c) => c.method === 'PATCH' || c.path.endsWith('/eviction'))).toBe(false);
    } finally {
      await kube.close();
    }
  });
});

describe('files mode (ima-ng): real processes matched through /proc/<pid>/exe and /proc/<pid>/maps', () => {
  let tpm: SwtpmHandle;
  let ima: SyntheticIma;
  let a: EdgeWorkloadAttestor;
  const lines: LogLine[] = [];
  const allowed = makePod({ name: 'allowed', namespace: 'std', serviceAccount: 'allowed' }, NODE);
  const denied = makePod({ name: 'denied', namespace: 'std', serviceAccount: 'denied' }, NODE);
  const unmeasured = makePod({ name: 'unmeasured-exe', namespace: 'std', serviceAccount: 'unmeasured' }, NODE);
  const rogue = makePod({ name: 'rogue', namespace: 'std', serviceAccount: 'rogue' }, NODE);
  const pids: Record<string, number> = {};
  const exes: Record<string, string> = {};
  let eventsPath: string;

  /** What the kernel's BPRM_CHECK/MMAP_CHECK rules would have logged for a running process: each executable file it maps. */
  function measuredFiles(pid: number): Array<{ path: string; content: Buffer }> {
    const out = new Map<string, Buffer>();
    const exe = readlinkSync(`/proc/${pid}/exe`);
    out.set(exe, readFileSync(exe));
    for (const m of parseExecutableMappings(readFileSync(`/proc/${pid}/maps`, 'utf8')) ?? []) out.set(m.path, readFileSync(m.path));
    return [...out].map(([path, content]) => ({ path, content }));
  }

  beforeAll(async () => {
    tpm = await startSwtpm();
    const bin = join(dir.path, 'bin');
    const sleepPath = realpathSync('/bin/sleep');
    mkdirSync(bin, { recursive: true });
    const mk = (name: string, extra = ''): string => {
      const p = join(bin, name);
      copyFileSync(sleepPath, p);
      if (extra) appendFileSync(p, extra); // bytes after the ELF image: still runs, another digest
      chmodSync(p, 0o755);
      return p;
    };
    exes['allowed'] = mk('edge-app');
    exes['denied'] = mk('edge-app-patched', 'trojan');
    exes['unmeasured'] = mk('edge-app-unmeasured', 'v2');
    exes['rogue'] = mk('edge-app-rogue', 'dropped in at run time');
    pods.push(allowed, denied, unmeasured, rogue);
    for (const [k, pod] of Object.entries({ allowed, denied, unmeasured, rogue })) {
      const child = cgroups.spawn(pod, exes[k]!, ['600']);
      await waitForExec(child.pid!, exes[k]!.split('/').pop()!);
      pids[k] = child.pid!;
    }
    ima = new SyntheticIma(tpm, join(dir.path, 'std-binary_runtime_measurements'));
    const digests: Record<string, string[]> = { boot_aggregate: [hex(fileDigest('sha256', 'boot'))] };
    const specs: SynthEntry[] = [{ template: 'ima-ng', path: 'boot_aggregate', content: 'boot' }];
    for (const k of ['allowed', 'denied']) {
      for (const f of measuredFiles(pids[k]!)) specs.push({ template: 'ima-ng', path: f.path, content: f.content });
    }
    // The unmeasured process's libraries are measured (shared with the others), its own executable is not.
    for (const f of measuredFiles(pids['unmeasured']!).filter((f) => f.path !== exes['unmeasured'])) specs.push({ template: 'ima-ng', path: f.path, content: f.content });
    for (const s of specs) if (s.path !== exes['denied'] && s.path !== 'boot_aggregate') (digests[s.path] ??= []).push(sha256(s.content as Buffer));
    digests[exes['unmeasured']!] = [sha256(readFileSync(exes['unmeasured']!))];
    for (const k of Object.keys(digests)) digests[k] = [...new Set(digests[k])];
    await ima.append(specs);
    writeFileSync(join(dir.path, 'std-policy.json'), policy(digests));
    eventsPath = join(dir.path, 'std-events.jsonl');
    a = await attestor(
      {
        ima_log_path: ima.path,
        ima_policy_path: join(dir.path, 'std-policy.json'),
        ima_policy_name: 'std-runtime',
        ima_tpm_tcti: tpm.tcti,
        ima_mode: 'files',
        decision_events: { file: { path: eventsPath } },
      },
      lines,
    );
  }, 60_000);

  afterAll(async () => {
    await a?.close();
    await tpm?.stop();
  });

  it('a process whose executable and mapped files are measured and allowed gets ima:verified', async () => {
    const s = await attest(a, pids['allowed']!);
    expect(s).toContain(`pod-uid:${allowed.uid}`);
    expect(imaOf(s)).toEqual([`exe-sha256:${sha256(readFileSync(exes['allowed']!))}`, 'ima:policy:std-runtime', 'ima:verified']);
  });

  it('a process whose measured executable is not in the policy gets no ima:verified, and an event names it', async () => {
    const s = await attest(a, pids['denied']!);
    const exeSha = sha256(readFileSync(exes['denied']!));
    expect(imaOf(s)).toEqual([`exe-sha256:${exeSha}`]);
    const ev = await until('the event', () => events(eventsPath).find((e) => e.workload?.pod_uid === denied.uid));
    expect(ev.workload).toMatchObject({ pid: pids['denied'], path: exes['denied'], digest: `sha256:${exeSha}`, rule: 'not-in-policy', mode: 'files', container_id: denied.containerId });
    expect(typeof ev.workload.entry).toBe('number');
  });

  it('an allowed executable the list never measured is not verified (no IMA evidence), and is no violation', async () => {
    const s = await attest(a, pids['unmeasured']!);
    expect(imaOf(s)).toEqual([`exe-sha256:${sha256(readFileSync(exes['unmeasured']!))}`]);
    expect(events(eventsPath).filter((e) => e.workload?.pod_uid === unmeasured.uid)).toEqual([]);
    expect(lines.some((l) => l.message === 'IMA: container not verified' && /were not measured/.test(String(l.fields?.['reason'])))).toBe(true);
  });

  it('an executable neither measured nor allowed is a violation too (the event has no list entry)', async () => {
    const s = await attest(a, pids['rogue']!);
    const exeSha = sha256(readFileSync(exes['rogue']!));
    expect(imaOf(s)).toEqual([`exe-sha256:${exeSha}`]);
    const ev = await until('the event', () => events(eventsPath).find((e) => e.workload?.pod_uid === rogue.uid));
    expect(ev.workload).toMatchObject({ path: exes['rogue'], digest: `sha256:${exeSha}`, rule: 'not-in-policy', mode: 'files' });
    expect(ev.workload.entry).toBeUndefined();
    expect(ev.reason).toBe(`runtime policy "std-runtime": file "${exes['rogue']}" (sha256:${exeSha}), not in the IMA list: not in the runtime policy's digests [rule not-in-policy]`);
  });

  it('a file larger than ima_file_size_limit is not hashed: no IMA selector, and a warning names the limit', async () => {
    const b = await attestor({ ima_log_path: ima.path, ima_tpm_tcti: tpm.tcti, ima_mode: 'files', ima_file_size_limit: 1000 }, lines);
    try {
      expect(imaOf(await attest(b, pids['allowed']!))).toEqual([]);
      const warn = lines.find((l) => l.level === 'warn' && /cannot read the process's files/.test(l.message) && l.fields?.['pid'] === pids['allowed']);
      expect(warn?.fields?.['reason']).toMatch(/executable is larger than ima_file_size_limit/);
    } finally {
      await b.close();
    }
  });

  it('a list from another machine (it does not replay to this TPM\'s PCR 10) yields no IMA selector', async () => {
    const other = await startSwtpm();
    try {
      await extendPcrs(other.tcti, [{ pcr: 10, bank: 'sha256', digestHex: sha256('another machine measured something else') }]);
      const b = await attestor({ ima_log_path: ima.path, ima_tpm_tcti: other.tcti, ima_mode: 'files' }, lines);
      try {
        const s = await attest(b, pids['allowed']!);
        expect(s).toContain(`pod-uid:${allowed.uid}`);
        expect(imaOf(s)).toEqual([]);
        expect(lines.some((l) => l.level === 'warn' && /does not replay to TPM PCR 10/.test(l.message) && l.fields?.['pid'] === pids['allowed'])).toBe(true);
      } finally {
        await b.close();
      }
    } finally {
      await other.stop();
    }
  });
});

describe('the built edge-workload binary over gRPC', () => {
  it('Configure with ima_* keys in HCL, then Attest answers with ima:verified for a verified container', async () => {
    const tpm = await startSwtpm();
    const pod = makePod({ name: 'grpc-ima', namespace: 'edge', serviceAccount: 'grpc' }, NODE);
    pods.push(pod);
    const child = cgroups.spawn(pod, 'sleep', ['600']);
    await waitForExec(child.pid!, 'sleep');
    const ima = new SyntheticIma(tpm, join(dir.path, 'grpc-binary_runtime_measurements'));
    await ima.append([
      { template: 'ima-cgpath', path: 'boot_aggregate', content: 'boot', cgroup: '/' },
      { template: 'ima-cgpath', path: '/usr/bin/app', content: APP, cgroup: cgPath(pod) },
    ]);
    writeFileSync(join(dir.path, 'grpc-policy.json'), policy({ boot_aggregate: [hex(fileDigest('sha256', 'boot'))], '/usr/bin/app': [hex(fileDigest('sha256', APP))] }));
    const harness = await PluginHarness.launch({ binary: builtPlugin('edge-workload'), type: 'WorkloadAttestor' });
    try {
      await harness.init([]);
      await harness.configure(`
        pod_source = "kubelet"
        node_name = "${NODE}"
        miss_retry_deadline = "3s"
        kubelet {
          host = "127.0.0.1"
          secure_port = ${kubelet.port}
          ca_path = "${kubelet.caPath}"
          token_path = "${kubelet.tokenPath}"
        }
        ima_log_path = "${ima.path}"
        ima_policy_path = "${join(dir.path, 'grpc-policy.json')}"
        ima_policy_name = "grpc-runtime"
        ima_tpm_tcti = "${tpm.tcti}"
        decision_events {
          file { path = "${join(dir.path, 'grpc-events.jsonl')}" }
        }
      `);
      const r = (await harness.unary(ServiceNames.workloadAttestor, 'Attest', { pid: child.pid })) as { selector_values: string[] };
      expect(r.selector_values).toContain(`pod-uid:${pod.uid}`);
      expect(imaOf(r.selector_values)).toEqual([`exe-sha256:${sha256(readFileSync(readlinkSync(`/proc/${child.pid}/exe`)))}`, 'ima:policy:grpc-runtime', 'ima:verified']);
      // A policy that is not JSON is refused at Configure with InvalidArgument naming it.
      writeFileSync(join(dir.path, 'broken-policy.json'), '{ not json');
      await expect(
        harness.configure(`
          pod_source = "none"
          ima_log_path = "${ima.path}"
          ima_policy_path = "${join(dir.path, 'broken-policy.json')}"
        `),
      ).rejects.toMatchObject({ code: 3, details: expect.stringMatching(/runtime policy "runtime": is not JSON/) });
    } finally {
      await harness.unload();
      await tpm.stop();
    }
  }, 60_000);
});
