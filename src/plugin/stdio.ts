/**
 * go-plugin's GRPCStdio. SPIRE opens it after dialing and discards whatever arrives, so the
 * stream is held open and silent (logs go to stderr as hclog JSON instead).
 */
import type * as grpc from '@grpc/grpc-js';
import { serviceDefinition, ServiceNames } from './protos.js';

export class StdioService {
  readonly #open = new Set<grpc.ServerWritableStream<object, object>>();

  addToServer(server: grpc.Server): void {
    server.addService(serviceDefinition(ServiceNames.stdio), {
      StreamStdio: (call: grpc.ServerWritableStream<object, object>) => {
        this.#open.add(call);
        const drop = () => this.#open.delete(call);
        call.on('cancelled', drop);
        call.on('error', drop);
      },
    });
  }

  /** Ends open streams cleanly at shutdown. */
  closeAll(): void {
    for (const call of this.#open) call.end();
    this.#open.clear();
  }
}
