/**
 * @module workload/apiserver
 *
 * The Kubernetes API server, without @kubernetes/client-node: a plain HTTPS list of
 * `/api/v1/pods?fieldSelector=spec.nodeName=<node>` followed by a watch from the list's resourceVersion
 * (newline-delimited JSON events, with bookmarks). The pod index re-lists when the watch ends or fails
 * (410 Gone included). Needs RBAC `list`/`watch` on pods. This is the one source that needs the cloud: on an
 * edge node that loses it, the index serves the last snapshot until `max_staleness`.
 */
import { HttpPodSource } from './pod-source.js';
import { nodePodsPath, type MetaServerOptions } from './metaserver.js';

/** The API server speaks the same pod-list API as MetaServer (which mirrors it), plus watch. */
export interface ApiServerOptions extends MetaServerOptions {
  /** Server-side watch timeout in seconds (the server closes the stream after it; we re-watch). */
  readonly watchTimeoutSeconds?: number;
}

export function apiServerSource(o: ApiServerOptions): HttpPodSource {
  const list = nodePodsPath(o.nodeName);
  return new HttpPodSource({
    name: 'apiserver',
    baseUrl: o.url,
    listPath: list,
    watchPath: `${list}&watch=1&timeoutSeconds=${o.watchTimeoutSeconds ?? 300}`,
    ...(o.tokenPath !== undefined ? { tokenPath: o.tokenPath } : {}),
    ...(o.caPath !== undefined ? { caPath: o.caPath } : {}),
    skipVerification: o.skipVerification,
    timeoutMs: o.timeoutMs,
    maxBodyBytes: o.maxBodyBytes,
    ...(o.loopbackOwnerUid === undefined ? {} : { loopbackOwnerUid: o.loopbackOwnerUid }),
  });
}
