/**
 * IMA verification benchmark. Prints one JSON object on stdout:
 *  - full: a 100,000-entry binary ima-ng list (sha256 file digests): parse, template-hash check and PCR 10 replay
 *    against the quoted value (sha1 + sha256 banks), entries/s;
 *  - incremental: re-verifying only the 1,000 entries after a stored offset and PCR 10 value;
 *  - reattestation: the node attestor's IMA path (src/nodeattestor/ima-gate.ts checkNodeIma with the 20 MiB policy and
 *    per-node state): a first attestation of the whole list, then one whose agent sends only the 1,000 new entries
 *    (the agent's cost of finding where they start, the bytes sent, the server's cost);
 *  - policy: reading a Keylime runtime policy of about 20 MiB (Keylime issue #1167 reports trouble at that size) and
 *    evaluating the 100,000 entries against it.
 * Run: npx tsx bench/ima.ts
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { evaluateRuntimePolicy, parseRuntimePolicy } from '../src/policy/runtime-policy.js';
import { encodeTemplateData, locateImaEntry, parseImaBinaryLog, replayIma, verifyImaAgainstPcr, type ImaEntry } from '../src/tpm/ima/index.js';
import { checkNodeIma, loadImaGate, offerImaOffset } from '../src/nodeattestor/ima-gate.js';
import { imaIncrement } from '../src/nodeattestor/agent.js';
import { PcrSelection } from '../src/tpm/pcrs.js';
import type { QuotedPcrs } from '../src/tpm/quote.js';
import type { Logger } from '../src/plugin/types.js';

const ENTRIES = 100_000;
const INCREMENT = 1_000;
const progress = (m: string) => process.stderr.write(`[ima] ${m}\n`);

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

progress(`building a ${ENTRIES}-entry list`);
const digests: Buffer[] = [];
const parts: Buffer[] = [];
for (let i = 0; i < ENTRIES; i++) {
  const digest = createHash('sha256').update(`file ${i}`).digest();
  digests.push(digest);
  const data = Buffer.from(encodeTemplateData('ima-ng', { digestAlg: 'sha256', digest, path: `/usr/lib/pkg${i % 500}/file-${i}.so` }));
  parts.push(u32(10), createHash('sha1').update(data).digest(), u32(6), Buffer.from('ima-ng'), u32(data.length), data);
}
const list = Buffer.concat(parts);

async function timeAsync<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

function time<T>(fn: () => T): { ms: number; value: T } {
  const t0 = performance.now();
  const value = fn();
  return { ms: performance.now() - t0, value };
}

// Quoted values are computed once, outside the timed part, as the TPM would hold them.
const reference = parseImaBinaryLog(list).entries;
const quoted = replayIma(reference, ['sha1', 'sha256']);
const beforeIncrement = replayIma(reference.slice(0, ENTRIES - INCREMENT), ['sha1', 'sha256']);

const runs = 3;
const full: number[] = [];
for (let r = 0; r < runs; r++) {
  full.push(time(() => verifyImaAgainstPcr(parseImaBinaryLog(list).entries, quoted)).ms);
}
const parseOnly = time(() => parseImaBinaryLog(list)).ms;
const tailOffset = reference[ENTRIES - INCREMENT]!.offset;
const incremental = time(() => verifyImaAgainstPcr(parseImaBinaryLog(list.subarray(tailOffset)).entries, quoted, { initial: beforeIncrement })).ms;

progress('building a ~20 MiB runtime policy');
const policyDigests: Record<string, string[]> = {};
let i = 0;
for (let size = 0; size < 20 * 1024 * 1024 - 200; i++) {
  const path = i < ENTRIES ? reference[i]!.path : `/opt/extra/${i}`;
  const hex = (i < ENTRIES ? digests[i]! : createHash('sha256').update(`x${i}`).digest()).toString('hex');
  policyDigests[path] = [hex];
  size += path.length + hex.length + 10; // "path":["hex"],
}
const policyBytes = Buffer.from(JSON.stringify({ meta: { version: 1 }, release: 0, digests: policyDigests, excludes: ['^/tmp/', '^/var/log/'], keyrings: {}, ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null }, 'ima-buf': {}, 'verification-keys': '' }));
const policyRead = time(() => parseRuntimePolicy(policyBytes, { name: 'big' }));
const evaluation = time(() => evaluateRuntimePolicy(reference as ImaEntry[], { policy: policyRead.value }));
if (evaluation.value.violations.length) throw new Error(`bench policy has violations: ${evaluation.value.violations[0]!.message}`);

progress('re-attestation through the node attestor');
const silent: Logger = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, named: () => silent, setLevel() {} } as Logger;
const gate = (await loadImaGate(
  { ima_policy_path: 'policy.json', ima_policy_name: 'big', ima_state_max_nodes: 16 },
  PcrSelection.parse('sha1:10+sha256:10'),
  async () => policyBytes,
  silent,
))!;
/** What checkNodeIma reads of a verified quote (verifyQuote itself is benchmarked in bench/tpm-attestation.ts). */
const quote = (values: ReadonlyMap<string, Uint8Array>) =>
  ({ get: (bank: string, index: number) => (index === 10 ? values.get(bank) : undefined), clockInfo: { clock: 0n, resetCount: 3, restartCount: 0, safe: true } }) as unknown as QuotedPcrs;
const agentId = 'spiffe://bench/spire/agent/tpm/0';
const ctx = () => ({ node: 'bench', agentId, now: new Date(), audit: {}, resend: async (): Promise<Uint8Array> => { throw new Error('the bench increment was not usable') } });
const before = list.subarray(0, tailOffset);
const first = imaIncrement(before, undefined);
const firstAttestation = await timeAsync(() => checkNodeIma(gate, { base: undefined }, { log: first.ima_log, offset: 0, total: first.ima_total }, quote(beforeIncrement), ctx()));
const offer = await offerImaOffset(gate, agentId);
const locate = time(() => imaIncrement(list, offer.base?.offset));
const reattestation = await timeAsync(() =>
  checkNodeIma(gate, offer, { log: locate.value.ima_log, offset: locate.value.ima_offset ?? 0, total: locate.value.ima_total }, quote(quoted), ctx()),
);
if (!reattestation.value.includes(`ima:entries:${ENTRIES}`) || locate.value.ima_offset !== ENTRIES - INCREMENT) throw new Error(`re-attestation was not incremental: ${reattestation.value.join(' ')}`);
const locateOnly = time(() => locateImaEntry(list, ENTRIES - INCREMENT)).ms;

const best = Math.min(...full);
process.stdout.write(
  `${JSON.stringify({
    entries: ENTRIES,
    list_bytes: list.length,
    full: { best_ms: Math.round(best), runs: full.map(Math.round), entries_per_s: Math.round(ENTRIES / (best / 1000)), parse_only_ms: Math.round(parseOnly) },
    incremental: { entries: INCREMENT, ms: Number(incremental.toFixed(1)), entries_per_s: Math.round(INCREMENT / (incremental / 1000)) },
    reattestation: {
      policy_bytes: policyBytes.length,
      first: { entries: ENTRIES - INCREMENT, bytes_sent: first.ima_log.length, server_ms: Math.round(firstAttestation.ms) },
      incremental: {
        new_entries: INCREMENT,
        bytes_sent: locate.value.ima_log.length,
        agent_locate_ms: Number(locateOnly.toFixed(1)),
        server_ms: Number(reattestation.ms.toFixed(1)),
        selector: `ima:entries:${ENTRIES}`,
      },
    },
    policy: { bytes: policyBytes.length, paths: i, read_ms: Math.round(policyRead.ms), evaluate_100k_ms: Math.round(evaluation.ms) },
  })}\n`,
);
