/**
 * Host services SPIRE serves on the go-plugin broker (service ID 1). Dialed lazily at RPC time:
 * the server's host services answer FailedPrecondition until SPIRE has finished loading.
 */
import * as grpc from '@grpc/grpc-js';
import { NotConfigured, SourceUnavailable } from '../errors.js';
import type { BrokerService } from './broker.js';
import { HostMetrics } from './metrics.js';
import { clientConstructor, ServiceNames } from './protos.js';
import type { HostServices, Logger } from './types.js';

/** go-plugin/SPIRE: host services are brokered under this ID (private.HostServiceProviderID). */
export const HOST_SERVICE_BROKER_ID = 1;
const CONNINFO_WAIT_MS = 5_000;
const CALL_TIMEOUT_MS = 10_000;

type AgentStoreClient = grpc.Client & {
  GetAgentInfo(
    request: { agent_id: string },
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, response?: unknown) => void,
  ): grpc.ClientUnaryCall;
};

export class BrokeredHostServices implements HostServices {
  #names: readonly string[] = [];
  #agentStore: AgentStoreClient | undefined;
  readonly #broker: BrokerService;
  readonly #log: Logger;
  readonly metrics: HostMetrics;

  constructor(broker: BrokerService, log: Logger) {
    this.#broker = broker;
    this.#log = log;
    this.metrics = new HostMetrics(() => this.#target(), log.named('metrics'), () => this.#names.includes(ServiceNames.metrics));
  }

  get names(): readonly string[] {
    return this.#names;
  }

  setNames(names: readonly string[]): void {
    this.#names = Object.freeze([...names]);
  }

  async agentExists(agentId: string, signal?: AbortSignal): Promise<boolean> {
    if (!this.#names.includes(ServiceNames.agentStore)) {
      throw new NotConfigured('ERR_HOST_SERVICE', 'SPIRE did not offer the AgentStore host service to this plugin');
    }
    const client = await this.#agentStoreClient();
    return new Promise<boolean>((resolve, reject) => {
      const call = client.GetAgentInfo({ agent_id: agentId }, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err) => {
        signal?.removeEventListener('abort', onAbort);
        if (!err) resolve(true);
        else if (err.code === grpc.status.NOT_FOUND) resolve(false);
        else reject(new SourceUnavailable('ERR_HOST_SERVICE', `AgentStore.GetAgentInfo failed: ${err.details || err.message}`));
      });
      const onAbort = () => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async #agentStoreClient(): Promise<AgentStoreClient> {
    if (this.#agentStore) return this.#agentStore;
    const target = await this.#target();
    const Client = clientConstructor(ServiceNames.agentStore);
    this.#agentStore = new Client(target, grpc.credentials.createInsecure()) as unknown as AgentStoreClient;
    this.#log.debug('Dialed host services', { target });
    return this.#agentStore;
  }

  /** The gRPC target of SPIRE's host services, once SPIRE has sent its broker ConnInfo. */
  async #target(): Promise<string> {
    const info = await this.#broker.waitFor(HOST_SERVICE_BROKER_ID, CONNINFO_WAIT_MS).catch((err: Error) => {
      throw new SourceUnavailable('ERR_HOST_SERVICE', `host services unreachable: ${err.message}`);
    });
    return info.network === 'unix' ? `unix:${info.address}` : info.address;
  }

  close(): void {
    this.metrics.close();
    this.#agentStore?.close();
    this.#agentStore = undefined;
  }
}
