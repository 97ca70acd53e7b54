/**
 * @module workload/ima
 *
 * Container-level IMA for the workload attestor (docs/ima.md "Workload attestation"). For a PID in a container:
 *  1. the node's IMA list is trusted only as far as it replays to the local TPM's PCR 10 (ima-log.ts); a list
 *     that does not replay yields no IMA selector at all, and a warning naming why (fail closed);
 *  2. the container's measured files are picked out:
 *     - `cgroup` mode (kernels with the ima-cgpath / ima-dep-cgn templates): the entries whose cgroup names the
 *       PID's container (same locator as the attestor's; an ima-cgpath pod UID must agree too);
 *     - `files` mode (standard ima-ng / ima-sig kernels): the process's executable (/proc/<pid>/exe) and every
 *       file it maps executable (/proc/<pid>/maps), each hashed through its magic link (/proc/<pid>/exe,
 *       /proc/<pid>/map_files/…) and matched to an IMA entry by path and digest;
 *  3. those are checked against the runtime policy (src/policy/runtime-policy.ts, the server's format and rules).
 *
 * Selectors (under the plugin's type, like the other edge-workload selectors): `exe-sha256:<hex>`; `ima:verified`
 * when every measured file of the container is allowed (and, in files mode, every file the process runs was
 * measured); `ima:policy:<name>` with it when a policy is set. A violation yields neither and emits a decision
 * event naming pod, container, PID, path, digest and rule, which the revoker acts on by deleting the pod.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { InvalidConfig, isAttestorError } from '../errors.js';
import { DECISION_EVENT_TYPE, DECISION_EVENT_VERSION, EAR_PROFILE, Ar4si, type DecisionEvent } from '../nodeattestor/decision-event.js';
import type { DecisionEvents } from '../nodeattestor/event-sinks.js';
import type { Logger } from '../plugin/types.js';
import { evaluateRuntimePolicy, parseRuntimePolicy, publicKeyFromPem, type RuntimePolicy, type RuntimeViolation } from '../policy/runtime-policy.js';
import { toHex } from '../tpm/bytes.js';
import { ImaKeyring, type ImaEntry, type ImaHashName } from '../tpm/ima/index.js';
import { Tpm2Tools } from '../tpm/tools.js';
import type { Located } from './cgroup.js';
import type { WorkloadImaConfig } from './config.js';
import { WorkloadErrorCode } from './errors.js';
import { ImaLogVerifier, type VerifiedImaLog } from './ima-log.js';
import type { Procfs } from './procfs.js';

export const IMA_WORKLOAD_VERIFIER = 'spire-edge-attestors edge-workload';
/** Files of one process considered in files mode; a process mapping more is not verified. */
export const MAX_PROCESS_FILES = 1024;
/** Violations remembered so one tampered container does not emit an event per Attest call. */
const MAX_REPORTED = 4096;
const WARN_REPEAT_MS = 10_000;
const HASHABLE: ReadonlySet<ImaHashName> = new Set(['sha1', 'sha256', 'sha384', 'sha512']);

export interface MappedFile {
  readonly path: string;
  /** `start-end` of one of its executable mappings (the map_files link name). */
  readonly range: string;
}

/**
 * File-backed executable mappings of /proc/<pid>/maps, one per path. `" (deleted)"` is dropped from the path
 * (the mapped inode is still hashed through map_files). Pseudo-paths (`[vdso]`, anonymous) are left out.
 */
export function parseExecutableMappings(maps: string, max = MAX_PROCESS_FILES): MappedFile[] | undefined {
  const out = new Map<string, MappedFile>();
  for (const line of maps.split('\n')) {
    // start-end perms offset dev inode pathname (pathname may hold spaces)
    const m = /^([0-9a-f]+-[0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s+(\/.*)$/.exec(line);
    if (!m || m[3] === '0' || m[2]![2] !== 'x') continue;
    const path = m[4]!.endsWith(' (deleted)') ? m[4]!.slice(0, -' (deleted)'.length) : m[4]!;
    if (out.has(path)) continue;
    if (out.size >= max) return undefined;
    out.set(path, { path, range: m[1]! });
  }
  return [...out.values()];
}

export interface WorkloadImaSubject {
  readonly pod_uid?: string;
  readonly pod_namespace?: string;
  readonly pod_name?: string;
  readonly container_id: string;
  readonly container_name?: string;
  readonly pid: number;
  readonly path: string;
  readonly digest: string;
  readonly rule: string;
  readonly policy: string;
  /** Index in the node's IMA list, or absent for a file the list never measured. */
  readonly entry?: number;
  readonly mode: 'cgroup' | 'files';
  readonly node_name?: string;
}

/** The decision-event shape (src/nodeattestor/decision-event.ts) for a workload, with the `workload` subject. */
export type WorkloadDecisionEvent = DecisionEvent & { readonly subject: 'workload'; readonly workload: WorkloadImaSubject };

export function workloadViolationEvent(subject: WorkloadImaSubject, reason: string, at: Date): WorkloadDecisionEvent {
  const none = { status: 'none', value: Ar4si.NONE, detail: 'not appraised' } as const;
  const detail = `${subject.rule}: ${reason}`.slice(0, 2048);
  return {
    version: DECISION_EVENT_VERSION,
    type: DECISION_EVENT_TYPE,
    event_id: randomUUID(),
    outcome: 'refused',
    status: 'contraindicated',
    code: 'ERR_IMA_RUNTIME_POLICY_VIOLATION',
    rule: subject.rule,
    reason: reason.slice(0, 2048),
    policies: { passed: [], failed: [{ policy: subject.policy, rules: [subject.rule] }] },
    quirks: [],
    appraisal: {
      'instance-identity': none,
      hardware: { status: 'affirming', value: Ar4si.AFFIRMING, detail: 'IMA list replays to the local TPM PCR 10' },
      executables: { status: 'contraindicated', value: Ar4si.CONTRAINDICATED, detail },
      configuration: none,
    },
    started_at: at.toISOString(),
    decided_at: at.toISOString(),
    duration_ms: 0,
    ear: {
      eat_profile: EAR_PROFILE,
      iat: Math.floor(at.getTime() / 1000),
      'ear.verifier-id': { developer: 'spire-edge-attestors', build: IMA_WORKLOAD_VERIFIER },
      submods: {
        ima: {
          'ear.status': 'contraindicated',
          'ear.trustworthiness-vector': { hardware: Ar4si.AFFIRMING, executables: Ar4si.CONTRAINDICATED },
          'ear.appraisal-policy-id': subject.policy,
        },
      },
    },
    subject: 'workload',
    workload: subject,
  };
}

export interface WorkloadImaDeps {
  readonly procfs: Procfs;
  readonly log: Logger;
  readonly events?: DecisionEvents;
  readonly nodeName?: string;
  /** PCR 10 in the configured bank; default: tpm2_pcrread through `ima_tpm_tcti`. */
  readonly readPcr10?: () => Promise<Uint8Array>;
  readonly readFile?: (path: string) => Promise<Uint8Array>;
}

export interface ImaAttestInput {
  readonly pid: number;
  readonly located: Located;
  /** The selectors found so far (pod and container names for the event come from them). */
  readonly selectors: readonly string[];
}

interface Verdict {
  readonly verified: boolean;
  readonly reason?: string;
  readonly violation?: { readonly v: RuntimeViolation; readonly inLog: boolean };
}

export class WorkloadIma {
  readonly #config: WorkloadImaConfig;
  readonly #deps: WorkloadImaDeps;
  readonly #policy: RuntimePolicy | undefined;
  /** Per-image policies by image reference or image ID (ima_image_policies). */
  readonly #imagePolicies: ReadonlyMap<string, RuntimePolicy>;
  readonly #keyring: ImaKeyring | undefined;
  readonly #verifier: ImaLogVerifier;
  readonly #tpm: Tpm2Tools | undefined;
  readonly #reported = new Set<string>();
  /** The last unverifiable-list warning: the same reason again within WARN_REPEAT_MS is logged at debug. */
  #lastWarning: { reason: string; at: number } | undefined;

  private constructor(
    config: WorkloadImaConfig,
    deps: WorkloadImaDeps,
    policy: RuntimePolicy | undefined,
    imagePolicies: ReadonlyMap<string, RuntimePolicy>,
    keyring: ImaKeyring | undefined,
  ) {
    this.#config = config;
    this.#deps = deps;
    this.#policy = policy;
    this.#imagePolicies = imagePolicies;
    this.#keyring = keyring;
    let readPcr10 = deps.readPcr10;
    if (!readPcr10) {
      const tpm = new Tpm2Tools({ ...(config.tcti ? { tcti: config.tcti } : {}) });
      this.#tpm = tpm;
      readPcr10 = () => tpm.readPcrs(`${config.pcrBank}:10`);
    }
    this.#verifier = new ImaLogVerifier({ logPath: config.logPath, bank: config.pcrBank, readPcr10 });
  }

  /** Reads and checks the policy and keys (the server's rules); the TPM and the list are first read at Attest. */
  static async load(config: WorkloadImaConfig, deps: WorkloadImaDeps): Promise<WorkloadIma> {
    const readBytes = deps.readFile ?? ((p: string) => readFile(p));
    const read = async (path: string, key: string): Promise<Uint8Array> => {
      try {
        return await readBytes(path);
      } catch (err) {
        throw new InvalidConfig(WorkloadErrorCode.CONFIG, `workload attestor config: "${key}": cannot read ${path}: ${(err as Error).message}`, { fields: { key } });
      }
    };
    // One DSSE verification key signs the node-wide and the per-image policies alike.
    const verificationKeys = config.verificationKeyPath
      ? [publicKeyFromPem(await read(config.verificationKeyPath, 'ima_policy_verification_key_path'), 'ima_policy_verification_key_path')]
      : undefined;
    const loadPolicy = async (path: string, key: string, name: string, sha256: string | undefined): Promise<RuntimePolicy> =>
      parseRuntimePolicy(await read(path, key), { name, ...(sha256 ? { sha256 } : {}), ...(verificationKeys ? { verificationKeys } : {}) });
    const policy = config.policyPath ? await loadPolicy(config.policyPath, 'ima_policy_path', config.policyName, config.policySha256) : undefined;
    const imagePolicies = new Map<string, RuntimePolicy>();
    for (const p of config.imagePolicies ?? []) {
      imagePolicies.set(p.image, await loadPolicy(p.policyPath, 'ima_image_policies', p.policyName, p.policySha256));
    }
    let keyring: ImaKeyring | undefined;
    if (config.signingKeyPaths) {
      keyring = new ImaKeyring();
      for (const path of config.signingKeyPaths) {
        if (!keyring.addEncoded(await read(path, 'ima_signing_key_paths'), path)) {
          throw new InvalidConfig(WorkloadErrorCode.CONFIG, `workload attestor config: "ima_signing_key_paths": ${path} is not a public key or certificate`, {
            fields: { key: 'ima_signing_key_paths' },
          });
        }
      }
    }
    return new WorkloadIma(config, deps, policy, imagePolicies, keyring);
  }

  get policyName(): string | undefined {
    return this.#policy?.name;
  }

  /** Verified entries and list offset (logs, tests). */
  get logState(): { entries: number; offset: number } {
    return this.#verifier.state;
  }

  close(): void {
    this.#tpm?.close();
  }

  /** IMA selectors for a containerised PID; [] (and a warning) whenever the facts cannot be established. */
  async attest(input: ImaAttestInput): Promise<string[]> {
    const { pid, located } = input;
    const log = this.#deps.log;
    const fields = { pid, container_id: located.containerId.toString(), pod_uid: located.podUid?.toString() };
    let verified: VerifiedImaLog;
    try {
      verified = await this.#verifier.refresh();
    } catch (err) {
      const reason = (err as Error).message.slice(0, 1024);
      // Every Workload API call attests: a list that stays broken must not flood the agent's log.
      const now = Date.now();
      const repeat = this.#lastWarning?.reason === reason && now - this.#lastWarning.at < WARN_REPEAT_MS;
      if (!repeat) this.#lastWarning = { reason, at: now };
      (repeat ? log.debug : log.warn).call(log, 'IMA: the measurement list does not replay to TPM PCR 10 (or cannot be read): no IMA selectors', {
        ...fields,
        ima_log_path: this.#config.logPath,
        reason,
      });
      return [];
    }
    const chosen = this.#policyFor(input.selectors);
    let exeSha256: string;
    let verdict: Verdict;
    const mode = this.#config.mode === 'auto' ? (verified.containerTemplates ? 'cgroup' : 'files') : this.#config.mode;
    try {
      exeSha256 = this.#deps.procfs.exeDigest(pid, 'sha256', this.#config.fileSizeLimit);
      verdict =
        'missing' in chosen
          ? { verified: false, reason: chosen.missing }
          : mode === 'cgroup'
            ? this.#byCgroup(verified, located, chosen.policy)
            : this.#byFiles(verified, pid, chosen.policy);
    } catch (err) {
      if (isAttestorError(err) && err.code === WorkloadErrorCode.PID_GONE) throw err;
      log.warn('IMA: cannot read the process\'s files: no IMA selectors', { ...fields, reason: (err as Error).message.slice(0, 1024) });
      return [];
    }
    const out = [`exe-sha256:${exeSha256}`];
    if (verdict.violation) {
      this.#report(input, mode, verdict.violation.v, verdict.violation.inLog, 'policy' in chosen ? chosen.policy : undefined);
      return out;
    }
    if (!verdict.verified) {
      log.info('IMA: container not verified', { ...fields, mode, reason: verdict.reason });
      return out;
    }
    out.push('ima:verified');
    if ('policy' in chosen && chosen.policy) out.push(`ima:policy:${chosen.policy.name}`);
    return out;
  }

  /**
   * The runtime policy for this container: the per-image one its image or image ID names (as the pod source reports
   * them in `container-image:` selectors), else the node-wide one. Two image policies for one container (its tag
   * and its digest listed with different policies) is ambiguous and verifies nothing: fail closed.
   */
  #policyFor(selectors: readonly string[]): { policy: RuntimePolicy | undefined } | { missing: string } {
    if (this.#imagePolicies.size > 0) {
      const images = selectors.filter((s) => s.startsWith('container-image:')).map((s) => s.slice('container-image:'.length));
      const found = new Map<string, RuntimePolicy>();
      for (const image of images) {
        const p = this.#imagePolicies.get(image);
        if (p) found.set(p.name, p);
      }
      if (found.size > 1) return { missing: `the container's image matches more than one per-image runtime policy (${[...found.keys()].join(', ')})` };
      const only = [...found.values()][0];
      if (only) return { policy: only };
      if (this.#config.requireImagePolicy) {
        return { missing: `no per-image runtime policy for the container's image (${images.length ? images.join(', ').slice(0, 512) : 'not known'})` };
      }
    }
    return { policy: this.#policy };
  }

  #evaluate(entries: readonly ImaEntry[], policy: RuntimePolicy | undefined): RuntimeViolation | undefined {
    if (!policy && !this.#keyring) return undefined;
    const verdict = evaluateRuntimePolicy(entries, { ...(policy ? { policy } : {}), ...(this.#keyring ? { keyring: this.#keyring } : {}), maxViolations: 1 });
    return verdict.violations[0];
  }

  #byCgroup(verified: VerifiedImaLog, located: Located, policy: RuntimePolicy | undefined): Verdict {
    const podUid = located.podUid?.toString();
    const mine = verified
      .byContainer(located.containerId.toString())
      .filter((c) => c.podUid === undefined || podUid === undefined || c.podUid === podUid)
      .map((c) => c.entry);
    // Nothing measured in this container means the list does not cover it (yet): not verified, not a violation.
    if (mine.length === 0) return { verified: false, reason: 'no verified IMA entry has this container\'s cgroup' };
    const v = this.#evaluate(mine, policy);
    return v ? { verified: false, violation: { v, inLog: true } } : { verified: true };
  }

  #byFiles(verified: VerifiedImaLog, pid: number, policy: RuntimePolicy | undefined): Verdict {
    const procfs = this.#deps.procfs;
    const limit = this.#config.fileSizeLimit;
    const exePath = procfs.exe(pid, -1).path.replace(/ \(deleted\)$/, '');
    const mapped = parseExecutableMappings(procfs.maps(pid));
    if (!mapped) return { verified: false, reason: `the process maps more than ${MAX_PROCESS_FILES} executable files` };
    const files: { path: string; digest: (alg: ImaHashName) => string }[] = [
      { path: exePath, digest: (alg) => procfs.exeDigest(pid, alg, limit) },
      ...mapped.filter((m) => m.path !== exePath).map((m) => ({ path: m.path, digest: (alg: ImaHashName) => procfs.mappedFileDigest(pid, m.range, alg, limit) })),
    ];
    const unmeasured: string[] = [];
    for (const file of files) {
      const digests = new Map<ImaHashName, string>();
      const digestIn = (alg: ImaHashName): string => {
        let d = digests.get(alg);
        if (d === undefined) digests.set(alg, (d = file.digest(alg)));
        return d;
      };
      // The last entry for this path with the file's current content: the measurement of what runs now.
      const match = verified
        .byPath(file.path)
        .filter((e) => HASHABLE.has(e.digestAlg) && toHex(e.digest) === digestIn(e.digestAlg))
        .at(-1);
      if (match) {
        const v = this.#evaluate([match], policy);
        if (v) return { verified: false, violation: { v, inLog: true } };
        continue;
      }
      unmeasured.push(file.path);
      // Not in the list, but the policy can still say the running file is not allowed.
      if (policy) {
        const v = this.#evaluate([unloggedEntry(file.path, Buffer.from(digestIn('sha256'), 'hex'))], policy);
        if (v) return { verified: false, violation: { v, inLog: false } };
      }
    }
    if (unmeasured.length > 0) {
      return { verified: false, reason: `${unmeasured.length} file(s) the process runs were not measured with their current content, e.g. ${unmeasured[0]!.slice(0, 256)}` };
    }
    return { verified: true };
  }

  #report(input: ImaAttestInput, mode: 'cgroup' | 'files', v: RuntimeViolation, inLog: boolean, chosen: RuntimePolicy | undefined): void {
    const { pid, located, selectors } = input;
    const pick = (prefix: string): string | undefined => selectors.find((s) => s.startsWith(prefix))?.slice(prefix.length);
    const policy = chosen?.name ?? 'ima-signatures';
    const subject: WorkloadImaSubject = {
      ...(located.podUid ? { pod_uid: located.podUid.toString() } : pick('pod-uid:') ? { pod_uid: pick('pod-uid:')! } : {}),
      ...(pick('ns:') ? { pod_namespace: pick('ns:')! } : {}),
      ...(pick('pod-name:') ? { pod_name: pick('pod-name:')! } : {}),
      container_id: located.containerId.toString(),
      ...(pick('container-name:') ? { container_name: pick('container-name:')! } : {}),
      pid,
      path: v.path.slice(0, 4096),
      digest: v.digest,
      rule: v.rule,
      policy,
      ...(inLog ? { entry: v.entry } : {}),
      mode,
      ...(this.#deps.nodeName ? { node_name: this.#deps.nodeName } : {}),
    };
    const message = inLog ? `runtime policy "${policy}": ${v.message} [rule ${v.rule}]` : `runtime policy "${policy}": file "${v.path.slice(0, 256)}" (${v.digest}), not in the IMA list: ${v.message.replace(/^IMA entry -?\d+ "[^"]*" \([^)]*\): /, '')} [rule ${v.rule}]`;
    this.#deps.log.warn('IMA: container violates the runtime policy: no ima:verified selector', { ...subject, reason: message.slice(0, 1024) });
    const key = `${subject.pod_uid ?? ''}/${subject.container_id}/${subject.path}/${subject.digest}/${subject.rule}`;
    if (this.#reported.has(key)) return;
    if (this.#reported.size >= MAX_REPORTED) this.#reported.clear();
    this.#reported.add(key);
    this.#deps.events?.emit(workloadViolationEvent(subject, message, new Date()));
  }
}

/** A file the list has no entry for, shaped as an ima-ng entry so the policy judges it by the same rules. */
function unloggedEntry(path: string, sha256: Uint8Array): ImaEntry {
  return {
    index: -1,
    offset: 0,
    pcr: 10,
    template: 'ima-ng',
    templateHash: new Uint8Array(20),
    templateHashAlg: 'sha1',
    templateData: new Uint8Array(0),
    invalidated: false,
    digestAlg: 'sha256',
    digest: sha256,
    path,
  };
}
