/**
 * IMA verification benchmark. Prints one JSON object on stdout:
 *  - full: a 100,000-entry binary ima-ng list (sha256 file digests): parse, template-hash check and PCR 10 replay
 *    against the quoted value (sha1 + sha256 banks), entries/s;
 *  - incremental: re-verifying only the 1,000 entries after a stored offset and PCR 10 value;
 *  - policy: reading a Keylime runtime policy of about 20 MiB (Keylime issue #1167 reports trouble at that size) and
 *    evaluating the 100,000 entries against it.
 * Run: npx tsx bench/ima.ts
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { evaluateRuntimePolicy, parseRuntimePolicy } from '../src/policy/runtime-policy.js';
import { encodeTemplateData, parseImaBinaryLog, replayIma, verifyImaAgainstPcr, type ImaEntry } from '../src/tpm/ima/index.js';

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

const best = Math.min(...full);
process.stdout.write(
  `${JSON.stringify({
    entries: ENTRIES,
    list_bytes: list.length,
    full: { best_ms: Math.round(best), runs: full.map(Math.round), entries_per_s: Math.round(ENTRIES / (best / 1000)), parse_only_ms: Math.round(parseOnly) },
    incremental: { entries: INCREMENT, ms: Number(incremental.toFixed(1)), entries_per_s: Math.round(INCREMENT / (incremental / 1000)) },
    policy: { bytes: policyBytes.length, paths: i, read_ms: Math.round(policyRead.ms), evaluate_100k_ms: Math.round(evaluation.ms) },
  })}\n`,
);
