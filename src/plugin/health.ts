/** grpc.health.v1: go-plugin's non-Go guide requires service "plugin" to report SERVING. */
import * as grpc from '@grpc/grpc-js';
import { serviceDefinition, ServiceNames } from './protos.js';

const KNOWN_SERVICES = new Set(['', 'plugin']);

interface HealthRequest {
  service: string;
}

export class HealthService {
  addToServer(server: grpc.Server): void {
    server.addService(serviceDefinition(ServiceNames.health), {
      Check: (call: grpc.ServerUnaryCall<HealthRequest, object>, callback: grpc.sendUnaryData<object>) => {
        if (!KNOWN_SERVICES.has(call.request.service)) {
          callback({ code: grpc.status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
          return;
        }
        callback(null, { status: 'SERVING' });
      },
      Watch: (call: grpc.ServerWritableStream<HealthRequest, object>) => {
        call.write({ status: KNOWN_SERVICES.has(call.request.service) ? 'SERVING' : 'SERVICE_UNKNOWN' });
        call.on('cancelled', () => undefined);
      },
    });
  }
}
