/** Configuration: strict schema, errors naming the key, HCL1 block forms, defaults and env fallbacks. */
import { describe, expect, it } from 'vitest';
import { GrpcCode, InvalidConfig } from '../../src/errors.js';
import { EdgeWorkloadAttestor } from '../../src/workload/attestor.js';
import { parseDuration } from '../../src/plugin/config-schema.js';
import { parseConfig } from '../../src/workload/config.js';
import { testContext } from './helpers.js';

function configError(raw: Record<string, unknown>, env: Record<string, string> = {}): InvalidConfig {
  try {
    parseConfig(raw, env);
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidConfig);
    return e as InvalidConfig;
  }
  throw new Error('expected InvalidConfig');
}

describe('config', () => {
  it('defaults', () => {
    const c = parseConfig({}, {});
    expect(c.podSource).toBe('auto');
    expect(c.procPath).toBe('/proc');
    expect(c.kubelet).toMatchObject({ host: '127.0.0.1', securePort: 10250, readOnlyPort: 0, skipVerification: false });
    expect(c.edged).toEqual({ host: '127.0.0.1', port: 10350 });
    expect(c.metaserver.url).toBe('http://127.0.0.1:10550');
    expect([c.pollIntervalMs, c.maxStalenessMs, c.missRetryDeadlineMs]).toEqual([5000, 600_000, 30_000]);
    expect(c.mountinfoFallback).toBe(false); // off unless asked for: a root process can forge its mount table
    expect(Object.isFrozen(c)).toBe(true);
  });
  it('unknown keys and wrong types name the key', () => {
    let e = configError({ bogus: 1 });
    expect(e.code).toBe('ERR_WORKLOAD_CONFIG');
    expect(e.grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(e.fields['key']).toBe('bogus');
    e = configError({ kubelet_secure_port: '10250' });
    expect(e.fields['key']).toBe('kubelet_secure_port');
    e = configError({ pod_source: 'kubelets' });
    expect(e.fields['key']).toBe('pod_source');
    e = configError({ poll_interval: '5 seconds' });
    expect(e.fields['key']).toBe('poll_interval');
    e = configError({ kubelet_skip_verification: 'true' });
    expect(e.fields['key']).toBe('kubelet_skip_verification');
    e = configError({ kubelet: [{ bogus: 1 }] });
    expect(e.fields['key']).toBe('kubelet_bogus');
  });
  it('HCL1 blocks: list-of-one-object and plain-object forms; conflicts and repeats refused', () => {
    expect(parseConfig({ kubelet: [{ secure_port: 1234, ca_path: '/ca' }] }, {}).kubelet).toMatchObject({ securePort: 1234, caPath: '/ca' });
    expect(parseConfig({ metaserver: { url: 'https://127.0.0.1:10550' }, node_name: 'n' }, {}).metaserver.url).toBe('https://127.0.0.1:10550');
    expect(configError({ kubelet: [{ secure_port: 1 }], kubelet_secure_port: 2 }).fields['key']).toBe('kubelet_secure_port');
    expect(configError({ kubelet: [{ secure_port: 1 }, { secure_port: 2 }] }).fields['key']).toBe('kubelet');
  });
  it('node name from NODE_NAME (or node_name_env)', () => {
    expect(parseConfig({}, { NODE_NAME: 'edge-1' }).nodeName).toBe('edge-1');
    expect(parseConfig({ node_name_env: 'MY_NODE_NAME' }, { MY_NODE_NAME: 'edge-2' }).nodeName).toBe('edge-2');
    expect(parseConfig({ node_name: 'x' }, { NODE_NAME: 'edge-1' }).nodeName).toBe('x');
    expect(configError({ pod_source: 'metaserver' }).fields['key']).toBe('node_name');
    expect(configError({ pod_source: 'apiserver', node_name: 'n' }).fields['key']).toBe('apiserver_url');
    expect(parseConfig({ pod_source: 'apiserver', node_name: 'n' }, { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' }).apiserver.url).toBe('https://10.0.0.1:443');
  });
  it('cross-field rules', () => {
    expect(configError({ kubelet_client_cert_path: '/c' }).fields['key']).toBe('kubelet_client_key_path');
    expect(configError({ poll_interval: '10s', max_staleness: '5s' }).fields['key']).toBe('max_staleness');
    expect(configError({ podman_socket_template: '/run/user/podman.sock' }).fields['key']).toBe('podman_socket_template');
  });
  it('durations', () => {
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration(2)).toBe(2000);
    expect(parseDuration('0')).toBe(0);
    expect(parseDuration('1d')).toBeUndefined();
    expect(parseDuration(-1)).toBeUndefined();
  });
  it('configure refuses bad config with INVALID_ARGUMENT and keeps the attestor unconfigured', async () => {
    const a = new EdgeWorkloadAttestor(testContext(), { env: {} });
    const e = await a.configure({ proc_path: 3 }, { trustDomain: 'example.org' }).catch((x) => x);
    expect(e.grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
    const n = await a.attest(1, new AbortController().signal).catch((x) => x);
    expect(n.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
    await expect(a.validate({ bogus: true }, { trustDomain: 'example.org' })).rejects.toMatchObject({ grpcCode: GrpcCode.INVALID_ARGUMENT });
    expect(await a.validate({ pod_source: 'none' }, { trustDomain: 'example.org' })).toEqual([]);
  });
});
