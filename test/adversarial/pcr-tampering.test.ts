/**
 * Attack class: PCR tampering. The quote signs a digest of the PCR values; the values themselves and the event log
 * that explains them travel beside it. A node that booted something else claims the golden node's values, drops or
 * adds a value, has a man in the middle narrow the PCR selection or switch the bank, or edits the log it sends. The
 * shipped tpm-server refuses each with PERMISSION_DENIED naming the check (pcrDigest, value count, selection, replay).
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeChallenge, decodePayload, decodeResponse, encodeChallenge, encodePayload, encodeResponse } from '../../src/nodeattestor/wire.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { isExtendedEvent } from '../../src/tpm/replay.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { AttackLab, dataEvent, expectRefused, genuineAttestation, goldenEvents, indexOf, text, writeLog } from './kit.js';

const lab = new AttackLab();
const EV_IPL = 0x0d;
let golden: SwtpmHandle;
let evil: SwtpmHandle;
let drifted: SwtpmHandle;
let server: PluginHarness;
let goldenAgent: PluginHarness;
let evilAgent: PluginHarness;
let driftedAgent: PluginHarness;
let goldenPcrValues: Uint8Array;

beforeAll(async () => {
  const events = goldenEvents();
  // The evil node booted another kernel: one PCR 9 measurement differs, and its (honest) log says so.
  const evilEvents = events.map((e) => ({ ...e }));
  const kernel = indexOf(evilEvents, (e) => e.pcr === 9 || (e.pcr === 8 && e.type === EV_IPL), 'PCR 8/9 event');
  evilEvents[kernel] = { ...evilEvents[kernel]!, ...dataEvent(evilEvents[kernel]!.pcr, evilEvents[kernel]!.type, text('evil kernel')) };
  [golden, evil, drifted] = await Promise.all([lab.bootNode(events), lab.bootNode(evilEvents), lab.bootNode(events)]);
  const goldenLog = lab.file('golden.bin', writeLog(events));
  server = await lab.server(undefined);
  [goldenAgent, evilAgent, driftedAgent] = await Promise.all([
    lab.agent(golden, goldenLog),
    lab.agent(evil, lab.file('evil.bin', writeLog(evilEvents))),
    lab.agent(drifted, goldenLog),
  ]);
  const ok = await genuineAttestation(goldenAgent, server);
  goldenPcrValues = decodeResponse(ok.responses[0]!).pcr_values;
  // Control: the evil node's own, honest attestation is admitted with its own (different) PCR 8/9 selectors.
  const evilOk = await genuineAttestation(evilAgent, server);
  expect(evilOk.attributes.selector_values.filter((s) => /^pcr:sha256:[89]:/.test(s))).not.toEqual(
    ok.attributes.selector_values.filter((s) => /^pcr:sha256:[89]:/.test(s)),
  );
}, 120_000);

afterAll(() => lab.cleanup());

const editResponse = (edit: (r: ReturnType<typeof decodeResponse>) => Partial<Parameters<typeof encodeResponse>[0]>) => ({
  response: (r: Buffer) => Buffer.from(encodeResponse({ ...decodeResponse(r), ...edit(decodeResponse(r)) })),
});
const flipByte = (bytes: Uint8Array, at: number) => Uint8Array.from(bytes, (b, i) => (i === at ? b ^ 0x80 : b));

describe('PCR tampering: only values the quote signed, over the selection asked for, explained by the log', () => {
  it("the evil node sends the golden node's PCR values with its own quote: PERMISSION_DENIED, pcrDigest", async () => {
    await expectRefused(
      genuineAttestation(evilAgent, server, editResponse(() => ({ pcr_values: goldenPcrValues }))),
      grpc.status.PERMISSION_DENIED,
      /quote: PCR values do not match the quoted pcrDigest/,
    );
  });

  it.each([0, 4, 7, 9])('a flipped bit in the value of PCR %i: PERMISSION_DENIED, pcrDigest', async (pcr) => {
    await expectRefused(
      genuineAttestation(goldenAgent, server, editResponse((r) => ({ pcr_values: flipByte(r.pcr_values, pcr * 32 + 31) }))),
      grpc.status.PERMISSION_DENIED,
      /quote: PCR values do not match the quoted pcrDigest/,
    );
  });

  it.each([
    ['one value short', (v: Uint8Array) => v.subarray(0, v.length - 32), /quote: 288 bytes of PCR values for a selection of 320/],
    ['one value extra', (v: Uint8Array) => Uint8Array.from([...v, ...v.subarray(0, 32)]), /quote: 352 bytes of PCR values for a selection of 320/],
    ['values in another order', (v: Uint8Array) => Uint8Array.from([...v.subarray(32, 64), ...v.subarray(0, 32), ...v.subarray(64)]), /quote: PCR values do not match the quoted pcrDigest/],
  ])('%s: PERMISSION_DENIED', async (_name, edit, pattern) => {
    await expectRefused(genuineAttestation(goldenAgent, server, editResponse((r) => ({ pcr_values: edit(r.pcr_values) }))), grpc.status.PERMISSION_DENIED, pattern);
  });

  it.each([
    ['narrowed to PCRs 0,1 (hiding the boot chain)', 'sha256:0,1', /quote: quote selects "sha256:0,1", expected "sha256:0,1,2,3,4,5,6,7,8,9"/],
    ['switched to the SHA-1 bank', 'sha1:0,1,2,3,4,5,6,7,8,9', /quote: quote selects "sha1:0,1,2,3,4,5,6,7,8,9", expected "sha256:/],
  ])('a man in the middle changes the selection the TPM quotes, %s: PERMISSION_DENIED, selection', async (_name, pcrs, pattern) => {
    await expectRefused(
      genuineAttestation(goldenAgent, server, { challenge: (c) => Buffer.from(encodeChallenge({ ...decodeChallenge(c), pcrs })) }),
      grpc.status.PERMISSION_DENIED,
      pattern,
    );
  });

  it('the evil node sends the golden log (the quote is genuine): PERMISSION_DENIED, replay', async () => {
    const goldenLogBytes = writeLog(goldenEvents());
    await expectRefused(
      genuineAttestation(evilAgent, server, { payload: (p) => Buffer.from(encodePayload({ ...decodePayload(p), event_log: goldenLogBytes })) }),
      grpc.status.PERMISSION_DENIED,
      /event log does not replay to the quoted PCRs: sha256:[89] \(quoted [0-9a-f]{64}, replayed [0-9a-f]{64}\)$/,
    );
  });

  it('a flipped bit in a logged digest: PERMISSION_DENIED, replay', async () => {
    const tampered = (p: Buffer) => {
      const payload = decodePayload(p);
      const log = Buffer.from(payload.event_log!);
      const last = parseEventLog(log).untrustedEvents.filter(isExtendedEvent).at(-1)!;
      const at = log.lastIndexOf(Buffer.from(last.digests.get('sha256')!));
      log[at + 5]! ^= 0x01;
      return Buffer.from(encodePayload({ ...payload, event_log: log }));
    };
    await expectRefused(genuineAttestation(goldenAgent, server, { payload: tampered }), grpc.status.PERMISSION_DENIED, /event log does not replay to the quoted PCRs/);
  });

  it('root extends PCR 7 after boot and does not log it: PERMISSION_DENIED, replay', async () => {
    expect((await genuineAttestation(driftedAgent, server)).attributes.spiffe_id).toMatch(/\/spire\/agent\/tpm\//);
    await lab.extendAfterBoot(drifted, [dataEvent(7, 0x80000001, text('unlogged'))]);
    await expectRefused(genuineAttestation(driftedAgent, server), grpc.status.PERMISSION_DENIED, /event log does not replay to the quoted PCRs: sha256:7 \(quoted [0-9a-f]{64}, replayed [0-9a-f]{64}\)$/);
  });
});
