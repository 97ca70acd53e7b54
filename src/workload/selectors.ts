/**
 * @module workload/selectors
 *
 * Selector values (no `k8s:` prefix: SPIRE adds the configured plugin name). The Kubernetes set and its value
 * formats are SPIRE k8s's, so existing registration entries keep matching:
 *   sa, ns, node-name, pod-uid, pod-name, pod-image-count, pod-init-image-count, pod-image (Image and ImageID
 *   of every container status, de-duplicated), pod-init-image, pod-label:<k>:<v>, pod-owner:<Kind>:<name>,
 *   pod-owner-uid:<Kind>:<uid>; for the workload container: container-name, container-image (Image and ImageID).
 * Ours: container-id:<id>, runtime:<containerd|crio|docker|podman>, pod-source:<source>; from a runtime socket
 * (no Kubernetes): container-name, container-image (image and digest/ID), container-label:<k>:<v>.
 * Empty values (e.g. an ImageID not yet known) are left out rather than emitted as `pod-image:`.
 */
import type { ContainerRuntime } from './cgroup.js';
import type { K8sContainerStatus, K8sPod } from './k8s-types.js';

function imageIdentifiers(statuses: readonly K8sContainerStatus[] | undefined): Set<string> {
  const out = new Set<string>();
  for (const s of statuses ?? []) {
    if (s.imageID) out.add(s.imageID);
    if (s.image) out.add(s.image);
  }
  return out;
}

/** Pod-level selectors (SPIRE `getSelectorValuesFromPodInfo`). */
export function podSelectors(pod: K8sPod): string[] {
  const out = [
    `sa:${pod.spec.serviceAccountName ?? ''}`,
    `ns:${pod.metadata.namespace}`,
    `node-name:${pod.spec.nodeName ?? ''}`,
    `pod-uid:${pod.metadata.uid}`,
    `pod-name:${pod.metadata.name}`,
    `pod-image-count:${pod.status.containerStatuses?.length ?? 0}`,
    `pod-init-image-count:${pod.status.initContainerStatuses?.length ?? 0}`,
  ];
  for (const img of imageIdentifiers(pod.status.containerStatuses)) out.push(`pod-image:${img}`);
  for (const img of imageIdentifiers(pod.status.initContainerStatuses)) out.push(`pod-init-image:${img}`);
  for (const [k, v] of Object.entries(pod.metadata.labels ?? {})) out.push(`pod-label:${k}:${v}`);
  for (const o of pod.metadata.ownerReferences ?? []) {
    out.push(`pod-owner:${o.kind}:${o.name}`);
    out.push(`pod-owner-uid:${o.kind}:${o.uid}`);
  }
  return out;
}

/** Workload-container selectors (SPIRE `getSelectorValuesFromWorkloadContainerStatus`). */
export function containerStatusSelectors(status: K8sContainerStatus): string[] {
  const out = [`container-name:${status.name}`];
  for (const img of imageIdentifiers([status])) out.push(`container-image:${img}`);
  return out;
}

export interface RuntimeContainerInfo {
  readonly name?: string;
  readonly image?: string;
  /** Digest reference or image ID (CRI `image_ref`/`image_id`, Docker `Image`). */
  readonly imageDigest?: string;
  readonly labels?: Readonly<Record<string, string>>;
}

/** Container selectors read from a runtime socket (CRI or Docker/podman API). */
export function runtimeContainerSelectors(info: RuntimeContainerInfo): string[] {
  const out: string[] = [];
  if (info.name) out.push(`container-name:${info.name}`);
  if (info.image) out.push(`container-image:${info.image}`);
  if (info.imageDigest && info.imageDigest !== info.image) out.push(`container-image:${info.imageDigest}`);
  for (const [k, v] of Object.entries(info.labels ?? {})) out.push(`container-label:${k}:${v}`);
  return out;
}

export function identitySelectors(containerId: string, runtime: ContainerRuntime | undefined, source: string): string[] {
  const out = [`container-id:${containerId}`];
  if (runtime) out.push(`runtime:${runtime}`);
  out.push(`pod-source:${source}`);
  return out;
}

/** Maps a `containerID` URL scheme from pod status to our runtime name. */
export function runtimeFromScheme(scheme: string): ContainerRuntime | undefined {
  switch (scheme) {
    case 'containerd':
      return 'containerd';
    case 'cri-o':
    case 'crio':
      return 'crio';
    case 'docker':
      return 'docker';
    case 'podman':
      return 'podman';
    default:
      return undefined;
  }
}

/** Selectors derived from the process itself (optional, like SPIRE's unix attestor). */
export function processSelectors(p: { uid: number; gid: number; path?: string; sha256?: string }): string[] {
  const out = [`uid:${p.uid}`, `gid:${p.gid}`];
  if (p.path !== undefined) out.push(`path:${p.path}`);
  if (p.sha256 !== undefined) out.push(`sha256:${p.sha256}`);
  return out;
}
