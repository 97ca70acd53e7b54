/**
 * Captures full attestation records through src/tpm/tools.ts against a fresh swtpm, with a simulated measured
 * boot: the sha256 digests of a real TCG event log are extended into the PCRs before quoting.
 *
 *   npx tsx scripts/capture-attestation-fixture.ts [--out test/fixtures/attestations] [--log <corpus log>]
 *
 * Writes swtpm-rsa-sha256.json (RSA-2048 EK, RSA AK) and swtpm-ecc384-sha256.json (P-384 high-range EK, ECC P-256
 * AK with nameAlg SHA-384), each with a `.source.json` sidecar. Run once; server tests replay the files offline.
 * Each fixture comes from its own swtpm, so each has its own local CA, EKs and AK.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { Tpm2Tools, type AkAlg, type EkKind } from '../src/tpm/tools.js';
import { extendPcrs, startSwtpm, type PcrExtend } from '../test/helpers/swtpm.js';

const execFileP = promisify(execFile);

const DEFAULT_LOG = '/work/shared/corpus/eventlog/tt-event-sd-boot-fedora37.bin';
const EV_NO_ACTION = 0x00000003;
const TPM_ALG_SHA256 = 0x000b;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

// ---------------------------------------------------------------------------------------------------------------
// Minimal crypto-agile event log reader (TCG PC Client PFP spec, TCG_PCR_EVENT + TCG_PCR_EVENT2, little-endian).
// Only what this script needs: the sha256 digest of every measured event. The project's parser is src/tpm/eventlog.ts.

interface LogEvent {
  readonly pcr: number;
  readonly type: number;
  readonly sha256: Buffer;
  readonly data: Buffer;
}

function parseCryptoAgileLog(log: Buffer): { events: LogEvent[]; startupLocality: number | undefined } {
  let pos = 0;
  const need = (n: number): void => {
    if (pos + n > log.length) throw new Error(`event log truncated at offset ${pos}`);
  };
  const u16 = (): number => (need(2), (pos += 2), log.readUInt16LE(pos - 2));
  const u32 = (): number => (need(4), (pos += 4), log.readUInt32LE(pos - 4));
  const take = (n: number): Buffer => (need(n), (pos += n), log.subarray(pos - n, pos));

  // First event: TCG_PCR_EVENT (SHA-1 format) carrying the Spec ID Event03 with the digest sizes.
  u32();
  const firstType = u32();
  take(20);
  const specEvent = take(u32());
  if (firstType !== EV_NO_ACTION || !specEvent.subarray(0, 16).equals(Buffer.from('Spec ID Event03\0', 'latin1'))) {
    throw new Error('not a crypto-agile log (no Spec ID Event03)');
  }
  const sizes = new Map<number, number>();
  const n = specEvent.readUInt32LE(24);
  for (let i = 0; i < n; i++) sizes.set(specEvent.readUInt16LE(28 + 4 * i), specEvent.readUInt16LE(30 + 4 * i));
  if (sizes.get(TPM_ALG_SHA256) !== 32) throw new Error('log has no sha256 bank');

  const events: LogEvent[] = [];
  let startupLocality: number | undefined;
  while (pos < log.length) {
    const pcr = u32();
    const type = u32();
    const count = u32();
    let sha256: Buffer | undefined;
    for (let i = 0; i < count; i++) {
      const alg = u16();
      const size = sizes.get(alg);
      if (size === undefined) throw new Error(`digest alg 0x${alg.toString(16)} not in Spec ID event`);
      const d = take(size);
      if (alg === TPM_ALG_SHA256) sha256 = d;
    }
    const data = take(u32());
    if (type === EV_NO_ACTION) {
      // TCG PC Client PFP §10.4.5.3: StartupLocality sets PCR0's initial value; swtpm cannot reproduce locality 3/4.
      if (data.subarray(0, 16).equals(Buffer.from('StartupLocality\0', 'latin1'))) startupLocality = u8At(data, 16);
      continue;
    }
    if (pcr === 0xffffffff) continue;
    if (sha256 === undefined) throw new Error(`event at pcr ${pcr} has no sha256 digest`);
    events.push({ pcr, type, sha256, data });
  }
  return { events, startupLocality };
}

function u8At(b: Buffer, i: number): number {
  if (i >= b.length) throw new Error('short StartupLocality event');
  return b.readUInt8(i);
}

function replaySha256(events: readonly LogEvent[]): Map<number, string> {
  const pcrs = new Map<number, Buffer>();
  for (const e of events) {
    const cur = pcrs.get(e.pcr) ?? Buffer.alloc(32);
    pcrs.set(e.pcr, createHash('sha256').update(cur).update(e.sha256).digest());
  }
  return new Map([...pcrs].sort((a, b) => a[0] - b[0]).map(([k, v]) => [k, v.toString('hex')]));
}

// ---------------------------------------------------------------------------------------------------------------

interface Variant {
  readonly file: string;
  readonly ekKind: EkKind;
  readonly akAlg: AkAlg;
  readonly description: string;
}

const VARIANTS: readonly Variant[] = [
  {
    file: 'swtpm-rsa-sha256',
    ekKind: 'rsa',
    akAlg: 'rsa',
    description: 'swtpm 0.7.1: RSA-2048 EK (0x81010001, cert NV 0x01c00002), RSA-2048 RSASSA-SHA256 AK (0x81010002), sha256 quote',
  },
  {
    file: 'swtpm-ecc384-sha256',
    ekKind: 'ecc-p384',
    akAlg: 'ecc',
    description:
      'swtpm 0.7.1: ECC P-384 high-range EK (0x81010016, cert NV 0x01c00016, PolicyB_SHA384), ECC P-256 ECDSA-SHA256 AK with nameAlg SHA-384 (0x81010003), sha256 quote',
  },
];

async function toolVersions(): Promise<Record<string, string>> {
  const [tools, swtpm] = await Promise.all([
    execFileP('tpm2_quote', ['--version'], { encoding: 'utf8' }),
    execFileP('swtpm', ['--version'], { encoding: 'utf8' }),
  ]);
  return { tpm2_tools: tools.stdout.trim(), swtpm: swtpm.stdout.trim().split('\n')[0]! };
}

async function checkquote(dir: string, akPublic: Uint8Array, attest: Uint8Array, sig: Uint8Array, nonce: Uint8Array): Promise<void> {
  // Independent cross-check with tpm2-tools (signature + nonce; checkquote cannot read the `values` PCR file).
  await writeFile(join(dir, 'ak.pub'), akPublic);
  await writeFile(join(dir, 'attest.bin'), attest);
  await writeFile(join(dir, 'sig.bin'), sig);
  await execFileP('tpm2_checkquote', [
    '-u', join(dir, 'ak.pub'),
    '-m', join(dir, 'attest.bin'),
    '-s', join(dir, 'sig.bin'),
    '-g', 'sha256',
    '-q', Buffer.from(nonce).toString('hex'),
  ]);
}

async function main(): Promise<void> {
  const outDir = resolve(arg('--out', 'test/fixtures/attestations'));
  const logPath = arg('--log', DEFAULT_LOG);
  const logBytes = await readFile(logPath);
  const logSha256 = createHash('sha256').update(logBytes).digest('hex');
  const { events, startupLocality } = parseCryptoAgileLog(logBytes);
  if (startupLocality !== undefined) {
    throw new Error(`log has a StartupLocality event (locality ${startupLocality}); swtpm's PCR0 cannot match it: pick another log`);
  }
  const replayed = replaySha256(events);
  const pcrIndices = [...replayed.keys()];
  const selection = `sha256:${pcrIndices.join(',')}`;

  // Provenance of the log, from the corpus sidecar when there is one.
  const expectedPath = logPath.replace(/\.bin$/, '.expected.json');
  const corpusItem = JSON.parse(await readFile(expectedPath, 'utf8').catch(() => 'null')) as {
    id: string;
    description: string;
    files: Array<{ file: string; sha256: string; from: Record<string, string> }>;
    expected?: { pcrs?: { sha256?: Record<string, string> } };
  } | null;
  const fileEntry = corpusItem?.files.find((f) => f.file === basename(logPath));
  if (fileEntry !== undefined && fileEntry.sha256 !== logSha256) throw new Error('event log sha256 differs from the corpus manifest');
  const sourcePcrs = corpusItem?.expected?.pcrs?.sha256;
  if (sourcePcrs !== undefined) {
    for (const [i, v] of replayed) {
      if (sourcePcrs[String(i)] !== undefined && sourcePcrs[String(i)] !== v) {
        throw new Error(`naive replay of PCR ${i} differs from the source's expected value`);
      }
    }
  }
  const origin = {
    corpus: corpusItem === null ? null : `corpus:eventlog/${corpusItem.id}`,
    file: basename(logPath),
    description: corpusItem?.description ?? null,
    ...(fileEntry?.from ?? {}),
  };

  const versions = await toolVersions();
  await mkdir(outDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'cap-'));
  try {
    for (const v of VARIANTS) {
      const sw = await startSwtpm({ pcrBanks: ['sha1', 'sha256'] });
      try {
        const extends_: PcrExtend[] = events.map((e) => ({ pcr: e.pcr, bank: 'sha256', digestHex: e.sha256.toString('hex') }));
        await extendPcrs(sw.tcti, extends_);

        const tpm = new Tpm2Tools({ tcti: sw.tcti });
        const ekCert = await tpm.readEkCertificate(v.ekKind);
        if (ekCert === undefined) throw new Error(`no ${v.ekKind} EK certificate in NV`);
        const ek = await tpm.ekPublic(v.ekKind);
        const ak = await tpm.ensureAk({ ekHandle: ek.handle, alg: v.akAlg });
        const props = await tpm.properties();
        const nonce = randomBytes(32);
        const q = await tpm.quote({ akHandle: ak.handle, selection, nonce, hashAlg: 'sha256' });

        // Self-checks before anything is written.
        const quoted = new Map(pcrIndices.map((i, k) => [i, Buffer.from(q.pcrValues.subarray(32 * k, 32 * (k + 1))).toString('hex')]));
        for (const [i, want] of replayed) {
          if (quoted.get(i) !== want) throw new Error(`PCR ${i} after extend differs from the log replay`);
        }
        if (!Buffer.from(q.attest).includes(nonce)) throw new Error('attest does not contain the nonce');
        await checkquote(work, ak.publicArea, q.attest, q.signature, nonce);

        const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
        const record = {
          format: 'spire-edge-attestors/attestation-record/v1',
          description: v.description,
          capturedAt: new Date().toISOString(),
          capturedWith: { script: 'scripts/capture-attestation-fixture.ts', driver: 'src/tpm/tools.ts (Tpm2Tools)', ...versions },
          tpm: props,
          ca: {
            note: 'swtpm_localca CA created for this capture; the root is the trust anchor, the intermediate issued the EK cert',
            rootPem: sw.rootCaPem,
            intermediatePem: sw.intermediateCaPem,
          },
          ek: {
            kind: ek.kind,
            handle: `0x${ek.handle.toString(16)}`,
            certDerB64: b64(ekCert),
            publicB64: b64(ek.publicArea),
            publicFormat: 'TPM2B_PUBLIC (tpm2_readpublic -f tss)',
          },
          ak: {
            alg: ak.alg,
            handle: `0x${ak.handle.toString(16)}`,
            publicB64: b64(ak.publicArea),
            publicFormat: 'TPM2B_PUBLIC (tpm2_readpublic -f tss)',
            nameHex: Buffer.from(ak.name).toString('hex'),
          },
          quote: {
            selection: q.selection,
            hashAlg: 'sha256',
            nonceHex: nonce.toString('hex'),
            nonceB64: b64(nonce),
            attestB64: b64(q.attest),
            attestFormat: 'TPMS_ATTEST as signed (tpm2_quote -m)',
            signatureB64: b64(q.signature),
            signatureFormat: 'TPMT_SIGNATURE (tpm2_quote -s -f tss)',
            pcrValuesB64: b64(q.pcrValues),
            pcrValuesFormat: 'selected PCR values concatenated in selection order (tpm2_quote -o --pcrs_format values)',
          },
          eventLog: {
            b64: b64(logBytes),
            sha256: logSha256,
            origin,
            note: 'the sha256 digest of every TCG_PCR_EVENT2 entry (EV_NO_ACTION and PCR 0xFFFFFFFF skipped) was extended into the swtpm with tpm2_pcrextend before the quote; the log has no StartupLocality event, so PCR0 starts at zero as on swtpm',
          },
          expectedPcrs: { sha256: Object.fromEntries([...replayed].map(([i, h]) => [String(i), h])) },
        };
        const json = `${JSON.stringify(record, null, 2)}\n`;
        await writeFile(join(outDir, `${v.file}.json`), json);
        const sidecar = {
          generated_by: 'scripts/capture-attestation-fixture.ts',
          how: `npx tsx scripts/capture-attestation-fixture.ts --log ${logPath}`,
          captured_at: record.capturedAt,
          sha256: createHash('sha256').update(json).digest('hex'),
          licence: 'Apache-2.0 (generated by this project); the embedded event log keeps its source licence, see event_log',
          tools: versions,
          event_log: { ...origin, sha256: logSha256 },
          source_asserts: {
            note: 'what the capture script checked before writing',
            ek_cert_read_from_nv: true,
            pcrs_equal_naive_sha256_replay_of_the_log: true,
            replay_equals_source_expected_pcrs: sourcePcrs !== undefined,
            attest_contains_nonce: true,
            tpm2_checkquote_signature_and_nonce_ok: true,
          },
        };
        await writeFile(join(outDir, `${v.file}.source.json`), `${JSON.stringify(sidecar, null, 2)}\n`);
        console.log(`wrote ${join(outDir, `${v.file}.json`)} (${selection}, ${events.length} events)`);
      } finally {
        await sw.stop();
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
