/**
 * gRPC service definitions from the bundled descriptor (generated from proto/ by `npm run proto`),
 * so a built plugin never reads .proto files at run time.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import descriptors from './generated/descriptors.json' with { type: 'json' };

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
};

let definition: protoLoader.PackageDefinition | undefined;

export function packageDefinition(): protoLoader.PackageDefinition {
  definition ??= protoLoader.fromJSON(descriptors as Parameters<typeof protoLoader.fromJSON>[0], LOADER_OPTIONS);
  return definition;
}

/** The service definition for a fully qualified service name, e.g. "plugin.GRPCBroker". */
export function serviceDefinition(fullName: string): grpc.ServiceDefinition {
  const def = packageDefinition()[fullName];
  if (!def || 'format' in def) {
    throw new Error(`unknown gRPC service ${fullName}`);
  }
  return def as grpc.ServiceDefinition;
}

/** A client constructor for a service, for harnesses and host-service dialing. */
export function clientConstructor(fullName: string): grpc.ServiceClientConstructor {
  return grpc.makeClientConstructor(serviceDefinition(fullName), fullName);
}

export const ServiceNames = {
  broker: 'plugin.GRPCBroker',
  controller: 'plugin.GRPCController',
  stdio: 'plugin.GRPCStdio',
  health: 'grpc.health.v1.Health',
  init: 'spire.service.private.init.v1.Init',
  config: 'spire.service.common.config.v1.Config',
  serverNodeAttestor: 'spire.plugin.server.nodeattestor.v1.NodeAttestor',
  agentNodeAttestor: 'spire.plugin.agent.nodeattestor.v1.NodeAttestor',
  workloadAttestor: 'spire.plugin.agent.workloadattestor.v1.WorkloadAttestor',
  agentStore: 'spire.hostservice.server.agentstore.v1.AgentStore',
  metrics: 'spire.hostservice.common.metrics.v1.Metrics',
  agentApi: 'spire.api.server.agent.v1.Agent',
  workloadApi: 'SpiffeWorkloadAPI',
} as const;
