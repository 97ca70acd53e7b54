/**
 * One fuzz target per parser of untrusted or operator-supplied bytes. Each `run` feeds the bytes to the parser
 * the way the plugin does (and, where the parse succeeds, on through what the plugin does next with the result),
 * so the property checked by the engine is the plugin's: a return, or one of our typed errors (src/errors.ts).
 * Seeds are the real fixtures under test/fixtures plus structures built field by field with the test helpers.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { X509Certificate } from '@peculiar/x509';
import { decodeChallenge, decodePayload, decodeResponse, encodeChallenge, encodePayload, encodeResponse } from '../../src/nodeattestor/wire.js';
import { decodeLegacyPayload, decodeLegacyResponse, isLegacyPayload } from '../../src/nodeattestor/legacy-wire.js';
import { parseStore } from '../../src/nodeattestor/enrolment.js';
import { serverConfigSchema } from '../../src/nodeattestor/server.js';
import { agentConfigSchema } from '../../src/nodeattestor/agent.js';
import { parseConfig as parseSchemaConfig } from '../../src/plugin/config-schema.js';
import { decodePluginData } from '../../src/plugin/hcl.js';
import { parsePolicyFile } from '../../src/policy/policy.js';
import { evaluateRuntimePolicy, parseRuntimePolicy, type RuntimePolicy } from '../../src/policy/runtime-policy.js';
import { TrustDomain } from '../../src/spiffe/trust-domain.js';
import { checkAkAttributes, encodeCredentialFile, parseCredentialFile } from '../../src/tpm/activation.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { parseAttest } from '../../src/tpm/attest.js';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { BytesReader, BytesWriter } from '../../src/tpm/bytes.js';
import { TPM_GENERATED_VALUE, TPM_ST } from '../../src/tpm/constants.js';
import { checkAkCreation } from '../../src/tpm/creation.js';
import { checkEkCertMatchesPublic, EkTrustStore, gceInstanceInfo, verifyEkCertificate, OID_GCE_INSTANCE_INFO, parseCertificates, parseEkCertificate, tpmDeviceAttributes } from '../../src/tpm/ek.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { parseImaAsciiLog, parseImaBinaryLog, parseImaLog } from '../../src/tpm/ima/log.js';
import { ImaKeyring, parseImaSignature, verifyImaSignature } from '../../src/tpm/ima/signature.js';
import { decodeTemplateData, encodeTemplateData } from '../../src/tpm/ima/templates.js';
import { parsePcrValues, PcrSelection } from '../../src/tpm/pcrs.js';
import { encodeTpm2bPublic, parseTpm2bPublic, publicName, publicToSpkiDer } from '../../src/tpm/public.js';
import { verifyQuote } from '../../src/tpm/quote.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { deriveSecureBootFacts, parseSignatureDatabase, parseUefiVariableData } from '../../src/tpm/secureboot.js';
import { parseSignature, verifySignature } from '../../src/tpm/signature.js';
import { CgroupMatchers, locateContainer, parseCgroupFile, parseCgroupPath, parseKubeletCgroupPath, parseMountinfo } from '../../src/workload/cgroup.js';
import { parseConfig as parseWorkloadConfig } from '../../src/workload/config.js';
import { containerIdOfStatus, decodePodList } from '../../src/workload/k8s-types.js';
import { parseLoopbackListeners } from '../../src/workload/listener.js';
import { decodeNamespaceList } from '../../src/workload/namespace-labels.js';
import { decodeDockerInspect } from '../../src/workload/runtime.js';
import { decodeWatchLine } from '../../src/workload/pod-source.js';
import { parseStatStartTime, parseStatusIds } from '../../src/workload/procfs.js';
import { parseRevokerConfig } from '../../src/revocation/config.js';
import { eventSchema } from '../../src/revocation/event.js';
import { parseDuration } from '../../src/plugin/config-schema.js';
import { parseImaHashName } from '../../src/tpm/ima/hash.js';
import { parseTcti } from '../../src/tpm/tcti.js';
import { parsePropertiesFixed } from '../../src/tpm/tools.js';
import { isAttestorError, MalformedInput } from '../../src/errors.js';
import { buildAgileLog, buildLegacyLog, secureBootVariable, uefiVariableData, EFI_GLOBAL_VARIABLE_BYTES } from '../tpm/eventlog-builder.js';
import { synthEntries, toAsciiList, toBinaryList } from '../tpm/ima/synth.js';
import { buildAttest, signTpm, softEk, softKey } from '../tpm/soft-tpm.js';

export interface FuzzTarget {
  readonly name: string;
  /** Inputs longer than this are cut: a bound on the work one input can cause, not on the parser. */
  readonly maxLen: number;
  readonly seeds: () => Uint8Array[];
  /** Tokens the mutator inserts (keywords, structural characters). */
  readonly dictionary?: readonly string[];
  readonly run: (data: Uint8Array) => unknown;
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURES = join(ROOT, 'test/fixtures');
const enc = new TextEncoder();
const text = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');
const NOT_JSON = Symbol('not JSON');
/**
 * The input as JSON, or NOT_JSON: for decoders whose caller parses first and turns a syntax error into MalformedInput
 * itself (pod-source.ts, the revoker and its receiver), only inputs that parse are the decoder's to survive.
 */
const jsonOrSkip = (b: Uint8Array): unknown => {
  try {
    return JSON.parse(text(b));
  } catch {
    return NOT_JSON;
  }
};
const bytes = (s: string): Uint8Array => enc.encode(s);

/** Fixture files under `dir` whose names pass `keep`, read whole (provenance sidecars skipped). */
function fixtures(dir: string, keep: (name: string) => boolean = () => true): Uint8Array[] {
  const base = join(FIXTURES, dir);
  const out: Uint8Array[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (!name.endsWith('.source.json') && keep(name)) out.push(new Uint8Array(readFileSync(p)));
    }
  };
  walk(base);
  return out;
}

interface AttestationRecord {
  ek: { certDerB64: string; publicB64: string };
  ak: { publicB64: string };
  quote: { attestB64: string; signatureB64: string; pcrValuesB64: string; nonceB64: string; selection: string };
  eventLog: { b64: string };
  ca: { rootPem: string; intermediatePem: string };
}
const records = (): AttestationRecord[] =>
  ['swtpm-rsa-sha256.json', 'swtpm-ecc384-sha256.json'].map((f) => JSON.parse(readFileSync(join(FIXTURES, 'attestations', f), 'utf8')) as AttestationRecord);
const b64d = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

/**
 * Several byte strings in one input: each but the last is a u16 big-endian length then its bytes (clamped to
 * what is left), the last takes the rest. Length mutations move the boundaries instead of failing the split.
 */
export function splitParts(data: Uint8Array, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (let i = 0; i < n - 1; i++) {
    const len = pos + 2 <= data.length ? (data[pos]! << 8) | data[pos + 1]! : 0;
    pos = Math.min(pos + 2, data.length);
    const end = Math.min(pos + len, data.length);
    out.push(data.subarray(pos, end));
    pos = end;
  }
  out.push(data.subarray(pos));
  return out;
}
export function joinParts(parts: readonly Uint8Array[]): Uint8Array {
  const w = new BytesWriter();
  parts.forEach((p, i) => (i < parts.length - 1 ? w.u16be(p.length).bytes(p) : w.bytes(p)));
  return w.finish();
}

const JSON_DICT = ['{', '}', '[', ']', '"', ':', ',', 'null', 'true', 'false', '0', '-1', '1e309', '"\\u0000"', '"\\ud800"', '{}', '[]', '""'];
const SEL = PcrSelection.parse('sha256:0,1,7+sha1:3');
const ZERO_VALUES = [new Uint8Array(32), new Uint8Array(32), new Uint8Array(32), new Uint8Array(20)];
const NONCE = new Uint8Array(16).fill(7);

/** A soft AK the harness signs fuzzed TPMS_ATTESTs with, so the quote checks after the signature get reached. */
const akEcc = () => softKey('p256');

function creationAttest(objectName: Uint8Array, creationHash: Uint8Array): Uint8Array {
  const info = new BytesWriter().tpm2b(objectName).tpm2b(creationHash).finish();
  return new BytesWriter()
    .u32be(TPM_GENERATED_VALUE)
    .u16be(TPM_ST.ATTEST_CREATION)
    .tpm2b(new Uint8Array(34))
    .tpm2b(new Uint8Array(0))
    .u64be(1n)
    .u32be(1)
    .u32be(0)
    .u8(1)
    .u64be(0n)
    .bytes(info)
    .finish();
}

/** Every parse result of a UEFI variable event is also read as a signature database, as secureboot.ts does. */
function uefiVariable(data: Uint8Array): unknown {
  const v = parseUefiVariableData(data);
  return parseSignatureDatabase(v.name, v.value, true);
}

const certLike = (extValue: Uint8Array): X509Certificate =>
  ({ extensions: [{ type: OID_GCE_INSTANCE_INFO, value: extValue.buffer.slice(extValue.byteOffset, extValue.byteOffset + extValue.byteLength) }] }) as unknown as X509Certificate;

function derTlv(tag: number, value: Uint8Array): Uint8Array {
  const len = value.length < 0x80 ? [value.length] : [0x82, value.length >> 8, value.length & 0xff];
  return Uint8Array.from([tag, ...len, ...value]);
}

const POD_SOURCE_DICT = [...JSON_DICT, '"items"', '"metadata"', '"uid"', '"name"', '"status"', '"containerStatuses"', '"containerID"', '"docker://"', '"ownerReferences"', '"labels"', '"ADDED"', '"BOOKMARK"', '"ERROR"', '"type"', '"object"', '"resourceVersion"'];

export const TARGETS: readonly FuzzTarget[] = [
  {
    name: 'tpm-public',
    maxLen: 2048,
    seeds: () => [encodeTpm2bPublic(softKey('rsa').pub), encodeTpm2bPublic(softKey('p256').pub), encodeTpm2bPublic(softEk('p384').pub), ...records().flatMap((r) => [b64d(r.ek.publicB64), b64d(r.ak.publicB64)])],
    run: (b) => {
      const pub = parseTpm2bPublic(b);
      publicName(pub);
      checkAkAttributes(pub);
      return publicToSpkiDer(pub);
    },
  },
  {
    name: 'tpm-attest',
    maxLen: 1024,
    seeds: () => [buildAttest({ selection: SEL, values: ZERO_VALUES, nonce: NONCE }), ...records().map((r) => b64d(r.quote.attestB64)), creationAttest(new Uint8Array(34), new Uint8Array(32))],
    run: (b) => parseAttest(b),
  },
  {
    name: 'tpm-signature',
    maxLen: 1024,
    seeds: () => [signTpm(akEcc(), bytes('m')), signTpm(softKey('rsa'), bytes('m')), signTpm(softKey('rsa'), bytes('m'), HashAlg.SHA256, 'rsapss'), ...records().map((r) => b64d(r.quote.signatureB64))],
    run: (b) => {
      const sig = parseSignature(b);
      verifySignature(akEcc().pub, sig, bytes('m'));
      return verifySignature(softKey('rsa').pub, sig, bytes('m'));
    },
  },
  {
    // parts: TPMS_ATTEST (signed by the harness with a soft AK), PCR values file.
    name: 'tpm-quote',
    maxLen: 2048,
    seeds: () => [joinParts([buildAttest({ selection: SEL, values: ZERO_VALUES, nonce: NONCE }), ZERO_VALUES.reduce((w, v) => w.bytes(v), new BytesWriter()).finish()])],
    run: (b) => {
      const [attest, values] = splitParts(b, 2) as [Uint8Array, Uint8Array];
      return verifyQuote({ akPublic: akEcc().pub, attestBytes: attest, signatureBytes: signTpm(akEcc(), attest), pcrValues: values, expectedSelection: SEL, nonce: NONCE });
    },
  },
  {
    // The real quote fixtures as sent, signature included (refused at the signature unless untouched).
    name: 'tpm-quote-recorded',
    maxLen: 8192,
    seeds: () => records().map((r) => joinParts([b64d(r.ak.publicB64), b64d(r.quote.attestB64), b64d(r.quote.signatureB64), b64d(r.quote.pcrValuesB64), b64d(r.quote.nonceB64), bytes(r.quote.selection)])),
    run: (b) => {
      const [ak, attest, sig, values, nonce, sel] = splitParts(b, 6) as Uint8Array[] as [Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array];
      const akPublic = parseTpm2bPublic(ak);
      return verifyQuote({ akPublic, attestBytes: attest, signatureBytes: sig, pcrValues: values, expectedSelection: PcrSelection.parse(text(sel)), nonce });
    },
  },
  {
    name: 'tpm-pcr-selection',
    maxLen: 512,
    seeds: () => [joinParts([SEL.encode(), ZERO_VALUES.reduce((w, v) => w.bytes(v), new BytesWriter()).finish()]), joinParts([bytes('sha256:0,1,2,3,4,5,6,7,8,9'), new Uint8Array(0)])],
    dictionary: ['sha1', 'sha256', 'sha384', 'sha512', 'sm3_256', ':', ',', '+', '-', '23', '24'],
    run: (b) => {
      const [encoded, values] = splitParts(b, 2) as [Uint8Array, Uint8Array];
      PcrSelection.parse(text(encoded));
      const r = new BytesReader(encoded, 'TPML_PCR_SELECTION');
      const sel = PcrSelection.decode(r);
      r.end();
      return parsePcrValues(values, sel);
    },
  },
  {
    name: 'tpm-credential-file',
    maxLen: 2048,
    seeds: () => [encodeCredentialFile({ idObject: new Uint8Array(50).fill(1), encryptedSecret: new Uint8Array(256).fill(2) })],
    run: (b) => parseCredentialFile(b),
  },
  {
    // parts: TPMT_PUBLIC, TPMS_CREATION_DATA, TPMS_ATTEST (creation), TPMT_SIGNATURE (the harness re-signs when empty).
    name: 'tpm-ak-creation',
    maxLen: 4096,
    seeds: () => {
      const ak = akEcc();
      const area = encodeTpm2bPublic(ak.pub).subarray(2);
      const creationData = new Uint8Array(40).fill(3);
      const attest = creationAttest(publicName(ak.pub), HashAlg.SHA256.digest(creationData));
      return [joinParts([area, creationData, attest, new Uint8Array(0)]), joinParts([area, creationData, attest, signTpm(ak, attest)])];
    },
    run: (b) => {
      const [publicArea, creationData, creationAttestBytes, sig] = splitParts(b, 4) as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
      const creationSignature = sig.length === 0 ? signTpm(akEcc(), creationAttestBytes) : sig;
      return checkAkCreation({ publicArea, creationData, creationAttest: creationAttestBytes, creationSignature });
    },
  },
  {
    name: 'tpm-ek-certificate',
    maxLen: 8192,
    seeds: () => [...fixtures('ekcerts/certs'), ...records().map((r) => b64d(r.ek.certDerB64))],
    dictionary: ['-----BEGIN CERTIFICATE-----\n', '\n-----END CERTIFICATE-----\n', '\x30\x82', '\x06\x03\x55\x1d', '\x06\x05\x67\x81\x05\x02'],
    run: (b) => {
      const cert = parseEkCertificate(b);
      tpmDeviceAttributes(cert);
      gceInstanceInfo(cert);
      try {
        checkEkCertMatchesPublic(cert, publicToSpkiDer(softEk('rsa').pub));
      } catch (err) {
        // A key mismatch is the expected answer for nearly every input; anything else must still be typed.
        if (!isAttestorError(err)) throw err;
      }
      return cert;
    },
  },
  {
    name: 'tpm-ek-ca-bundle',
    maxLen: 16384,
    seeds: () => [...fixtures('ekcerts/ca', (n) => n.endsWith('.pem') || n.endsWith('.crt') || n.endsWith('.der') || n.endsWith('.cer')).slice(0, 8), ...records().map((r) => bytes(r.ca.rootPem + r.ca.intermediatePem))],
    dictionary: ['-----BEGIN CERTIFICATE-----\n', '\n-----END CERTIFICATE-----\n', '-----BEGIN', '-----END', '\r\n', '='],
    run: (b) => parseCertificates(b).map((c) => tpmDeviceAttributes(c)),
  },
  {
    // a leaf EK certificate through chain verification against the fixture CAs (swtpm's and Google's).
    name: 'tpm-ek-verify',
    maxLen: 8192,
    seeds: () => [...records().map((r) => b64d(r.ek.certDerB64)), ...fixtures('ekcerts/certs')],
    dictionary: ['\x30\x82', '\x06\x03\x55\x1d\x13', '\x06\x03\x55\x1d\x25', '\x01\x01\xff', '\x02\x01\x00'],
    run: async (b) => verifyEkCertificate(parseEkCertificate(b), fixtureEkStore(), { now: EK_NOW }),
  },
  {
    // an operator's ek_ca_path entry (a PEM bundle or DER), then a genuine leaf verified against it.
    name: 'tpm-ek-trust-store',
    maxLen: 16384,
    seeds: () => records().map((r) => bytes(r.ca.rootPem + r.ca.intermediatePem)),
    dictionary: ['-----BEGIN CERTIFICATE-----\n', '\n-----END CERTIFICATE-----\n', '\x30\x82'],
    run: async (b) => {
      const store = EkTrustStore.fromEntries([{ source: 'fuzz.pem', bytes: b }]);
      return verifyEkCertificate(parseEkCertificate(b64d(records()[0]!.ek.certDerB64)), store, { now: EK_NOW });
    },
  },
  {
    // The GCE instance-identity extension value (what gceInstanceInfo reads out of a certificate).
    name: 'tpm-ek-gce-instance-info',
    maxLen: 1024,
    seeds: () => {
      const utf8 = (s: string) => derTlv(0x0c, bytes(s));
      const int = (n: number) => derTlv(0x02, Uint8Array.of(n));
      return [derTlv(0x30, Uint8Array.from([...utf8('us-central1-a'), ...int(5), ...utf8('proj'), ...int(9), ...utf8('vm-1')])), derTlv(0x30, utf8('\xff'))];
    },
    run: (b) => gceInstanceInfo(certLike(b)),
  },
  {
    // parse → replay against the PCRs the log itself produces (so replay succeeds) → every boot fact.
    name: 'tpm-eventlog',
    maxLen: 64 * 1024,
    seeds: () => [
      ...fixtures('eventlog', (n) => n.endsWith('.bin')),
      ...records().map((r) => b64d(r.eventLog.b64)),
      buildAgileLog([{ pcr: 7, type: 0x80000001, data: secureBootVariable(true) }]),
      buildLegacyLog([{ pcr: 0, type: 8, data: bytes('CRTM') }]),
    ],
    run: (b) => {
      const log = parseEventLog(b);
      const verified = replayEventLog(log, { values: computePcrs(log) });
      deriveSecureBootFacts(verified);
      return deriveBootFacts(verified);
    },
  },
  {
    name: 'tpm-uefi-variable',
    maxLen: 16384,
    seeds: () => [secureBootVariable(true), uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'PK', new Uint8Array(0)), uefiVariableData(EFI_GLOBAL_VARIABLE_BYTES, 'db', new Uint8Array(60))],
    dictionary: ['\xa1\x59\xc0\xa5\xe4\x94\xa7\x4a\x87\xb5\xab\x15\x5c\x2b\xf0\x72', '\x26\x16\xc4\xc1\x4c\x50\x92\x40\xac\xa9\x41\xf9\x36\x93\x43\x28'],
    run: uefiVariable,
  },
  {
    name: 'ima-binary-log',
    maxLen: 32 * 1024,
    seeds: () => [
      ...fixtures('ima', (n) => n.endsWith('.bin')),
      toBinaryList(synthEntries([{ template: 'ima-ng', path: '/bin/sh' }, { template: 'ima-sig', path: '/bin/ls' }, { template: 'ima', path: '/init' }, { template: 'ima-buf', path: 'kexec-cmdline' }, { template: 'ima-dep-cgn', path: '/usr/bin/x' }])),
    ],
    dictionary: ['ima-ng', 'ima-sig', 'ima-buf', 'ima-cgpath', 'ima-dep-cgn', 'ima', 'sha256:', 'sha1:', 'sm3_256:'],
    run: (b) => {
      const log = parseImaBinaryLog(b);
      return evaluateRuntimePolicy(log.entries, { policy: fixtureRuntimePolicy(), keyring: new ImaKeyring() });
    },
  },
  {
    name: 'ima-ascii-log',
    maxLen: 32 * 1024,
    seeds: () => [...fixtures('ima', (n) => n.endsWith('.ascii') || n.endsWith('.txt')).map((b) => b.subarray(0, 16 * 1024)), bytes(toAsciiList(synthEntries([{ template: 'ima-sig', path: '/a b' }])))],
    dictionary: ['ima-ng', 'ima-sig', 'ima-buf', 'ima', ' sha256:', ' sha1:', ' 10 ', '\n', '0000000000000000000000000000000000000000'],
    run: (b) => {
      parseImaLog(b);
      const log = parseImaAsciiLog(b);
      return evaluateRuntimePolicy(log.entries, { policy: fixtureRuntimePolicy(), keyring: new ImaKeyring() });
    },
  },
  {
    // first byte picks the template; the rest is its template data.
    name: 'ima-template-data',
    maxLen: 8192,
    seeds: () =>
      (['ima-ng', 'ima-sig', 'ima-buf', 'ima-cgpath', 'ima-dep-cgn'] as const).map((t, i) =>
        Uint8Array.from([i, ...encodeTemplateData(t, { digestAlg: 'sha256', digest: new Uint8Array(32), path: '/p', signature: Uint8Array.of(3, 2, 4), buffer: Uint8Array.of(1), dependencies: 'a:b', cgroup: '/' })]),
      ),
    run: (b) => {
      const templates = ['ima-ng', 'ima-sig', 'ima-buf', 'ima-cgpath', 'ima-dep-cgn'] as const;
      return decodeTemplateData(templates[(b[0] ?? 0) % templates.length]!, b.subarray(1), 'fuzz');
    },
  },
  {
    name: 'ima-signature',
    maxLen: 2048,
    seeds: () => [Uint8Array.from([3, 2, 4, 0x12, 0x34, 0x56, 0x78, 0, 4, 1, 2, 3, 4]), Uint8Array.from([3, 2, 0x11, 0, 0, 0, 0, 0, 0])],
    run: (b) => {
      parseImaSignature(b);
      return verifyImaSignature(b, new Uint8Array(32), 'sha256', new ImaKeyring());
    },
  },
  {
    name: 'wire-payload',
    maxLen: 16384,
    seeds: () => records().map((r) => encodePayload({ ek_pub: b64d(r.ek.publicB64), ek_cert: b64d(r.ek.certDerB64), ak_pub: b64d(r.ak.publicB64), event_log: b64d(r.eventLog.b64).subarray(0, 512), tpm: { manufacturer: 'IBM', vendor: 'SW', firmware_version: '1.2' } })),
    dictionary: [...JSON_DICT, '"v"', '"ek_pub"', '"ek_cert"', '"ak_pub"', '"event_log"', '"ima_log"', '"tpm"', '"ek_intermediates"', '"AAAA"', '"=="'],
    run: (b) => decodePayload(b),
  },
  {
    name: 'wire-challenge',
    maxLen: 8192,
    seeds: () => [encodeChallenge({ credential: new Uint8Array(300), nonce: NONCE, pcrs: 'sha256:0,1,7' })],
    dictionary: [...JSON_DICT, '"v"', '"credential"', '"nonce"', '"pcrs"'],
    run: (b) => decodeChallenge(b),
  },
  {
    name: 'wire-response',
    maxLen: 8192,
    seeds: () => records().map((r) => encodeResponse({ secret: new Uint8Array(32), attest: b64d(r.quote.attestB64), signature: b64d(r.quote.signatureB64), pcr_values: b64d(r.quote.pcrValuesB64) })),
    dictionary: [...JSON_DICT, '"v"', '"secret"', '"attest"', '"signature"', '"pcr_values"', '"ima_log"'],
    run: (b) => decodeResponse(b),
  },
  {
    // spire-tpm-plugin's payload and response, then the AK creation checks the legacy path runs on them.
    name: 'wire-legacy',
    maxLen: 16384,
    seeds: () => {
      const r = records()[0]!;
      const pem = `-----BEGIN CERTIFICATE-----\n${r.ek.certDerB64}\n-----END CERTIFICATE-----\n`;
      const ak = b64d(r.ak.publicB64);
      const payload = JSON.stringify({ EK: Buffer.from(pem).toString('base64'), AK: { Public: Buffer.from(ak).toString('base64'), UseTCSDActivationFormat: false, CreateData: 'AAAA', CreateAttestation: 'AAAA', CreateSignature: 'AAAA' } });
      return [bytes(payload), bytes('{"Secret":"AAAAAAAAAAAAAAAAAAAAAA=="}')];
    },
    dictionary: [...JSON_DICT, '{"EK":', '"AK"', '"Public"', '"UseTCSDActivationFormat"', '"CreateData"', '"CreateAttestation"', '"CreateSignature"', '"Secret"'],
    run: (b) => {
      if (!isLegacyPayload(b)) return decodeLegacyResponse(b);
      const p = decodeLegacyPayload(b);
      return checkAkCreation({ publicArea: p.ak.publicArea, creationData: p.ak.creationData, creationAttest: p.ak.creationAttest, creationSignature: p.ak.creationSignature });
    },
  },
  {
    name: 'policy-file',
    maxLen: 8192,
    seeds: () => [
      new Uint8Array(readFileSync(join(ROOT, 'examples/tpm-node-attestation/boot-policy.yaml'))),
      bytes('policies:\n  - name: p\n    secure_boot: true\n    pcrs:\n      sha256:\n        7: "00"\n    kernel_cmdline:\n      - pattern: "^console=.*$"\n'),
    ],
    dictionary: ['policies:', '\n  - name: ', 'secure_boot', 'pcrs', 'sha256', 'boot_applications', 'kernel_cmdline', 'pattern', '&a ', '*a', '<<: ', '[', ']', '{', '}', '(a+)+', '\\1', '{1000}', '\n    ', '- ', ': '],
    run: (b) => parsePolicyFile(text(b), 'fuzz.yaml'),
  },
  {
    name: 'runtime-policy',
    maxLen: 16384,
    seeds: () => fixtures('ima', (n) => /runtime-policy.*\.json$/.test(n) && !n.endsWith('.expected.json')),
    dictionary: [...JSON_DICT, '"meta"', '"version"', '"digests"', '"excludes"', '"keyrings"', '"ima"', '"ima-buf"', '"payload"', '"payloadType"', '"signatures"', '"release"', '"generator"'],
    run: (b) => parseRuntimePolicy(b),
  },
  {
    // two parts: /proc/<pid>/cgroup, then mountinfo (read only under the guarded fallback).
    name: 'workload-cgroup',
    maxLen: 8192,
    seeds: () => {
      const cg = fixtures('cgroup', (n) => n.endsWith('.txt') || n === 'cgroup');
      const mi = fixtures('cgroup', (n) => n === 'mountinfo');
      return cg.map((c, i) => joinParts([c, mi[i % Math.max(1, mi.length)] ?? new Uint8Array(0)]));
    },
    dictionary: ['kubepods', 'besteffort', 'burstable', '/pod', '.slice', 'cri-containerd-', 'docker-', 'crio-', 'libpod-', '.scope', '0::/', '12:memory:/', '\n', '/kubelet.slice/kubelet-kubepods.slice/', '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', ' - cgroup2 ', ' - cgroup '],
    run: (b) => {
      const [cgroup, mountinfo] = splitParts(b, 2) as [Uint8Array, Uint8Array];
      const cg = text(cgroup);
      for (const line of cg.split('\n').slice(0, 64)) {
        parseCgroupPath(line);
        parseKubeletCgroupPath(line);
      }
      parseCgroupFile(cg);
      parseMountinfo(text(mountinfo));
      return locateContainer({ cgroup: cg, mountinfo: () => text(mountinfo) }, { mountinfoFallback: true });
    },
  },
  {
    // SPIRE docker `container_id_cgroup_matchers` (one pattern a line before the blank line) and cgroup paths.
    name: 'workload-cgroup-matchers',
    maxLen: 4096,
    seeds: () => [bytes('/docker/<id>\n/my.slice/*/<id>/*\n\n/docker/0123456789abcdef\n/my.slice/a/abc/x\n')],
    dictionary: ['<id>', '*', '/', '\n', '\n\n', '.', '(', '['],
    run: (b) => {
      const [patterns = '', paths = ''] = text(b).split('\n\n');
      const m = CgroupMatchers.parse(patterns.split('\n').slice(0, 32));
      return m.locate(paths.split('\n').slice(0, 64));
    },
  },
  {
    // /proc/<pid>/stat and /proc/<pid>/status (split at the first NUL).
    name: 'workload-procfs',
    maxLen: 4096,
    seeds: () => [bytes(`${readFileSync('/proc/self/stat', 'utf8')}\0${readFileSync('/proc/self/status', 'utf8')}`)],
    dictionary: ['(', ')', ' ', 'Uid:\t', 'Gid:\t', '\n', '18446744073709551615', '99999999999999999999999'],
    run: (b) => {
      const [stat = '', status = ''] = text(b).split('\0');
      try {
        parseStatStartTime(stat);
      } catch (err) {
        if (!(err instanceof MalformedInput)) throw err;
      }
      return parseStatusIds(status);
    },
  },
  {
    name: 'workload-tcp-listeners',
    maxLen: 8192,
    seeds: () => [new Uint8Array(readFileSync('/proc/self/net/tcp')).subarray(0, 4096), bytes('  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:286E 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 12345 1 0000000000000000 100 0 0 10 0\n')],
    dictionary: ['0100007F', '00000000000000000000000001000000', ':', ' 0A ', '\n', 'FFFFFFFF'],
    run: (b) => {
      parseLoopbackListeners(text(b), true);
      return parseLoopbackListeners(text(b), false);
    },
  },
  {
    // a kubelet/edged/MetaServer/API server pod list body, as the HTTP pod sources read it.
    name: 'workload-pod-list',
    maxLen: 32 * 1024,
    seeds: () => fixtures('kubelet', (n) => n.endsWith('.json') && !n.startsWith('namespace')).map((b) => b.subarray(0, 32 * 1024)),
    dictionary: POD_SOURCE_DICT,
    run: (b) => {
      const json = jsonOrSkip(b);
      if (json === NOT_JSON) return undefined;
      const list = decodePodList(json);
      for (const pod of list.items) for (const s of pod.status.containerStatuses ?? []) containerIdOfStatus(s);
      return list;
    },
  },
  {
    // one line of a pod watch stream.
    name: 'workload-pod-watch',
    maxLen: 16384,
    seeds: () => {
      const list = JSON.parse(readFileSync(join(FIXTURES, 'kubelet/spire-pod_list.json'), 'utf8')) as { items: unknown[] };
      return [bytes(JSON.stringify({ type: 'ADDED', object: list.items[0] })), bytes('{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"5"}}}'), bytes('{"type":"ERROR","object":{}}')];
    },
    dictionary: POD_SOURCE_DICT,
    run: (b) => decodeWatchLine(text(b), 'fuzz'),
  },
  {
    name: 'workload-namespace-list',
    maxLen: 8192,
    seeds: () => fixtures('kubelet', (n) => n.startsWith('namespace')),
    dictionary: [...JSON_DICT, '"kind"', '"NamespaceList"', '"items"', '"metadata"', '"name"', '"labels"'],
    run: (b) => {
      const json = jsonOrSkip(b);
      if (json === NOT_JSON) return undefined;
      return decodeNamespaceList(json);
    },
  },
  {
    // the Docker/Podman `GET /containers/<id>/json` body.
    name: 'workload-docker-inspect',
    maxLen: 8192,
    seeds: () => [bytes('{"Name":"/web","Image":"sha256:abc","Config":{"Image":"nginx:1","Labels":{"a":"b"}}}')],
    dictionary: [...JSON_DICT, '"Name"', '"Image"', '"Config"', '"Labels"'],
    run: (b) => decodeDockerInspect(b, 'docker', 'fuzz'),
  },
  {
    // plugin_data (HCL1 or JSON) through each plugin's typed configuration schema.
    name: 'plugin-config',
    maxLen: 4096,
    seeds: () => [
      bytes('ek_ca_path = "/etc/ek"\npcr_selection = "sha256:0,1,7"\n'),
      bytes('ak_handle = 0x81010002\ntpm_device = "/dev/tpmrm0"\n'),
      bytes('pod_source = "kubelet"\nkubelet {\n  port = 10250\n}\n'),
      bytes('{"pod_source":"auto","node_name":"n1"}'),
      bytes('plugin_data = "x"'),
      ...['tpm-node-attestation/server.conf', 'tpm-node-attestation/agent.conf', 'workload-kubernetes/agent.conf'].map((f) => new Uint8Array(readFileSync(join(ROOT, 'examples', f)))),
    ],
    dictionary: [' = ', '"', '{', '}', '[', ']', '\n', '#', '//', '/*', '*/', '<<EOF\nx\nEOF\n', '0x81010002', '4294967296', 'true', '1.5e3', 'ek_ca_path', 'policy_file', 'pcr_selection', 'nonce_ttl', 'pod_source', 'log_level'],
    run: async (b) => {
      const raw = await decodePluginData(text(b));
      for (const [schema, name] of [[serverConfigSchema, 'tpm server'], [agentConfigSchema, 'tpm agent']] as const) {
        try {
          parseSchemaConfig(schema, raw, name);
        } catch (err) {
          if (!isAttestorError(err)) throw err;
        }
      }
      return parseWorkloadConfig(raw, {});
    },
  },
  {
    name: 'enrolment-store',
    maxLen: 8192,
    seeds: () => [bytes('{"version":1,"nodes":{}}'), bytes('{"version":1,"nodes":{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":{"state":"pending","first_seen":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}}}')],
    dictionary: [...JSON_DICT, '"version"', '"nodes"', '"state"', '"pending"', '"approved"'],
    run: (b) => parseStore(text(b), 'fuzz.json'),
  },
  {
    name: 'revoker-config',
    maxLen: 8192,
    seeds: () => [new Uint8Array(readFileSync(join(ROOT, 'examples/revocation/revoker.yaml')))],
    dictionary: ['\n', ': ', '- ', '&a ', '*a', '<<: ', '!!binary ', '"', "'", '{', '}', '[', ']', 'true', '0x10', '1e400', '~'],
    run: (b) => parseRevokerConfig(text(b), 'fuzz.yaml'),
  },
  {
    // a decision-event line, as the revoker's webhook and file tail read it (JSON.parse errors are caught there).
    name: 'revoker-event',
    maxLen: 8192,
    seeds: () => [bytes('{"v":1,"type":"spire-edge.attestation.decision","event_id":"e1","time":"2026-01-01T00:00:00Z","outcome":"refused","ek_hash":"' + 'a'.repeat(64) + '"}')],
    dictionary: [...JSON_DICT, '"v"', '"outcome"', '"refused"', '"accepted"', '"agent_id"', '"ek_hash"', '"event_id"'],
    run: (b) => {
      const json = jsonOrSkip(b);
      if (json === NOT_JSON) return undefined;
      return eventSchema.safeParse(json);
    },
  },
  {
    // `tpm2_getcap properties-fixed` output, as the agent reads it.
    name: 'tpm-getcap-properties',
    maxLen: 8192,
    seeds: () => [
      bytes(
        ['TPM2_PT_MANUFACTURER', 'TPM2_PT_VENDOR_STRING_1', 'TPM2_PT_VENDOR_STRING_2', 'TPM2_PT_VENDOR_STRING_3', 'TPM2_PT_VENDOR_STRING_4', 'TPM2_PT_FIRMWARE_VERSION_1', 'TPM2_PT_FIRMWARE_VERSION_2']
          .map((k, i) => `${k}:\n  raw: 0x${(0x49424d00 + i).toString(16).toUpperCase()}\n  value: "IBM"\n`)
          .join(''),
      ),
    ],
    dictionary: ['raw: ', '0x', 'value: ', '\n  ', 'TPM2_PT_MANUFACTURER', 'TPM2_PT_FIRMWARE_VERSION_1', '4294967296', '-1', '1.5', '&a', '*a'],
    run: (b) => parsePropertiesFixed(text(b)),
  },
  {
    // short configuration strings: the TCTI, durations, IMA hash names, PCR selections (first byte picks).
    name: 'config-strings',
    maxLen: 1024,
    seeds: () => [bytes('\x00device:/dev/tpmrm0'), bytes('\x00swtpm:host=127.0.0.1,port=2321'), bytes('\x011m30s'), bytes('\x02sha256'), bytes('\x03sha256:0,1,2,3+sha1:7')],
    dictionary: ['device:', 'swtpm:', 'mssim:', 'host=', 'port=', 'path=', ',', '=', 'ms', 's', 'm', 'h', '1e308', 'sm3', 'sha384', ':', '+'],
    run: (b) => {
      const s = text(b.subarray(1));
      switch ((b[0] ?? 0) % 4) {
        case 0:
          return parseTcti(s);
        case 1:
          return parseDuration(s);
        case 2:
          return parseImaHashName(s, 'fuzz');
        default:
          return PcrSelection.parse(s);
      }
    },
  },
  {
    name: 'spiffe-trust-domain',
    maxLen: 512,
    seeds: () => [bytes('example.org'), bytes('spiffe://example.org')],
    dictionary: ['spiffe://', '.', '-', '_', '/', '%', ':'],
    run: (b) => TrustDomain.parse(text(b)),
  },
];

/** Inside the validity of the swtpm fixture certificates. */
const EK_NOW = new Date('2026-11-23T00:00:00Z');
let ekStore: EkTrustStore | undefined;
function fixtureEkStore(): EkTrustStore {
  ekStore ??= EkTrustStore.fromCertificates([
    ...records().flatMap((r) => parseCertificates(bytes(r.ca.rootPem + r.ca.intermediatePem))),
    ...fixtures('ekcerts/ca/gce').flatMap((b) => parseCertificates(b)),
  ]);
  return ekStore;
}

let runtimePolicy: RuntimePolicy | undefined;
/** Keylime's test runtime policy: entries of the fuzzed IMA logs are evaluated against it. */
function fixtureRuntimePolicy(): RuntimePolicy {
  runtimePolicy ??= parseRuntimePolicy(new Uint8Array(readFileSync(join(FIXTURES, 'ima/kl-runtime-policy/runtime-policy-test.json'))));
  return runtimePolicy;
}

/**
 * Targets that prove the harness itself: one throws a TypeError, one never returns, one exhausts the heap. Only with FUZZ_SELF_TEST=1
 * (test/fuzz/fuzz.test.ts), so `npm run fuzz` never sees them.
 */
const SELF_TEST_TARGETS: readonly FuzzTarget[] = [
  { name: 'selftest-crash', maxLen: 64, seeds: () => [bytes('ok')], run: (b) => (b.length > 2 ? (null as unknown as { x: number }).x : b) },
  {
    name: 'selftest-hang',
    maxLen: 64,
    seeds: () => [bytes('ok')],
    run: (b) => {
      if (b.length > 3) for (;;);
      return b;
    },
  },
];
const hoard: unknown[] = [];
(SELF_TEST_TARGETS as FuzzTarget[]).push({
  name: 'selftest-oom',
  maxLen: 64,
  seeds: () => [bytes('ok')],
  run: (b) => {
    if (b.length > 3) for (;;) hoard.push(new Array(1 << 16).fill(b.length));
    return b;
  },
});
if (process.env['FUZZ_SELF_TEST'] === '1') (TARGETS as FuzzTarget[]).push(...SELF_TEST_TARGETS);

export function targetByName(name: string): FuzzTarget {
  const t = TARGETS.find((x) => x.name === name);
  if (t === undefined) throw new Error(`no fuzz target "${name}"; known: ${TARGETS.map((x) => x.name).join(', ')}`);
  return t;
}
