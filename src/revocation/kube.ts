/**
 * Fencing a Kubernetes Node with @kubernetes/client-node: a NoExecute taint (so nothing new lands there and
 * pods without a matching toleration leave), and an Eviction per pod so that controllers reschedule them on
 * trusted nodes (Evictions honour PodDisruptionBudgets, unlike deletes). Lifting the fence removes the taint.
 *
 * Taint changes are merge patches that carry the resourceVersion read just before, so a concurrent writer (the node
 * controller adds its own taints) is never overwritten: the API server answers 409 and the step is retried.
 */
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1Node, type V1Taint } from '@kubernetes/client-node';
import { EK_HASH_LABEL, EK_HASH_LABEL_CHARS } from './config.js';

export interface FenceResult {
  readonly taint: 'added' | 'present' | 'skipped';
  readonly evicted: readonly string[];
  readonly alreadyGone: readonly string[];
}

/** HTTP status of a failed Kubernetes call, 0 for a network error. */
export function kubeStatus(err: unknown): number {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : 0;
}

/** Network errors, 409 conflicts, 429 and 5xx are worth retrying; other 4xx are not. */
export function isTransientKube(err: unknown): boolean {
  const s = kubeStatus(err);
  return s === 0 || s === 409 || s === 429 || s >= 500;
}

export function loadKubeConfig(options: { kubeconfig?: string; inCluster: boolean }): KubeConfig {
  const kc = new KubeConfig();
  if (options.kubeconfig) kc.loadFromFile(options.kubeconfig);
  else if (options.inCluster) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

export class NodeFence {
  readonly #api: CoreV1Api;
  readonly #taintKey: string;

  constructor(kc: KubeConfig, taintKey: string) {
    this.#api = kc.makeApiClient(CoreV1Api);
    this.#taintKey = taintKey;
  }

  /** The Node labelled with this EK hash, if exactly one is. */
  async nodeByEkHash(ekHash: string): Promise<string | undefined> {
    const list = await this.#api.listNode({ labelSelector: `${EK_HASH_LABEL}=${ekHash.slice(0, EK_HASH_LABEL_CHARS)}` });
    const names = list.items.map((n) => n.metadata?.name).filter((n): n is string => !!n);
    return names.length === 1 ? names[0] : undefined;
  }

  /** A merge patch carrying the resourceVersion read: the API server applies it only to that version, else 409. */
  async #patchTaints(node: V1Node, taints: V1Taint[]): Promise<void> {
    const name = node.metadata!.name!;
    const body = { metadata: { resourceVersion: node.metadata!.resourceVersion }, spec: { taints } };
    await this.#api.patchNode({ name, body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  }

  /** Adds the NoExecute taint unless present. Returns whether it was added. */
  async taint(nodeName: string, reason: string): Promise<'added' | 'present'> {
    const node = await this.#api.readNode({ name: nodeName });
    const taints = node.spec?.taints ?? [];
    if (taints.some((t) => t.key === this.#taintKey && t.effect === 'NoExecute')) return 'present';
    // Taint values are label values: at most 63 characters of [A-Za-z0-9._-].
    const value = reason.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
    await this.#patchTaints(node, [...taints, { key: this.#taintKey, value, effect: 'NoExecute', timeAdded: new Date() }]);
    return 'added';
  }

  /** Removes our taint. Returns whether there was one. */
  async untaint(nodeName: string): Promise<'removed' | 'absent'> {
    const node = await this.#api.readNode({ name: nodeName });
    const taints = node.spec?.taints ?? [];
    const kept = taints.filter((t) => t.key !== this.#taintKey);
    if (kept.length === taints.length) return 'absent';
    await this.#patchTaints(node, kept);
    return 'removed';
  }

  /**
   * Deletes one pod, only if it still has this UID (a delete precondition: a pod recreated under the same name is
   * another pod). `gone` when it no longer exists or was replaced.
   */
  async deletePod(namespace: string, name: string, uid: string | undefined): Promise<'deleted' | 'gone'> {
    try {
      await this.#api.deleteNamespacedPod({ name, namespace, ...(uid ? { body: { preconditions: { uid } } } : {}) });
      return 'deleted';
    } catch (err) {
      // 409 here is a failed UID precondition, not a write race: retrying would never succeed.
      if (kubeStatus(err) === 404 || kubeStatus(err) === 409) return 'gone';
      throw err;
    }
  }

  /** Evicts every pod bound to the node (DaemonSet pods only when asked). Pods already gone count as done. */
  async evictPods(nodeName: string, includeDaemonSets: boolean): Promise<{ evicted: string[]; alreadyGone: string[] }> {
    const pods = await this.#api.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${nodeName}` });
    const evicted: string[] = [];
    const alreadyGone: string[] = [];
    for (const pod of pods.items) {
      const name = pod.metadata?.name;
      const namespace = pod.metadata?.namespace;
      if (!name || !namespace) continue;
      if (!includeDaemonSets && (pod.metadata?.ownerReferences ?? []).some((o) => o.kind === 'DaemonSet')) continue;
      if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') continue;
      try {
        await this.#api.createNamespacedPodEviction({
          name,
          namespace,
          body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name, namespace } },
        });
        evicted.push(`${namespace}/${name}`);
      } catch (err) {
        if (kubeStatus(err) === 404) alreadyGone.push(`${namespace}/${name}`);
        else throw err;
      }
    }
    return { evicted, alreadyGone };
  }
}
