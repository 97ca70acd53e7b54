import { describe, expect, it } from 'vitest';
import { createLogger, formatLine, hclogTimestamp } from '../../src/plugin/log.js';
import { checkHclogLine } from '../helpers/plugin-harness.js';

describe('hclog JSON lines', () => {
  it('timestamps carry exactly six fractional digits (Go layout 2006-01-02T15:04:05.000000Z07:00)', () => {
    expect(hclogTimestamp(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 123)))).toBe('2026-01-02T03:04:05.123000Z');
  });

  it('reserved @ keys stay strings even if a caller passes fields with those names', () => {
    const line = formatLine('info', 'hello', 'm', new Date(0), { '@level': 5 as unknown as string, '@message': 'x', n: 3, ok: true });
    expect(checkHclogLine(line.trimEnd())).toBeUndefined();
    expect(JSON.parse(line)).toMatchObject({ '@level': 'info', '@message': 'hello', '@module': 'm', n: 3, ok: true });
  });

  it('huge messages are cut below go-plugin 64 KiB line buffer', () => {
    const line = formatLine('error', 'x'.repeat(200_000), 'm', new Date(0), { blob: 'y'.repeat(100_000) });
    expect(Buffer.byteLength(line)).toBeLessThan(64 * 1024);
    expect(checkHclogLine(line.trimEnd())).toBeUndefined();
  });

  it('filters by level and names modules', () => {
    const lines: string[] = [];
    const log = createLogger({ module: 'tpm', level: 'warn', sink: (l) => lines.push(l), now: () => new Date(0) });
    log.info('dropped');
    log.named('server').warn('kept', { node: 'n1' });
    log.setLevel('debug');
    log.debug('now kept');
    expect(lines.map((l) => JSON.parse(l)['@message'])).toEqual(['kept', 'now kept']);
    expect(JSON.parse(lines[0]!)['@module']).toBe('tpm.server');
  });
});
