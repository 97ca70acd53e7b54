/**
 * docs/cli.md is the CLI's contract: every line of its "Examples" block runs against the built binary, in order,
 * from a scratch directory holding the repository's test/ folder, and must exit as the line says. Errors must have
 * the documented form `spire-edge-attest: error [ERR_CODE]: …`, usage errors the usage line, and the examples must
 * cover every command of the synopsis and every documented exit code.
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';
import { runCli } from '../cli/run-cli.js';

const DOC = readFileSync(`${repoRoot}docs/cli.md`, 'utf8');

interface Example {
  readonly line: string;
  readonly args: string[];
  readonly exit: number;
  /** `ERR_…` for an error line, `FAIL` for a policy check that does not pass. */
  readonly expect: string | undefined;
}

function examples(): Example[] {
  const section = DOC.slice(DOC.indexOf('\n## Examples\n'));
  const block = /```sh\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error('docs/cli.md has no ```sh block under "## Examples"');
  return block[1]!
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const m = /^spire-edge-attest((?: \S+)*)\s+# exit (\d)(?: (ERR_[A-Z0-9_]+|FAIL))?\s*$/.exec(line.trim());
      if (!m) throw new Error(`docs/cli.md example does not read "spire-edge-attest … # exit N [ERR_…|FAIL]": ${line}`);
      return { line: line.trim(), args: m[1]!.trim().split(/\s+/).filter(Boolean), exit: Number(m[2]), expect: m[3] };
    });
}

/** The exit codes of the documented table. */
function documentedExitCodes(): number[] {
  return [...DOC.matchAll(/^\| `(\d)` \|/gm)].map((m) => Number(m[1]));
}

let scratch: string;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'cli-doc-'));
  symlinkSync(join(repoRoot, 'test'), join(scratch, 'test'));
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('docs/cli.md examples', () => {
  const all = examples();

  it('runs every example with the documented exit code and output form', async () => {
    expect(all.length).toBeGreaterThan(10);
    for (const ex of all) {
      const res = await runCli(ex.args, { cwd: scratch });
      expect({ line: ex.line, code: res.code }, res.stderr).toEqual({ line: ex.line, code: ex.exit });
      if (ex.exit === 0) {
        expect(res.stderr, ex.line).not.toMatch(/error/);
        expect(res.stdout.length + res.stderr.length, ex.line).toBeGreaterThan(0);
        if (ex.args.includes('--json')) expect(() => JSON.parse(res.stdout), ex.line).not.toThrow();
      } else if (ex.exit === 1 && ex.expect === 'FAIL') {
        expect(res.stdout, ex.line).toMatch(/^FAIL /m);
        expect(res.stderr, ex.line).not.toMatch(/error/);
      } else if (ex.exit === 1) {
        expect(ex.expect, `${ex.line}: an exit 1 example names its error code`).toMatch(/^ERR_/);
        expect(res.stderr, ex.line).toMatch(new RegExp(`^spire-edge-attest: error \\[${ex.expect}\\]: \\S`, 'm'));
        // A raw errno alone ("ENOENT") is not a message.
        expect(res.stderr, ex.line).not.toMatch(/error \[[A-Z_]+\]: E[A-Z]+$/m);
      } else {
        expect(res.stderr, ex.line).toMatch(/^Usage: spire-edge-attest/m);
      }
    }
  }, 120_000);

  it('cover every command of the synopsis and every documented exit code', () => {
    const synopsis = /```\n(spire-edge-attest [\s\S]*?)```/.exec(DOC)![1]!;
    const commands = synopsis
      .split('\n')
      .filter((l) => /^spire-edge-attest [a-z]/.test(l))
      .map((l) => l.replace(/^spire-edge-attest /, '').split(' [')[0]!.split(' --')[0]!.trim());
    expect(commands).toEqual(['ek-hash', 'eventlog inspect FILE', 'policy create', 'policy check', 'enrol list', 'enrol approve|revoke EK_HASH']);
    for (const command of commands.map((c) => c.replace(' FILE', '').replace(' EK_HASH', '').replace('approve|revoke', 'approve'))) {
      expect(all.some((e) => e.args.join(' ').startsWith(command)), command).toBe(true);
    }
    expect(all.some((e) => e.args[0] === '--version')).toBe(true);
    expect(all.some((e) => e.args.includes('--help'))).toBe(true);
    expect(new Set(all.map((e) => e.exit))).toEqual(new Set(documentedExitCodes()));
  });

  it('the documented options are the ones each command accepts (its --help lists them)', async () => {
    const synopsis = /```\n(spire-edge-attest [\s\S]*?)```/.exec(DOC)![1]!;
    for (const line of synopsis.split('\n').filter((l) => /^spire-edge-attest [a-z]/.test(l))) {
      const words = line.replace(/^spire-edge-attest /, '').split(' ');
      const command = words[0] === 'eventlog' || words[0] === 'policy' ? words.slice(0, 2) : words.slice(0, 1);
      const help = await runCli([...command, '--help']);
      expect(help.code).toBe(0);
      for (const option of new Set(line.match(/--[a-z-]+/g) ?? [])) expect(help.stdout, `${command.join(' ')} ${option}`).toContain(option);
    }
  });
});
