/**
 * @module workload/edged
 *
 * KubeEdge edged (edgecore >= 1.12 embeds the kubelet server) exposes the kubelet read-only API on
 * `127.0.0.1:10350` (TailoredKubeletConfig `ReadOnlyPort`). Loopback only and unauthenticated, so it is only
 * reachable with hostNetwork. Same `/pods` format as the kubelet, and it keeps answering while the node is cut
 * off from the cloud.
 */
import { HttpPodSource } from './pod-source.js';

export interface EdgedOptions {
  readonly host: string;
  readonly port: number;
  readonly timeoutMs: number;
  readonly maxBodyBytes: number;
  /** The uid that must own the listening socket (see pod-source.ts); undefined: no check. */
  readonly loopbackOwnerUid?: number;
}

export function edgedSource(o: EdgedOptions): HttpPodSource {
  const host = o.host.includes(':') && !o.host.startsWith('[') ? `[${o.host}]` : o.host;
  return new HttpPodSource({ name: 'edged', baseUrl: `http://${host}:${o.port}`, listPath: '/pods', timeoutMs: o.timeoutMs, maxBodyBytes: o.maxBodyBytes, ...(o.loopbackOwnerUid === undefined ? {} : { loopbackOwnerUid: o.loopbackOwnerUid }) });
}
