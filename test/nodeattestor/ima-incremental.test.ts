/**
 * Incremental IMA re-attestation through both built plugins on real swtpm: the test writes ima-ng measurement lists,
 * extends their template digests into PCR 10 as the kernel would, and checks what the server asks for (challenge
 * ima_offset), what the agent sends (response ima_log / ima_offset / ima_total) and what the server decides, across
 * server restarts (ima_state_dir), tampered state files, TPM resets and the ima_state_max_nodes cap.
 */
import * as grpc from '@grpc/grpc-js';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHmac } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPlugin, repoRoot } from '../helpers/binaries.js';
import { simulateMeasuredBoot } from '../helpers/measured-boot.js';
import { PluginHarness } from '../helpers/plugin-harness.js';
import { settingsHcl } from '../helpers/spire.js';
import { relayAttestation, type RelayResult } from '../helpers/spire-relay.js';
import { extendPcrs, startSwtpm, tpm2, type SwtpmHandle } from '../helpers/swtpm.js';
import { imaDigest, type ImaEntry } from '../../src/tpm/ima/index.js';
import { decodeChallenge, decodeImaResend, decodeImaResendResponse, decodeResponse, encodeResponse, isImaResend } from '../../src/nodeattestor/wire.js';
import { fileDigest, synthEntries, toBinaryList, type SynthEntry } from '../tpm/ima/synth.js';

const BOOT_LOG = `${repoRoot}test/fixtures/eventlog/kl-binary_bios_measurements-secureboot.bin`;
const FILES = 64;
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

let work: string;
const harnesses: PluginHarness[] = [];
const tpms: SwtpmHandle[] = [];

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ima-incr-'));
  writeFileSync(join(work, 'bios.bin'), readFileSync(BOOT_LOG));
  const digests: Record<string, string[]> = { boot_aggregate: ['00'.repeat(32)] };
  for (let i = 0; i < FILES; i++) digests[`/usr/bin/f${i}`] = [hex(fileDigest('sha256', `f${i} v1`))];
  const policy = { meta: { version: 1, generator: 0 }, release: 0, digests, excludes: [], keyrings: {}, ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null }, 'ima-buf': {}, 'verification-keys': '' };
  writeFileSync(join(work, 'policy.json'), JSON.stringify(policy));
  // The same policy with one more allowed file: another sha256, so state judged by the first must not be reused.
  writeFileSync(join(work, 'policy-v2.json'), JSON.stringify({ ...policy, digests: { ...digests, '/usr/bin/new': ['11'.repeat(32)] } }));
});

afterAll(async () => {
  for (const h of harnesses.splice(0)) await h.kill();
  for (const t of tpms.splice(0)) await t.stop();
  rmSync(work, { recursive: true, force: true });
});

async function plugin(name: 'tpm-server' | 'tpm-agent', settings: Record<string, unknown>): Promise<PluginHarness> {
  const h = await PluginHarness.launch({ binary: builtPlugin(name), type: 'NodeAttestor' });
  harnesses.push(h);
  await h.init();
  await h.configure(settingsHcl(settings));
  return h;
}

/** A node: its own swtpm (measured boot simulated), its IMA list file and its agent plugin. */
class Node {
  list: ImaEntry[] = [];
  private constructor(
    readonly tpm: SwtpmHandle,
    readonly imaPath: string,
    readonly agent: PluginHarness,
  ) {}

  static async start(name: string, agentSettings: Record<string, unknown> = {}): Promise<Node> {
    const tpm = await startSwtpm();
    tpms.push(tpm);
    await simulateMeasuredBoot(tpm.tcti, new Uint8Array(readFileSync(BOOT_LOG)));
    writeFileSync(join(work, 'ca.pem'), `${tpm.rootCaPem}\n${tpm.intermediateCaPem}`);
    const imaPath = join(work, `${name}.ima`);
    writeFileSync(imaPath, '');
    const agent = await plugin('tpm-agent', { tpm_tcti: tpm.tcti, ek_kind: 'rsa', event_log_path: join(work, 'bios.bin'), ima_log_path: imaPath, ...agentSettings });
    const node = new Node(tpm, imaPath, agent);
    await node.measure([{ template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' }]);
    return node;
  }

  /** The kernel measuring files: entries appended to the list, their template digests extended into PCR 10. */
  async measure(specs: readonly SynthEntry[]): Promise<void> {
    const added = synthEntries(specs).map((e, i) => ({ ...e, index: this.list.length + i }));
    await extendPcrs(
      this.tpm.tcti,
      added.map((e) => ({ pcr: 10, bank: 'sha256' as const, digestHex: hex(e.invalidated ? Buffer.alloc(32, 0xff) : imaDigest('sha256', e.templateData)) })),
    );
    this.list.push(...added);
    writeFileSync(this.imaPath, toBinaryList(this.list));
  }

  /** `n` allowed files, continuing the numbering. */
  measureAllowed(n: number): Promise<void> {
    const first = this.list.length;
    return this.measure(Array.from({ length: n }, (_, i) => ({ template: 'ima-ng' as const, path: `/usr/bin/f${(first + i) % FILES}`, content: `f${(first + i) % FILES} v1`, digestAlg: 'sha256' as const })));
  }

  /** A TPM Reset (swtpm restart, TPM2_Startup(CLEAR)) and a new boot: PCRs start over, and so does the IMA list. */
  async reboot(): Promise<void> {
    // Orderly, as a kernel does: an unorderly stop counts against the TPM's dictionary-attack lockout.
    await tpm2(this.tpm.tcti, 'tpm2_shutdown', []);
    await this.tpm.restart();
    await simulateMeasuredBoot(this.tpm.tcti, new Uint8Array(readFileSync(BOOT_LOG)));
    this.list = [];
    await this.measure([{ template: 'ima-ng', path: 'boot_aggregate', digest: new Uint8Array(32), digestAlg: 'sha256' }]);
  }
}

interface Exchange {
  offered: number | undefined;
  sentOffset: number | undefined;
  sentTotal: number | undefined;
  sentBytes: Buffer;
  /** The whole list the agent resent in a second round, when the server asked for it. */
  resent: { total: number | undefined; bytes: Buffer } | undefined;
  selectors: string[];
}

/** Complete binary entries in a chunk (the test's own framing walk: pcr, sha1 digest, name, data). */
function synthCount(bytes: Uint8Array): number {
  const b = Buffer.from(bytes);
  let at = 0;
  let n = 0;
  while (at < b.length) {
    const nameLen = b.readUInt32LE(at + 24);
    const dataLen = b.readUInt32LE(at + 28 + nameLen);
    at += 28 + nameLen + 4 + dataLen;
    n++;
  }
  expect(at).toBe(b.length);
  return n;
}

function exchange(result: RelayResult): Exchange {
  const challenge = decodeChallenge(result.challenges[0]!);
  const response = decodeResponse(result.responses[0]!);
  const x: Exchange = { offered: challenge.ima_offset, sentOffset: response.ima_offset, sentTotal: response.ima_total, sentBytes: Buffer.from(response.ima_log ?? []), resent: undefined, selectors: result.attributes.selector_values };
  expect(result.challenges.length).toBeLessThanOrEqual(2);
  if (result.challenges.length === 2) {
    expect(isImaResend(result.challenges[1]!)).toBe(true);
    const again = decodeImaResendResponse(result.responses[1]!);
    x.resent = { total: again.ima_total, bytes: Buffer.from(again.ima_log) };
  }
  return x;
}

async function attest(node: Node, server: PluginHarness): Promise<Exchange> {
  return exchange(await relayAttestation(node.agent, server));
}

/** A refusal, with what the agent was asked for and what it sent. */
async function refused(node: Node, server: PluginHarness, pattern: RegExp): Promise<{ offered: number | undefined; sentOffset: number | undefined }> {
  let offered: number | undefined;
  let sentOffset: number | undefined;
  const err = (await relayAttestation(node.agent, server, {
    challenge: (c) => {
      if (!isImaResend(c)) offered = decodeChallenge(c).ima_offset;
      return c;
    },
    response: (r, c) => {
      if (!isImaResend(c)) sentOffset = decodeResponse(r).ima_offset;
      return r;
    },
  }).catch((e) => e)) as grpc.ServiceError & { side?: string };
  expect(err).toBeInstanceOf(Error);
  expect({ side: err.side, code: err.code, details: err.details }).toEqual({ side: 'server', code: grpc.status.PERMISSION_DENIED, details: expect.stringMatching(pattern) });
  return { offered, sentOffset };
}

const serverSettings = (extra: Record<string, unknown> = {}) => ({
  ek_ca_path: join(work, 'ca.pem'),
  pcr_selection: 'sha256:0,1,2,3,4,5,6,7,8,9,10',
  ima_policy_path: join(work, 'policy.json'),
  ima_policy_name: 'edge-runtime',
  ...extra,
});

describe('incremental IMA re-attestation by entry offset', () => {
  it('the first attestation sends the whole list, later ones only the new entries; ima:entries counts every verified entry', async () => {
    const node = await Node.start('incr');
    const server = await plugin('tpm-server', serverSettings());
    await node.measureAllowed(9);

    const first = await attest(node, server);
    expect(first).toMatchObject({ offered: undefined, sentOffset: undefined, sentTotal: 10 });
    expect(first.sentBytes).toEqual(toBinaryList(node.list));
    expect(first.selectors).toEqual(expect.arrayContaining(['ima:entries:10', 'ima:policy:edge-runtime']));

    await node.measureAllowed(5);
    const second = await attest(node, server);
    expect(second).toMatchObject({ offered: 10, sentOffset: 10, sentTotal: 15 });
    expect(second.sentBytes).toEqual(toBinaryList(node.list.slice(10)));
    expect(second.sentBytes.length).toBeLessThan(first.sentBytes.length);
    expect(second.selectors).toEqual(expect.arrayContaining(['ima:entries:15', 'ima:policy:edge-runtime']));

    const idle = await attest(node, server);
    expect(idle).toMatchObject({ offered: 15, sentOffset: 15, sentTotal: 15 });
    expect(idle.sentBytes.length).toBe(0);
    expect(idle.selectors).toContain('ima:entries:15');
  });

  it('a list longer than one message goes in chunks the server asks for, each within ima_chunk_bytes; a violation deep in it is named', async () => {
    // SPIRE's server reads at most 4 MiB per agent message; the agent's chunk size stands in for that limit here.
    const node = await Node.start('chunks', { ima_chunk_bytes: 4096 });
    const server = await plugin('tpm-server', serverSettings());
    await node.measureAllowed(599);
    const result = await relayAttestation(node.agent, server);
    const first = decodeResponse(result.responses[0]!);
    expect(first.ima_total).toBe(600);
    expect(first.ima_log!.length).toBeLessThanOrEqual(4096);
    const requests = result.challenges.slice(1).map((c) => decodeImaResend(c));
    const chunks = result.responses.slice(1).map((r) => decodeImaResendResponse(r));
    expect(chunks.length).toBeGreaterThan(5);
    // Each request asks for the entries after those received, and each chunk starts there.
    let expected = 0;
    const counts = [first, ...chunks].map((c) => synthCount(c.ima_log!));
    for (let i = 0; i < chunks.length; i++) {
      expected += counts[i]!;
      expect(requests[i]).toEqual({ from: expected });
      expect(chunks[i]!.ima_offset).toBe(expected);
      expect(chunks[i]!.ima_log.length).toBeLessThanOrEqual(4096);
    }
    expect(Buffer.concat([first.ima_log!, ...chunks.map((c) => c.ima_log)])).toEqual(toBinaryList(node.list));
    expect(result.attributes.selector_values).toEqual(expect.arrayContaining(['ima:entries:600', 'ima:policy:edge-runtime']));

    // The next attestation sends only the increment, in one message.
    await node.measureAllowed(3);
    const again = await attest(node, server);
    expect(again).toMatchObject({ offered: 600, sentOffset: 600, sentTotal: 603, resent: undefined });

    // A fresh server (no state) gathers the whole list again, and a violation in a late chunk is named by its entry.
    await node.measureAllowed(200);
    await node.measure([{ template: 'ima-ng', path: '/usr/bin/f5', content: 'f5 TAMPERED', digestAlg: 'sha256' }]);
    const fresh = await plugin('tpm-server', serverSettings());
    await refused(node, fresh, /IMA entry 803 "\/usr\/bin\/f5" \(sha256:[0-9a-f]{64}\).*\[rule digest-not-allowed\]/);
  });

  it('a violating new entry is refused at re-attestation naming the entry, and stays refused', async () => {
    const node = await Node.start('violate');
    const server = await plugin('tpm-server', serverSettings());
    await node.measureAllowed(7);
    expect((await attest(node, server)).selectors).toContain('ima:entries:8');
    await node.measureAllowed(2);
    await node.measure([{ template: 'ima-ng', path: '/usr/bin/f3', content: 'f3 TAMPERED', digestAlg: 'sha256' }]);
    const digest = hex(fileDigest('sha256', 'f3 TAMPERED'));
    const violation = new RegExp(`runtime policy "edge-runtime": IMA entry 10 "/usr/bin/f3" \\(sha256:${digest}\\).*\\[rule digest-not-allowed\\]`);
    expect(await refused(node, server, violation)).toEqual({ offered: 8, sentOffset: 8 });
    // The state did not advance past the violation: the next attestation sends it again and is refused again.
    await node.measureAllowed(1);
    expect(await refused(node, server, violation)).toEqual({ offered: 8, sentOffset: 8 });
  });

  it('a restarted server reuses the persisted state; a policy change, a corrupt or an edited state file make it verify the whole list', async () => {
    const node = await Node.start('persist');
    const stateDir = join(work, 'state-persist');
    const settings = serverSettings({ ima_state_dir: stateDir });
    let server = await plugin('tpm-server', settings);
    await node.measureAllowed(11);
    expect(await attest(node, server)).toMatchObject({ offered: undefined, sentTotal: 12 });
    await node.measureAllowed(3);
    expect(await attest(node, server)).toMatchObject({ offered: 12, sentOffset: 12, sentTotal: 15 });

    const files = readdirSync(stateDir).filter((f) => f.endsWith('.json'));
    expect(files).toHaveLength(1);
    const stateFile = join(stateDir, files[0]!);
    expect(statSync(stateFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(stateDir, 'ima-state.key')).mode & 0o777).toBe(0o600);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(readdirSync(stateDir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toMatchObject({ v: 1, offset: 15, reset_count: expect.any(Number), basis: expect.stringMatching(/^[0-9a-f]{64}$/) });

    const restart = async (extra: Record<string, unknown> = {}) => {
      await server.kill();
      server = await plugin('tpm-server', { ...settings, ...extra });
      return server;
    };
    // Restarted: still incremental.
    await restart();
    await node.measureAllowed(2);
    let x = await attest(node, server);
    expect(x).toMatchObject({ offered: 15, sentOffset: 15, sentTotal: 17 });
    expect(x.sentBytes).toEqual(toBinaryList(node.list.slice(15)));
    expect(x.selectors).toContain('ima:entries:17');

    // Another runtime policy: every entry is judged again.
    await restart({ ima_policy_path: join(work, 'policy-v2.json') });
    x = await attest(node, server);
    expect(x).toMatchObject({ offered: undefined, sentOffset: undefined, sentTotal: 17 });
    expect(x.sentBytes).toEqual(toBinaryList(node.list));
    expect(x.selectors).toContain('ima:entries:17');
    await restart();
    expect(await attest(node, server)).toMatchObject({ offered: undefined }); // state was judged by v2
    expect(await attest(node, server)).toMatchObject({ offered: 17 });

    // Corrupt file: no state, the whole list.
    writeFileSync(stateFile, '{"v":1,"agent_id":');
    await restart();
    x = await attest(node, server);
    expect(x).toMatchObject({ offered: undefined, sentTotal: 17 });
    expect(x.selectors).toContain('ima:entries:17');

    // Edited file (offset moved past entries the server never saw): the MAC fails, no state, the whole list.
    await node.measureAllowed(4);
    const edited = { ...JSON.parse(readFileSync(stateFile, 'utf8')), offset: 21 };
    writeFileSync(stateFile, JSON.stringify(edited));
    await restart();
    x = await attest(node, server);
    expect(x).toMatchObject({ offered: undefined, sentTotal: 21 });
    expect(x.sentBytes).toEqual(toBinaryList(node.list));

    // A forged file with a valid MAC (whoever holds the key) claiming a PCR 10 the node never had: the increment does
    // not replay from it, so the server drops the state and asks for the whole list in a second round.
    const key = readFileSync(join(stateDir, 'ima-state.key'));
    const good = JSON.parse(readFileSync(stateFile, 'utf8'));
    const forged = { ...good, pcr10: { sha256: 'ab'.repeat(32) } };
    const input = JSON.stringify([forged.v, forged.agent_id, forged.offset, [['sha256', forged.pcr10.sha256]], forged.reset_count, forged.restart_count, forged.basis, forged.learnt_keys, forged.full_verified_at, forged.updated_at]);
    forged.mac = createHmac('sha256', key).update(input).digest('hex');
    writeFileSync(stateFile, JSON.stringify(forged));
    chmodSync(stateFile, 0o600);
    await restart();
    await node.measureAllowed(1);
    x = await attest(node, server);
    expect(x).toMatchObject({ offered: 21, sentOffset: 21, sentTotal: 22, resent: { total: 22, bytes: toBinaryList(node.list) } });
    expect(x.sentBytes).toEqual(toBinaryList(node.list.slice(21)));
    expect(x.selectors).toContain('ima:entries:22');
    expect(await attest(node, server)).toMatchObject({ offered: 22, resent: undefined });
  });

  it('a TPM reset (startup clear) leads to a full verification, whether the new list is shorter than the offset or longer (then resent in a second round)', async () => {
    const node = await Node.start('reset');
    const server = await plugin('tpm-server', serverSettings());
    await node.measureAllowed(9);
    await attest(node, server);
    await node.measureAllowed(2);
    expect(await attest(node, server)).toMatchObject({ offered: 10, sentOffset: 10, sentTotal: 12 });

    // Shorter than the offset: the agent sends its whole new list by itself.
    await node.reboot();
    await node.measureAllowed(3);
    let x = await attest(node, server);
    expect(x).toMatchObject({ offered: 12, sentOffset: undefined, sentTotal: 4 });
    expect(x.sentBytes).toEqual(toBinaryList(node.list));
    expect(x.selectors).toContain('ima:entries:4');

    // Longer than the offset: the agent sends entries 4.. of another boot (the quote's resetCount differs from the
    // state's); the server drops the state and asks for the whole list in a second round, and verifies it from zero.
    await node.reboot();
    await node.measureAllowed(7);
    x = await attest(node, server);
    expect(x).toMatchObject({ offered: 4, sentOffset: 4, sentTotal: 8, resent: { total: 8, bytes: toBinaryList(node.list) } });
    expect(x.selectors).toContain('ima:entries:8');
    expect(await attest(node, server)).toMatchObject({ offered: 8, sentOffset: 8, resent: undefined });

    // The resent list must stand on its own: a violation in it is refused, saying why it was resent.
    await node.reboot();
    await node.measureAllowed(8);
    await node.measure([{ template: 'ima-ng', path: '/usr/bin/f2', content: 'f2 TAMPERED', digestAlg: 'sha256' }]);
    await refused(node, server, /IMA entry 9 "\/usr\/bin\/f2".*\[rule digest-not-allowed\] \(the whole list, resent because the TPM was reset or restarted \(resetCount \d+→\d+/);
  });

  it('ima_state_max_nodes evicts the least recently attested node (from memory and from ima_state_dir)', async () => {
    const a = await Node.start('cap-a');
    const b = await Node.start('cap-b');
    writeFileSync(join(work, 'ca.pem'), `${a.tpm.rootCaPem}\n${a.tpm.intermediateCaPem}`); // one process-wide CA
    const stateDir = join(work, 'state-cap');
    const server = await plugin('tpm-server', serverSettings({ ima_state_dir: stateDir, ima_state_max_nodes: 1 }));
    await a.measureAllowed(4);
    await b.measureAllowed(6);
    expect(await attest(a, server)).toMatchObject({ offered: undefined });
    expect(await attest(a, server)).toMatchObject({ offered: 5 });
    expect(await attest(b, server)).toMatchObject({ offered: undefined });
    expect(readdirSync(stateDir).filter((f) => f.endsWith('.json'))).toHaveLength(1);
    // a was evicted by b: whole list again (and b is evicted in turn).
    expect(await attest(a, server)).toMatchObject({ offered: undefined, sentTotal: 5 });
    expect(await attest(b, server)).toMatchObject({ offered: undefined, sentTotal: 7 });
    expect(await attest(b, server)).toMatchObject({ offered: 7 });
    expect(readdirSync(stateDir).filter((f) => f.endsWith('.json'))).toHaveLength(1);
  });

  it('an agent claiming an offset the server did not offer, or a count its list does not hold, gets INVALID_ARGUMENT', async () => {
    const node = await Node.start('liar');
    const server = await plugin('tpm-server', serverSettings());
    await node.measureAllowed(5);
    await attest(node, server);
    await node.measureAllowed(2);
    const rewrite = (change: Record<string, unknown>) => (r: Buffer, c: Buffer) => {
      if (isImaResend(c)) return r; // the honest agent's answer to the chunk request a lie about ima_total causes
      const { v: _v, ...fields } = decodeResponse(r);
      return Buffer.from(encodeResponse({ ...fields, ...change }));
    };
    for (const [change, pattern] of [
      [{ ima_offset: 3 }, /field "ima_offset": 3 is neither 0 \(the whole list\) nor the offered 6/],
      // More entries claimed than sent: the server asks for the rest, and the agent has none.
      [{ ima_total: 99 }, /IMA chunk 1 \(from entry 8\): no complete entry, though ima_total said 99/],
      // Fewer claimed than sent.
      [{ ima_total: 7 }, /field "ima_total": 7 entries, but the list sent from entry 6 holds 2 complete entries/],
    ] as const) {
      const err = (await relayAttestation(node.agent, server, { response: rewrite(change) }).catch((e) => e)) as grpc.ServiceError & { side?: string };
      expect({ side: err.side, code: err.code }).toEqual({ side: 'server', code: grpc.status.INVALID_ARGUMENT });
      expect(err.details).toMatch(pattern);
    }
    // Nothing was learnt from the bad responses: the honest agent goes on from the same offset.
    expect(await attest(node, server)).toMatchObject({ offered: 6, sentOffset: 6, sentTotal: 8, selectors: expect.arrayContaining(['ima:entries:8']) });
  });

  it('an unusable ima_state_dir (a file) keeps the state in memory: still incremental, nothing written', async () => {
    const node = await Node.start('nodir');
    const notADir = join(work, 'not-a-dir');
    writeFileSync(notADir, 'x');
    const server = await plugin('tpm-server', serverSettings({ ima_state_dir: notADir }));
    await node.measureAllowed(3);
    expect(await attest(node, server)).toMatchObject({ offered: undefined });
    await node.measureAllowed(1);
    expect(await attest(node, server)).toMatchObject({ offered: 4, sentOffset: 4, selectors: expect.arrayContaining(['ima:entries:5']) });
    expect(readFileSync(notADir, 'utf8')).toBe('x');
  });
});
