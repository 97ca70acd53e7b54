/** go-plugin's GRPCController: SPIRE calls Shutdown at unload and SIGKILLs us 2 s later. */
import type * as grpc from '@grpc/grpc-js';
import { serviceDefinition, ServiceNames } from './protos.js';

export class ControllerService {
  readonly #onShutdown: () => void;

  constructor(onShutdown: () => void) {
    this.#onShutdown = onShutdown;
  }

  addToServer(server: grpc.Server): void {
    server.addService(serviceDefinition(ServiceNames.controller), {
      Shutdown: (_call: grpc.ServerUnaryCall<object, object>, callback: grpc.sendUnaryData<object>) => {
        callback(null, {});
        // Reply first, then stop: the reply must leave before the server goes away.
        setImmediate(this.#onShutdown);
      },
    });
  }
}
