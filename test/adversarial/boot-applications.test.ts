/**
 * Attack class F1: pass a `boot_applications` rule with the log alone. The TPM measured an unlisted shim into PCR 4;
 * the agent then hides it from the log (relabels it, or drops every PCR 4 event), or the platform measured nothing
 * at all. The shipped tpm-server must refuse each, naming the rule.
 */
import * as grpc from '@grpc/grpc-js';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyFromEventLog } from '../../src/policy/create.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { hash } from '../tpm/eventlog-builder.js';
import { AttackLab, expectRefused, goldenEvents, goldenLogBytes, indexOf, text, writeLog, type LogEvent } from './kit.js';

const lab = new AttackLab();
const UNLISTED_SHIM = hash('sha256', text('an unlisted shim the TPM measured'));
let golden: LogEvent[];
/** What the compromised node measured: the golden boot with one more image, the unlisted shim, in PCR 4. */
let measured: LogEvent[];
let shimAt: number;
let goldenNode: SwtpmHandle;
let evilNode: SwtpmHandle;
let policyPath: string;

beforeAll(async () => {
  golden = goldenEvents();
  // The shim runs right after PCR 4's separator, before the boot loader.
  shimAt = indexOf(golden, (e) => e.pcr === 4 && e.type === EventType.EV_EFI_BOOT_SERVICES_APPLICATION, 'PCR 4 application');
  measured = [...golden.slice(0, shimAt), { pcr: 4, type: EventType.EV_EFI_BOOT_SERVICES_APPLICATION, data: new Uint8Array(154), digest: UNLISTED_SHIM }, ...golden.slice(shimAt)];
  [goldenNode, evilNode] = await Promise.all([lab.bootNode(golden), lab.bootNode(measured)]);
  // Only the boot-application rule: PCR 4 itself is not pinned, so the rule alone has to hold.
  const apps = [...createPolicyFromEventLog(parseEventLog(goldenLogBytes()), { name: 'g', pcrs: [0] }).bootApplications!];
  expect(apps).toHaveLength(3);
  expect(apps).not.toContain(Buffer.from(UNLISTED_SHIM).toString('hex'));
  policyPath = lab.file('apps.yaml', stringify({ policies: [{ name: 'apps', boot_applications: apps }] }));
}, 180_000);

afterAll(() => lab.cleanup());

async function attest(tpm: SwtpmHandle, sentLog: readonly LogEvent[]) {
  const server = await lab.server(policyPath);
  const agent = await lab.agent(tpm, lab.file('eventlog.bin', writeLog(sentLog)));
  return relayAttestation(agent, server);
}

describe('F1: boot_applications cannot be passed with the log alone', () => {
  it('control: the golden node passes the rule', async () => {
    const { attributes } = await attest(goldenNode, golden);
    expect(attributes.selector_values).toContain('policy:apps');
  });

  it('control: the unlisted shim, logged honestly, is refused by digest', async () => {
    await expectRefused(attest(evilNode, measured), grpc.status.PERMISSION_DENIED, new RegExp(`boot_applications \\(event ${shimAt + 1}\\): observed sha256:${Buffer.from(UNLISTED_SHIM).toString('hex')}`));
  });

  it.each([
    ['an EV_EFI_ACTION "Calling EFI Application from Boot Option"', EventType.EV_EFI_ACTION, text('Calling EFI Application from Boot Option')],
    ['an EV_SEPARATOR', EventType.EV_SEPARATOR, new Uint8Array(4)],
    ['an EV_IPL', EventType.EV_IPL, text('shim')],
    ['an EV_EFI_BOOT_SERVICES_DRIVER', EventType.EV_EFI_BOOT_SERVICES_DRIVER, new Uint8Array(84)],
    ['an unknown event type', 0x7fff_0001, new Uint8Array(0)],
  ])('the shim relabelled as %s is still an application (its digest covers no known data)', async (_name, type, data) => {
    const sent = measured.map((e, i) => (i === shimAt ? { ...e, type, data } : e));
    await expectRefused(attest(evilNode, sent), grpc.status.PERMISSION_DENIED, /policy "apps": boot_applications \(event \d+\): observed sha256:/);
  });

  it('the shim logged as EV_NO_ACTION (not extended) leaves PCR 4 unexplained: the replay fails', async () => {
    const sent = measured.map((e, i) => (i === shimAt ? { ...e, type: EventType.EV_NO_ACTION } : e));
    await expectRefused(attest(evilNode, sent), grpc.status.PERMISSION_DENIED, /does not replay to the quoted PCRs: sha256:4 /);
  });

  it('every PCR 4 event removed from the log: a quoted PCR 4 off its reset value must be replayed', async () => {
    const err = await expectRefused(attest(evilNode, measured.filter((e) => e.pcr !== 4)), grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/does not replay to the quoted PCRs: sha256:4 \(quoted [0-9a-f]{64}, replayed 0{64} \(no events\)\)/);
  });

  it('a platform that measured nothing into PCR 4: the rule has nothing to check and fails closed', async () => {
    const noApps = golden.filter((e) => e.pcr !== 4);
    const tpm = await lab.bootNode(noApps);
    await expectRefused(attest(tpm, noApps), grpc.status.PERMISSION_DENIED, /policy "apps": boot_applications: observed no verified PCR 4 boot application measurement/);
  });
});
