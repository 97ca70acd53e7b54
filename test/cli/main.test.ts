/**
 * The built `spire-edge-attest` binary, run as an operator runs it: as a child process, asserting exit codes and
 * parsed stdout. `npm test` builds first; a missing binary is a setup error (builtPlugin throws).
 */
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { startSwtpm, type SwtpmHandle } from '../helpers/swtpm.js';

const BIN = builtPlugin('spire-edge-attest');
const EVENTLOG = `${repoRoot}test/fixtures/eventlog`;
const GOLDEN_LOG = `${EVENTLOG}/kl-binary_bios_measurements-secureboot.bin`;
const OTHER_LOG = `${EVENTLOG}/gtt-ubuntu-2104-no-secure-boot.bin`;
const STM_EK_DER = `${repoRoot}test/fixtures/ekcerts/certs/stm-st33htph-rsa-ek.der`;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(err);
        return;
      }
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

/** sha256 of the certificate's SubjectPublicKeyInfo DER, computed with node:crypto only. */
function spkiHash(certDer: Uint8Array): string {
  const spki = new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

let work: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'cli-main-'));
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('ek-hash from files', () => {
  it('a DER certificate with trailing NV padding: the hash of its SPKI, and the JSON object', async () => {
    const der = new Uint8Array(readFileSync(STM_EK_DER));
    const expected = spkiHash(der);

    const plain = await run('ek-hash', '--cert', STM_EK_DER);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe(`${expected}\n`);

    const res = await run('ek-hash', '--cert', STM_EK_DER, '--json');
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({
      pub_hash: expected,
      agent_id_path: `/spire/agent/tpm/${expected}`,
      source: 'certificate',
      manufacturer: 'id:53544D20',
      vendor: 'STMicroelectronics',
      model: expect.any(String),
      version: expect.any(String),
    });
  });

  it('a PEM certificate gives the same hash as its DER', async () => {
    const der = readFileSync(STM_EK_DER);
    const exact = new X509Certificate(der).raw; // without the padding
    const pemPath = join(work, 'ek.pem');
    writeFileSync(pemPath, `-----BEGIN CERTIFICATE-----\n${exact.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`);
    const res = await run('ek-hash', '--cert', pemPath);
    expect(res.code).toBe(0);
    expect(res.stdout.trim()).toBe(spkiHash(der));
  });

  it('an unparsable certificate fails with exit 1 and an error on stderr', async () => {
    const bad = join(work, 'bad.der');
    writeFileSync(bad, Buffer.from('not a certificate'));
    const res = await run('ek-hash', '--cert', bad);
    expect(res.code).toBe(1);
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(/^spire-edge-attest: error/);
  });

  it('a binary file that is not DER is not called "no PEM certificate": the message says neither form matched', async () => {
    const res = await run('ek-hash', '--cert', `${EVENTLOG}/kl-binary_bios_measurements.bin`);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/\[ERR_EK_CERT_MALFORMED\]: EK certificate: neither DER \(a certificate starts with 0x30, this starts with 0x00\) nor PEM/);
    expect(res.stderr).not.toMatch(/expected one PEM certificate/);
  });
});

describe('ek-hash from a real TPM (swtpm)', () => {
  let tpm: SwtpmHandle;
  beforeAll(async () => {
    tpm = await startSwtpm();
  });
  afterAll(async () => {
    await tpm?.stop();
  });

  it('equals the hash of the swtpm EK certificate (auto picks the RSA EK), with progress on stderr', async () => {
    const expected = spkiHash(tpm.ekCertRsaDer);
    const res = await run('ek-hash', '--tcti', tpm.tcti, '--json');
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({
      pub_hash: expected,
      agent_id_path: `/spire/agent/tpm/${expected}`,
      source: 'tpm',
      ek_kind: 'rsa',
      ek_certificate: true,
      manufacturer: 'id:00001014',
      model: 'swtpm',
    });
    expect(res.stderr).toMatch(/reading EK from TPM/);
  });

  it('--ek-kind ecc-p384 gives the ECC EK certificate hash; the public area file gives the same', async () => {
    const expected = spkiHash(tpm.ekCertEccDer!);
    const res = await run('ek-hash', '--tcti', tpm.tcti, '--ek-kind', 'ecc-p384');
    expect(res.code).toBe(0);
    expect(res.stdout.trim()).toBe(expected);

    // The persistent EK now exists at 0x81010016 (the agent's handle for the P-384 EK): read its TPM2B_PUBLIC.
    const pubPath = join(work, 'ek384.pub');
    await new Promise<void>((resolve, reject) =>
      execFile('tpm2_readpublic', ['-c', '0x81010016', '-f', 'tss', '-o', pubPath], { env: { ...process.env, TPM2TOOLS_TCTI: tpm.tcti } }, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    const fromPublic = await run('ek-hash', '--public', pubPath, '--json');
    expect(fromPublic.code).toBe(0);
    expect(JSON.parse(fromPublic.stdout)).toEqual({ pub_hash: expected, agent_id_path: `/spire/agent/tpm/${expected}`, source: 'public' });
  });
});

describe('eventlog inspect', () => {
  it('--json parses and carries the replayed PCRs and the Secure Boot state', async () => {
    const res = await run('eventlog', 'inspect', GOLDEN_LOG, '--json');
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout) as {
      format: string;
      eventCount: number;
      events: unknown[];
      pcrs: Record<string, Record<string, string>>;
      secureBoot: { state: string };
    };
    expect(out.format).toBe('crypto-agile');
    expect(out.events).toHaveLength(out.eventCount);
    expect(Object.keys(out.pcrs['sha256']!)).toEqual(expect.arrayContaining(['0', '2', '4', '7']));
    for (const hex of Object.values(out.pcrs['sha256']!)) expect(hex).toMatch(/^[0-9a-f]{64}$/);
    expect(out.secureBoot.state).toBe('enabled');
  });

  it('the replayed PCRs are the ones policy create pins', async () => {
    const [inspected, created] = await Promise.all([
      run('eventlog', 'inspect', GOLDEN_LOG, '--json'),
      run('policy', 'create', '--from-eventlog', GOLDEN_LOG, '--pcrs', '0,7'),
    ]);
    const pcrs = (JSON.parse(inspected.stdout) as { pcrs: Record<string, Record<string, string>> }).pcrs['sha256']!;
    const policy = parseYaml(created.stdout) as { policies: { pcrs: Record<string, Record<string, string>> }[] };
    expect(policy.policies[0]!.pcrs['sha256']).toEqual({ '0': pcrs['0'], '7': pcrs['7'] });
  });

  it('a malformed log fails with exit 1', async () => {
    const bad = join(work, 'bad.bin');
    writeFileSync(bad, Buffer.alloc(10, 0xff));
    const res = await run('eventlog', 'inspect', bad);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/ERR_EVENTLOG_MALFORMED/);
  });
});

describe('policy create → policy check', () => {
  let policyPath: string;
  beforeAll(async () => {
    policyPath = join(work, 'golden.yaml');
    const res = await run('policy', 'create', '--from-eventlog', GOLDEN_LOG, '--name', 'golden', '--out', policyPath);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('');
  });

  it('passes on the log the policy was made from', async () => {
    const res = await run('policy', 'check', '--policy', policyPath, '--eventlog', GOLDEN_LOG, '--json');
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout) as { offline: boolean; verified: boolean; passed: boolean; policies: { name: string; passed: boolean }[] };
    expect(out).toMatchObject({ offline: true, verified: false, passed: true });
    expect(out.policies).toEqual([{ name: 'golden', passed: true, violations: [] }]);
    expect(res.stderr).toMatch(/offline/);

    const text = await run('policy', 'check', '--policy', policyPath, '--eventlog', GOLDEN_LOG);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/unverified/);
    expect(text.stdout).toMatch(/^PASS golden$/m);
  });

  it('fails with exit 1 on a different log and names the failing rules', async () => {
    const res = await run('policy', 'check', '--policy', policyPath, '--eventlog', OTHER_LOG, '--json');
    expect(res.code).toBe(1);
    const out = JSON.parse(res.stdout) as { passed: boolean; policies: { name: string; passed: boolean; violations: { rule: string; observed: string }[] }[] };
    expect(out.passed).toBe(false);
    const rules = out.policies[0]!.violations.map((v) => v.rule);
    expect(rules).toContain('pcr sha256:7');
    expect(rules).toContain('secure_boot');

    const text = await run('policy', 'check', '--policy', policyPath, '--eventlog', OTHER_LOG);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/^FAIL golden$/m);
    expect(text.stdout).toMatch(/secure_boot: observed disabled/);
  });

  it('--pcrs limits the PCRs treated as quoted: a pinned PCR outside it fails as "not quoted"', async () => {
    const res = await run('policy', 'check', '--policy', policyPath, '--eventlog', GOLDEN_LOG, '--pcrs', 'sha256:0,2,4', '--json');
    expect(res.code).toBe(1);
    const out = JSON.parse(res.stdout) as { pcrs: string; policies: { violations: { rule: string; observed: string }[] }[] };
    expect(out.pcrs).toBe('sha256:0,2,4');
    expect(out.policies[0]!.violations).toContainEqual(expect.objectContaining({ rule: 'pcr sha256:7', observed: 'not quoted' }));
  });

  it('an invalid policy file fails with exit 1 naming the file and the key', async () => {
    const bad = join(work, 'bad-policy.yaml');
    writeFileSync(bad, 'policies:\n  - name: x\n    secureboot: true\n');
    const res = await run('policy', 'check', '--policy', bad, '--eventlog', GOLDEN_LOG);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`[ERR_POLICY_INVALID]: ${bad}: policy file: policies.0.secureboot: unknown key "secureboot" (did you mean "secure_boot"?)`);
  });
});

describe('usage', () => {
  it.each([
    [[]],
    [['frobnicate']],
    [['policy']],
    [['policy', 'delete']],
    [['ek-hash', '--bogus']],
    [['ek-hash', '--cert', 'a', '--public', 'b']],
    [['ek-hash', '--cert', 'a', '--ek-kind', 'rsa']],
    [['ek-hash', '--ek-kind', 'dsa']],
    [['ek-hash', '--tcti', 'carrier-pigeon:']],
    [['eventlog', 'inspect']],
    [['eventlog', 'inspect', 'a', 'b']],
    [['policy', 'create']],
    [['policy', 'create', '--from-eventlog', 'x', '--pcrs', '0,x']],
    [['policy', 'create', '--from-eventlog', 'x', '--pcrs', '24']],
    [['policy', 'check', '--policy', 'p']],
    [['policy', 'check', '--policy', 'p', '--eventlog', 'l', '--match', 'most']],
  ])('%j exits 2 with a usage line on stderr', async (args) => {
    const res = await run(...args);
    expect(res.code).toBe(2);
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(/Usage: spire-edge-attest/);
  });

  it.each([[['--help']], [['help']], [['ek-hash', '--help']], [['policy', 'check', '-h']], [['help', 'eventlog', 'inspect']], [['policy', '--help']]])(
    '%j prints help and exits 0',
    async (args) => {
      const res = await run(...args);
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(/^Usage: spire-edge-attest/);
    },
  );
});
