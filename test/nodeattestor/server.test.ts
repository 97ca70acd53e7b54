/**
 * Server attestor rules that need an injected clock or a captured log: exercised in-process, with the
 * real agent attestor driving a real swtpm.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyCommand } from '../../src/cli/policy-create.js';
import { GrpcCode } from '../../src/errors.js';
import { TpmAgentAttestor } from '../../src/nodeattestor/agent.js';
import { TpmServerAttestor } from '../../src/nodeattestor/server.js';
import { createLogger } from '../../src/plugin/log.js';
import type { AgentAttributes } from '../../src/plugin/types.js';
import { repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const core = { trustDomain: 'example.org' };
let tpm: SwtpmHandle;
let work: string;
let agent: TpmAgentAttestor;

function logger(lines: Record<string, unknown>[] = []) {
  return { log: createLogger({ module: 'test', level: 'debug', sink: (l) => lines.push(JSON.parse(l)) }), lines };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tpm-server-'));
  tpm = await startSwtpm();
  const log = new Uint8Array(readFileSync(LOG));
  await simulateMeasuredBoot(tpm.tcti, log);
  writeFileSync(join(work, 'log.bin'), log);
  writeFileSync(join(work, 'ca.pem'), tpm.rootCaPem + tpm.intermediateCaPem);
  const golden = createPolicyCommand(log, { pcrs: [0, 2, 4, 7], name: 'golden' });
  writeFileSync(join(work, 'golden.yaml'), golden);
  // A second policy that this node cannot pass: PCR 0 must be all zeros.
  writeFileSync(
    join(work, 'two.yaml'),
    golden.replace(/^policies:\n/m, `policies:\n  - name: impossible\n    pcrs:\n      sha256:\n        "0": "${'00'.repeat(32)}"\n`),
  );
  agent = new TpmAgentAttestor(logger().log);
  await agent.configure({ tpm_tcti: tpm.tcti, event_log_path: join(work, 'log.bin'), ek_kind: 'rsa' }, core);
}, 120_000);

afterAll(async () => {
  await agent?.close();
  await tpm?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function attest(server: TpmServerAttestor, beforeResponse?: () => void): Promise<AgentAttributes> {
  const controller = new AbortController();
  const session = await agent.begin(controller.signal);
  return server.attest(session.payload, {
    signal: controller.signal,
    challenge: async (bytes) => {
      const response = await session.respond(bytes);
      beforeResponse?.();
      return response;
    },
  });
}

describe('nonce freshness and pending challenges', () => {
  it('a stale nonce: a response arriving after the 60 s lifetime is DEADLINE_EXCEEDED (retried, not a verdict)', async () => {
    let now = Date.now();
    const server = new TpmServerAttestor(logger().log, { now: () => new Date(now) });
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'golden.yaml') }, core);
    await expect(attest(server)).resolves.toMatchObject({ canReattest: true });
    const err = await attest(server, () => (now += 61_000)).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_NONCE_EXPIRED', grpcCode: GrpcCode.DEADLINE_EXCEEDED });
  });

  it('max_pending_challenges_per_ek: one more challenge for the same EK is RESOURCE_EXHAUSTED until one is answered', async () => {
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), require_event_log: false, max_pending_challenges_per_ek: 1 }, core);
    const controller = new AbortController();
    const session = await agent.begin(controller.signal);
    let answer!: () => void;
    const held = new Promise<void>((resolve) => (answer = resolve));
    const first = server.attest(session.payload, {
      signal: controller.signal,
      challenge: async (bytes) => {
        await held;
        return session.respond(bytes);
      },
    });
    await new Promise((r) => setTimeout(r, 50)); // the first challenge is now outstanding
    const second = await server.attest(session.payload, { signal: controller.signal, challenge: () => Promise.reject(new Error('unreachable')) }).catch((e) => e);
    expect(second).toMatchObject({ code: 'ERR_CHALLENGES_PER_EK', grpcCode: GrpcCode.RESOURCE_EXHAUSTED });
    answer();
    await expect(first).resolves.toMatchObject({ canReattest: true });
    await expect(attest(server)).resolves.toMatchObject({ canReattest: true }); // the slot was released
  });
});

describe('policy matching', () => {
  it('any: passes when one policy passes and names only the passed policies', async () => {
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'two.yaml') }, core);
    const attrs = await attest(server);
    expect(attrs.selectorValues).toContain('policy:golden');
    expect(attrs.selectorValues).not.toContain('policy:impossible');
  });

  it('all: one failing policy refuses the node, naming the rule and the observed value', async () => {
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'two.yaml'), policy_match: 'all' }, core);
    const err = await attest(server).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_POLICY_VIOLATION', grpcCode: GrpcCode.PERMISSION_DENIED, rule: 'pcr sha256:0' });
    expect(err.message).toMatch(/policy "impossible": pcr sha256:0: observed [0-9a-f]{64}, expected 0{64}/);
  });

  it('report: never refuses, still reports passed policies as selectors', async () => {
    const server = new TpmServerAttestor(logger().log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'two.yaml'), policy_match: 'report' }, core);
    expect((await attest(server)).selectorValues).toContain('policy:golden');
  });

  it('report: the audit line names every failed policy with every rule it failed', async () => {
    const { log, lines } = logger();
    // Three policies: one passes, two fail (one of them on two rules).
    const golden = readFileSync(join(work, 'golden.yaml'), 'utf8');
    const three = golden.replace(
      /^policies:\n/m,
      `policies:\n  - name: impossible\n    pcrs:\n      sha256:\n        "0": "${'00'.repeat(32)}"\n` +
        `  - name: two-rules\n    pcrs:\n      sha256:\n        "7": "${'11'.repeat(32)}"\n    kernels: ["${'22'.repeat(32)}"]\n`,
    );
    writeFileSync(join(work, 'three.yaml'), three);
    const server = new TpmServerAttestor(log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'three.yaml'), policy_match: 'report' }, core);
    const attrs = await attest(server);
    expect(attrs.selectorValues).toContain('policy:golden');
    const decision = lines.find((l) => l['@message'] === 'Attestation decision')!;
    expect(decision).toMatchObject({ outcome: 'accepted', policy_match: 'report', policies: 'golden' });
    const failed = String(decision['policies_failed']);
    expect(failed).toMatch(new RegExp(`^impossible: pcr sha256:0 \\(observed [0-9a-f]{64}, expected ${'0'.repeat(64)}\\); two-rules: `));
    // `kernels` covers every file measured into PCR 9 (kernel, initrd, grub.cfg…): each unlisted one is named.
    expect(failed).toMatch(/two-rules: pcr sha256:7 \(observed [0-9a-f]{64}, expected 1{64}\)(, kernels \(event \d+\) \(observed sha256:[0-9a-f]{64}\))+$/);
    expect(failed).not.toMatch(/golden:/);
  });

  it('refuses at Configure a policy that needs PCRs the selection does not quote', async () => {
    const server = new TpmServerAttestor(logger().log);
    const err = await server
      .configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'golden.yaml'), pcr_selection: 'sha256:0,1,2,3' }, core)
      .catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_CONFIG_POLICY', grpcCode: GrpcCode.INVALID_ARGUMENT });
  });
});

describe('audit', () => {
  it('a chain failure still logs the full ek_hash, the value to allowlist', async () => {
    const { log, lines } = logger();
    const server = new TpmServerAttestor(log);
    // A CA that did not issue this TPM's EK certificate.
    await server.configure({ ek_ca_path: `${repoRoot}test/fixtures/ekcerts/ca/gce/tpm_ek_root_1.cer.der`, require_event_log: false }, core);
    const err = await attest(server).catch((e) => e);
    expect(err).toMatchObject({ grpcCode: GrpcCode.PERMISSION_DENIED });
    const decision = lines.find((l) => l['@message'] === 'Attestation decision')!;
    expect(decision['outcome']).toBe('refused');
    const ekCert = new X509Certificate(tpm.ekCertRsaDer);
    const expected = createHash('sha256').update(ekCert.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
    expect(decision['ek_hash']).toBe(expected);
    expect(String(decision['reason'])).toContain(expected.slice(0, 16));
  });

  it('logs one structured line per decision with agent ID, EK hash, outcome, rule and duration', async () => {
    const { log, lines } = logger();
    const server = new TpmServerAttestor(log);
    await server.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'two.yaml'), policy_match: 'all' }, core);
    await attest(server).catch(() => undefined);
    const okServer = new TpmServerAttestor(log);
    await okServer.configure({ ek_ca_path: join(work, 'ca.pem'), policy_path: join(work, 'golden.yaml') }, core);
    await attest(okServer);
    const decisions = lines.filter((l) => l['@message'] === 'Attestation decision');
    expect(decisions).toHaveLength(2);
    expect(decisions[0]).toMatchObject({ outcome: 'refused', code: 'ERR_POLICY_VIOLATION', rule: 'pcr sha256:0' });
    expect(decisions[0]!['policies_failed']).toMatch(/^impossible: pcr sha256:0 \(observed [0-9a-f]{64}, expected 0{64}\)$/);
    expect(decisions[1]).toMatchObject({ outcome: 'accepted', secure_boot: 'enabled', policies: 'golden' });
    for (const d of decisions) {
      expect(d['agent_id']).toMatch(/^spiffe:\/\/example\.org\/spire\/agent\/tpm\/[0-9a-f]{64}$/);
      expect(d['ek_hash']).toMatch(/^[0-9a-f]{64}$/);
      expect(typeof d['duration_ms']).toBe('number');
    }
  });
});
