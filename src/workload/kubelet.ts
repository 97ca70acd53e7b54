/**
 * @module workload/kubelet
 *
 * The kubelet's `/pods` endpoint: the secure port (default 10250) with the service-account bearer token, CA
 * verification (default: the service-account `ca.crt`) and an optional X.509 client certificate; or the
 * deprecated unauthenticated read-only port when `kubelet_read_only_port` is set.
 */
import { HttpPodSource } from './pod-source.js';

export interface KubeletOptions {
  readonly host: string;
  readonly securePort: number;
  /** > 0 selects the read-only HTTP port instead of the secure port. */
  readonly readOnlyPort: number;
  readonly caPath?: string;
  readonly tokenPath?: string;
  readonly clientCertPath?: string;
  readonly clientKeyPath?: string;
  readonly skipVerification: boolean;
  readonly tlsServerName?: string;
  readonly timeoutMs: number;
  readonly maxBodyBytes: number;
  /** The uid that must own the read-only port's listening socket when the host is loopback (see pod-source.ts). */
  readonly loopbackOwnerUid?: number;
}

const hostPart = (h: string): string => (h.includes(':') && !h.startsWith('[') ? `[${h}]` : h);

export function kubeletSource(o: KubeletOptions): HttpPodSource {
  if (o.readOnlyPort > 0) {
    return new HttpPodSource({ name: 'kubelet', baseUrl: `http://${hostPart(o.host)}:${o.readOnlyPort}`, listPath: '/pods', timeoutMs: o.timeoutMs, maxBodyBytes: o.maxBodyBytes, ...(o.loopbackOwnerUid === undefined ? {} : { loopbackOwnerUid: o.loopbackOwnerUid }) });
  }
  return new HttpPodSource({
    name: 'kubelet',
    baseUrl: `https://${hostPart(o.host)}:${o.securePort}`,
    listPath: '/pods',
    ...(o.caPath !== undefined ? { caPath: o.caPath } : {}),
    ...(o.tokenPath !== undefined && o.clientCertPath === undefined ? { tokenPath: o.tokenPath } : {}),
    ...(o.clientCertPath !== undefined ? { clientCertPath: o.clientCertPath } : {}),
    ...(o.clientKeyPath !== undefined ? { clientKeyPath: o.clientKeyPath } : {}),
    skipVerification: o.skipVerification,
    ...(o.tlsServerName !== undefined ? { tlsServerName: o.tlsServerName } : {}),
    timeoutMs: o.timeoutMs,
    maxBodyBytes: o.maxBodyBytes,
  });
}
