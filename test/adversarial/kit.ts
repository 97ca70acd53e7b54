/**
 * Shared parts of the adversarial suite: the shipped plugins launched as SPIRE launches them, real swtpm TPMs that
 * "booted" a chosen sequence of measurements, and an attacker's event log written byte by byte (TCG PC Client PFP
 * §10.2.2 TCG_PCR_EVENT2), so each test states exactly what the TPM measured and what the agent claims.
 */
import 'reflect-metadata';
import type * as grpc from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { randomUUID, webcrypto } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { ServiceNames } from '../../src/plugin/protos.js';
import { toHex } from '../../src/tpm/bytes.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { settingsHcl } from '../helpers/spire.js';
import { relayAttestation, type RelayHooks, type RelayResult } from '../helpers/spire-relay.js';
import { extendPcrs, startSwtpm, tpm2, type SwtpmHandle, type SwtpmOptions } from '../helpers/swtpm.js';
import { decodeChallenge, type AttestationChallenge } from '../../src/nodeattestor/wire.js';
import { Tpm2Tools } from '../../src/tpm/tools.js';
import { ascii, buildAgileLog, hash } from '../tpm/eventlog-builder.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** A real OVMF + shim + GRUB log with Secure Boot on (sha256 only); the "golden node" of these attacks. */
export const GOLDEN_LOG_PATH = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;

/** One event as an attacker edits it: every field is the agent's claim; only `digest` reaches the TPM. */
export interface LogEvent {
  pcr: number;
  type: number;
  data: Uint8Array;
  /** sha256 digest; what the TPM was (or claims to have been) extended with. */
  digest: Uint8Array;
}

/** The golden log's events (without the Spec ID header), as editable copies. */
export function goldenEvents(): LogEvent[] {
  const log = parseEventLog(new Uint8Array(readFileSync(GOLDEN_LOG_PATH)));
  return log.untrustedEvents.slice(1).map((e) => ({
    pcr: e.pcrIndex,
    type: e.type,
    data: Uint8Array.from(e.data),
    digest: Uint8Array.from(e.digests.get('sha256')!),
  }));
}

export const goldenLogBytes = (): Uint8Array => new Uint8Array(readFileSync(GOLDEN_LOG_PATH));

/** A sha256 crypto-agile log of `events`, each digest as given (not recomputed). */
export function writeLog(events: readonly LogEvent[]): Uint8Array {
  return buildAgileLog(
    events.map((e) => ({ pcr: e.pcr, type: e.type, data: e.data, digests: { sha256: e.digest } })),
    ['sha256'],
  );
}

/** An event whose digest is the hash of its data, as firmware logs data-measured events. */
export function dataEvent(pcr: number, type: number, data: Uint8Array): LogEvent {
  return { pcr, type, data, digest: hash('sha256', data) };
}

export const text = (s: string): Uint8Array => ascii(s);
export const latin1 = (data: Uint8Array): string => Buffer.from(data).toString('latin1');

export function indexOf(events: readonly LogEvent[], match: (e: LogEvent) => boolean, what: string): number {
  const i = events.findIndex(match);
  if (i < 0) throw new Error(`golden log has no ${what}`);
  return i;
}

/** The index of the golden log's ExitBootServices() invocation: where an in-boot event must go at the latest. */
export function exitBootServicesIndex(events: readonly LogEvent[]): number {
  return indexOf(events, (e) => e.pcr === 5 && latin1(e.data) === 'Exit Boot Services Invocation', 'ExitBootServices event');
}

/** Resources of one test file; `cleanup()` in afterAll. */
export class AttackLab {
  readonly work = mkdtempSync(join(tmpdir(), 'adversarial-'));
  readonly #harnesses: PluginHarness[] = [];
  readonly #tpms: SwtpmHandle[] = [];
  #caDir: string | undefined;
  #files = 0;

  /** A fresh swtpm whose sha256 PCRs were extended with `measured`, in order: what the node really booted. */
  async bootNode(measured: readonly LogEvent[], options: SwtpmOptions = {}): Promise<SwtpmHandle> {
    const tpm = await startSwtpm(options);
    this.#tpms.push(tpm);
    const extends_ = measured
      .filter((e) => e.type !== EventType.EV_NO_ACTION && e.pcr <= 23)
      .map((e) => ({ pcr: e.pcr, bank: 'sha256' as const, digestHex: toHex(e.digest) }));
    await extendPcrs(tpm.tcti, extends_);
    if (!this.#caDir) {
      this.#caDir = join(this.work, 'ca');
      mkdirSync(this.#caDir);
      writeFileSync(join(this.#caDir, 'root.pem'), tpm.rootCaPem);
      writeFileSync(join(this.#caDir, 'intermediate.pem'), tpm.intermediateCaPem);
    }
    return tpm;
  }

  /** Root on the node extends more after boot (through /dev/tpm0 in real life). */
  async extendAfterBoot(tpm: SwtpmHandle, measured: readonly LogEvent[]): Promise<void> {
    await extendPcrs(tpm.tcti, measured.map((e) => ({ pcr: e.pcr, bank: 'sha256' as const, digestHex: toHex(e.digest) })));
  }

  /** Writes `content` to a new file in the lab and returns its path. */
  file(name: string, content: Uint8Array | string): string {
    const path = join(this.work, `${this.#files++}-${name}`);
    writeFileSync(path, content);
    return path;
  }

  get caDir(): string {
    if (!this.#caDir) throw new Error('boot a node first: the EK CA comes from swtpm');
    return this.#caDir;
  }

  async plugin(name: 'tpm-server' | 'tpm-agent', settings: Record<string, unknown>): Promise<PluginHarness> {
    const h = await PluginHarness.launch({ binary: builtPlugin(name), type: 'NodeAttestor' });
    this.#harnesses.push(h);
    await h.init();
    await h.configure(settingsHcl(settings));
    return h;
  }

  /** The shipped tpm-server with the swtpm EK CA, the given policy file and settings. */
  server(policyPath: string | undefined, extra: Record<string, unknown> = {}): Promise<PluginHarness> {
    return this.plugin('tpm-server', { ek_ca_path: [this.caDir], ...(policyPath ? { policy_path: policyPath } : {}), ...extra });
  }

  /** The shipped tpm-agent on `tpm`, sending the event log at `logPath` (what the attacker chose to write there). */
  agent(tpm: SwtpmHandle, logPath: string): Promise<PluginHarness> {
    return this.plugin('tpm-agent', { tpm_tcti: tpm.tcti, event_log_path: logPath, ek_kind: 'rsa' });
  }

  /** The usual target: a node that booted the golden log, an honest agent on it and a server (with `serverExtra`). */
  async goldenNode(serverExtra: Record<string, unknown> = {}): Promise<{ node: SwtpmHandle; server: PluginHarness; agent: PluginHarness }> {
    const events = goldenEvents();
    const node = await this.bootNode(events);
    const server = await this.server(undefined, serverExtra);
    const agent = await this.agent(node, this.file('eventlog.bin', writeLog(events)));
    return { node, server, agent };
  }

  async cleanup(): Promise<void> {
    for (const h of this.#harnesses.splice(0)) await h.kill();
    await Promise.all(this.#tpms.splice(0).map((t) => t.stop()));
    rmSync(this.work, { recursive: true, force: true });
  }
}

export { settingsHcl as hcl } from '../helpers/spire.js';

/** The server plugin (not the agent) refused with `code`, and its message matches `pattern`. */
export async function expectRefused(promise: Promise<unknown>, code: grpc.status, pattern?: RegExp): Promise<grpc.ServiceError> {
  const err = (await promise.then(
    (r) => ({ admitted: r }),
    (e) => e,
  )) as grpc.ServiceError & { side?: string; admitted?: unknown };
  expect(err.admitted, 'the attack was admitted').toBeUndefined();
  if (err.side === undefined && err instanceof Error) throw err; // the attack itself broke (a tool failed), not the server
  expect({ side: err.side, code: err.code }).toEqual({ side: 'server', code });
  if (pattern) expect(err.details).toMatch(pattern);
  return err;
}

// ---------------------------------------------------------------------------------------------------------------
// Root on the node: the attacker drives the node's TPM directly (tpm2-tools, as through /dev/tpm0) and speaks to the
// shipped tpm-server itself, with whatever payload and response it likes.

/**
 * Where the shipped tpm-agent keeps its keys with `ek_kind = "rsa"` and the default `ak_alg = "ecc"` (agent.ts
 * DEFAULT_AK_HANDLES, tools.ts DEFAULT_EK_HANDLE).
 */
export const AGENT_RSA_EK_HANDLE = 0x81010001;
export const AGENT_AK_HANDLE = 0x81000a02;
export const hex32 = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/** A genuine attestation relayed as SPIRE relays it: the recorded payload, challenge and response. */
export async function genuineAttestation(
  agent: PluginHarness,
  server: PluginHarness,
  hooks: RelayHooks = {},
): Promise<RelayResult> {
  return relayAttestation(agent, server, hooks);
}

/** The attacker's handle on one node's TPM. */
export class NodeRoot {
  readonly tools: Tpm2Tools;
  readonly #tpm: SwtpmHandle;
  readonly #dir: string;
  #files = 0;

  constructor(tpm: SwtpmHandle) {
    this.#tpm = tpm;
    this.tools = new Tpm2Tools({ tcti: tpm.tcti });
    this.#dir = mkdtempSync(join(tpm.dir, 'root-'));
  }

  #path(name: string): string {
    return join(this.#dir, `${this.#files++}-${name}`);
  }

  run(tool: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
    return tpm2(this.#tpm.tcti, tool, args);
  }

  /** TPM2B_PUBLIC of the key at a persistent handle (`tpm2_readpublic -f tss`). */
  async publicArea(handle: number): Promise<Uint8Array> {
    const out = this.#path('pub.tss');
    await this.run('tpm2_readpublic', ['-c', hex32(handle), '-f', 'tss', '-o', out]);
    return new Uint8Array(readFileSync(out));
  }

  /** A policy session that satisfies the EK's authPolicy (PolicySecret(endorsement)); returns its context file. */
  async #ekSession(): Promise<string> {
    const session = this.#path('session.ctx');
    await this.run('tpm2_startauthsession', ['--policy-session', '-S', session]);
    await this.run('tpm2_policysecret', ['-S', session, '-c', 'e']);
    return session;
  }

  /**
   * Creates an RSA-2048 key with TPMA_OBJECT `attributes` (tpm2-tools syntax) and persists it at `handle`, under the
   * node's EK or under a fresh owner storage primary. Returns its TPM2B_PUBLIC.
   */
  async createKey(opts: { handle: number; attributes: string; parent: 'ek' | 'owner-srk'; scheme?: string }): Promise<Uint8Array> {
    const pub = this.#path('key.pub');
    const priv = this.#path('key.priv');
    const ctx = this.#path('key.ctx');
    const alg = `rsa2048:${opts.scheme ?? 'rsassa-sha256'}:null`;
    // swtpm holds three transient objects and each tool leaves what it loaded: flush after every step.
    const step = async (tool: string, args: readonly string[]) => {
      try {
        await this.run(tool, args);
      } finally {
        await this.run('tpm2_flushcontext', ['-t']);
      }
    };
    if (opts.parent === 'ek') {
      const ek = hex32(AGENT_RSA_EK_HANDLE);
      for (const [tool, args] of [
        ['tpm2_create', ['-C', ek, '-G', alg, '-g', 'sha256', '-a', opts.attributes, '-u', pub, '-r', priv]],
        ['tpm2_load', ['-C', ek, '-u', pub, '-r', priv, '-c', ctx]],
      ] as const) {
        const session = await this.#ekSession();
        try {
          await step(tool, [...args, '-P', `session:${session}`]);
        } finally {
          await this.run('tpm2_flushcontext', [session]).catch(() => undefined);
        }
      }
    } else {
      const srk = this.#path('srk.ctx');
      await step('tpm2_createprimary', ['-C', 'o', '-G', 'rsa2048', '-c', srk]);
      await step('tpm2_create', ['-C', srk, '-G', alg, '-g', 'sha256', '-a', opts.attributes, '-u', pub, '-r', priv]);
      await step('tpm2_load', ['-C', srk, '-u', pub, '-r', priv, '-c', ctx]);
    }
    await step('tpm2_evictcontrol', ['-C', 'o', '-c', ctx, hex32(opts.handle)]);
    return this.publicArea(opts.handle);
  }

  /** TPM2_ActivateCredential of the server's credential with the key at `akHandle` and the node's EK. */
  activate(akHandle: number, credential: Uint8Array): Promise<Uint8Array> {
    return this.tools.activateCredential({ akHandle, ekHandle: AGENT_RSA_EK_HANDLE, ekKind: 'rsa', credentialBlob: credential });
  }

  /** TPM2_Sign of arbitrary bytes with a non-restricted key: a TPMT_SIGNATURE (RSASSA-SHA256). */
  async sign(handle: number, message: Uint8Array): Promise<Uint8Array> {
    const msg = this.#path('msg.bin');
    const sig = this.#path('sig.tss');
    writeFileSync(msg, message);
    await this.run('tpm2_sign', ['-c', hex32(handle), '-g', 'sha256', '-s', 'rsassa', '-f', 'tss', '-o', sig, msg]);
    return new Uint8Array(readFileSync(sig));
  }

  /**
   * TPM2_GetTime signed by the key at `handle` with `qualifyingData`: a genuine TPM-generated, AK-signed TPMS_ATTEST
   * whose extraData is the nonce, but of type TPM_ST_ATTEST_TIME.
   */
  async getTime(handle: number, qualifyingData: Uint8Array, scheme = 'ecdsa'): Promise<{ attest: Uint8Array; signature: Uint8Array }> {
    const attest = this.#path('time.attest');
    const sig = this.#path('time.sig');
    await this.run('tpm2_gettime', ['-c', hex32(handle), '-q', toHex(qualifyingData), '-g', 'sha256', '-s', scheme, '-f', 'tss', '--attestation', attest, '-o', sig]);
    return { attest: new Uint8Array(readFileSync(attest)), signature: new Uint8Array(readFileSync(sig)) };
  }
}

/** The challenge the server sent, decoded (what an attacker without the agent plugin reads). */
export const readChallenge = (bytes: Buffer): AttestationChallenge => decodeChallenge(bytes);

// ---------------------------------------------------------------------------------------------------------------
// The workload side: real processes in real cgroups of this host (cgroup v1 hierarchies and the v2 unified mount),
// pod lists served by real HTTP(S) servers, and the shipped edge-workload.

export { CGROUP_V1, CGROUP_V1_FREEZER, CGROUP_V2, cgroupProblem, CgroupLab } from '../helpers/cgroup-lab.js';

export const hex64 = (): string => (randomUUID() + randomUUID()).replaceAll('-', '').slice(0, 64);

export interface LabPod {
  uid: string;
  name: string;
  sa: string;
  cid: string;
}

export function labPod(name: string, sa = name): LabPod {
  return { uid: randomUUID(), name, sa, cid: hex64() };
}

/** The cgroupfs-driver path of a pod's container: kubepods/besteffort/pod<uid>/<cid>. */
export const cgroupfsPath = (pod: LabPod): string => `/kubepods/besteffort/pod${pod.uid}/${pod.cid}`;
/** The systemd-driver path (cgroup v2, containerd). */
export const systemdPath = (pod: LabPod): string =>
  `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${pod.uid.replaceAll('-', '_')}.slice/cri-containerd-${pod.cid}.scope`;

/** A kubelet-format PodList of running pods. */
export function podListJson(pods: readonly LabPod[]): string {
  return JSON.stringify({
    kind: 'PodList',
    apiVersion: 'v1',
    items: pods.map((pod) => ({
      metadata: { uid: pod.uid, name: pod.name, namespace: 'edge', labels: { app: pod.name } },
      spec: { serviceAccountName: pod.sa, nodeName: 'edge-node-1' },
      status: {
        phase: 'Running',
        containerStatuses: [
          { name: 'main', containerID: `containerd://${pod.cid}`, image: `registry.local/${pod.name}:1`, imageID: `registry.local/${pod.name}@sha256:${'0'.repeat(64)}` },
        ],
      },
    })),
  });
}

/** Workload Attest through the plugin protocol: the selectors, or the plugin's error. */
export function attestPid(plugin: PluginHarness, pid: number): Promise<{ selectors?: string[]; err?: grpc.ServiceError }> {
  return plugin.unary(ServiceNames.workloadAttestor, 'Attest', { pid }).then(
    (r: { selector_values?: string[] }) => ({ selectors: r.selector_values ?? [] }),
    (err: grpc.ServiceError) => ({ err }),
  );
}

/** A kubelet serving certificate and the CA that issued it, with the names and validity a test chooses. */
export interface KubeletCert {
  caPem: string;
  certPem: string;
  keyPem: string;
}

const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

function pemOf(label: string, der: ArrayBuffer): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n')}\n-----END ${label}-----\n`;
}

/** A fresh CA and a serving certificate from it (default: SAN localhost and 127.0.0.1, valid for an hour). */
export async function kubeletCert(opts: { dns?: readonly string[]; ips?: readonly string[]; notBefore?: Date; notAfter?: Date } = {}): Promise<KubeletCert> {
  const subtle = webcrypto.subtle;
  const caKeys = (await subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=kubelet-ca-${randomUUID().slice(0, 8)}`,
    notBefore: new Date(now - 86_400_000 * 30),
    notAfter: new Date(now + 86_400_000 * 30),
    signingAlgorithm: EC_ALG,
    keys: caKeys,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const keys = (await subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const names = [...(opts.dns ?? ['localhost']).map((value) => ({ type: 'dns' as const, value })), ...(opts.ips ?? ['127.0.0.1']).map((value) => ({ type: 'ip' as const, value }))];
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomUUID().replaceAll('-', '').slice(0, 16),
    subject: 'CN=edge-node-1',
    issuer: ca.subject,
    notBefore: opts.notBefore ?? new Date(now - 60_000),
    notAfter: opts.notAfter ?? new Date(now + 3_600_000),
    signingAlgorithm: EC_ALG,
    publicKey: keys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: names.length ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  });
  return { caPem: ca.toString('pem') + '\n', certPem: leaf.toString('pem') + '\n', keyPem: pemOf('PRIVATE KEY', await subtle.exportKey('pkcs8', keys.privateKey)) };
}
