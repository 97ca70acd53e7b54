/**
 * Attack class F8: satisfy `require_event_log` with a log that verifies nothing: a legacy log with no extended
 * event, or a SHA-1 log when only sha256 is quoted. The shipped tpm-server must refuse it (PERMISSION_DENIED,
 * ERR_EVENTLOG_VERIFIES_NOTHING), while the node's real log is admitted.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { ascii, buildAgileLog, buildLegacyLog } from '../tpm/eventlog-builder.js';
import { AttackLab, expectRefused, goldenEvents, writeLog } from './kit.js';

const lab = new AttackLab();
let node: SwtpmHandle;
let events: ReturnType<typeof goldenEvents>;

beforeAll(async () => {
  events = goldenEvents();
  node = await lab.bootNode(events);
}, 120_000);

afterAll(() => lab.cleanup());

async function attest(log: Uint8Array) {
  const server = await lab.server(undefined); // require_event_log defaults to true
  const agent = await lab.agent(node, lab.file('eventlog.bin', log));
  return relayAttestation(agent, server);
}

describe('F8: require_event_log refuses a log that explains none of the quoted PCRs', () => {
  it('control: the real log is admitted', async () => {
    expect((await attest(writeLog(events))).attributes.selector_values).toContain('secureboot:enabled');
  });

  it.each([
    ['a legacy log with no extended event', () => buildLegacyLog([{ pcr: 0, type: EventType.EV_NO_ACTION, data: ascii('nothing to see') }])],
    ['a legacy SHA-1 log of the real events (sha256 is quoted)', () => buildLegacyLog(events.map((e) => ({ pcr: e.pcr, type: e.type, data: e.data })))],
    ['a crypto-agile SHA-1-only log of the real events', () => buildAgileLog(events.map((e) => ({ pcr: e.pcr, type: e.type, data: e.data })), ['sha1'])],
  ])('%s', async (_name, make) => {
    const err = await expectRefused(attest(make()), grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/the event log \((legacy-sha1|crypto-agile), banks sha1\) replays none of the quoted PCRs \(sha256:0,1,2,3,4,5,6,7,8,9\) and require_event_log is on/);
  });

  it('a sha256 log with no events at all: the quoted PCRs 0-9 are not explained, the replay fails', async () => {
    const err = await expectRefused(attest(buildAgileLog([], ['sha256'])), grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/does not replay to the quoted PCRs: sha256:0 \(quoted [0-9a-f]{64}, replayed 0{64} \(no events\)\)/);
  });
});
