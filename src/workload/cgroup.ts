/**
 * @module workload/cgroup
 *
 * Pure parsing: `/proc/<pid>/cgroup` and `/proc/<pid>/mountinfo` text in, `{ podUid?, containerId, runtime? }`
 * (or nothing) out. No file, clock or process access here; procfs.ts does the reading.
 *
 * Rules (facts from SPIRE's container locator, pkg/common/containerinfo, and the legacy k8s locator):
 * - Each cgroup line is `hierarchy-ID:controller-list:path` (split on the first two colons only: a path may
 *   itself contain colons, e.g. containerd's `…-pod<uid>.slice:cri-containerd:<id>`). v1 has one line per
 *   hierarchy, v2 a single `0::/path`; hybrid hosts have both.
 * - Each path is walked from the END: the first segment carrying a 64-hex container ID wins, then the walk
 *   continues towards the root for a `pod<uid>` segment (8-4-4-4-12 hex with `-` or `_`; `_` comes from the
 *   systemd driver and is normalised to `-`). A dash-less 32-hex static-pod UID is not a pod UID here.
 * - The whole path is checked too, not just its end: a process that may create cgroups below its own (root in a
 *   container, or any cgroup v2 delegation) can `mkdir -p <its cgroup>/kubepods/besteffort/pod<B>/<cid B>` and
 *   move itself there. So a path with more than one pod segment, or more than one container segment, is refused
 *   (PreconditionFailed), except one known nesting: kind (and other Kubernetes-in-a-container setups), where the
 *   node container's ID sits above the kubelet's `kubepods` tree, e.g.
 *   `/docker/<node>/kubepods/burstable/pod<uid>/<cid>` or
 *   `/system.slice/docker-<node>.scope/kubelet.slice/kubelet-kubepods.slice/…-pod<uid>.slice/cri-containerd-<cid>.scope`.
 *   That outer ID is reported as `outerContainerId`, never as the workload's.
 * - `crio-conmon-<id>` / `libpod-conmon-<id>` scopes hold the runtime's monitor process, not the workload:
 *   they neither identify nor conflict (SPIRE #4088).
 * - Lines are merged: an entry with a pod UID overrides one without, but only when the pod-less line names the
 *   same container or the pod line's outer (kind node) container (kind on a Docker host: some v1 hierarchies show
 *   only the node container). Two different pod UIDs, or any other two container IDs, are ambiguous and give
 *   PreconditionFailed (FAILED_PRECONDITION).
 * - mountinfo is a guarded fallback only (see `locateContainer`): a workload controls its own mount table and
 *   can bind-mount another container's cgroup directory to impersonate it (SPIRE #7060).
 */
import { MalformedInput, PreconditionFailed } from '../errors.js';
import { WorkloadErrorCode } from './errors.js';

// ---- value types -------------------------------------------------------------------------------------------

const POD_UID_RE = /^[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}$/i;
const CONTAINER_ID_64_RE = /^[0-9a-f]{64}$/i;
/** AWS ECS task-style container ID (`<32-hex task id>-<decimal>`), as Elastic's container spec counts it. */
const CONTAINER_ID_ECS_RE = /^[0-9a-f]{32}-[0-9]{1,10}$/i;

/** A Kubernetes pod UID in canonical form (lower-case, dashes). */
export class PodUid {
  readonly #value: string;
  private constructor(value: string) {
    this.#value = value;
  }
  /** Accepts 8-4-4-4-12 hex with `-` or `_` separators (systemd driver); normalises to lower-case dashes. */
  static parse(raw: string): PodUid {
    if (typeof raw !== 'string' || !POD_UID_RE.test(raw)) {
      throw new MalformedInput(WorkloadErrorCode.POD_UID_INVALID, 'pod UID must be 8-4-4-4-12 hex digits', {
        fields: { rule: 'pod-uid-format' },
      });
    }
    return new PodUid(raw.replaceAll('_', '-').toLowerCase());
  }
  equals(other: PodUid): boolean {
    return other instanceof PodUid && other.#value === this.#value;
  }
  toString(): string {
    return this.#value;
  }
}

/** A container ID as runtimes print it: 64 lower-case hex digits (or the ECS task form). */
export class ContainerId {
  readonly #value: string;
  private constructor(value: string) {
    this.#value = value;
  }
  static parse(raw: string): ContainerId {
    if (typeof raw !== 'string' || !(CONTAINER_ID_64_RE.test(raw) || CONTAINER_ID_ECS_RE.test(raw))) {
      throw new MalformedInput(WorkloadErrorCode.CONTAINER_ID_INVALID, 'container ID must be 64 hex digits', {
        fields: { rule: 'container-id-format' },
      });
    }
    return new ContainerId(raw.toLowerCase());
  }
  equals(other: ContainerId): boolean {
    return other instanceof ContainerId && other.#value === this.#value;
  }
  toString(): string {
    return this.#value;
  }
}

export type ContainerRuntime = 'containerd' | 'crio' | 'docker' | 'podman';

/** What one cgroup path (or mountinfo root) says about the process. */
export interface PathMatch {
  readonly containerId: ContainerId;
  readonly podUid?: PodUid;
  /** Only when the path itself names the runtime (`docker-`, `cri-containerd-`, `crio-`, `libpod-`, …). */
  readonly runtime?: ContainerRuntime;
  /** The node container of a known nesting (kind), above the pod: where the kubelet runs, not the workload. */
  readonly outerContainerId?: ContainerId;
}

export interface Located extends PathMatch {
  /** Which file the answer came from. */
  readonly via: 'cgroup' | 'mountinfo';
  /** The cgroup path that gave the answer (used e.g. to find a rootless podman socket). */
  readonly path: string;
}

// ---- /proc/<pid>/cgroup ------------------------------------------------------------------------------------

export interface CgroupEntry {
  readonly hierarchyId: string;
  readonly controllers: string;
  readonly groupPath: string;
}

/** Parses `/proc/<pid>/cgroup`. Blank lines are skipped; a line with fewer than 3 fields is MalformedInput. */
export function parseCgroupFile(text: string): CgroupEntry[] {
  const out: CgroupEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const a = line.indexOf(':');
    const b = a < 0 ? -1 : line.indexOf(':', a + 1);
    if (a < 0 || b < 0) {
      throw new MalformedInput(
        WorkloadErrorCode.CGROUP_MALFORMED,
        `invalid cgroup entry on line ${i + 1}: expected hierarchy-ID:controller-list:path`,
        { fields: { line: i + 1, rule: 'three-colon-fields' } },
      );
    }
    out.push({ hierarchyId: line.slice(0, a), controllers: line.slice(a + 1, b), groupPath: line.slice(b + 1) });
  }
  return out;
}

// ---- one path ----------------------------------------------------------------------------------------------

const ID64_IN_SEGMENT = /(?:^|[^0-9A-Za-z_])([0-9a-fA-F]{64})(?=$|[^0-9A-Za-z_])/;
const POD_IN_SEGMENT =
  /(?:^|[^0-9A-Za-z_])pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})(?=$|[^0-9A-Za-z])/;
const HEX32 = /^[0-9a-f]{32}$/i;

const PREFIX_RUNTIME: ReadonlyArray<readonly [string, ContainerRuntime | 'monitor']> = [
  ['crio-conmon-', 'monitor'],
  ['libpod-conmon-', 'monitor'],
  ['cri-containerd-', 'containerd'],
  ['containerd-', 'containerd'],
  ['crio-', 'crio'],
  ['docker-', 'docker'],
  ['libpod-', 'podman'],
];
const PARENT_RUNTIME: Readonly<Record<string, ContainerRuntime>> = {
  'cri-containerd': 'containerd',
  containerd: 'containerd',
  crio: 'crio',
  'cri-o': 'crio',
  docker: 'docker',
  libpod: 'podman',
};

/** Splits a cgroup path into walkable segments: by `/`, then each segment by `:` (containerd's colon form). */
function segmentsOf(path: string): string[] {
  const out: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.' || seg === '..') {
      out.push(seg);
      continue;
    }
    for (const sub of seg.split(':')) out.push(sub);
  }
  return out;
}

type SegmentId = { id: string; runtime?: ContainerRuntime } | 'monitor' | undefined;

function idInSegment(segments: readonly string[], i: number): SegmentId {
  const seg = segments[i]!;
  const m = ID64_IN_SEGMENT.exec(seg);
  if (m) {
    const before = seg.slice(0, m.index + (m[0].length - 64));
    for (const [prefix, rt] of PREFIX_RUNTIME) {
      if (before.endsWith(prefix)) return rt === 'monitor' ? 'monitor' : { id: m[1]!, runtime: rt };
    }
    const parentRt = i > 0 ? PARENT_RUNTIME[segments[i - 1]!] : undefined;
    return parentRt === undefined ? { id: m[1]! } : { id: m[1]!, runtime: parentRt };
  }
  // ECS task-style ID: /ecs/<task-id>/<task-id>-<n>
  if (CONTAINER_ID_ECS_RE.test(seg) && i >= 2 && HEX32.test(segments[i - 1]!) && segments[i - 2] === 'ecs') {
    if (seg.startsWith(segments[i - 1]! + '-')) return { id: seg };
  }
  return undefined;
}

function nestedCgroup(path: string, what: string): PreconditionFailed {
  return new PreconditionFailed(WorkloadErrorCode.NESTED_CGROUP, `cgroup path ${JSON.stringify(path.slice(0, 512))} ${what}: a nested cgroup cannot be told from an impersonation`, {
    fields: { rule: 'single-pod-and-container-segment' },
  });
}

/**
 * The container locator for one path (SPIRE `containerinfo` semantics): walk from the end to the first
 * container-ID segment, then on towards the root for the pod UID. `undefined` when no container ID is found.
 * Throws PreconditionFailed for a path with several pod or container segments (see the module doc).
 */
export function parseCgroupPath(path: string): PathMatch | undefined {
  const segments = segmentsOf(path);
  const containers: { index: number; first: number; id: SegmentId }[] = [];
  const pods: { index: number; uid: string }[] = [];
  for (let i = 0; i < segments.length; i++) {
    const id = idInSegment(segments, i);
    // The same ID twice (Docker Desktop's /docker/<id>/docker/<id>/…) is one container, not a nesting.
    const same = (a: SegmentId, b: SegmentId) => a !== undefined && b !== undefined && a !== 'monitor' && b !== 'monitor' && a.id.toLowerCase() === b.id.toLowerCase();
    if (id !== undefined && !containers.some((c) => same(c.id, id))) containers.push({ index: i, first: i, id });
    else if (id !== undefined) {
      const at = containers.findIndex((c) => same(c.id, id));
      containers[at] = { index: i, first: containers[at]!.first, id };
    }
    const p = POD_IN_SEGMENT.exec(segments[i]!);
    if (p) pods.push({ index: i, uid: p[1]! });
  }
  const innermost = containers.at(-1);
  if (innermost === undefined || innermost.id === undefined || innermost.id === 'monitor') return undefined;
  if (pods.length > 1) throw nestedCgroup(path, `has ${pods.length} pod segments`);
  const pod = pods[0];
  // One ID above and below the pod (/docker/<X>/kubepods/pod<uid>/docker/<X>) is no runtime's layout: a container
  // that rebuilt a pod path below itself naming itself again.
  if (pod !== undefined && containers.some((c) => c.first < pod.index && c.index > pod.index)) throw nestedCgroup(path, 'names one container both above and below its pod segment');
  let outerContainerId: ContainerId | undefined;
  if (containers.length > 2) throw nestedCgroup(path, `has ${containers.length} container segments`);
  if (containers.length === 2) {
    // Only kind's shape: the node container, then the kubelet's kubepods tree, then the pod and its container.
    const outer = containers[0]!;
    const kubepodsBetween =
      pod !== undefined && segments.slice(outer.index + 1, pod.index).some((seg) => /(?:^|[^0-9A-Za-z])kubepods(?:$|[^0-9A-Za-z])/.test(seg));
    if (pod === undefined || outer.index >= pod.index || innermost.index < pod.index || !kubepodsBetween || outer.id === undefined || outer.id === 'monitor') {
      throw nestedCgroup(path, 'has 2 container segments outside the kind node-container shape');
    }
    outerContainerId = ContainerId.parse(outer.id.id);
  }
  const found = innermost.id;
  const containerId = ContainerId.parse(found.id);
  const podUid = pod !== undefined && pod.index < innermost.index ? PodUid.parse(pod.uid) : undefined;
  if (pod !== undefined && podUid === undefined) throw nestedCgroup(path, 'has a pod segment below its container');
  return {
    containerId,
    ...(podUid ? { podUid } : {}),
    ...(found.runtime ? { runtime: found.runtime } : {}),
    ...(outerContainerId ? { outerContainerId } : {}),
  };
}

/**
 * SPIRE's legacy k8s locator semantics for one path (`getPodUIDAndContainerIDFromCGroupPath`): a match needs a
 * pod UID, except for CRI-O paths that carry none (KubeEdge + CRI-O, spiffe/spire#3183). Accepts a bare path
 * or a whole `N:controllers:path` line.
 */
export function parseKubeletCgroupPath(pathOrLine: string): PathMatch | undefined {
  const m = /^\d+:[^:/]*:(\/.*)$/.exec(pathOrLine);
  const r = parseCgroupPath(m ? m[1]! : pathOrLine);
  if (!r) return undefined;
  return r.podUid !== undefined || r.runtime === 'crio' ? r : undefined;
}

// ---- merging -----------------------------------------------------------------------------------------------

/** Merges per-line matches into one answer, or throws PreconditionFailed when they disagree. */
export function mergeMatches<T extends PathMatch>(matches: Iterable<T>): T | undefined {
  let acc: T | undefined;
  for (const m of matches) {
    if (acc === undefined) {
      acc = m;
      continue;
    }
    if (acc.podUid && !m.podUid) {
      checkPodlessLine(acc, m); // a pod-less line never overrides a pod line, and must not contradict it
      continue;
    }
    if (!acc.podUid && m.podUid) {
      checkPodlessLine(m, acc);
      acc = m;
      continue;
    }
    if (acc.podUid && m.podUid && !acc.podUid.equals(m.podUid)) {
      throw new PreconditionFailed(
        WorkloadErrorCode.MULTIPLE_POD_UIDS,
        `multiple pod UIDs found in cgroups (${acc.podUid}, ${m.podUid})`,
        { fields: { rule: 'single-pod-uid', first: acc.podUid.toString(), second: m.podUid.toString() } },
      );
    }
    if (!acc.containerId.equals(m.containerId)) {
      throw new PreconditionFailed(
        WorkloadErrorCode.MULTIPLE_CONTAINER_IDS,
        `multiple container IDs found in cgroups (${acc.containerId}, ${m.containerId})`,
        { fields: { rule: 'single-container-id', first: acc.containerId.toString(), second: m.containerId.toString() } },
      );
    }
    if (acc.runtime === undefined && m.runtime !== undefined) acc = m;
  }
  return acc;
}

/** A pod-less line may only name the pod line's container or its kind node container. */
function checkPodlessLine(podLine: PathMatch, podless: PathMatch): void {
  if (podless.containerId.equals(podLine.containerId)) return;
  if (podLine.outerContainerId && podless.containerId.equals(podLine.outerContainerId)) return;
  throw new PreconditionFailed(
    WorkloadErrorCode.MULTIPLE_CONTAINER_IDS,
    `multiple container IDs found in cgroups (${podLine.containerId} in pod ${podLine.podUid}, ${podless.containerId} without a pod)`,
    { fields: { rule: 'single-container-id', first: podLine.containerId.toString(), second: podless.containerId.toString() } },
  );
}

/** Locates the container from cgroup paths (the attestor's primary source). */
export function locateFromCgroupPaths(paths: readonly string[]): Located | undefined {
  const matches: Located[] = [];
  for (const path of paths) {
    const m = parseCgroupPath(path);
    if (m) matches.push({ ...m, via: 'cgroup', path });
  }
  return mergeMatches(matches);
}

// ---- /proc/<pid>/mountinfo ---------------------------------------------------------------------------------

export interface MountinfoEntry {
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses mountinfo (proc(5)): `id parent maj:min root mountpoint opts [optional…] - fstype source superopts`. */
export function parseMountinfo(text: string): MountinfoEntry[] {
  const out: MountinfoEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (f.length < 7 || sep < 0 || sep + 1 >= f.length) {
      throw new MalformedInput(WorkloadErrorCode.MOUNTINFO_MALFORMED, `invalid mountinfo entry on line ${i + 1}`, {
        fields: { line: i + 1, rule: 'mountinfo-fields' },
      });
    }
    out.push({ root: unescapeMount(f[3]!), mountPoint: unescapeMount(f[4]!), fsType: f[sep + 1]! });
  }
  return out;
}

/** Container identity from cgroup/cgroup2 mounts' roots (mounts rooted at `/` say nothing). */
export function locateFromMountinfo(entries: readonly MountinfoEntry[]): Located | undefined {
  const matches: Located[] = [];
  for (const e of entries) {
    if (e.fsType !== 'cgroup' && e.fsType !== 'cgroup2') continue;
    if (e.root === '/') continue;
    const m = parseCgroupPath(e.root);
    if (m) matches.push({ ...m, via: 'mountinfo', path: e.root });
  }
  return mergeMatches(matches);
}

export interface LocateInput {
  /** `/proc/<pid>/cgroup` text; `undefined` when the file does not exist (only in synthetic trees). */
  readonly cgroup: string | undefined;
  /** Read lazily: only called when the guarded fallback applies. */
  readonly mountinfo?: () => string | undefined;
}

export interface LocateOptions {
  /**
   * Consult mountinfo when the cgroup file names no container. Default false (SPIRE defaults it on): a root process
   * at the root of every hierarchy passes the guard below and controls its own mount table.
   */
  readonly mountinfoFallback?: boolean;
  /** SPIRE docker `container_id_cgroup_matchers`; when set they replace the built-in path walk. */
  readonly matchers?: CgroupMatchers;
}

/**
 * PID → container. The cgroup file is authoritative. mountinfo is used only when ALL of these hold:
 *  1. the fallback is enabled (`mountinfo_fallback = true`; off by default);
 *  2. the cgroup file names no container, and every one of its paths is exactly `/` (the process sits at the
 *     root of the agent's cgroup namespace: the same-cgroup-namespace caller SPIRE's fallback exists for) or
 *     the file is absent. A process whose cgroup shows any concrete non-container path (a host service, a
 *     user session) is "not a container" and its mount table is never read;
 *  3. only cgroup/cgroup2 mounts with a root other than `/` count, and they must agree (merge rules above).
 */
export function locateContainer(input: LocateInput, opts: LocateOptions = {}): Located | undefined {
  const entries = input.cgroup === undefined ? undefined : parseCgroupFile(input.cgroup);
  if (entries !== undefined) {
    const paths = entries.map((e) => e.groupPath);
    const found = opts.matchers ? opts.matchers.locate(paths) : locateFromCgroupPaths(paths);
    if (found) return found;
    if (opts.matchers) return undefined;
  }
  if (opts.mountinfoFallback !== true || input.mountinfo === undefined) return undefined;
  if (entries !== undefined && !entries.every((e) => e.groupPath === '/')) return undefined;
  const text = input.mountinfo();
  if (text === undefined) return undefined;
  return locateFromMountinfo(parseMountinfo(text));
}

// ---- SPIRE docker `container_id_cgroup_matchers` -----------------------------------------------------------

/**
 * Slash-delimited patterns with `*` (exactly one segment) and one `<id>` (the container ID segment), matched
 * against the whole path. A pattern that matches with an empty `<id>` is an error, not a miss.
 */
export class CgroupMatchers {
  readonly #res: readonly RegExp[];
  private constructor(res: RegExp[]) {
    this.#res = res;
  }
  static parse(patterns: readonly string[]): CgroupMatchers {
    const res = patterns.map((p, i) => {
      const segs = p.split('/');
      if (!p.startsWith('/') || segs.filter((s) => s === '<id>').length !== 1) {
        throw new MalformedInput(WorkloadErrorCode.MATCHER_INVALID, `container_id_cgroup_matchers[${i}] must start with / and contain one <id>`, {
          fields: { index: i, rule: 'matcher-shape' },
        });
      }
      const body = segs
        .map((s) => (s === '*' ? '[^/]+' : s === '<id>' ? '([^/]*)' : s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
        .join('/');
      return new RegExp(`^${body}$`);
    });
    return new CgroupMatchers(res);
  }
  /** Container ID for one path: `undefined` = no pattern matched; throws when a pattern matched an empty ID. */
  match(path: string): PathMatch | undefined {
    for (const re of this.#res) {
      const m = re.exec(path);
      if (!m) continue;
      if (m[1] === '' || m[1] === undefined) {
        throw new PreconditionFailed(WorkloadErrorCode.MATCHER_EMPTY_ID, 'a pattern matched, but no container id was found', {
          fields: { rule: 'matcher-empty-id' },
        });
      }
      return { containerId: ContainerId.parse(m[1]) };
    }
    return undefined;
  }
  locate(paths: readonly string[]): Located | undefined {
    const matches: Located[] = [];
    for (const path of paths) {
      const m = this.match(path);
      if (m) matches.push({ ...m, via: 'cgroup', path });
    }
    return mergeMatches(matches);
  }
}

// ---- podman socket choice ----------------------------------------------------------------------------------

/**
 * Rootless podman runs one API socket per user. The user is read from the cgroup path (`user-<uid>.slice`);
 * a UID that does not fit in 32 bits falls back to the rootful socket.
 */
export function podmanSocketFor(cgroupPath: string, rootfulSocket: string, rootlessTemplate: string): string {
  const m = /(?:^|\/)user-(\d+)\.slice(?:\/|$)/.exec(cgroupPath);
  if (!m) return rootfulSocket;
  const uid = Number(m[1]);
  if (!Number.isSafeInteger(uid) || uid > 0xffffffff) return rootfulSocket;
  return rootlessTemplate.replace('%d', String(uid));
}
