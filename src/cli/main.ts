/**
 * `spire-edge-attest`: the operator CLI shipped next to the TPM plugins (docs/cli.md). Subcommands:
 *
 *   ek-hash [--cert FILE | --public FILE | --tcti TCTI [--ek-kind K]] [--json]
 *   eventlog inspect FILE [--pcrs FILE] [--json]
 *   policy create --from-eventlog FILE [--pcrs 0,2,4,7] [--banks sha256] [--name NAME] [--out FILE [--force]]
 *   policy check --policy FILE --eventlog FILE [--pcrs ...] [--match any|all] [--json]
 *
 * Results go to stdout, progress and errors to stderr. Exit codes: 0 success, 1 failure (including a policy check
 * that does not pass), 2 usage error. `main` never calls process.exit; src/cli/bin.ts does the process wiring.
 *
 * @module
 */
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { InvalidConfig, isAttestorError, MalformedInput, NotFound, PreconditionFailed } from '../errors.js';
import { PRODUCT, VERSION } from '../version.js';
import { parseTcti, Tpm2Tools, type EkKind } from '../tpm/tools.js';
import { ekHashFromCertificate, ekHashFromPublic, ekHashFromTpm, type EkHashResult } from './ek-hash.js';
import { formatInspection, inspectEventLog } from './eventlog-inspect.js';
import { parsePcrValuesFile } from './pcr-values-file.js';
import { checkPoliciesOffline, formatPolicyCheck, OFFLINE_NOTICE, type PolicyMatchMode } from './policy-check.js';
import { createPolicyCommand, DEFAULT_POLICY_BANKS, DEFAULT_POLICY_PCRS } from './policy-create.js';
import { HashAlg } from '../tpm/alg.js';
import { DEFAULT_PCR_SELECTION, PcrSelection } from '../tpm/pcrs.js';
import { enrolList, enrolSet, formatEnrolList } from './enrol.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export const PROGRAM = 'spire-edge-attest';
const DEFAULT_TCTI = 'device:/dev/tpmrm0';
const DEFAULT_POLICY_NAME = 'golden-node';
const EK_KINDS = ['auto', 'rsa', 'ecc-p256', 'ecc-p384'] as const;

export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly readFile: (path: string) => Promise<Uint8Array>;
  /** Writes a new file; with `overwrite` false it fails with EEXIST when `path` exists. */
  readonly writeFile: (path: string, text: string, overwrite: boolean) => Promise<void>;
}

/** Bad arguments: exit 2, with the command's usage line. */
export class UsageError extends Error {
  readonly command: string;
  constructor(command: string, message: string) {
    super(message);
    this.name = 'UsageError';
    this.command = command;
  }
}

const HELP: Readonly<Record<string, string>> = {
  '': `Usage: ${PROGRAM} <command> [options]

Operator tools for the SPIRE TPM node attestor (NodeAttestor "tpm").

Commands:
  ek-hash            Print the EK hash (pub_hash, agent ID suffix) from the TPM or a file
  eventlog inspect   Show a measured-boot event log: events, replayed PCRs, Secure Boot state
  policy create      Turn a golden node's event log into a policy file
  policy check       Dry-run policies against an event log (offline, unverified)
  enrol list         List nodes in the enrolment store (pending, approved, revoked)
  enrol approve      Approve a node's EK hash: it is admitted at its next attestation
  enrol revoke       Revoke a node's EK hash: it is refused from its next attestation

Run '${PROGRAM} <command> --help' for a command's options, '${PROGRAM} --version' for the version.
Exit codes: 0 success, 1 failure, 2 usage error.
`,
  'ek-hash': `Usage: ${PROGRAM} ek-hash [--cert FILE | --public FILE | --tcti TCTI [--ek-kind KIND]] [--json]

Prints the sha256 hex of the PKIX EK public key: spire-tpm-plugin's get_tpm_pubhash, the
server's pub_hash selector and the agent ID suffix (/spire/agent/tpm/<hash>).

Options:
  --cert FILE        EK certificate, PEM or DER (trailing NV padding is ignored)
  --public FILE      EK public area, TPM2B_PUBLIC (tpm2_readpublic -f tss)
  --tcti TCTI        Read the EK from this TPM (default: ${DEFAULT_TCTI}; also swtpm:..., mssim:...)
  --ek-kind KIND     auto (default), rsa, ecc-p256 or ecc-p384; with a TPM only. auto picks the
                     first kind with an EK certificate in NV (rsa, ecc-p384, ecc-p256), else rsa
  --json             Print {pub_hash, agent_id_path, source, ...} as JSON
  -h, --help         Show this help

Reading from a TPM creates and persists the EK at its default handle when it is absent, as the
agent plugin does at its first attestation.
`,
  'enrol list': `Usage: ${PROGRAM} enrol list --store FILE [--state pending|approved|revoked] [--json]

Lists the nodes of the enrolment store (tpm-server enrolment_path) with their state.
`,
  'enrol approve': `Usage: ${PROGRAM} enrol approve EK_HASH --store FILE [--note TEXT]

Approves a node (pending or revoked, or not seen yet): tpm-server admits it at its next attestation.
`,
  'enrol revoke': `Usage: ${PROGRAM} enrol revoke EK_HASH --store FILE [--note TEXT]

Revokes a node: tpm-server refuses it (ERR_ENROLMENT_REVOKED) from its next attestation.
`,
  'eventlog inspect': `Usage: ${PROGRAM} eventlog inspect FILE [--pcrs FILE] [--json]

Parses a TCG PC Client event log (crypto-agile or legacy SHA-1) and prints its events, the PCR
values it replays to, and the Secure Boot state. Offline: nothing is verified.

Options:
  --pcrs FILE        Replay the log against these PCR values (tpm2_pcrread YAML output, or JSON
                     {"sha256": {"0": "<hex>"}}) exactly as tpm-server replays it against a quote,
                     firmware workarounds included, and say which one it used. Exit 1 if tpm-server
                     would refuse the replay
  --json             Print the documented JSON object (docs/cli.md)
  -h, --help         Show this help
`,
  'policy create': `Usage: ${PROGRAM} policy create --from-eventlog FILE [--pcrs 0,2,4,7] [--banks sha256] [--name NAME] [--out FILE [--force]]

Turns a golden node's event log into a measured-boot policy file (YAML). Review it: the log is
unverified, you vouch for the machine it came from.

Options:
  --from-eventlog FILE  The golden node's event log (binary_bios_measurements)
  --pcrs LIST           PCR indices to pin, comma-separated (default ${DEFAULT_POLICY_PCRS.join(',')})
  --banks LIST          PCR banks to pin them in, comma-separated (default ${DEFAULT_POLICY_BANKS.join(',')}: the
                        banks of the server's default pcr_selection; the server refuses other banks
                        unless its pcr_selection quotes them)
  --name NAME           Policy name (default ${DEFAULT_POLICY_NAME}); selector policy:<name>
  --out FILE            Write the policy here instead of stdout; refuses to replace an existing file
  --force               With --out: replace an existing file
  -h, --help            Show this help
`,
  'policy check': `Usage: ${PROGRAM} policy check --policy FILE --eventlog FILE [--pcrs LIST] [--match any|all] [--json]

Offline dry run: replays the event log against its own PCR values and evaluates every policy in
the file. Nothing is verified (no TPM quote); a pass here is not an attestation.

Options:
  --policy FILE      Policy file (YAML or JSON), as given to the server's policy_path
  --eventlog FILE    Event log to check
  --pcrs LIST        PCRs treated as quoted, like the server's pcr_selection: "0,2,4,7" (every
                     bank) or "sha256:0,1,2,3,4,5,6,7,8,9". Default: the server's default,
                     ${DEFAULT_PCR_SELECTION}
  --match MODE       any (default) or all, like the server's policy_match
  --json             Print the documented JSON object (docs/cli.md)
  -h, --help         Show this help

Exit code 0 when the policies pass under --match, 1 when they do not.
`,
};

const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;

function defaultIo(): CliIo {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    readFile: async (path) => new Uint8Array(await readFile(path)),
    writeFile: (path, text, overwrite) => writeFile(path, text, { mode: 0o644, flag: overwrite ? 'w' : 'wx' }),
  };
}

type Options = ParseArgsConfig['options'];

/** parseArgs with strict checking; its errors become UsageError for `command`. */
function parse(
  command: string,
  args: readonly string[],
  options: Options,
  positionals: number,
): { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: { ...HELP_OPTION, ...options }, strict: true, allowPositionals: positionals > 0 });
  } catch (err) {
    throw new UsageError(command, (err as Error).message);
  }
  if (parsed.values['help'] !== true && parsed.positionals.length > positionals) {
    throw new UsageError(command, `unexpected argument "${parsed.positionals[positionals]}"`);
  }
  return { values: parsed.values, positionals: parsed.positionals };
}

function str(values: Record<string, unknown>, key: string): string | undefined {
  const v = values[key];
  return typeof v === 'string' ? v : undefined;
}

function required(command: string, values: Record<string, unknown>, key: string): string {
  const v = str(values, key);
  if (v === undefined || v === '') throw new UsageError(command, `--${key} is required`);
  return v;
}

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'is a directory, not a file',
  ENOTDIR: 'a parent is not a directory',
};

/** Reads an input file; errors carry a stable code and say which file, for what, and why. */
async function read(io: CliIo, path: string, what: string): Promise<Uint8Array> {
  try {
    return await io.readFile(path);
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    const why = errno === undefined ? (err as Error).message : `${ERRNO_TEXT[errno] ?? (err as Error).message} (${errno})`;
    const fields = { path, errno };
    if (errno === 'ENOENT') throw new NotFound('ERR_FILE_NOT_FOUND', `cannot read ${what} ${path}: ${why}`, { fields });
    throw new PreconditionFailed('ERR_FILE_READ', `cannot read ${what} ${path}: ${why}`, { fields });
  }
}

/**
 * Binary TCG event logs start with a PCR index of 0 (4 zero bytes) and hold NUL bytes throughout; a text file
 * (tpm2_eventlog YAML, a policy, a hex dump) has none. Saying so beats the parser's size error on the first header.
 */
function checkBinaryEventLog(bytes: Uint8Array, path: string): void {
  const head = bytes.subarray(0, 4096);
  if (head.length > 0 && looksLikeText(head)) {
    throw new MalformedInput(
      'ERR_EVENTLOG_TEXT',
      `${path} looks like text or YAML, not a binary TCG event log: give the binary log (for example ` +
        '/sys/kernel/security/tpm0/binary_bios_measurements), not the output of tpm2_eventlog',
      { fields: { path } },
    );
  }
}

function looksLikeText(bytes: Uint8Array): boolean {
  let text: string;
  try {
    // A cut in the middle of a multi-byte character at the 4 KiB boundary is still text.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.length === 4096 ? bytes.subarray(0, 4092) : bytes);
  } catch {
    return false;
  }
  return !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text);
}

async function readEventLog(io: CliIo, path: string): Promise<Uint8Array> {
  const bytes = await read(io, path, 'event log');
  checkBinaryEventLog(bytes, path);
  return bytes;
}

// ---- commands ---------------------------------------------------------------------------------------------------

async function ekHash(args: readonly string[], io: CliIo): Promise<number> {
  const cmd = 'ek-hash';
  const { values } = parse(
    cmd,
    args,
    {
      cert: { type: 'string' },
      public: { type: 'string' },
      tcti: { type: 'string' },
      'ek-kind': { type: 'string' },
      json: { type: 'boolean' },
    },
    0,
  );
  if (values['help']) return help(io, cmd);
  const cert = str(values, 'cert');
  const pub = str(values, 'public');
  const tcti = str(values, 'tcti');
  const ekKind = str(values, 'ek-kind');
  const sources = [cert, pub, tcti].filter((s) => s !== undefined).length;
  if (sources > 1) throw new UsageError(cmd, 'give at most one of --cert, --public and --tcti');
  if (ekKind !== undefined && (cert !== undefined || pub !== undefined)) {
    throw new UsageError(cmd, '--ek-kind applies only when reading from a TPM (--tcti)');
  }
  if (ekKind !== undefined && !(EK_KINDS as readonly string[]).includes(ekKind)) {
    throw new UsageError(cmd, `--ek-kind must be one of ${EK_KINDS.join(', ')}, got "${ekKind}"`);
  }

  let result: EkHashResult;
  if (cert !== undefined) {
    result = ekHashFromCertificate(await read(io, cert, 'EK certificate'));
  } else if (pub !== undefined) {
    result = ekHashFromPublic(await read(io, pub, 'EK public area'));
  } else {
    const tctiText = tcti ?? DEFAULT_TCTI;
    try {
      parseTcti(tctiText);
    } catch (err) {
      throw new UsageError(cmd, `--tcti: ${(err as Error).message}`);
    }
    io.stderr(`reading EK from TPM ${tctiText}…\n`);
    const device = new Tpm2Tools({ tcti: tctiText });
    try {
      result = await ekHashFromTpm(device, {
        kind: (ekKind ?? 'auto') as EkKind | 'auto',
        progress: (message) => io.stderr(`${message}\n`),
      });
    } finally {
      device.close();
    }
  }
  io.stdout(values['json'] ? json(result) : `${result.pub_hash}\n`);
  return EXIT_OK;
}

async function eventlogInspect(args: readonly string[], io: CliIo): Promise<number> {
  const cmd = 'eventlog inspect';
  const { values, positionals } = parse(cmd, args, { json: { type: 'boolean' }, pcrs: { type: 'string' } }, 1);
  if (values['help']) return help(io, cmd);
  const file = positionals[0];
  if (file === undefined) throw new UsageError(cmd, 'missing the event log FILE');
  const pcrsPath = str(values, 'pcrs');
  if (pcrsPath === '') throw new UsageError(cmd, '--pcrs needs a PCR values FILE');
  const bytes = await readEventLog(io, file);
  const pcrs = pcrsPath === undefined ? undefined : { source: pcrsPath, values: parsePcrValuesFile(await read(io, pcrsPath, 'PCR values file'), pcrsPath) };
  const options = pcrs === undefined ? {} : { pcrs };
  const inspection = inspectEventLog(bytes, { json: true, ...options });
  io.stdout(values['json'] ? json(inspection) : formatInspection(inspection));
  // Like a policy check that does not pass: a replay tpm-server would refuse is a failure (exit 1, report on stdout).
  return inspection.replay === undefined || inspection.replay.result === 'match' ? EXIT_OK : EXIT_FAILURE;
}

function parsePcrList(command: string, text: string): number[] {
  if (!/^\d{1,2}(,\d{1,2})*$/.test(text.trim())) {
    throw new UsageError(command, `--pcrs must be comma-separated PCR indices such as 0,2,4,7, got "${text}"`);
  }
  const indices = text.trim().split(',').map(Number);
  const bad = indices.find((i) => i > 23);
  if (bad !== undefined) throw new UsageError(command, `--pcrs: PCR index ${bad} is not 0..23`);
  return indices;
}

function parseBankList(command: string, text: string): string[] {
  const banks = text.split(',').map((b) => b.trim().toLowerCase());
  for (const bank of banks) {
    try {
      HashAlg.parse(bank);
    } catch {
      throw new UsageError(command, `--banks: unknown PCR bank "${bank}" (use sha1, sha256, sha384 or sha512)`);
    }
  }
  return banks;
}

async function policyCreate(args: readonly string[], io: CliIo): Promise<number> {
  const cmd = 'policy create';
  const { values } = parse(
    cmd,
    args,
    {
      'from-eventlog': { type: 'string' },
      pcrs: { type: 'string' },
      banks: { type: 'string' },
      name: { type: 'string' },
      out: { type: 'string' },
      force: { type: 'boolean' },
    },
    0,
  );
  if (values['help']) return help(io, cmd);
  const logPath = required(cmd, values, 'from-eventlog');
  const pcrsText = str(values, 'pcrs');
  const pcrs = pcrsText === undefined ? DEFAULT_POLICY_PCRS : parsePcrList(cmd, pcrsText);
  const banksText = str(values, 'banks');
  const banks = banksText === undefined ? DEFAULT_POLICY_BANKS : parseBankList(cmd, banksText);
  const name = str(values, 'name') ?? DEFAULT_POLICY_NAME;
  const out = str(values, 'out');
  const force = values['force'] === true;
  if (force && out === undefined) throw new UsageError(cmd, '--force applies only with --out');
  const text = createPolicyCommand(await readEventLog(io, logPath), { name, pcrs, banks });
  if (out === undefined) {
    io.stdout(text);
  } else {
    try {
      await io.writeFile(out, text, force);
    } catch (err) {
      const errno = (err as NodeJS.ErrnoException).code;
      if (errno === 'EEXIST') {
        // A policy file is reviewed before it is rolled out: never replace one silently.
        throw new PreconditionFailed('ERR_CLI_OUT_EXISTS', `${out} already exists; pass --force to replace it`, { fields: { path: out } });
      }
      throw new PreconditionFailed('ERR_FILE_WRITE', `cannot write ${out}: ${ERRNO_TEXT[errno ?? ''] ?? (err as Error).message}${errno ? ` (${errno})` : ''}`, {
        fields: { path: out },
      });
    }
    io.stderr(`wrote policy "${name}" (PCRs ${pcrs.join(',')} in ${banks.join(',')}) to ${out}\n`);
  }
  return EXIT_OK;
}

/** A bad --pcrs value is a usage error (exit 2), found before any file is read. */
function checkPcrSpec(command: string, text: string): void {
  const trimmed = text.trim();
  if (trimmed === '') throw new UsageError(command, '--pcrs is empty');
  if (/^[0-9,]+$/.test(trimmed)) {
    parsePcrList(command, trimmed);
    return;
  }
  try {
    PcrSelection.parse(trimmed);
  } catch (err) {
    throw new UsageError(command, `--pcrs: ${(err as Error).message} (use "0,2,4,7" or "sha256:0,2,4,7")`);
  }
}

async function policyCheck(args: readonly string[], io: CliIo): Promise<number> {
  const cmd = 'policy check';
  const { values } = parse(
    cmd,
    args,
    {
      policy: { type: 'string' },
      eventlog: { type: 'string' },
      pcrs: { type: 'string' },
      match: { type: 'string' },
      json: { type: 'boolean' },
    },
    0,
  );
  if (values['help']) return help(io, cmd);
  const policyPath = required(cmd, values, 'policy');
  const logPath = required(cmd, values, 'eventlog');
  const match = str(values, 'match') ?? 'any';
  if (match !== 'any' && match !== 'all') throw new UsageError(cmd, `--match must be any or all, got "${match}"`);
  const pcrs = str(values, 'pcrs');
  if (pcrs !== undefined) checkPcrSpec(cmd, pcrs);
  const policyText = Buffer.from(await read(io, policyPath, 'policy file')).toString('utf8');
  const logBytes = await readEventLog(io, logPath);
  let result;
  try {
    result = checkPoliciesOffline(policyText, logBytes, { match: match as PolicyMatchMode, ...(pcrs !== undefined ? { pcrs } : {}) });
  } catch (err) {
    // Name the file: "policies.0.secureboot" alone does not say which file.
    if (err instanceof InvalidConfig && err.code === 'ERR_POLICY_INVALID') {
      throw new InvalidConfig(err.code, `${policyPath}: ${err.message}`, { fields: { ...err.fields, file: policyPath }, cause: err });
    }
    throw err;
  }
  if (values['json']) {
    io.stderr(`${OFFLINE_NOTICE}\n`);
    io.stdout(json(result));
  } else {
    io.stdout(formatPolicyCheck(result));
  }
  return result.passed ? EXIT_OK : EXIT_FAILURE;
}

const EK_HASH = /^[0-9a-f]{64}$/;

async function enrolListCommand(args: readonly string[], io: CliIo): Promise<number> {
  const cmd = 'enrol list';
  const { values } = parse(cmd, args, { store: { type: 'string' }, state: { type: 'string' }, json: { type: 'boolean' } }, 0);
  if (values['help']) return help(io, cmd);
  const store = required(cmd, values, 'store');
  const state = str(values, 'state');
  if (state !== undefined && state !== 'pending' && state !== 'approved' && state !== 'revoked') throw new UsageError(cmd, `--state must be pending, approved or revoked, got "${state}"`);
  const rows = await enrolList(store, state);
  io.stdout(values['json'] ? json(rows) : formatEnrolList(rows));
  return EXIT_OK;
}

function enrolSetCommand(to: 'approved' | 'revoked'): Command {
  const cmd = to === 'approved' ? 'enrol approve' : 'enrol revoke';
  return async (args, io) => {
    const { values, positionals } = parse(cmd, args, { store: { type: 'string' }, note: { type: 'string' } }, 1);
    if (values['help']) return help(io, cmd);
    const store = required(cmd, values, 'store');
    const hash = positionals[0]?.toLowerCase();
    if (!hash || !EK_HASH.test(hash)) throw new UsageError(cmd, 'expected EK_HASH: 64 hex digits (spire-edge-attest ek-hash)');
    const { from, record } = await enrolSet(store, hash, to, str(values, 'note'));
    io.stdout(`${hash}: ${from} -> ${record.state}\n`);
    return EXIT_OK;
  };
}

function help(io: CliIo, command: string): number {
  io.stdout(HELP[command] ?? HELP['']!);
  return EXIT_OK;
}

type Command = (args: readonly string[], io: CliIo) => Promise<number>;

const COMMANDS: Readonly<Record<string, Command>> = {
  'ek-hash': ekHash,
  'eventlog inspect': eventlogInspect,
  'policy create': policyCreate,
  'policy check': policyCheck,
  'enrol list': enrolListCommand,
  'enrol approve': enrolSetCommand('approved'),
  'enrol revoke': enrolSetCommand('revoked'),
};
const GROUPS: Readonly<Record<string, readonly string[]>> = { eventlog: ['inspect'], policy: ['create', 'check'], enrol: ['list', 'approve', 'revoke'] };

/** Finds the command named by the leading words of argv; returns its name and the remaining arguments. */
function route(argv: readonly string[]): { name: string; rest: readonly string[] } {
  const [first, second] = argv;
  if (first === undefined) throw new UsageError('', 'missing command');
  if (first === '-h' || first === '--help') return { name: 'help', rest: [] };
  if (first === '-V' || first === '--version') return { name: 'version', rest: argv.slice(1) };
  if (first === 'help') return { name: 'help', rest: argv.slice(1) };
  if (first in COMMANDS) return { name: first, rest: argv.slice(1) };
  const sub = GROUPS[first];
  if (sub) {
    if (second === '-h' || second === '--help') return { name: 'help', rest: [first] };
    if (second === undefined) throw new UsageError('', `missing subcommand: ${first} ${sub.join(' | ')}`);
    if (!sub.includes(second)) throw new UsageError('', `unknown command "${first} ${second}" (${first} ${sub.join(' | ')})`);
    return { name: `${first} ${second}`, rest: argv.slice(2) };
  }
  throw new UsageError('', `unknown command "${first}"`);
}

function groupHelp(group: string): string {
  const lines = Object.keys(COMMANDS)
    .filter((name) => name.startsWith(`${group} `))
    .map((name) => HELP[name]!.split('\n')[0]!);
  return `${lines.join('\n')}\n\nRun '${PROGRAM} ${group} <command> --help' for a command's options.\n`;
}

/** Runs the CLI; resolves to the exit code. Never throws. */
export async function main(argv: readonly string[], io: CliIo = defaultIo()): Promise<number> {
  try {
    const { name, rest } = route(argv);
    if (name === 'help') {
      const topic = rest.join(' ');
      if (topic in GROUPS) io.stdout(groupHelp(topic));
      else if (topic === '' || topic in HELP) io.stdout(HELP[topic]!);
      else throw new UsageError('', `no help for "${topic}"`);
      return EXIT_OK;
    }
    if (name === 'version') {
      if (rest.length > 0) throw new UsageError('', `--version takes no arguments, got "${rest[0]}"`);
      io.stdout(`${PROGRAM} ${VERSION} (${PRODUCT}; node ${process.version})\n`);
      return EXIT_OK;
    }
    return await COMMANDS[name]!(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      const usage = (HELP[err.command] ?? HELP['']!).split('\n')[0]!;
      io.stderr(`${PROGRAM}: ${err.message}\n${usage}\nRun '${PROGRAM} ${err.command ? `${err.command} ` : ''}--help' for more.\n`);
      return EXIT_USAGE;
    }
    const code = isAttestorError(err) ? ` [${err.code}]` : '';
    io.stderr(`${PROGRAM}: error${code}: ${(err as Error)?.message ?? String(err)}\n`);
    return EXIT_FAILURE;
  }
}
