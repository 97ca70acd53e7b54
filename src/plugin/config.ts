/**
 * SPIRE's Config service: decodes plugin_data (HCL1 or JSON), applies the runtime's own
 * `log_level`, validates the trust domain and hands the rest to the plugin's typed schema.
 */
import type * as grpc from '@grpc/grpc-js';
import { GrpcCode, InvalidConfig, InvalidConfigList, isAttestorError } from '../errors.js';
import { TrustDomain } from '../spiffe/trust-domain.js';
import { unary } from './handlers.js';
import { decodePluginData } from './hcl.js';
import { isLogLevel } from './log.js';
import { serviceDefinition, ServiceNames } from './protos.js';
import type { Configurable, CoreConfig, LogFields, Logger, LogLevel } from './types.js';

interface ConfigureRequest {
  core_configuration: { trust_domain: string } | null;
  hcl_configuration: string;
}

interface Decoded {
  readonly core: CoreConfig;
  readonly raw: Record<string, unknown>;
  readonly logLevel: LogLevel | undefined;
}

async function decode(request: ConfigureRequest): Promise<Decoded> {
  const trustDomain = request.core_configuration?.trust_domain ?? '';
  if (trustDomain === '') throw new InvalidConfig('ERR_CONFIG_TRUST_DOMAIN', 'core configuration is missing the trust domain');
  const core: CoreConfig = { trustDomain: TrustDomain.parse(trustDomain).name };
  const { log_level: logLevel, ...raw } = await decodePluginData(request.hcl_configuration);
  if (logLevel !== undefined && !isLogLevel(logLevel)) {
    throw new InvalidConfig('ERR_CONFIG_INVALID', 'key "log_level": expected one of trace, debug, info, warn, error');
  }
  return { core, raw, logLevel: logLevel === undefined ? undefined : ((logLevel as string).toLowerCase() as LogLevel) };
}

export class ConfigService {
  readonly #plugin: Configurable;
  readonly #log: Logger;
  readonly #about: (() => Promise<LogFields>) | undefined;
  #configured = false;

  /** `about`: what the plugin is (name, version, Node, build checksum), logged first at every Configure. */
  constructor(plugin: Configurable, log: Logger, about?: () => Promise<LogFields>) {
    this.#plugin = plugin;
    this.#log = log;
    this.#about = about;
  }

  get configured(): boolean {
    return this.#configured;
  }

  addToServer(server: grpc.Server): void {
    server.addService(serviceDefinition(ServiceNames.config), {
      Configure: unary<ConfigureRequest, object>(this.#log, 'Configure', async (request) => {
        if (this.#about) this.#log.info('Configuring plugin', await this.#about());
        const { core, raw, logLevel } = await decode(request);
        await this.#plugin.configure(raw, core);
        if (logLevel) this.#log.setLevel(logLevel);
        this.#configured = true;
        this.#log.info('Plugin configured', { trust_domain: core.trustDomain, keys: Object.keys(raw).sort().join(',') });
        return {};
      }),
      Validate: unary<ConfigureRequest, object>(this.#log, 'Validate', async (request) => {
        try {
          const { core, raw } = await decode(request);
          const notes = this.#plugin.validate ? await this.#plugin.validate(raw, core) : [];
          return { valid: notes.length === 0, notes };
        } catch (err) {
          // Invalid configuration is Validate's answer, not its failure.
          if (err instanceof InvalidConfigList) return { valid: false, notes: [...err.problems] };
          if (isAttestorError(err) && err.grpcCode === GrpcCode.INVALID_ARGUMENT) return { valid: false, notes: [err.message] };
          throw err;
        }
      }),
    });
  }
}
