/**
 * @module workload/attestor
 *
 * `EdgeWorkloadAttestor`: PID → container (cgroup, procfs) → pod (node-local index) → SPIRE k8s selectors.
 *
 * Per attestation: read the start time, read /proc/<pid>/cgroup, locate; a process outside any container gets
 * `[]` at once (the agent attests its own PID every minute). A containerised process is matched in the pod
 * index (no request to the pod source unless it misses), or asked of the runtime socket when there is no pod
 * source. The start time is read again at the end: a different value means the PID was reused while we
 * looked, and the answer is refused (PreconditionFailed `ERR_WORKLOAD_PID_REUSED`).
 */
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Cancelled, InvalidConfig, NotConfigured, PreconditionFailed } from '../errors.js';
import { DecisionEvents } from '../nodeattestor/event-sinks.js';
import type { CoreConfig, PluginContext, WorkloadAttestor } from '../plugin/types.js';
import { autoCandidates, buildSource, DeferredAutoSource, kubernetesApiSource, probeSources } from './auto.js';
import { NamespaceLabelIndex, namespaceLabelSelectors } from './namespace-labels.js';
import { CgroupMatchers, ContainerId, locateContainer, podmanSocketFor, type Located } from './cgroup.js';
import { parseConfig, type WorkloadConfig } from './config.js';
import { WorkloadErrorCode } from './errors.js';
import { WorkloadIma } from './ima.js';
import { PodIndex, type IndexStatus } from './pod-index.js';
import type { PodSource } from './pod-source.js';
import { Procfs } from './procfs.js';
import { CriClient, DockerClient, type RuntimeClient, type RuntimeInspectResult } from './runtime.js';
import { identitySelectors, processSelectors, runtimeContainerSelectors } from './selectors.js';

/** Everything built from one configuration; swapped as a whole on reconfigure. */
interface State {
  readonly config: WorkloadConfig;
  readonly procfs: Procfs;
  readonly matchers: CgroupMatchers | undefined;
  readonly index: PodIndex | undefined;
  /** enable_namespace_labels: the namespace label cache. */
  readonly nsLabels: NamespaceLabelIndex | undefined;
  readonly cri: RuntimeClient | undefined;
  readonly docker: RuntimeClient | undefined;
  readonly podman: Map<string, RuntimeClient>;
  /** Container-level IMA (ima_* keys), and where its violations go. */
  readonly ima: WorkloadIma | undefined;
  readonly events: DecisionEvents | undefined;
  /** The kind node container this agent runs in, if any: the only outer container a nested pod path may name. */
  readonly kindNode: ContainerId | undefined;
}

export interface EdgeWorkloadAttestorOptions {
  /** The agent's own /proc/self/cgroup text (tests inject one); default: read at Configure. */
  readonly selfCgroup?: string;
  /** Environment for NODE_NAME / in-cluster defaults (tests inject one). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Per-source probe timeout for `pod_source = "auto"`. */
  readonly probeTimeoutMs?: number;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The source's name for logs; `auto (probing)` while `auto` has not found one. */
function podSourceLabel(source: PodSource): string {
  return source.probing === true ? 'auto (probing)' : source.name;
}

function checkSignal(signal: AbortSignal, pid: number): void {
  if (signal.aborted) throw new Cancelled(WorkloadErrorCode.CANCELLED, `pid ${pid}: attestation cancelled`, { fields: { pid } });
}

export class EdgeWorkloadAttestor implements WorkloadAttestor {
  readonly #ctx: PluginContext;
  readonly #opts: EdgeWorkloadAttestorOptions;
  #state: State | undefined;

  constructor(ctx: PluginContext, opts: EdgeWorkloadAttestorOptions = {}) {
    this.#ctx = ctx;
    this.#opts = opts;
  }

  async configure(raw: Record<string, unknown>, _core: CoreConfig): Promise<void> {
    const { config, matchers } = this.#check(raw);
    const log = this.#ctx.log;
    for (const { key, reason } of config.ignored) log.info(`SPIRE k8s attestor setting "${key}" is accepted and ignored: ${reason}`, { key });
    const cri = config.runtimeSocket ? new CriClient(config.runtimeSocket, config.requestTimeoutMs) : undefined;
    const docker = config.dockerSocket ? new DockerClient(config.dockerSocket, config.requestTimeoutMs) : undefined;

    let index: PodIndex | undefined;
    let nsLabels: NamespaceLabelIndex | undefined;
    const procfs = new Procfs(config.procPath);
    const events = config.decisionEvents ? await DecisionEvents.load(config.decisionEvents, log.named('decision-events'), (p) => readFile(p)) : undefined;
    const ima = config.ima
      ? await WorkloadIma.load(config.ima, { procfs, log: log.named('ima'), ...(events ? { events } : {}), ...(config.nodeName ? { nodeName: config.nodeName } : {}) })
      : undefined;
    const makeIndex = (source: PodSource): PodIndex =>
      new PodIndex({
        source,
        log: log.named('pod-index'),
        pollIntervalMs: config.pollIntervalMs,
        maxStalenessMs: config.maxStalenessMs,
        minRefreshGapMs: config.missRefreshGapMs,
      });
    try {
      if (config.podSource === 'auto') {
        const probeTimeout = this.#opts.probeTimeoutMs ?? Math.min(config.requestTimeoutMs, 3000);
        const probed = await probeSources(autoCandidates(config), log, probeTimeout);
        if (probed) {
          index = makeIndex(probed.source);
          await index.start(probed.first);
        } else {
          // Keep probing in every case: an edge node often boots before edged or MetaServer. With a runtime socket,
          // containers get runtime selectors meanwhile, and pod selectors once a source answers.
          const hasRuntime = cri !== undefined || docker !== undefined || config.podmanEnabled;
          log.warn(
            hasRuntime
              ? 'pod_source = "auto": no pod source answered yet (kubelet, edged, metaserver, apiserver); using the container runtime socket until one does, probing again every poll_interval'
              : 'pod_source = "auto": no pod source answered yet (kubelet, edged, metaserver, apiserver); probing again every poll_interval',
            { node: config.nodeName, poll_interval_ms: config.pollIntervalMs, runtime_socket: config.runtimeSocket, docker_socket: config.dockerSocket },
          );
          index = makeIndex(new DeferredAutoSource(autoCandidates(config), log, probeTimeout));
          await index.start();
        }
      } else if (config.podSource !== 'none') {
        index = makeIndex(buildSource(config.podSource, config));
        await index.start();
      }
      if (config.namespaceLabels) {
        nsLabels = new NamespaceLabelIndex({
          source: kubernetesApiSource(config.namespaceLabels.source, config),
          log: log.named('namespace-labels'),
          pollIntervalMs: config.pollIntervalMs,
          maxStalenessMs: config.maxStalenessMs,
        });
        await nsLabels.start();
      }
    } catch (err) {
      index?.close();
      ima?.close();
      void events?.close();
      cri?.close();
      docker?.close();
      throw err;
    }

    const old = this.#state;
    this.#state = { config, procfs, matchers, index, nsLabels, cri, docker, podman: new Map(), ima, events, kindNode: this.#ownKindNode() };
    if (old) EdgeWorkloadAttestor.#release(old);
    events?.start();
    log.info('workload attestor configured', {
      pod_source: index ? podSourceLabel(index.source) : 'none',
      proc_path: config.procPath,
      node: config.nodeName,
      runtime_socket: config.runtimeSocket,
      docker_socket: config.dockerSocket,
      namespace_labels: config.namespaceLabels?.source,
      ima_log_path: config.ima?.logPath,
      ima_mode: config.ima?.mode,
      ima_policy: ima?.policyName,
    });
  }

  /** Everything Configure checks before it contacts a pod source. */
  async validate(raw: Record<string, unknown>, _core: CoreConfig): Promise<string[]> {
    const { config } = this.#check(raw);
    // The runtime policy, its signature and the IMA keys are checked here too; the TPM is not touched.
    if (config.ima) (await WorkloadIma.load(config.ima, { procfs: new Procfs(config.procPath), log: this.#ctx.log })).close();
    return [];
  }

  #check(raw: Record<string, unknown>): { config: WorkloadConfig; matchers: CgroupMatchers | undefined } {
    const config = parseConfig(raw, this.#opts.env ?? process.env);
    // A proc_path typo would make every PID look like it exited.
    if (!isDirectory(config.procPath)) {
      throw new InvalidConfig(WorkloadErrorCode.CONFIG, `workload attestor config: "proc_path": ${config.procPath} is not a directory`, {
        fields: { key: 'proc_path', path: config.procPath },
      });
    }
    const matchers = config.containerIdCgroupMatchers ? CgroupMatchers.parse(config.containerIdCgroupMatchers) : undefined;
    return { config, matchers };
  }

  async close(): Promise<void> {
    const s = this.#state;
    this.#state = undefined;
    if (s) EdgeWorkloadAttestor.#release(s);
  }

  static #release(s: State): void {
    s.index?.close();
    s.nsLabels?.close();
    s.cri?.close();
    s.docker?.close();
    for (const c of s.podman.values()) c.close();
    s.ima?.close();
    void s.events?.close();
  }

  /** Pod source health: snapshot age, bytes read, last error (undefined without a pod source). */
  sourceStatus(): IndexStatus | undefined {
    return this.#state?.index?.status();
  }

  /** The container this agent itself runs in, as the kind node: outer container of its own pod path, or its container. */
  #ownKindNode(): ContainerId | undefined {
    const text = this.#opts.selfCgroup ?? Procfs.ownCgroup();
    if (text === undefined) return undefined;
    try {
      const own = locateContainer({ cgroup: text, mountinfo: () => undefined }, {});
      return own?.outerContainerId ?? (own && !own.podUid ? own.containerId : undefined);
    } catch {
      return undefined; // an agent whose own cgroups are ambiguous trusts no nesting
    }
  }

  async attest(pid: number, signal: AbortSignal): Promise<string[]> {
    const s = this.#state;
    if (!s) throw new NotConfigured(WorkloadErrorCode.NOT_CONFIGURED, 'workload attestor is not configured');
    checkSignal(signal, pid);
    const { procfs, config } = s;

    const before = procfs.startTime(pid);
    const located = locateContainer(
      { cgroup: procfs.cgroup(pid), mountinfo: () => procfs.mountinfo(pid) },
      { mountinfoFallback: config.mountinfoFallback, ...(s.matchers ? { matchers: s.matchers } : {}) },
    );
    if (config.verboseLocatorLogs) {
      // SPIRE's verbose_container_locator_logs: what the locator saw, to debug a PID that is not found.
      this.#ctx.log.info('container locator', {
        pid,
        cgroup: (procfs.cgroup(pid) ?? '').slice(0, 2000),
        container_id: located?.containerId.toString(),
        pod_uid: located?.podUid?.toString(),
        runtime: located?.runtime,
        cgroup_path: located?.path,
        via: located?.via,
      });
    }
    if (located?.outerContainerId && !(s.kindNode && located.outerContainerId.equals(s.kindNode))) {
      // kind's shape (a node container above the kubelet's kubepods tree) is legitimate only on the kind node this
      // agent runs in; anywhere else it is a container that built a pod path below its own cgroup (F3).
      throw new PreconditionFailed(
        WorkloadErrorCode.NESTED_CGROUP,
        `pid ${pid}: cgroup path ${located.path.slice(0, 512)} nests a pod inside container ${located.outerContainerId}, but this agent does not run in that (kind node) container (${s.kindNode ? `its own is ${s.kindNode}` : 'it runs in none'})`,
        { fields: { pid, rule: 'kind-node-is-own', outer_container_id: located.outerContainerId.toString() } },
      );
    }
    if (!located) {
      this.#checkSame(procfs, pid, before);
      this.#ctx.log.debug('not in a container: no selectors', { pid });
      return [];
    }
    const out = await this.#selectorsFor(s, located, signal);
    if (s.ima) out.push(...(await s.ima.attest({ pid, located, selectors: out })));
    if (config.processSelectors) {
      const ids = procfs.ids(pid);
      const exe = procfs.exe(pid, config.workloadSizeLimit);
      out.push(...processSelectors({ ...ids, path: exe.path, ...(exe.sha256 !== undefined ? { sha256: exe.sha256 } : {}) }));
    }
    checkSignal(signal, pid);
    this.#checkSame(procfs, pid, before);
    this.#ctx.log.debug('workload attested', { pid, container_id: located.containerId.toString(), pod_uid: located.podUid?.toString(), selectors: out.length });
    return out;
  }

  #checkSame(procfs: Procfs, pid: number, before: bigint): void {
    let after: bigint;
    try {
      after = procfs.startTime(pid);
    } catch (err) {
      throw new PreconditionFailed(WorkloadErrorCode.PID_REUSED, `pid ${pid} exited during attestation`, { fields: { pid, rule: 'same-process' }, cause: err });
    }
    if (after !== before) {
      throw new PreconditionFailed(WorkloadErrorCode.PID_REUSED, `pid ${pid} was reused during attestation (start time changed)`, {
        fields: { pid, rule: 'same-process', before: before.toString(), after: after.toString() },
      });
    }
  }

  async #selectorsFor(s: State, located: Located, signal: AbortSignal): Promise<string[]> {
    const cid = located.containerId.toString();
    const podUid = located.podUid?.toString();
    const index = s.index;
    if (!index) return this.#fromRuntime(s, located, signal, 'none');

    const podOnly = s.config.disableContainerSelectors;
    const q = { containerId: cid, ...(podUid !== undefined ? { podUid } : {}), podOnly };
    const hasRuntime = s.cri !== undefined || s.docker !== undefined || (located.runtime === 'podman' && s.config.podmanEnabled);
    // `auto` still probing (no pod source has answered since Configure): the runtime socket answers meanwhile.
    if (hasRuntime && index.source.probing === true) {
      return this.#fromRuntime(s, located, signal, 'runtime');
    }
    // No pod UID in the cgroup path and a runtime socket to ask: a short look in the index (one shared
    // refresh), then the runtime. This is the plain-container-on-a-Kubernetes-node case.
    const runtimeFallback = podUid === undefined && hasRuntime;
    const deadline = runtimeFallback ? 0 : s.config.missRetryDeadlineMs;
    let found;
    try {
      found = await index.resolve(q, deadline, signal);
    } catch (err) {
      if (runtimeFallback && (err as { code?: string }).code === WorkloadErrorCode.POD_NOT_FOUND) {
        return this.#fromRuntime(s, located, signal, 'runtime');
      }
      throw err;
    }
    const out = [...found.pod.selectors];
    if (!podOnly && found.container) out.push(...found.container.selectors);
    if (s.nsLabels) out.push(...namespaceLabelSelectors(await s.nsLabels.labels(found.pod.pod.metadata.namespace, signal)));
    out.push(...identitySelectors(cid, located.runtime ?? found.container?.runtime, index.source.name));
    return out;
  }

  #runtimeClientFor(s: State, located: Located): RuntimeClient | undefined {
    const rt = located.runtime;
    if (rt === 'podman' && s.config.podmanEnabled) {
      const sock = podmanSocketFor(located.path, s.config.podmanSocket, s.config.podmanSocketTemplate);
      let c = s.podman.get(sock);
      if (!c) {
        c = new DockerClient(sock, s.config.requestTimeoutMs, 'podman');
        s.podman.set(sock, c);
      }
      return c;
    }
    if (rt === 'docker') return s.docker ?? s.cri;
    return s.cri ?? s.docker;
  }

  async #fromRuntime(s: State, located: Located, signal: AbortSignal, source: string): Promise<string[]> {
    const cid = located.containerId.toString();
    const client = s.cri || s.docker || (located.runtime === 'podman' && s.config.podmanEnabled) ? this.#runtimeClientFor(s, located) : undefined;
    if (!client) return identitySelectors(cid, located.runtime, 'none');
    const info: RuntimeInspectResult = await client.inspect(cid, signal);
    return [...runtimeContainerSelectors(info), ...identitySelectors(cid, located.runtime ?? info.runtime, source === 'none' ? 'runtime' : source)];
  }
}
