/**
 * Attack class: malformed structures. Garbage and truncation at every layer a client controls: the protobuf
 * messages of the plugin protocol, the JSON wire, base64, TPM2B_PUBLIC / TPMT_PUBLIC, the EK certificate,
 * TPMT_SIGNATURE, TPMS_ATTEST and the event log. The shipped tpm-server answers each with a gRPC status naming what
 * was wrong — INVALID_ARGUMENT for bytes that do not parse; PERMISSION_DENIED where the signature check comes first
 * (garbage TPMS_ATTEST is simply not what the AK signed) — and never dies.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, decodeResponse, encodePayload, encodeResponse } from '../../src/nodeattestor/wire.js';
import { ServiceNames } from '../../src/plugin/protos.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import { AttackLab, expectRefused, genuineAttestation } from './kit.js';
import { openAgentSession, openServerAttempt } from './streams.js';

const lab = new AttackLab();
let server: PluginHarness;
let agent: PluginHarness;
let genuine: ReturnType<typeof decodePayload>;
let payloadJson: Record<string, unknown>;

beforeAll(async () => {
  ({ server, agent } = await lab.goldenNode());
  const payload = await openAgentSession(agent).payload;
  genuine = decodePayload(payload);
  payloadJson = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
}, 120_000);

afterAll(() => lab.cleanup());

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const payloadWith = (fields: Partial<Parameters<typeof encodePayload>[0]>): Buffer => Buffer.from(encodePayload({ ...genuine, ...fields }));
const cut = (b: Uint8Array, n: number) => b.subarray(0, n);
const withU16 = (b: Uint8Array, at: number, value: number) => {
  const out = Buffer.from(b);
  out.writeUInt16BE(value, at);
  return new Uint8Array(out);
};

describe('malformed payloads: INVALID_ARGUMENT before any challenge, naming the layer', () => {
  it.each<[string, () => Buffer, RegExp]>([
    ['truncated JSON', () => json(payloadJson).subarray(0, 200), /^attestation payload is not UTF-8 JSON$/],
    ['invalid UTF-8', () => Buffer.concat([Buffer.from('{"v":1,"x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), /^attestation payload is not UTF-8 JSON$/],
    ['garbage bytes', () => Buffer.from([0xff, 0x00, 0x13, 0x37]), /^attestation payload is not UTF-8 JSON$/],
    ['a JSON array', () => json([payloadJson]), /^attestation payload: message: /],
    ['wire version 2', () => json({ ...payloadJson, v: 2 }), /^attestation payload: field "v": /],
    ['an unknown field', () => json({ ...payloadJson, admin: true }), /^attestation payload: message: unknown field\(s\) admin$/],
    ['ak_pub missing', () => json({ ...payloadJson, ak_pub: undefined }), /^attestation payload: field "ak_pub": /],
    ['ak_pub a number', () => json({ ...payloadJson, ak_pub: 5 }), /^attestation payload: field "ak_pub": /],
    ['ak_pub not base64', () => json({ ...payloadJson, ak_pub: 'not*base64!' }), /^attestation payload: field "ak_pub": expected base64$/],
    ['ak_pub base64 of a wrong length', () => json({ ...payloadJson, ak_pub: 'AAAAA' }), /^attestation payload: field "ak_pub": expected base64$/],
  ])('%s', async (_name, make, pattern) => {
    const attempt = openServerAttempt(server, make());
    await expect(attempt.challenge).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expectRefused(attempt.result, grpc.status.INVALID_ARGUMENT, pattern);
  });

  it.each<[string, () => Buffer, RegExp]>([
    ['EK TPM2B_PUBLIC truncated', () => payloadWith({ ek_pub: cut(genuine.ek_pub, 100) }), /TPM2B_PUBLIC/],
    ['AK TPM2B_PUBLIC truncated', () => payloadWith({ ak_pub: cut(genuine.ak_pub, 20) }), /TPM2B_PUBLIC/],
    ['AK TPM2B size larger than the bytes', () => payloadWith({ ak_pub: withU16(genuine.ak_pub, 0, genuine.ak_pub.length + 10) }), /TPM2B_PUBLIC/],
    ['AK TPM2B with trailing bytes', () => payloadWith({ ak_pub: Uint8Array.from([...genuine.ak_pub, 0, 0]) }), /TPM2B_PUBLIC/],
    ['AK TPMT_PUBLIC of an unknown type', () => payloadWith({ ak_pub: withU16(genuine.ak_pub, 2, 0x0099) }), /TPMT_PUBLIC: .*type.*0x0099/],
    ['AK TPMT_PUBLIC with an unknown nameAlg', () => payloadWith({ ak_pub: withU16(genuine.ak_pub, 4, 0x0777) }), /TPMT_PUBLIC: .*nameAlg.*0x0777/],
    // TPM2B size ‖ type ‖ nameAlg ‖ attributes ‖ authPolicy (2+32) ‖ symmetric (AES-128-CFB) ‖ scheme (NULL) ‖ keyBits
    ['EK RSA keyBits that do not match the modulus', () => payloadWith({ ek_pub: withU16(genuine.ek_pub, 2 + 2 + 2 + 4 + 2 + 32 + 6 + 2, 4096) }), /TPMT_PUBLIC: modulus of 256 bytes does not match keyBits 4096/],
    ['EK certificate garbage', () => payloadWith({ ek_cert: Uint8Array.from([0x30, 0x82, 0xff, 0xff, 1, 2, 3]) }), /certificate/i],
    ['EK certificate truncated', () => payloadWith({ ek_cert: cut(genuine.ek_cert!, 300) }), /certificate/i],
  ])('%s: INVALID_ARGUMENT', async (_name, make, pattern) => {
    const attempt = openServerAttempt(server, make());
    await expect(attempt.challenge).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expectRefused(attempt.result, grpc.status.INVALID_ARGUMENT, pattern);
  });
});

describe('malformed responses and logs: after the challenge, still a named refusal', () => {
  /** A genuine attestation whose response (or payload event log) the attacker breaks. */
  const broken = (edit: (r: ReturnType<typeof decodeResponse>) => Buffer) =>
    genuineAttestation(agent, server, { response: (r) => edit(decodeResponse(r)) });
  const withFields = (r: ReturnType<typeof decodeResponse>, f: Partial<Parameters<typeof encodeResponse>[0]>) => Buffer.from(encodeResponse({ ...r, ...f }));

  it.each<[string, (r: ReturnType<typeof decodeResponse>) => Buffer, grpc.status, RegExp]>([
    ['a response that is not JSON', () => Buffer.from('\x00\x01garbage'), grpc.status.INVALID_ARGUMENT, /^challenge response is not UTF-8 JSON$/],
    ['a truncated response', (r) => withFields(r, {}).subarray(0, 40), grpc.status.INVALID_ARGUMENT, /^challenge response is not UTF-8 JSON$/],
    ['a response with an unknown field', (r) => json({ ...JSON.parse(withFields(r, {}).toString()), quote_ok: true }), grpc.status.INVALID_ARGUMENT, /^challenge response: message: unknown field\(s\) quote_ok$/],
    ['an empty response', () => Buffer.alloc(0), grpc.status.INVALID_ARGUMENT, /challenge response/],
    ['TPMT_SIGNATURE truncated', (r) => withFields(r, { signature: cut(r.signature, 10) }), grpc.status.INVALID_ARGUMENT, /TPMT_SIGNATURE/],
    ['TPMT_SIGNATURE of an unknown algorithm', (r) => withFields(r, { signature: withU16(r.signature, 0, 0x0099) }), grpc.status.INVALID_ARGUMENT, /TPMT_SIGNATURE/],
    ['TPMT_SIGNATURE empty', (r) => withFields(r, { signature: new Uint8Array(0) }), grpc.status.INVALID_ARGUMENT, /TPMT_SIGNATURE/],
    ['TPMS_ATTEST truncated (not what the AK signed)', (r) => withFields(r, { attest: cut(r.attest, 30) }), grpc.status.PERMISSION_DENIED, /quote: signature does not verify with the AK/],
    ['TPMS_ATTEST garbage', (r) => withFields(r, { attest: new Uint8Array(145).fill(0xee) }), grpc.status.PERMISSION_DENIED, /quote: signature does not verify with the AK/],
    ['pcr_values empty', (r) => withFields(r, { pcr_values: new Uint8Array(0) }), grpc.status.PERMISSION_DENIED, /quote: 0 bytes of PCR values for a selection of 320/],
  ])('%s', async (_name, edit, code, pattern) => {
    await expectRefused(broken(edit), code, pattern);
  });

  it.each<[string, (log: Uint8Array) => Uint8Array, RegExp]>([
    ['an event log of garbage', () => new Uint8Array(4096).fill(0xa5), /event log/i],
    ['a truncated event log', (log) => cut(log, 100), /event log/i],
    ['an event log cut inside an event', (log) => cut(log, log.length - 7), /event log/i],
    ['an event log whose last event declares 2 GiB of data', (log) => {
      // TCG_PCR_EVENT2 ends with u32 eventSize ‖ event: the size field sits right before the last event's data.
      const out = Buffer.from(log);
      out.writeUInt32LE(0x7fffffff, out.length - parseEventLog(log).untrustedEvents.at(-1)!.data.length - 4);
      return new Uint8Array(out);
    }, /event log/i],
  ])('%s: INVALID_ARGUMENT, after the quote verified', async (_name, edit, pattern) => {
    await expectRefused(
      genuineAttestation(agent, server, { payload: (p) => payloadWith({ event_log: edit(decodePayload(p).event_log!) }) }),
      grpc.status.INVALID_ARGUMENT,
      pattern,
    );
  });
});

describe('malformed protocol messages (protobuf wire)', () => {
  type RawCall = grpc.ClientDuplexStream<Buffer, Buffer>;
  function rawAttest(): RawCall {
    const identity = (b: Buffer) => b;
    const Raw = grpc.makeGenericClientConstructor(
      {
        Attest: {
          path: `/${ServiceNames.serverNodeAttestor}/Attest`,
          requestStream: true,
          responseStream: true,
          requestSerialize: identity,
          requestDeserialize: identity,
          responseSerialize: identity,
          responseDeserialize: identity,
        },
      },
      'RawNodeAttestor',
    );
    const client = new Raw(`unix:${server.handshake.address}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'unused' });
    return (client as unknown as { Attest: () => RawCall }).Attest();
  }
  const outcome = (call: RawCall) =>
    new Promise<grpc.ServiceError | 'data'>((resolve) => {
      call.on('data', () => resolve('data'));
      call.on('error', (e: grpc.ServiceError) => resolve(e));
    });

  it.each([
    ['bytes that are not protobuf', Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])],
    ['a truncated length-delimited field', Buffer.from([0x0a, 0x40, 0x01, 0x02])],
  ])('%s: refused, the plugin keeps serving', async (_name, bytes) => {
    const call = rawAttest();
    const result = outcome(call);
    call.write(bytes);
    const err = await result;
    expect(err).not.toBe('data');
    // Refused by the gRPC layer before our handler runs, with the code grpc-go (SPIRE's side) also uses for a request
    // it cannot unmarshal. Only a process that can reach the plugin's private socket could send this.
    expect({ code: (err as grpc.ServiceError).code, details: (err as grpc.ServiceError).details }).toEqual({ code: grpc.status.INTERNAL, details: 'Error deserializing request' });
    call.cancel();
  });

  it('an AttestRequest with neither payload nor response: INVALID_ARGUMENT', async () => {
    const call = rawAttest();
    const result = outcome(call);
    call.write(Buffer.alloc(0));
    const err = (await result) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/the first attestation message must carry a non-empty payload/);
  });

  it('a challenge response before any payload: INVALID_ARGUMENT', async () => {
    const call = rawAttest();
    const result = outcome(call);
    call.write(Buffer.from([0x12, 0x02, 0x7b, 0x7d])); // field 2 (challenge_response) = "{}"
    const err = (await result) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/the first attestation message must carry a non-empty payload/);
  });

  it('after all of it the plugin is alive and attests a genuine node', async () => {
    expect((await genuineAttestation(agent, server)).attributes.spiffe_id).toMatch(/\/spire\/agent\/tpm\//);
    expect(server.child.exitCode).toBeNull();
    expect(server.stderrLines.filter((l) => /Uncaught exception|Unhandled promise rejection/.test(l))).toEqual([]);
  });
});
