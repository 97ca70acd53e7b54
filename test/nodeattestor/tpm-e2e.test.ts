/**
 * Full TPM node attestation through both built plugins, launched as SPIRE launches them, relayed as
 * SPIRE relays them, against a real swtpm whose PCRs were extended with a real firmware event log.
 */
import * as grpc from '@grpc/grpc-js';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyCommand } from '../../src/cli/policy-create.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { isExtendedEvent } from '../../src/tpm/replay.js';
import { decodeChallenge, decodePayload, decodeResponse, encodePayload, encodeResponse } from '../../src/nodeattestor/wire.js';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { pcrEvent2Sha256, simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { settingsHcl } from '../helpers/spire.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import { extendPcrs, startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const SECURE_BOOT_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const OTHER_LOG = `${repoRoot}test/fixtures/eventlog/gtt-ubuntu-2104-no-secure-boot.bin`;
const EV_IPL = 0x0d;

let work: string;
let tpmA: SwtpmHandle;
let tpmB: SwtpmHandle;
const harnesses: PluginHarness[] = [];

function spkiHash(certDer: Uint8Array): string {
  const spki = new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

async function plugin(name: 'tpm-server' | 'tpm-agent', hcl: string): Promise<PluginHarness> {
  const h = await PluginHarness.launch({ binary: builtPlugin(name), type: 'NodeAttestor' });
  harnesses.push(h);
  await h.init();
  await h.configure(hcl);
  return h;
}

const hcl = settingsHcl;

let caFiles: string[];
let policyPath: string;
let logPath: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tpm-e2e-'));
  [tpmA, tpmB] = await Promise.all([startSwtpm(), startSwtpm()]);
  const log = new Uint8Array(readFileSync(SECURE_BOOT_LOG));
  await simulateMeasuredBoot(tpmA.tcti, log);
  await simulateMeasuredBoot(tpmB.tcti, log);
  logPath = join(work, 'binary_bios_measurements');
  writeFileSync(logPath, log);
  mkdirSync(join(work, 'ca'));
  caFiles = [join(work, 'ca', 'root.pem'), join(work, 'ca', 'intermediate.pem')];
  writeFileSync(caFiles[0]!, tpmA.rootCaPem);
  writeFileSync(caFiles[1]!, tpmA.intermediateCaPem);
  // The golden node's log becomes the policy, as an operator would do with the CLI.
  policyPath = join(work, 'policy.yaml');
  writeFileSync(policyPath, createPolicyCommand(log, { pcrs: [0, 2, 4, 7], name: 'golden' }));
}, 120_000);

afterAll(async () => {
  for (const h of harnesses.splice(0)) await h.kill();
  await Promise.all([tpmA?.stop(), tpmB?.stop()]);
  rmSync(work, { recursive: true, force: true });
});

/** The server plugin refused the attestation with `code` (the agent side did not fail first). */
async function expectRefused(promise: Promise<unknown>, code: grpc.status, pattern?: RegExp) {
  const err = (await promise.catch((e) => e)) as grpc.ServiceError & { side?: string };
  expect(err).toBeInstanceOf(Error);
  expect({ side: err.side, code: err.code }).toEqual({ side: 'server', code });
  if (pattern) expect(err.details).toMatch(pattern);
  return err;
}


function serverHcl(extra: Record<string, unknown> = {}): string {
  return hcl({ ek_ca_path: [join(work, 'ca')], policy_path: policyPath, ...extra });
}

function agentHcl(tpm: SwtpmHandle, extra: Record<string, unknown> = {}): string {
  return hcl({ tpm_tcti: tpm.tcti, event_log_path: logPath, ...extra });
}

describe('TPM node attestation, agent and server plugins over gRPC', () => {
  it('attests an RSA-EK node: ID, selectors from verified data, can_reattest', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    const { attributes, challenges } = await relayAttestation(agent, server);
    const ekHash = spkiHash(tpmA.ekCertRsaDer);
    expect(challenges).toHaveLength(1); // credential and nonce travel in one round
    expect(attributes.spiffe_id).toBe(`spiffe://example.org/spire/agent/tpm/${ekHash}`);
    expect(attributes.can_reattest).toBe(true);
    const s = attributes.selector_values;
    expect(s).toContain(`pub_hash:${ekHash}`);
    expect(s).toContain('ek_manufacturer:id:00001014');
    expect(s).toContain('ek_model:swtpm');
    expect(s).toContain('ek_version:id:20191023');
    expect(s).toContain('ek_ca:swtpm-localca-rootca');
    expect(s).toContain('secureboot:enabled');
    expect(s).toContain('policy:golden');
    expect(s.filter((v) => v.startsWith('pcr:sha256:'))).toHaveLength(10);
    expect(s.some((v) => /^pcr:sha256:7:[0-9a-f]{64}$/.test(v))).toBe(true);
  });

  it('re-attests the same node to the same ID (every SVID rotation re-measures)', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    const first = await relayAttestation(agent, server);
    const second = await relayAttestation(agent, server);
    expect(second.attributes.spiffe_id).toBe(first.attributes.spiffe_id);
    // A fresh nonce and credential every time.
    expect(decodeChallenge(second.challenges[0]!).nonce).not.toEqual(decodeChallenge(first.challenges[0]!).nonce);
  });

  it('attests an ECC P-384 EK node (PolicyOR session) to a different ID', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'ecc-p384' }));
    const { attributes } = await relayAttestation(agent, server);
    expect(attributes.spiffe_id).toBe(`spiffe://example.org/spire/agent/tpm/${spkiHash(tpmA.ekCertEccDer!)}`);
    expect(attributes.selector_values).toContain('policy:golden');
  });

  it('admits an allowlisted EK without any CA, with pub_hash compatible with spire-tpm-plugin', async () => {
    const ekHash = spkiHash(tpmB.ekCertRsaDer);
    const server = await plugin('tpm-server', hcl({ ek_hash_allowlist: [ekHash], require_event_log: false }));
    const agent = await plugin('tpm-agent', agentHcl(tpmB, { ek_kind: 'rsa', send_ek_certificate: false }));
    const { attributes } = await relayAttestation(agent, server);
    expect(attributes.selector_values).toContain(`pub_hash:${ekHash}`);
    expect(attributes.selector_values.some((v) => v.startsWith('ek_manufacturer:'))).toBe(false);
  });
});

describe('refusals', () => {
  it('an EK from an untrusted CA', async () => {
    const otherCa = join(work, 'other-ca.der');
    writeFileSync(otherCa, readFileSync(`${repoRoot}test/fixtures/ekcerts/ca/gce/tpm_ek_root_1.cer.der`));
    const server = await plugin('tpm-server', hcl({ ek_ca_path: otherCa }));
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    await expectRefused(relayAttestation(agent, server), grpc.status.PERMISSION_DENIED, /EK certificate/);
  });

  it('an EK not on the allowlist', async () => {
    const server = await plugin('tpm-server', hcl({ ek_hash_allowlist: ['ab'.repeat(32)] }));
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    await expectRefused(relayAttestation(agent, server), grpc.status.PERMISSION_DENIED, /not on the allowlist/);
  });

  it.each([
    ['a missing CA path', { ek_ca_path: '/nonexistent/ca.pem' }],
    ['an empty CA directory', { ek_ca_path: 'EMPTY_DIR' }],
    ['a file where a directory was expected', { ek_ca_path: 'FILE_AS_DIR' }],
    ['neither a CA nor an allowlist', {}],
    ['an empty allowlist', { ek_hash_allowlist: [] }],
    ['a missing policy file', { ek_hash_allowlist: ['ab'.repeat(32)], policy_path: '/nonexistent/policy.yaml' }],
  ])('fails closed at Configure on %s', async (_name, settings) => {
    const empty = mkdtempSync(join(work, 'empty-'));
    const resolved = Object.fromEntries(
      Object.entries(settings).map(([k, v]) => [k, v === 'EMPTY_DIR' ? empty : v === 'FILE_AS_DIR' ? `${caFiles[0]}/` : v]),
    );
    const h = await PluginHarness.launch({ binary: builtPlugin('tpm-server'), type: 'NodeAttestor' });
    harnesses.push(h);
    await h.init();
    const err = await h.configure(hcl(resolved)).catch((e) => e);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('an AK from another TPM', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agentA = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    const agentB = await plugin('tpm-agent', agentHcl(tpmB, { ek_kind: 'rsa' }));
    const bPayload = decodePayload((await relayAttestation(agentB, server)).payload);
    // Node A's EK with node B's AK: only a TPM holding both could activate the credential.
    const err = await expectRefused(
      relayAttestation(agentA, server, {
        payload: (p) => Buffer.from(encodePayload({ ...decodePayload(p), ak_pub: bPayload.ak_pub })),
        // Agent A cannot open a credential bound to B's AK; an attacker answers with a guess.
        answer: () =>
          Buffer.from(encodeResponse({ secret: new Uint8Array(32), attest: new Uint8Array(10), signature: new Uint8Array(10), pcr_values: new Uint8Array(0) })),
      }),
      grpc.status.PERMISSION_DENIED,
    );
    expect(err.details).toMatch(/credential activation failed/);
  });

  it('a replayed challenge response', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    const recorded = await relayAttestation(agent, server);
    await expectRefused(relayAttestation(agent, server, { answer: () => recorded.responses[0]! }), grpc.status.PERMISSION_DENIED);
  });

  it('a quote over a stale nonce (the TPM answered, the nonce is not ours)', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    const recorded = await relayAttestation(agent, server);
    const old = decodeResponse(recorded.responses[0]!);
    // Keep the fresh secret (the agent really activated), but present the old quote.
    const err = await expectRefused(
      relayAttestation(agent, server, {
        response: (r) => Buffer.from(encodeResponse({ ...decodeResponse(r), attest: old.attest, signature: old.signature })),
      }),
      grpc.status.PERMISSION_DENIED,
    );
    expect(err.details).toMatch(/nonce|extraData/i);
  });

  it('a flipped digest in the event log', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    const tampered = (p: Buffer) => {
      const payload = decodePayload(p);
      const log = Buffer.from(payload.event_log!);
      // Flip one bit inside the last extended event's logged SHA-256 digest.
      const last = parseEventLog(log).untrustedEvents.filter(isExtendedEvent).at(-1)!;
      const at = log.lastIndexOf(Buffer.from(last.digests.get('sha256')!));
      log[at + 5] ^= 0x01;
      return Buffer.from(encodePayload({ ...payload, event_log: log }));
    };
    await expectRefused(relayAttestation(agent, server, { payload: tampered }), grpc.status.PERMISSION_DENIED, /replay/);
  });

  it('a log that does not match the PCRs', async () => {
    const otherLogPath = join(work, 'other-log.bin');
    writeFileSync(otherLogPath, readFileSync(OTHER_LOG));
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa', event_log_path: otherLogPath }));
    await expectRefused(relayAttestation(agent, server), grpc.status.PERMISSION_DENIED, /does not replay/);
  });

  it('an AK without restricted or fixedTPM', async () => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    for (const [bit, pattern] of [[0x00010000, /restricted/i], [0x00000002, /fixedTPM/i]] as const) {
      const clear = (p: Buffer) => {
        const payload = decodePayload(p);
        const ak = Buffer.from(payload.ak_pub);
        ak.writeUInt32BE(ak.readUInt32BE(6) & ~bit, 6); // TPM2B size(2) | type(2) | nameAlg(2) | objectAttributes(4)
        return Buffer.from(encodePayload({ ...payload, ak_pub: ak }));
      };
      await expectRefused(relayAttestation(agent, server, { payload: clear }), grpc.status.PERMISSION_DENIED, pattern);
    }
  });

  it.each([
    ['truncated JSON', (p: Buffer) => p.subarray(0, p.length >> 1)],
    ['garbage bytes', () => Buffer.from([0xff, 0x00, 0x13, 0x37])],
    ['a truncated AK public area', (p: Buffer) => Buffer.from(encodePayload({ ...decodePayload(p), ak_pub: decodePayload(p).ak_pub.subarray(0, 20) }))],
    ['a truncated event log', (p: Buffer) => Buffer.from(encodePayload({ ...decodePayload(p), event_log: decodePayload(p).event_log!.subarray(0, 100) }))],
    ['an unknown field', (p: Buffer) => Buffer.from(JSON.stringify({ ...JSON.parse(p.toString()), extra: 1 }))],
  ])('%s gives INVALID_ARGUMENT and the plugin keeps serving', async (_name, mangle) => {
    const server = await plugin('tpm-server', serverHcl());
    const agent = await plugin('tpm-agent', agentHcl(tpmA, { ek_kind: 'rsa' }));
    await expectRefused(relayAttestation(agent, server, { payload: mangle }), grpc.status.INVALID_ARGUMENT);
    const ok = await relayAttestation(agent, server);
    expect(ok.attributes.selector_values).toContain('policy:golden');
  });
});

describe('drift: a node whose measurements change loses its identity at the next re-attestation', () => {
  it('a PCR extended (and logged) after the policy was made gives PERMISSION_DENIED naming the rule', async () => {
    const tpm = await startSwtpm();
    try {
      const log = new Uint8Array(readFileSync(SECURE_BOOT_LOG));
      await simulateMeasuredBoot(tpm.tcti, log);
      const nodeLog = join(work, 'drift-log.bin');
      writeFileSync(nodeLog, log);
      const server = await plugin('tpm-server', serverHcl());
      const agent = await plugin('tpm-agent', agentHcl(tpm, { ek_kind: 'rsa', event_log_path: nodeLog }));
      expect((await relayAttestation(agent, server)).attributes.selector_values).toContain('policy:golden');

      // Something new is measured into PCR 4 and logged, so the log still replays but the policy no longer holds.
      const data = Buffer.from('unexpected boot application');
      const digest = createHash('sha256').update(data).digest();
      await extendPcrs(tpm.tcti, [{ pcr: 4, bank: 'sha256', digestHex: digest.toString('hex') }]);
      writeFileSync(nodeLog, Buffer.concat([log, pcrEvent2Sha256(4, EV_IPL, digest, data)]));
      const err = await expectRefused(relayAttestation(agent, server), grpc.status.PERMISSION_DENIED);
      expect(err.details).toMatch(/policy "golden": pcr sha256:4: observed [0-9a-f]{64}/);

      // Extended without a log entry: the log no longer matches the quote.
      await extendPcrs(tpm.tcti, [{ pcr: 7, bank: 'sha256', digestHex: digest.toString('hex') }]);
      await expectRefused(relayAttestation(agent, server), grpc.status.PERMISSION_DENIED, /sha256:7/);
    } finally {
      await tpm.stop();
    }
  });
});
