/**
 * Drop-in for SPIRE's built-in k8s workload attestor: SPIRE's own example plugin_data blocks
 * (test/fixtures/spire-k8s, from SPIRE's doc) are fed unchanged to the built edge-workload plugin, and each SPIRE key
 * must mean here what it means in SPIRE (docs/workload-attestor.md has the mapping table).
 */
import * as grpc from '@grpc/grpc-js';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePluginData } from '../../src/plugin/hcl.js';
import { ServiceNames } from '../../src/plugin/protos.js';
import { parseConfig, SA_DIR } from '../../src/workload/config.js';
import { builtPlugin } from '../helpers/binaries.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { FIXTURES, thrown } from './helpers.js';

const DIR = join(FIXTURES, 'spire-k8s');
const BLOCKS = readdirSync(DIR).filter((f) => f.endsWith('.hcl')).sort();
const block = (name: string): string => readFileSync(join(DIR, `${name}.hcl`), 'utf8');

let h: PluginHarness;

beforeAll(async () => {
  h = await PluginHarness.launch({
    binary: builtPlugin('edge-workload'),
    type: 'WorkloadAttestor',
    // As in SPIRE's DaemonSet: the node name from the downward API in MY_NODE_NAME; nothing answers on this host.
    env: { MY_NODE_NAME: 'spire-k8s-compat-node', NODE_NAME: undefined, KUBERNETES_SERVICE_HOST: undefined },
  });
  await h.init();
}, 60_000);

afterAll(async () => {
  await h?.kill();
});

describe("SPIRE's k8s attestor example blocks, unchanged", () => {
  it('the fixtures are there (five examples from SPIRE\'s doc)', () => {
    expect(BLOCKS).toHaveLength(5);
  });

  it.each(BLOCKS)('%s: Validate and Configure of the built plugin accept it', async (file) => {
    const hcl = readFileSync(join(DIR, file), 'utf8');
    const request = { core_configuration: { trust_domain: 'example.org' }, hcl_configuration: hcl };
    const validated = await h.unary<{ valid: boolean; notes?: string[] }>(ServiceNames.config, 'Validate', request);
    expect({ valid: validated.valid, notes: validated.notes ?? [] }).toEqual({ valid: true, notes: [] });
    await expect(h.configure(hcl)).resolves.toBeDefined();
  });

  it('each example means what it means in SPIRE', async () => {
    const env = { MY_NODE_NAME: 'node-a' };
    const cfg = async (name: string) => parseConfig(await decodePluginData(block(name)), env);

    const readOnly = await cfg('read-only-port');
    expect(readOnly.kubelet.readOnlyPort).toBe(10255);

    const defaults = await cfg('secure-port-defaults');
    expect(defaults.kubelet).toMatchObject({ securePort: 10250, readOnlyPort: 0, caPath: `${SA_DIR}/ca.crt`, tokenPath: `${SA_DIR}/token`, skipVerification: false, anonymous: false });
    // SPIRE's node_name_env default, MY_NODE_NAME: the kubelet is reached at the node name.
    expect(defaults.nodeName).toBe('node-a');
    expect(defaults.kubelet.host).toBe('node-a');
    // SPIRE polls 60 times, 500ms apart, for a container that is not in the pod list yet.
    expect(defaults.missRetryDeadlineMs).toBe(30_000);

    expect((await cfg('skip-verification')).kubelet.skipVerification).toBe(true);
    expect((await cfg('skip-verification-other-token')).kubelet).toMatchObject({ skipVerification: true, tokenPath: '/path/to/token' });
    expect((await cfg('client-certificate')).kubelet).toMatchObject({
      caPath: '/path/to/kubelet-ca.pem',
      clientCertPath: '/path/to/cert.pem',
      clientKeyPath: '/path/to/key.pem',
    });
  });
});

describe('every SPIRE k8s attestor key is accepted with its meaning', () => {
  const all = {
    skip_kubelet_verification: true,
    token_path: '/run/t',
    certificate_path: undefined,
    private_key_path: undefined,
    use_anonymous_authentication: false,
    kubelet_read_only_port: 0,
    kubelet_secure_port: 10250,
    kubelet_ca_path: '/run/ca.crt',
    node_name_env: 'THE_NODE',
    node_name: undefined,
    max_poll_attempts: 4,
    poll_retry_interval: '250ms',
    reload_interval: '2m',
    disable_container_selectors: true,
    use_new_container_locator: true,
    verbose_container_locator_logs: true,
  };

  it('all sixteen keys in one block', () => {
    const raw = Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined));
    const c = parseConfig(raw, { THE_NODE: 'edge-9' });
    expect(c.nodeName).toBe('edge-9');
    expect(c.kubelet).toMatchObject({ skipVerification: true, tokenPath: '/run/t', caPath: '/run/ca.crt', securePort: 10250, anonymous: false });
    expect(c.missRetryDeadlineMs).toBe(1000);
    expect(c.missRefreshGapMs).toBe(250);
    expect(c.disableContainerSelectors).toBe(true);
    expect(c.verboseLocatorLogs).toBe(true);
    expect(c.ignored.map((i) => i.key)).toEqual(['reload_interval']);
    // node_name overrides the environment, as in SPIRE.
    expect(parseConfig({ ...raw, node_name: 'given' }, { THE_NODE: 'edge-9' }).nodeName).toBe('given');
  });

  it('client certificate and anonymous authentication', () => {
    const cert = parseConfig({ certificate_path: '/c.pem', private_key_path: '/k.pem' }, {});
    expect(cert.kubelet).toMatchObject({ clientCertPath: '/c.pem', clientKeyPath: '/k.pem' });
    expect(parseConfig({ use_anonymous_authentication: true }, {}).kubelet.anonymous).toBe(true);
  });

  it.each([
    [{ kubelet_read_only_port: 10255, kubelet_secure_port: 10250 }, 'kubelet_read_only_port', /both the read-only and the secure port/],
    [{ use_anonymous_authentication: true, token_path: '/t' }, 'use_anonymous_authentication', /cannot be used with token_path/],
    [{ use_anonymous_authentication: true, certificate_path: '/c', private_key_path: '/k' }, 'use_anonymous_authentication', /cannot be used with certificate_path/],
    [{ token_path: '/a', kubelet_token_path: '/b' }, 'token_path', /set both as SPIRE's "token_path" and as "kubelet_token_path"/],
    [{ max_poll_attempts: 3, miss_retry_deadline: '5s' }, 'miss_retry_deadline', /either miss_retry_deadline or SPIRE's/],
    [{ poll_retry_interval: 'soon' }, 'poll_retry_interval', /duration/],
  ])('%j is refused as SPIRE refuses it, naming %s', (raw, key, message) => {
    const e = thrown(() => parseConfig(raw as Record<string, unknown>, {}));
    expect(e.grpcCode).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e.message).toContain(key);
    expect(e.message).toMatch(message);
  });

  it('use_new_container_locator = false is accepted and logged as ignored, with the reason', () => {
    const c = parseConfig({ use_new_container_locator: false }, {});
    expect(c.ignored).toEqual([{ key: 'use_new_container_locator', reason: expect.stringMatching(/cgroup v1 and v2/) }]);
  });

  it('NODE_NAME, the earlier default, still works when MY_NODE_NAME is unset', () => {
    expect(parseConfig({}, { NODE_NAME: 'old' }).nodeName).toBe('old');
    expect(parseConfig({}, { NODE_NAME: 'old', MY_NODE_NAME: 'new' }).nodeName).toBe('new');
    expect(parseConfig({ node_name_env: 'X' }, { NODE_NAME: 'old' }).nodeName).toBeUndefined();
  });
});
