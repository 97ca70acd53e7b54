/**
 * @module workload/k8s-types
 *
 * The few Pod fields the attestor reads, and a tolerant decoder for a PodList (kubelet `/pods`, KubeEdge edged
 * and MetaServer, or the API server). Unknown fields are ignored; wrong types for fields we use make the whole
 * body MalformedInput, since a half-read pod would yield wrong selectors.
 */
import { MalformedInput } from '../errors.js';
import { WorkloadErrorCode } from './errors.js';

export interface K8sContainerStatus {
  readonly name: string;
  readonly containerID?: string;
  readonly image?: string;
  readonly imageID?: string;
}

export interface K8sPod {
  readonly metadata: {
    readonly uid: string;
    readonly name: string;
    readonly namespace: string;
    readonly resourceVersion?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly ownerReferences?: ReadonlyArray<{ readonly kind: string; readonly name: string; readonly uid: string }>;
  };
  readonly spec: { readonly serviceAccountName?: string; readonly nodeName?: string };
  readonly status: {
    readonly phase?: string;
    readonly containerStatuses?: readonly K8sContainerStatus[];
    readonly initContainerStatuses?: readonly K8sContainerStatus[];
    readonly ephemeralContainerStatuses?: readonly K8sContainerStatus[];
  };
}

export interface K8sPodList {
  readonly items: readonly K8sPod[];
  readonly resourceVersion?: string;
}

function bad(what: string): never {
  throw new MalformedInput(WorkloadErrorCode.SOURCE_BODY, `pod list: ${what}`, { fields: { rule: 'pod-list-shape' } });
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const optStr = (v: unknown, what: string): string | undefined => (v === undefined || v === null ? undefined : typeof v === 'string' ? v : bad(`${what} is not a string`));

function decodeStatuses(v: unknown, what: string): K8sContainerStatus[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) bad(`${what} is not a list`);
  return v.map((s, i) => {
    if (!isObj(s) || typeof s['name'] !== 'string') bad(`${what}[${i}] has no name`);
    const out: { name: string; containerID?: string; image?: string; imageID?: string } = { name: s['name'] };
    const cid = optStr(s['containerID'], `${what}[${i}].containerID`);
    const image = optStr(s['image'], `${what}[${i}].image`);
    const imageID = optStr(s['imageID'], `${what}[${i}].imageID`);
    if (cid !== undefined) out.containerID = cid;
    if (image !== undefined) out.image = image;
    if (imageID !== undefined) out.imageID = imageID;
    return out;
  });
}

function decodeStringMap(v: unknown, what: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) bad(`${what} is not a map`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== 'string') bad(`${what}.${k} is not a string`);
  return v as Record<string, string>;
}

export function decodePod(v: unknown): K8sPod {
  if (!isObj(v)) bad('item is not an object');
  const md = v['metadata'];
  if (!isObj(md) || typeof md['uid'] !== 'string' || typeof md['name'] !== 'string') bad('item without metadata.uid/name');
  const spec = isObj(v['spec']) ? v['spec'] : {};
  const status = isObj(v['status']) ? v['status'] : {};
  const owners = md['ownerReferences'];
  if (owners !== undefined && owners !== null && !Array.isArray(owners)) bad('ownerReferences is not a list');
  const labels = decodeStringMap(md['labels'], 'labels');
  const rv = optStr(md['resourceVersion'], 'resourceVersion');
  const sa = optStr(spec['serviceAccountName'], 'serviceAccountName');
  const node = optStr(spec['nodeName'], 'nodeName');
  const phase = optStr(status['phase'], 'phase');
  const cs = decodeStatuses(status['containerStatuses'], 'containerStatuses');
  const ics = decodeStatuses(status['initContainerStatuses'], 'initContainerStatuses');
  const ecs = decodeStatuses(status['ephemeralContainerStatuses'], 'ephemeralContainerStatuses');
  return {
    metadata: {
      uid: md['uid'],
      name: md['name'],
      namespace: optStr(md['namespace'], 'namespace') ?? '',
      ...(rv !== undefined ? { resourceVersion: rv } : {}),
      ...(labels !== undefined ? { labels } : {}),
      ...(Array.isArray(owners)
        ? {
            ownerReferences: owners.map((o, i) => {
              if (!isObj(o)) bad(`ownerReferences[${i}] is not an object`);
              return { kind: optStr(o['kind'], 'owner kind') ?? '', name: optStr(o['name'], 'owner name') ?? '', uid: optStr(o['uid'], 'owner uid') ?? '' };
            }),
          }
        : {}),
    },
    spec: { ...(sa !== undefined ? { serviceAccountName: sa } : {}), ...(node !== undefined ? { nodeName: node } : {}) },
    status: {
      ...(phase !== undefined ? { phase } : {}),
      ...(cs ? { containerStatuses: cs } : {}),
      ...(ics ? { initContainerStatuses: ics } : {}),
      ...(ecs ? { ephemeralContainerStatuses: ecs } : {}),
    },
  };
}

export function decodePodList(v: unknown): K8sPodList {
  if (!isObj(v)) bad('body is not an object');
  const items = v['items'];
  if (items !== null && items !== undefined && !Array.isArray(items)) bad('items is not a list');
  const md = isObj(v['metadata']) ? v['metadata'] : {};
  const rv = optStr(md['resourceVersion'], 'metadata.resourceVersion');
  return { items: (items ?? []).map(decodePod), ...(rv !== undefined ? { resourceVersion: rv } : {}) };
}

/** `docker://<id>` → `<id>` (SPIRE compares the URL host of status.containerID). */
export function containerIdOfStatus(s: K8sContainerStatus): { id: string; scheme: string } | undefined {
  const raw = s.containerID;
  if (!raw) return undefined;
  const i = raw.indexOf('://');
  if (i < 0) return undefined;
  const id = raw.slice(i + 3).split('/')[0]!.toLowerCase();
  return id === '' ? undefined : { id, scheme: raw.slice(0, i) };
}
