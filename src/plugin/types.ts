/**
 * The contract between the SPIRE runtime (src/plugin/) and the attestors built on it.
 * Attestor code implements one of the interfaces below and knows nothing about gRPC:
 * the runtime owns the wire, the streams, cancellation and the mapping of errors to statuses.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** hclog-JSON logger on stderr (see src/plugin/log.ts). */
export interface Logger {
  trace(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger whose lines carry `@module` = `<parent>.<name>`. */
  named(name: string): Logger;
  setLevel(level: LogLevel): void;
}

/** SPIRE's core configuration, delivered with every Configure call. */
export interface CoreConfig {
  /** Bare trust domain name, e.g. "example.org". */
  readonly trustDomain: string;
}

export type MetricLabels = Readonly<Record<string, string>>;

/** Samples for SPIRE's telemetry (src/plugin/metrics.ts). */
export interface Metrics {
  /** Adds `value` (default 1) to the counter `key`. */
  incrCounter(key: readonly string[], labels?: MetricLabels, value?: number): void;
  /** Records the time since `startedAtMs` (epoch milliseconds) as a sample of `key`. */
  measureSince(key: readonly string[], startedAtMs: number, labels?: MetricLabels): void;
}

/** Host services SPIRE serves back to the plugin through the go-plugin broker (service ID 1). */
export interface HostServices {
  /** Names SPIRE announced in Init. */
  readonly names: readonly string[];
  /**
   * AgentStore (server only). Resolves to whether an attested-node record exists for the agent ID.
   * Throws NotConfigured when SPIRE did not offer the service.
   */
  agentExists(agentId: string, signal?: AbortSignal): Promise<boolean>;
  /** SPIRE's Metrics host service (fire and forget; a no-op when SPIRE did not offer it). */
  readonly metrics?: Metrics;
}

export interface PluginContext {
  readonly log: Logger;
  readonly host: HostServices;
}

/** Every plugin takes its config from Configure. */
export interface Configurable {
  /**
   * `raw` is the decoded plugin_data (HCL1 or JSON) as a plain object: `{}` when SPIRE sent "".
   * Validate everything here and throw InvalidConfig naming the key, so SPIRE refuses to start.
   * May be called again at run time (SIGUSR1 with a changed plugin_data_file): swap atomically.
   */
  configure(raw: Record<string, unknown>, core: CoreConfig): Promise<void>;
  /**
   * Optional: `spire-server validate` (SPIRE >= 1.14). Check without applying: throw InvalidConfig for a bad
   * configuration (the runtime turns it into a note), return extra notes (warnings), or [] when valid.
   */
  validate?(raw: Record<string, unknown>, core: CoreConfig): Promise<string[]>;
  /** Called at Deinit and before Shutdown: release timers, sockets, child processes. */
  close?(): Promise<void>;
}

// ---- Server NodeAttestor ----------------------------------------------------

export interface AgentAttributes {
  readonly spiffeId: string;
  readonly selectorValues: readonly string[];
  readonly canReattest: boolean;
}

export interface ServerAttestIo {
  /** Sends a challenge to the agent and resolves with its response bytes. */
  challenge(bytes: Uint8Array): Promise<Uint8Array>;
  /** Aborted when SPIRE cancels the stream. */
  readonly signal: AbortSignal;
  /** Unauthenticated hints from SPIRE's stream metadata (never trust these). */
  readonly untrustedForwardedHost?: string;
  readonly untrustedClientIp?: string;
}

export interface ServerNodeAttestor extends Configurable {
  /** `payload` is the agent's first message (never empty). Return the attributes or throw. */
  attest(payload: Uint8Array, io: ServerAttestIo): Promise<AgentAttributes>;
}

// ---- Agent NodeAttestor -----------------------------------------------------

export interface AgentAttestationSession {
  /** The payload sent to the server unprompted. */
  readonly payload: Uint8Array;
  /** Answers one server challenge. */
  respond(challenge: Uint8Array): Promise<Uint8Array>;
  /** Called once when the stream ends (success, error or cancel). */
  close?(): Promise<void>;
}

export interface AgentNodeAttestor extends Configurable {
  begin(signal: AbortSignal): Promise<AgentAttestationSession>;
}

// ---- Agent WorkloadAttestor -------------------------------------------------

export interface WorkloadAttestor extends Configurable {
  /**
   * Selector values (without the plugin-name prefix) for the process. A process that is not ours
   * (not in a container, the agent itself) gets [] quickly. Honour `signal`.
   */
  attest(pid: number, signal: AbortSignal): Promise<string[]>;
}

/** What a plugin binary serves; `create` runs after the handshake, with the runtime's context. */
export type PluginDefinition =
  | { readonly type: 'NodeAttestor'; readonly role: 'server'; create(ctx: PluginContext): ServerNodeAttestor }
  | { readonly type: 'NodeAttestor'; readonly role: 'agent'; create(ctx: PluginContext): AgentNodeAttestor }
  | { readonly type: 'WorkloadAttestor'; readonly role: 'agent'; create(ctx: PluginContext): WorkloadAttestor };

export type PluginType = PluginDefinition['type'];
