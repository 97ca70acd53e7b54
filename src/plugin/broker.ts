/**
 * go-plugin's GRPCBroker. SPIRE opens StartStream right after dialing and pushes
 * ConnInfo{service_id: 1} for its host services during load; without this stream the load can
 * fail with "broker closed". The plugin records what it receives and never sends.
 */
import type * as grpc from '@grpc/grpc-js';
import { serviceDefinition, ServiceNames } from './protos.js';
import type { Logger } from './types.js';

export interface ConnInfo {
  readonly serviceId: number;
  readonly network: string;
  readonly address: string;
}

interface ConnInfoMessage {
  service_id: number;
  network: string;
  address: string;
}

export class BrokerService {
  readonly #connections = new Map<number, ConnInfo>();
  readonly #waiters = new Map<number, Array<(info: ConnInfo) => void>>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** The ConnInfo SPIRE sent for a broker ID, if any. */
  connection(serviceId: number): ConnInfo | undefined {
    return this.#connections.get(serviceId);
  }

  /** Resolves when SPIRE has sent ConnInfo for the broker ID (or rejects after timeoutMs). */
  waitFor(serviceId: number, timeoutMs: number): Promise<ConnInfo> {
    const known = this.#connections.get(serviceId);
    if (known) return Promise.resolve(known);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const list = this.#waiters.get(serviceId) ?? [];
        this.#waiters.set(serviceId, list.filter((w) => w !== waiter));
        reject(new Error(`no broker connection info for service ${serviceId} after ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (info: ConnInfo) => {
        clearTimeout(timer);
        resolve(info);
      };
      this.#waiters.set(serviceId, [...(this.#waiters.get(serviceId) ?? []), waiter]);
    });
  }

  addToServer(server: grpc.Server): void {
    server.addService(serviceDefinition(ServiceNames.broker), {
      StartStream: (call: grpc.ServerDuplexStream<ConnInfoMessage, ConnInfoMessage>) => {
        call.on('data', (msg: ConnInfoMessage) => {
          const info: ConnInfo = { serviceId: msg.service_id, network: msg.network, address: msg.address };
          this.#connections.set(info.serviceId, info);
          this.#log.debug('Broker connection info received', { service_id: info.serviceId, network: info.network });
          for (const waiter of this.#waiters.get(info.serviceId) ?? []) waiter(info);
          this.#waiters.delete(info.serviceId);
        });
        call.on('end', () => call.end());
        call.on('error', () => undefined); // a cancelled stream at unload is normal
      },
    });
  }
}
