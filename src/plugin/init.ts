/**
 * SPIRE's private Init service. Init carries the host service names and must answer exactly
 * the services this plugin implements (never Init itself); Deinit runs at unload.
 */
import type * as grpc from '@grpc/grpc-js';
import { unary } from './handlers.js';
import { serviceDefinition, ServiceNames } from './protos.js';
import type { Logger } from './types.js';

interface InitRequest {
  host_service_names: string[];
}

export class InitService {
  readonly #pluginServiceNames: readonly string[];
  readonly #onInit: (hostServiceNames: string[]) => void;
  readonly #onDeinit: () => Promise<void>;
  readonly #log: Logger;

  constructor(options: {
    pluginServiceNames: readonly string[];
    onInit: (hostServiceNames: string[]) => void;
    onDeinit: () => Promise<void>;
    log: Logger;
  }) {
    this.#pluginServiceNames = options.pluginServiceNames;
    this.#onInit = options.onInit;
    this.#onDeinit = options.onDeinit;
    this.#log = options.log;
  }

  addToServer(server: grpc.Server): void {
    server.addService(serviceDefinition(ServiceNames.init), {
      Init: unary<InitRequest, object>(this.#log, 'Init', async (request) => {
        this.#onInit([...request.host_service_names]);
        this.#log.debug('Plugin initialized', { host_services: request.host_service_names.join(',') });
        return { plugin_service_names: [...this.#pluginServiceNames] };
      }),
      Deinit: unary<object, object>(this.#log, 'Deinit', async () => {
        await this.#onDeinit();
        return {};
      }),
    });
  }
}
