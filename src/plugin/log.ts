/**
 * hclog-compatible JSON logging on stderr, one object per line.
 * go-plugin parses each stderr line: `@message` and `@level` must be strings and `@timestamp`
 * must have exactly six fractional digits, or SPIRE logs the raw line at DEBUG (or worse).
 */
import type { LogFields, Logger, LogLevel } from './types.js';

const LEVELS: Readonly<Record<LogLevel, number>> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 };
/** go-plugin reads stderr with a 64 KiB line buffer; stay well below it. */
const MAX_LINE_BYTES = 60 * 1024;
const MAX_FIELD_CHARS = 4096;

export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && Object.hasOwn(LEVELS, value.toLowerCase());
}

/** `2006-01-02T15:04:05.000000Z`: hclog's JSON layout needs microseconds, Date gives milliseconds. */
export function hclogTimestamp(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export type LineSink = (line: string) => void;

const stderrSink: LineSink = (line) => {
  // On Linux, writes to a pipe are synchronous, so lines are not lost at process.exit.
  process.stderr.write(line);
};

interface LoggerState {
  level: number;
  readonly sink: LineSink;
  readonly now: () => Date;
}

class HclogLogger implements Logger {
  readonly #state: LoggerState;
  readonly #module: string;

  constructor(state: LoggerState, module: string) {
    this.#state = state;
    this.#module = module;
  }

  trace(message: string, fields?: LogFields): void {
    this.#emit('trace', message, fields);
  }
  debug(message: string, fields?: LogFields): void {
    this.#emit('debug', message, fields);
  }
  info(message: string, fields?: LogFields): void {
    this.#emit('info', message, fields);
  }
  warn(message: string, fields?: LogFields): void {
    this.#emit('warn', message, fields);
  }
  error(message: string, fields?: LogFields): void {
    this.#emit('error', message, fields);
  }

  named(name: string): Logger {
    return new HclogLogger(this.#state, this.#module ? `${this.#module}.${name}` : name);
  }

  setLevel(level: LogLevel): void {
    this.#state.level = LEVELS[level];
  }

  #emit(level: LogLevel, message: string, fields?: LogFields): void {
    if (LEVELS[level] < this.#state.level) return;
    this.#state.sink(formatLine(level, message, this.#module, this.#state.now(), fields));
  }
}

/** Builds one hclog JSON line (with trailing newline). Exported for tests. */
export function formatLine(level: LogLevel, message: string, module: string, when: Date, fields?: LogFields): string {
  const entry: Record<string, string | number | boolean | null> = {
    '@level': level,
    '@message': String(message).slice(0, MAX_FIELD_CHARS * 4),
    '@module': module,
    '@timestamp': hclogTimestamp(when),
  };
  for (const [key, value] of Object.entries(fields ?? {})) {
    if (value === undefined || key.startsWith('@')) continue; // reserved keys stay ours and strings
    entry[key] = typeof value === 'string' ? value.slice(0, MAX_FIELD_CHARS) : value;
  }
  let line = JSON.stringify(entry);
  if (Buffer.byteLength(line) > MAX_LINE_BYTES) {
    line = JSON.stringify({
      '@level': level,
      '@message': String(message).slice(0, 1024),
      '@module': module,
      '@timestamp': entry['@timestamp'],
      truncated: true,
    });
  }
  return line + '\n';
}

export interface LoggerOptions {
  readonly module: string;
  readonly level?: LogLevel;
  readonly sink?: LineSink;
  readonly now?: () => Date;
}

export function createLogger(options: LoggerOptions): Logger {
  const envLevel = process.env['SPIRE_EDGE_LOG_LEVEL']?.toLowerCase();
  const level = options.level ?? (isLogLevel(envLevel) ? envLevel : 'info');
  return new HclogLogger(
    { level: LEVELS[level], sink: options.sink ?? stderrSink, now: options.now ?? (() => new Date()) },
    options.module,
  );
}
