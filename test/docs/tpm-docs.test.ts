/**
 * Keeps docs/tpm-node-attestor.md honest: its configuration tables list exactly the keys of the zod schemas (with the
 * schema defaults), its example plugin_data blocks decode as SPIRE would send them and validate, its example policy
 * parses, and its selector table covers exactly what nodeSelectors emits.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { agentConfigSchema } from '../../src/nodeattestor/agent.js';
import { LEGACY_AGENT_SELECTOR } from '../../src/nodeattestor/legacy-attest.js';
import { nodeSelectors } from '../../src/nodeattestor/selectors.js';
import { serverConfigSchema } from '../../src/nodeattestor/server.js';
import { parseConfig } from '../../src/plugin/config-schema.js';
import { decodePluginData } from '../../src/plugin/hcl.js';
import { parsePolicyFile } from '../../src/policy/policy.js';
import { deriveBootFacts } from '../../src/tpm/bootfacts.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import type { QuotedPcrs } from '../../src/tpm/quote.js';
import { computePcrs, replayEventLog } from '../../src/tpm/replay.js';
import { repoRoot } from '../helpers/binaries.js';

const DOC = readFileSync(`${repoRoot}docs/tpm-node-attestor.md`, 'utf8');

/** The text of a section, from its heading line to the next heading of the same or a higher level. */
function section(heading: string): string {
  const lines = DOC.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  if (start < 0) throw new Error(`docs/tpm-node-attestor.md has no heading "${heading}"`);
  const level = heading.indexOf(' ');
  let end = start + 1;
  while (end < lines.length) {
    const m = /^(#+) /.exec(lines[end]!);
    if (m && m[1]!.length <= level) break;
    end++;
  }
  return lines.slice(start + 1, end).join('\n');
}

/** Rows of the first Markdown table in `text`, as cells, without the header and separator rows. */
function tableRows(text: string): string[][] {
  const rows = text
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .map((l) =>
      l
        .slice(1, l.endsWith('|') ? -1 : undefined)
        .split(/(?<!\\)\|/)
        .map((c) => c.trim()),
    );
  return rows.slice(2);
}

const backticked = (cell: string): string | undefined => /^`([^`]+)`$/.exec(cell)?.[1];

interface DocKey {
  readonly key: string;
  readonly type: string;
  readonly default: string;
}

function docConfigKeys(heading: string): DocKey[] {
  return tableRows(section(heading)).map(([key, type, def]) => {
    const name = backticked(key ?? '');
    if (name === undefined) throw new Error(`${heading}: first cell "${key}" is not a \`key\``);
    return { key: name, type: type ?? '', default: def ?? '' };
  });
}

type AnySchema = z.ZodType & { _zod: { def: Record<string, unknown> } };

/** Every key of an object schema, nested block keys as `parent.child`, looking through optional/default/pipe. */
function schemaKeys(schema: AnySchema, prefix = ''): string[] {
  const def = schema._zod.def;
  switch (def['type']) {
    case 'optional':
    case 'default':
    case 'nullable':
      return schemaKeys(def['innerType'] as AnySchema, prefix);
    case 'pipe':
      return schemaKeys(def['out'] as AnySchema, prefix);
    case 'object': {
      const shape = def['shape'] as Record<string, AnySchema>;
      return Object.entries(shape).flatMap(([key, child]) => {
        const path = prefix ? `${prefix}.${key}` : key;
        return [path, ...schemaKeys(child, path)];
      });
    }
    default:
      return [];
  }
}

function shapeOf(schema: AnySchema): Record<string, AnySchema> {
  return schema._zod.def['shape'] as Record<string, AnySchema>;
}

/** The body of the `plugin_data { ... }` block inside an HCL text (quote-aware brace matching). */
function pluginDataBody(hcl: string): string {
  const open = /plugin_data\s*\{/.exec(hcl);
  if (!open) throw new Error('no plugin_data block');
  let depth = 1;
  let inString = false;
  for (let i = open.index + open[0].length; i < hcl.length; i++) {
    const c = hcl[i]!;
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return hcl.slice(open.index + open[0].length, i);
  }
  throw new Error('unterminated plugin_data block');
}

function codeBlock(text: string, lang: string): string {
  const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(text);
  if (!m) throw new Error(`no \`\`\`${lang} block`);
  return m[1]!;
}

describe.each([
  { side: 'server', heading: '## Server configuration', schema: serverConfigSchema as unknown as AnySchema },
  { side: 'agent', heading: '## Agent configuration', schema: agentConfigSchema as unknown as AnySchema },
])('$side configuration table', ({ heading, schema }) => {
  const docKeys = docConfigKeys(heading);

  it('lists every schema key, and only schema keys', () => {
    const fromDoc = docKeys.map((k) => k.key).sort();
    expect(new Set(fromDoc).size).toBe(fromDoc.length);
    expect(fromDoc).toEqual(schemaKeys(schema).sort());
  });

  it('gives each schema default as a literal that decodes (HCL) to the same value', async () => {
    const shape = shapeOf(schema);
    for (const { key, default: docDefault } of docKeys) {
      const field = shape[key];
      if (!field) continue; // nested keys (tpm.work_dir) have no schema default
      const schemaDefault = field.safeParse(undefined);
      const hasDefault = schemaDefault.success && schemaDefault.data !== undefined;
      const literal = backticked(docDefault);
      if (!hasDefault) {
        expect(literal, `${key}: the schema has no default, the doc must not show a literal one`).toBeUndefined();
        continue;
      }
      expect(literal, `${key}: the doc must show the schema default as a \`literal\``).toBeDefined();
      const decoded = await decodePluginData(`${key} = ${literal}`);
      expect(field.parse(decoded[key]), `${key}: documented default ${literal}`).toEqual(schemaDefault.data);
    }
  });
});

describe('example configuration', () => {
  it.each([
    { block: '### server.conf', schema: serverConfigSchema as unknown as AnySchema, cmd: 'tpm-server' },
    { block: '### agent.conf', schema: agentConfigSchema as unknown as AnySchema, cmd: 'tpm-agent' },
  ])('$block: a NodeAttestor "tpm" block whose plugin_data decodes and validates', async ({ block, schema, cmd }) => {
    const hcl = codeBlock(section(block), 'hcl');
    expect(hcl).toMatch(/NodeAttestor "tpm" \{/);
    expect(hcl).toMatch(new RegExp(`plugin_cmd = ".*/${cmd}"`));
    expect(hcl).toMatch(/plugin_checksum = "/);
    // SPIRE re-prints the plugin_data block as HCL; the runtime decodes it and strips log_level before the schema.
    const { log_level: _logLevel, ...raw } = await decodePluginData(pluginDataBody(hcl));
    expect(Object.keys(raw).length).toBeGreaterThan(2);
    expect(() => parseConfig(schema, raw, block)).not.toThrow();
  });

  it('the example policy file parses', () => {
    const policies = parsePolicyFile(codeBlock(section('## Policy file'), 'yaml'));
    expect(policies.map((p) => p.name)).toEqual(['golden-node', 'lab-machines']);
    expect(policies[0]!.secureBoot).toBe(true);
  });
});

describe('selectors table', () => {
  const rows = tableRows(section('## Selectors')).map(([selector, example]) => {
    const pattern = backticked(selector ?? '');
    if (pattern === undefined) throw new Error(`selector cell "${selector}" is not a \`selector\``);
    return { prefix: pattern.includes('<') ? pattern.slice(0, pattern.indexOf('<')) : pattern, example: backticked(example ?? '') ?? '' };
  });

  it('covers exactly the selector types nodeSelectors emits from verified data', () => {
    const log = parseEventLog(readFileSync(`${repoRoot}test/fixtures/eventlog/gtt-cos-85-amd-sev.bin`));
    const computed = computePcrs(log);
    const facts = deriveBootFacts(replayEventLog(log, { values: computed }, { quirks: [] }));
    const quoted = { bank: (name: string) => computed.get(name) ?? new Map() } as unknown as QuotedPcrs;
    // A spire-tpm-plugin agent gets ekSelectors plus legacy_agent:true (legacy-attest.ts).
    const selectors = [...nodeSelectors({
      ek: {
        pubHash: 'de6a6ba0564fc32ed137b2e2c97b39c741e87a3fbbb80bc9092b75b6dc8a2aab',
        spki: new Uint8Array(),
        via: 'certificate',
        certificate: {
          manufacturer: 'id:53544D20',
          model: 'ST33HTPHAHB4',
          version: 'id:00490004',
          rootSubjectCn: 'STM TPM EK Root CA',
          gce: { projectId: 'my-project', projectNumber: '117478743145', zone: 'us-central1-a', instanceId: '4567890123456789012', instanceName: 'edge-1' },
        },
      },
      quoted,
      selectorPcrs: undefined,
      facts,
      passedPolicies: ['golden-node'],
    }), LEGACY_AGENT_SELECTOR];
    const prefixes = rows.map((r) => r.prefix);
    for (const value of selectors) {
      expect(prefixes.some((p) => value.startsWith(p)), `selector "${value}" is not documented`).toBe(true);
    }
    for (const prefix of prefixes) {
      expect(selectors.some((v) => v.startsWith(prefix)), `documented selector "${prefix}…" is never emitted`).toBe(true);
    }
  });

  it('each example is the plugin name "tpm" plus a value of its row', () => {
    for (const { prefix, example } of rows) expect(example.startsWith(`tpm:${prefix}`), example).toBe(true);
  });
});
