/**
 * @module workload/metaserver
 *
 * KubeEdge MetaServer (`metaManager.metaServer.enable: true`): a Kubernetes-API-compatible list/watch served by
 * edgecore from its local SQLite cache, by default at `http://127.0.0.1:10550`, so it works offline. With the
 * `RequireAuthorization` feature gate it serves HTTPS and wants a service-account token. We list
 * `/api/v1/pods?fieldSelector=spec.nodeName=<node>` and poll (MetaServer's watch support varies by release).
 */
import { HttpPodSource } from './pod-source.js';

export interface MetaServerOptions {
  readonly url: string;
  readonly nodeName: string;
  readonly tokenPath?: string;
  readonly caPath?: string;
  readonly skipVerification: boolean;
  readonly timeoutMs: number;
  readonly maxBodyBytes: number;
  /** The uid that must own the listening socket of a plain-HTTP loopback URL (see pod-source.ts). */
  readonly loopbackOwnerUid?: number;
}

export function nodePodsPath(nodeName: string): string {
  return `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${nodeName}`)}`;
}

export function metaServerSource(o: MetaServerOptions): HttpPodSource {
  return new HttpPodSource({
    name: 'metaserver',
    baseUrl: o.url,
    listPath: nodePodsPath(o.nodeName),
    ...(o.tokenPath !== undefined ? { tokenPath: o.tokenPath } : {}),
    ...(o.caPath !== undefined ? { caPath: o.caPath } : {}),
    skipVerification: o.skipVerification,
    timeoutMs: o.timeoutMs,
    maxBodyBytes: o.maxBodyBytes,
    ...(o.loopbackOwnerUid === undefined ? {} : { loopbackOwnerUid: o.loopbackOwnerUid }),
  });
}
