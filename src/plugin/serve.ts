/**
 * servePlugin: everything SPIRE needs from an external plugin process.
 *
 * Order matters and follows go-plugin's Serve: the entry point has already checked the magic
 * cookie (cookie.ts); here we bind a plaintext gRPC server on a unix socket in a fresh 0700
 * directory, and only once it listens write the single handshake line to stdout. Nothing else
 * may ever reach stdout. Shutdown comes from GRPCController (or SIGTERM); SIGINT is ignored
 * because a terminal's Ctrl-C reaches SPIRE's whole process group.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  agentNodeAttestorService,
  serverNodeAttestorService,
  workloadAttestorService,
  type ServiceRegistration,
} from './attestor-services.js';
import { BrokerService } from './broker.js';
import { buildInfo } from './build-info.js';
import { ConfigService } from './config.js';
import { APP_PROTOCOL_VERSION, CORE_PROTOCOL_VERSION } from './cookie.js';
import { ControllerService } from './controller.js';
import { HealthService } from './health.js';
import { BrokeredHostServices } from './host-services.js';
import { InitService } from './init.js';
import { createLogger } from './log.js';
import { ServiceNames } from './protos.js';
import { StdioService } from './stdio.js';
import type { Configurable, Logger, PluginContext, PluginDefinition } from './types.js';

/** Event logs and IMA logs can be megabytes; go-plugin's client allows MaxInt32. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** SPIRE SIGKILLs 2 s after Shutdown; leave margin. */
const SHUTDOWN_GRACE_MS = 1_500;
/** AF_UNIX sun_path limit on Linux (108 bytes including the NUL). */
const MAX_SOCKET_PATH = 107;

export interface ServeOptions {
  /** hclog `@module` of the plugin's log lines, e.g. "tpm-server". */
  readonly module: string;
  readonly maxMessageBytes?: number;
  /** For in-process tests: do not exit the process at shutdown. */
  readonly exitOnShutdown?: boolean;
  /** Where the handshake line goes (default: fd 1). */
  readonly writeHandshake?: (line: string) => void;
  readonly logger?: Logger;
}

export interface RunningPlugin {
  readonly socketPath: string;
  readonly handshake: string;
  shutdown(): Promise<void>;
}

function socketDirectory(): string {
  // Go plugins honour PLUGIN_UNIX_SOCKET_DIR when the host environment carries it.
  const base = process.env['PLUGIN_UNIX_SOCKET_DIR'] || tmpdir();
  return mkdtempSync(join(base, 'plugin-')); // mkdtemp creates the directory 0700
}

function instantiate(
  definition: PluginDefinition,
  context: PluginContext,
  log: Logger,
): { impl: Configurable; registration: ServiceRegistration } {
  if (definition.type === 'WorkloadAttestor') {
    const impl = definition.create(context);
    return { impl, registration: workloadAttestorService(impl, log, context.host.metrics) };
  }
  if (definition.role === 'server') {
    const impl = definition.create(context);
    return { impl, registration: serverNodeAttestorService(impl, log, context.host.metrics) };
  }
  const impl = definition.create(context);
  return { impl, registration: agentNodeAttestorService(impl, log, context.host.metrics) };
}

export async function servePlugin(definition: PluginDefinition, options: ServeOptions): Promise<RunningPlugin> {
  const log = options.logger ?? createLogger({ module: options.module });
  const exitOnShutdown = options.exitOnShutdown ?? true;

  if (exitOnShutdown) {
    process.on('SIGINT', () => undefined);
    process.on('uncaughtException', (err) => {
      log.error('Uncaught exception in plugin; continuing', { error: err.message, stack: err.stack ?? '' });
    });
    process.on('unhandledRejection', (reason) => {
      log.error('Unhandled promise rejection in plugin; continuing', {
        error: reason instanceof Error ? reason.message : String(reason),
      });
    });
  }

  const maxBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': maxBytes,
    'grpc.max_send_message_length': maxBytes,
    // Per-call channelz bookkeeping costs CPU on the Workload API hot path and nothing reads it.
    'grpc.enable_channelz': 0,
  });

  const broker = new BrokerService(log);
  const host = new BrokeredHostServices(broker, log);
  const context: PluginContext = { log, host };
  const { impl, registration } = instantiate(definition, context, log);
  const stdio = new StdioService();

  let shuttingDown: Promise<void> | undefined;
  const dir = socketDirectory();
  const socketPath = join(dir, 'plugin.sock');

  const shutdown = (): Promise<void> => {
    shuttingDown ??= (async () => {
      log.debug('Plugin shutting down');
      const guard = exitOnShutdown ? setTimeout(() => process.exit(0), SHUTDOWN_GRACE_MS) : undefined;
      try {
        await impl.close?.();
      } catch (err) {
        log.warn('Error while closing plugin', { error: (err as Error).message });
      }
      host.close();
      stdio.closeAll();
      server.forceShutdown();
      rmSync(dir, { recursive: true, force: true });
      if (guard) clearTimeout(guard);
      if (exitOnShutdown) process.exit(0);
    })();
    return shuttingDown;
  };

  new HealthService().addToServer(server);
  broker.addToServer(server);
  new ControllerService(() => void shutdown()).addToServer(server);
  stdio.addToServer(server);
  new InitService({
    pluginServiceNames: [registration.serviceName, ServiceNames.config],
    onInit: (names) => host.setNames(names),
    onDeinit: async () => {
      await impl.close?.();
    },
    log,
  }).addToServer(server);
  // Fields copied into a plain record: LogFields is what the logger takes.
  new ConfigService(impl, log, async () => ({ ...(await buildInfo(options.module)) })).addToServer(server);
  registration.addToServer(server);

  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`plugin socket path ${socketPath} exceeds the unix socket limit; set a shorter TMPDIR`);
  }

  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });

  if (exitOnShutdown) process.on('SIGTERM', () => void shutdown());

  // go-plugin: CORE|APP|NETWORK|ADDR|PROTOCOL|SERVER_CERT, with an empty cert field as Go plugins print it.
  const handshake = `${CORE_PROTOCOL_VERSION}|${APP_PROTOCOL_VERSION}|unix|${socketPath}|grpc|\n`;
  (options.writeHandshake ?? ((line: string) => writeSync(1, line)))(handshake);
  log.debug('Plugin serving', { socket: socketPath, service: registration.serviceName });
  // Hash our own file now, off the handshake's critical path, so the first Configure does not wait for it.
  if (exitOnShutdown) setImmediate(() => void buildInfo(options.module));

  return { socketPath, handshake, shutdown };
}

/** Entry-point helper: serve, and on a startup failure log it as hclog JSON and exit 1. */
export function runPlugin(definition: PluginDefinition, module: string): void {
  servePlugin(definition, { module }).catch((err: unknown) => {
    createLogger({ module }).error('Plugin failed to start', { error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  });
}
