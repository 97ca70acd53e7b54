/**
 * @module workload/auto
 *
 * `pod_source = "auto"`: at Configure, try the sources in a fixed order and keep the first whose pod list
 * answers (HTTP 200 with a valid PodList). Authenticated sources (TLS-verified) come in one tier, plain-HTTP
 * loopback sources in another, and `auto` never falls from the first tier to the second: a kubelet whose TLS
 * fails (a man in the middle) or that is not up yet must not hand the node's identities to whoever serves a pod
 * list on 127.0.0.1:10350. The unauthenticated tier is used only when no authenticated source exists on the node
 * at all, and even then every request checks who owns the listening socket (pod-source.ts, listener.ts).
 *   Authenticated: kubelet secure port (token or client certificate present, or use_anonymous_authentication), MetaServer over https (node name),
 *   Kubernetes API server (node name and an API URL, e.g. in-cluster env).
 *   Unauthenticated: kubelet read-only port (only if `kubelet_read_only_port` is set), KubeEdge edged
 *   (127.0.0.1:10350), MetaServer over http (node name), an API server URL over http.
 * Local sources come first in each tier: they keep working when an edge node loses the cloud; the API server
 * does not. When none answers the caller decides (runtime socket only, or a clear error).
 */
import { existsSync } from 'node:fs';
import type { Logger } from '../plugin/types.js';
import { apiServerSource } from './apiserver.js';
import type { WorkloadConfig } from './config.js';
import { edgedSource } from './edged.js';
import { kubeletSource } from './kubelet.js';
import { metaServerSource } from './metaserver.js';
import type { HttpPodSource, PodListResult, PodSource, PodSourceName } from './pod-source.js';

export function buildSource(name: PodSourceName, c: WorkloadConfig): PodSource {
  const common = { timeoutMs: c.requestTimeoutMs, maxBodyBytes: c.maxPodListBytes, loopbackOwnerUid: c.loopbackSourceUid };
  switch (name) {
    case 'kubelet': {
      const k = c.kubelet;
      return kubeletSource({
        host: k.host,
        securePort: k.securePort,
        readOnlyPort: k.readOnlyPort,
        caPath: k.caPath,
        // Anonymous (SPIRE's use_anonymous_authentication): neither a token nor a client certificate is sent.
        ...(k.anonymous ? {} : { tokenPath: k.tokenPath }),
        ...(k.clientCertPath !== undefined ? { clientCertPath: k.clientCertPath } : {}),
        ...(k.clientKeyPath !== undefined ? { clientKeyPath: k.clientKeyPath } : {}),
        skipVerification: k.skipVerification,
        ...(k.tlsServerName !== undefined ? { tlsServerName: k.tlsServerName } : {}),
        ...common,
      });
    }
    case 'edged':
      return edgedSource({ host: c.edged.host, port: c.edged.port, ...common });
    case 'metaserver':
    case 'apiserver':
      return kubernetesApiSource(name, c);
  }
}

/** The API server or MetaServer endpoint of `c` (pods, and namespaces for `enable_namespace_labels`). */
export function kubernetesApiSource(name: 'metaserver' | 'apiserver', c: WorkloadConfig): HttpPodSource {
  const common = { timeoutMs: c.requestTimeoutMs, maxBodyBytes: c.maxPodListBytes };
  if (name === 'metaserver') {
    return metaServerSource({ url: c.metaserver.url, nodeName: c.nodeName ?? '', skipVerification: c.metaserver.skipVerification, ...(c.metaserver.tokenPath ? { tokenPath: c.metaserver.tokenPath } : {}), ...(c.metaserver.caPath ? { caPath: c.metaserver.caPath } : {}), ...common });
  }
  return apiServerSource({
    url: c.apiserver.url ?? 'https://kubernetes.default.svc',
    nodeName: c.nodeName ?? '',
    tokenPath: c.apiserver.tokenPath,
    caPath: c.apiserver.caPath,
    skipVerification: c.apiserver.skipVerification,
    ...common,
  });
}

export interface ProbeResult {
  readonly source: PodSource;
  readonly first: PodListResult;
}

/** Candidate sources for `auto`, in order: the authenticated tier if it has any member, else the loopback tier. */
export function autoCandidates(c: WorkloadConfig): Array<() => PodSource> {
  const authenticated: Array<() => PodSource> = [];
  const metaserverTls = c.metaserver.url.startsWith('https:');
  if (c.kubelet.anonymous || existsSync(c.kubelet.tokenPath) || c.kubelet.clientCertPath) authenticated.push(() => buildSource('kubelet', { ...c, kubelet: { ...c.kubelet, readOnlyPort: 0 } }));
  if (c.nodeName && metaserverTls) authenticated.push(() => buildSource('metaserver', c));
  if (c.nodeName && c.apiserver.url?.startsWith('https:')) authenticated.push(() => buildSource('apiserver', c));
  if (authenticated.length > 0) return authenticated;

  const loopback: Array<() => PodSource> = [];
  if (c.kubelet.readOnlyPort > 0) loopback.push(() => buildSource('kubelet', c));
  loopback.push(() => buildSource('edged', c));
  if (c.nodeName && !metaserverTls) loopback.push(() => buildSource('metaserver', c));
  if (c.nodeName && c.apiserver.url?.startsWith('http:')) loopback.push(() => buildSource('apiserver', c));
  return loopback;
}

export async function probeSources(candidates: Array<() => PodSource>, log: Logger, probeTimeoutMs: number): Promise<ProbeResult | undefined> {
  for (const make of candidates) {
    const source = make();
    try {
      const first = await source.list(AbortSignal.timeout(probeTimeoutMs));
      log.info('pod source selected', { source: source.name, endpoint: source.endpoint, pods: first.items.length });
      return { source, first };
    } catch (err) {
      log.debug('pod source probe failed', { source: source.name, endpoint: source.endpoint, error: err instanceof Error ? err.message : String(err) });
      source.close();
    }
  }
  return undefined;
}

/**
 * `auto` when nothing answered at Configure (an edge node booting before edged, a kubelet restart): Configure
 * must not fail, or the whole SPIRE agent would refuse to start. This source re-probes the candidates in the
 * same order at every refresh and sticks to the first that answers. Until then container workloads get
 * UNAVAILABLE (fail closed: no pod data, no pod selectors).
 */
export class DeferredAutoSource implements PodSource {
  #chosen: PodSource | undefined;
  readonly #candidates: Array<() => PodSource>;
  readonly #log: Logger;
  readonly #probeTimeoutMs: number;

  constructor(candidates: Array<() => PodSource>, log: Logger, probeTimeoutMs: number) {
    this.#candidates = candidates;
    this.#log = log;
    this.#probeTimeoutMs = probeTimeoutMs;
  }

  /** No source has answered yet; until one does no pod can be found. */
  get probing(): boolean {
    return this.#chosen === undefined;
  }

  get name(): PodSourceName {
    // Before a source is chosen no pod can be found, so no selector ever carries this placeholder.
    return this.#chosen?.name ?? 'kubelet';
  }

  get endpoint(): string {
    return this.#chosen?.endpoint ?? 'auto (probing kubelet, edged, metaserver, apiserver)';
  }

  async list(signal: AbortSignal): Promise<PodListResult> {
    if (this.#chosen) return this.#chosen.list(signal);
    const probed = await probeSources(this.#candidates, this.#log, this.#probeTimeoutMs);
    if (!probed) throw new Error('pod_source = "auto": no pod source answered yet');
    this.#chosen = probed.source;
    return probed.first;
  }

  close(): void {
    this.#chosen?.close();
  }
}
