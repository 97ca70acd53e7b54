/**
 * Attack class F2: root on a node that booted badly (Secure Boot off, an evil kernel, an evil command line) forges
 * `secure_boot`, `kernel_cmdline` and `kernels`. After boot it extends PCRs 7, 8 and 9 with the golden node's
 * SecureBoot=1 variable, command line and kernel digest and logs those extends honestly, but relabels the real events
 * (EV_EFI_ACTION, EV_EVENT_TAG) and renames the kernel's file-name hint. The shipped tpm-server must refuse it, and
 * give neither `secureboot:enabled` nor the golden `kernel_cmdline_sha256` selector.
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyFromEventLog } from '../../src/policy/create.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { EventType } from '../../src/tpm/eventlog-types.js';
import { builtPlugin } from '../helpers/binaries.js';
import { relayAttestation } from '../helpers/spire-relay.js';
import type { SwtpmHandle } from '../helpers/swtpm.js';
import { hash, secureBootVariable } from '../tpm/eventlog-builder.js';
import {
  AttackLab,
  GOLDEN_LOG_PATH,
  dataEvent,
  exitBootServicesIndex,
  expectRefused,
  goldenEvents,
  goldenLogBytes,
  indexOf,
  latin1,
  text,
  writeLog,
  type LogEvent,
} from './kit.js';

const lab = new AttackLab();
const EVIL_ARGS = ' init=/bin/sh';

let golden: LogEvent[];
/** Indices (in `golden`) of the events the attack changes. */
let at: { secureBoot: number; separator7: number; cmdline: number; linux: number; kernel: number };
let goldenCmdline: string;

/** A GRUB PCR 8 string event for `body`, digested as the golden log's GRUB does (with or without the NUL). */
function grubString(template: LogEvent, prefix: string, body: string): LogEvent {
  const withNul = latin1(template.data).endsWith('\0');
  const data = text(`${prefix}${body}${withNul ? '\0' : ''}`);
  const digestsNul = Buffer.from(template.digest).equals(hash('sha256', text(latin1(template.data).slice(prefix.length))));
  return { ...template, data, digest: hash('sha256', text(digestsNul ? `${body}\0` : body)) };
}

/** What the badly booted node measured: the golden boot with SecureBoot=0, the evil command line and kernel. */
function evilBoot(options: { secureBootOff: boolean }): LogEvent[] {
  const events = golden.map((e) => ({ ...e }));
  if (options.secureBootOff) events[at.secureBoot] = dataEvent(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, secureBootVariable(false));
  const cmdlineBody = latin1(golden[at.cmdline]!.data).slice('kernel_cmdline: '.length).replace(/\0$/, '');
  const linuxBody = latin1(golden[at.linux]!.data).slice('grub_cmd: '.length).replace(/\0$/, '');
  events[at.cmdline] = grubString(golden[at.cmdline]!, 'kernel_cmdline: ', cmdlineBody + EVIL_ARGS);
  events[at.linux] = grubString(golden[at.linux]!, 'grub_cmd: ', linuxBody + EVIL_ARGS);
  events[at.kernel] = { ...golden[at.kernel]!, digest: hash('sha256', text('an evil kernel image')) };
  return events;
}

/** The golden measurements root extends after boot, logged honestly. */
function forgedExtends(options: { secureBoot: boolean; separator?: boolean }): LogEvent[] {
  return [
    ...(options.secureBoot ? [golden[at.secureBoot]!] : []),
    ...(options.separator ? [golden[at.separator7]!] : []),
    golden[at.cmdline]!,
    golden[at.kernel]!,
  ];
}

/** The attacker's log: the real events relabelled, the kernel renamed, the forged extends logged `where`. */
function forgedLog(
  real: readonly LogEvent[],
  appended: readonly LogEvent[],
  options: { where: 'end' | 'before-exit-boot-services'; relabelSecureBoot: boolean; relabelSeparator?: boolean },
): LogEvent[] {
  const events = real.map((e, i) => {
    if (i === at.secureBoot && options.relabelSecureBoot) return { ...e, type: EventType.EV_EFI_ACTION };
    if (i === at.separator7 && options.relabelSeparator) return { ...e, type: EventType.EV_EFI_ACTION };
    if (i === at.cmdline || i === at.linux) return { ...e, type: EventType.EV_EVENT_TAG };
    if (i === at.kernel) return { ...e, data: text('(hd0,gpt2)/grub2/fonts/unicode.pf2') };
    return e;
  });
  const split = options.where === 'end' ? events.length : exitBootServicesIndex(events);
  return [...events.slice(0, split), ...appended, ...events.slice(split)];
}

async function bootForged(options: { secureBootOff: boolean; separator?: boolean }): Promise<{ tpm: SwtpmHandle; real: LogEvent[]; appended: LogEvent[] }> {
  const real = evilBoot(options);
  const tpm = await lab.bootNode(real);
  const appended = forgedExtends({ secureBoot: options.secureBootOff, ...(options.separator ? { separator: true } : {}) });
  await lab.extendAfterBoot(tpm, appended);
  return { tpm, real, appended };
}

let forgedAll: Awaited<ReturnType<typeof bootForged>>;
let forgedSeparator: Awaited<ReturnType<typeof bootForged>>;
let forgedCmdline: Awaited<ReturnType<typeof bootForged>>;
let goldenNode: SwtpmHandle;
let rulesPath: string;

beforeAll(async () => {
  golden = goldenEvents();
  const secureBoot = indexOf(golden, (e) => e.pcr === 7 && e.type === EventType.EV_EFI_VARIABLE_DRIVER_CONFIG && e.data.length === 53, 'SecureBoot variable');
  at = {
    secureBoot,
    separator7: indexOf(golden, (e) => e.pcr === 7 && e.type === EventType.EV_SEPARATOR, 'PCR 7 separator'),
    cmdline: indexOf(golden, (e) => e.pcr === 8 && latin1(e.data).startsWith('kernel_cmdline: '), 'kernel_cmdline'),
    linux: indexOf(golden, (e) => e.pcr === 8 && latin1(e.data).startsWith('grub_cmd: linux '), 'grub_cmd: linux'),
    kernel: indexOf(golden, (e) => e.pcr === 9 && latin1(e.data).includes('vmlinuz'), 'kernel file'),
  };
  expect(Buffer.from(golden[secureBoot]!.data).equals(Buffer.from(secureBootVariable(true)))).toBe(true);
  goldenCmdline = latin1(golden[at.cmdline]!.data).slice('kernel_cmdline: '.length).replace(/\0$/, '');

  [goldenNode, forgedAll, forgedSeparator, forgedCmdline] = await Promise.all([
    lab.bootNode(golden),
    bootForged({ secureBootOff: true }),
    bootForged({ secureBootOff: true, separator: true }),
    bootForged({ secureBootOff: false }),
  ]);

  // One policy per rule (PCRs not pinned), so each refusal names exactly the rule that held.
  const g = createPolicyFromEventLog(parseEventLog(goldenLogBytes()), { name: 'g', pcrs: [0] });
  rulesPath = lab.file(
    'rules.yaml',
    stringify({
      policies: [
        { name: 'sb', secure_boot: true },
        { name: 'cmdline', kernel_cmdline: g.kernelCmdline!.map((r) => r.source) },
        { name: 'kernels', kernels: [...g.kernels!] },
      ],
    }),
  );
}, 240_000);

afterAll(() => lab.cleanup());

async function attest(tpm: SwtpmHandle, sent: readonly LogEvent[], policyPath: string, extra: Record<string, unknown> = {}) {
  const server = await lab.server(policyPath, extra);
  const agent = await lab.agent(tpm, lab.file('eventlog.bin', writeLog(sent)));
  return relayAttestation(agent, server);
}

const goldenCmdlineSelector = () => `kernel_cmdline_sha256:${createHash('sha256').update(goldenCmdline).digest('hex')}`;

describe('F2: forged secure_boot, kernel_cmdline and kernels', () => {
  it('control: the golden node passes every rule and gets the selectors', async () => {
    const { attributes } = await attest(goldenNode, golden, rulesPath, { policy_match: 'all' });
    expect(attributes.selector_values).toEqual(expect.arrayContaining(['secureboot:enabled', 'policy:sb', 'policy:cmdline', 'policy:kernels', goldenCmdlineSelector()]));
  });

  it.each(['end', 'before-exit-boot-services'] as const)(
    'relabelled real events, forged extends logged at %s: every forged fact is unknown and every rule fails',
    async (where) => {
      const sent = forgedLog(forgedAll.real, forgedAll.appended, { where, relabelSecureBoot: true });
      const err = await expectRefused(attest(forgedAll.tpm, sent, rulesPath), grpc.status.PERMISSION_DENIED, /no boot policy passed/);
      expect(err.details).toMatch(/policy "sb": secure_boot: observed unknown \(.*event \d+ \(EV_EFI_ACTION\): data [0-9a-f]+ is not an action the PFP defines for PCR 7/);
      if (where === 'end') {
        // Logged in the order they happened: after ExitBootServices(), where no boot measurement can be.
        expect(err.details).toMatch(/policy "cmdline": kernel_cmdline: observed unknown \(event \d+ on PCR 8 was measured after ExitBootServices\(\)\)/);
        expect(err.details).toMatch(/policy "kernels": kernels: observed unknown \(event \d+ on PCR 9 was measured after ExitBootServices\(\)\)/);
      } else {
        // Moved before it (the order across PCRs is not covered): the relabelled real events give them away.
        expect(err.details).toMatch(/policy "cmdline": kernel_cmdline: observed unknown \(.*EV_EVENT_TAG\) on PCR 8 is not a boot-loader measurement/);
        // The renamed evil kernel is still a PCR 9 file, and not on the list.
        expect(err.details).toMatch(new RegExp(`policy "kernels": kernels \\(event ${at.kernel + 1}\\): observed sha256:`));
      }
    },
  );

  it('in report mode the forged node gets neither secureboot:enabled nor the golden command-line selector', async () => {
    const sent = forgedLog(forgedAll.real, forgedAll.appended, { where: 'before-exit-boot-services', relabelSecureBoot: true });
    const { attributes } = await attest(forgedAll.tpm, sent, rulesPath, { policy_match: 'report' });
    expect(attributes.selector_values).toContain('secureboot:disabled');
    expect(attributes.selector_values).not.toContain('secureboot:enabled');
    expect(attributes.selector_values.filter((s) => s.startsWith('kernel_cmdline_sha256:') || s.startsWith('policy:'))).toEqual([]);
  });

  it('the forged SecureBoot=1 logged as configuration after the real separator is refused (configuration after the separator)', async () => {
    const sent = forgedLog(forgedAll.real, forgedAll.appended, { where: 'end', relabelSecureBoot: false });
    const err = await expectRefused(attest(forgedAll.tpm, sent, rulesPath), grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/secure_boot: observed unknown \(.*not allowed in PCR 7 after the separator/);
  });

  it('the real separator relabelled and a new one extended after SecureBoot=1: still unknown', async () => {
    const sent = forgedLog(forgedSeparator.real, forgedSeparator.appended, { where: 'before-exit-boot-services', relabelSecureBoot: true, relabelSeparator: true });
    const err = await expectRefused(attest(forgedSeparator.tpm, sent, rulesPath), grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/secure_boot: observed unknown \(.*\(EV_EFI_ACTION\): data 00000000 is not an action the PFP defines for PCR 7/);
  });

  it('both command lines logged as they are: the evil one fails the rule and no kernel_cmdline_sha256 selector is given', async () => {
    // GRUB logged the evil line; root logs the golden one too, placed before ExitBootServices() so it looks in-boot.
    const real = forgedCmdline.real;
    const split = exitBootServicesIndex(real);
    const sent = [...real.slice(0, split), ...forgedCmdline.appended, ...real.slice(split)];
    // policy_match all: Secure Boot really was on here, so the "sb" policy alone would admit the node.
    const err = await expectRefused(attest(forgedCmdline.tpm, sent, rulesPath, { policy_match: 'all' }), grpc.status.PERMISSION_DENIED);
    expect(err.details).toContain(`policy "cmdline": kernel_cmdline (event ${at.cmdline + 1}): observed ${JSON.stringify(goldenCmdline + EVIL_ARGS)}`);
    const { attributes } = await attest(forgedCmdline.tpm, sent, rulesPath, { policy_match: 'report' });
    expect(attributes.selector_values).toContain('secureboot:enabled'); // Secure Boot really was on in this boot
    expect(attributes.selector_values.filter((s) => s.startsWith('kernel_cmdline_sha256:'))).toEqual([]);
  });

  it('a quoted PCR the log does not explain (PCR 12 extended unlogged) makes the command line unknown, cache or not', async () => {
    // Same log bytes as the golden node, so a facts cache keyed on the log alone would hand over the golden facts.
    const extra = await lab.bootNode(golden);
    await lab.extendAfterBoot(extra, [{ pcr: 12, type: EventType.EV_IPL, data: new Uint8Array(0), digest: hash('sha256', text('systemd-stub: init=/bin/sh')) }]);
    const cmdlineOnly = lab.file('cmdline.yaml', stringify({ policies: [{ name: 'cmdline', kernel_cmdline: [`^${goldenCmdline.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&')}$`] }] }));
    const server = await lab.server(cmdlineOnly, { pcr_selection: 'sha256:0,1,2,3,4,5,6,7,8,9,12' });
    const logPath = lab.file('golden.bin', writeLog(golden));
    expect((await relayAttestation(await lab.agent(goldenNode, logPath), server)).attributes.selector_values).toContain('policy:cmdline');
    await expectRefused(
      relayAttestation(await lab.agent(extra, logPath), server),
      grpc.status.PERMISSION_DENIED,
      /kernel_cmdline: observed unknown \(PCR 12 was extended but the log has no event for it\)/,
    );
  });

  it('the default output of the shipped `spire-edge-attest policy create` catches the evil command line', async () => {
    const policyText = execFileSync(builtPlugin('spire-edge-attest'), ['policy', 'create', '--from-eventlog', GOLDEN_LOG_PATH], { encoding: 'utf8' });
    const policyPath = lab.file('default-policy.yaml', policyText);
    expect((await attest(goldenNode, golden, policyPath)).attributes.selector_values).toContain('policy:golden-node');
    // Secure Boot really was on; only the command line (and PCR 8) differ, and PCR 8 is not pinned by default.
    const sent = forgedLog(forgedCmdline.real, forgedCmdline.appended, { where: 'before-exit-boot-services', relabelSecureBoot: false });
    await expectRefused(
      attest(forgedCmdline.tpm, sent, policyPath),
      grpc.status.PERMISSION_DENIED,
      /policy "golden-node": (kernels \(event \d+\): observed sha256:|kernel_cmdline: observed unknown)/,
    );
  });
});
