/**
 * gRPC adapters for the three plugin types. They own the stream mechanics (payload first,
 * one response per challenge, CANCELLED after success is normal) so attestors implement only
 * the interfaces in types.ts.
 */
import * as grpc from '@grpc/grpc-js';
import { InternalError, MalformedInput } from '../errors.js';
import { unary } from './handlers.js';
import { ATTESTATION_CANCELLED, ATTESTATION_OK, attestationFailure, NO_METRICS, recordAttestation } from './metrics.js';
import { serviceDefinition, ServiceNames } from './protos.js';
import { toStatus } from './status.js';
import type { AgentNodeAttestor, Logger, Metrics, ServerNodeAttestor, WorkloadAttestor } from './types.js';

export interface ServiceRegistration {
  readonly serviceName: string;
  addToServer(server: grpc.Server): void;
}

interface ServerAttestRequest {
  request?: 'payload' | 'challenge_response';
  payload?: Buffer;
  challenge_response?: Buffer;
}

function firstMetadata(call: grpc.ServerDuplexStream<unknown, unknown>, key: string): string | undefined {
  const value = call.metadata.get(key)[0];
  return typeof value === 'string' ? value : undefined;
}

export function serverNodeAttestorService(impl: ServerNodeAttestor, log: Logger, metrics: Metrics = NO_METRICS): ServiceRegistration {
  return {
    serviceName: ServiceNames.serverNodeAttestor,
    addToServer(server) {
      server.addService(serviceDefinition(ServiceNames.serverNodeAttestor), {
        Attest: (call: grpc.ServerDuplexStream<ServerAttestRequest, object>) => {
          const controller = new AbortController();
          const startedAt = Date.now();
          let started = false;
          let finished = false;
          let pending: { resolve: (b: Uint8Array) => void; reject: (e: Error) => void } | undefined;

          const finish = (err?: unknown) => {
            if (finished) return;
            finished = true;
            controller.abort();
            pending?.reject(new InternalError('ERR_STREAM_CLOSED', 'attestation stream closed'));
            pending = undefined;
            recordAttestation(metrics, 'node_attestation', startedAt, err === undefined ? ATTESTATION_CANCELLED : attestationFailure(err));
            if (err !== undefined) call.emit('error', toStatus(err, log, { method: 'Attest' }));
          };

          call.on('data', (msg: ServerAttestRequest) => {
            if (finished) return;
            if (!started) {
              started = true;
              if (msg.request !== 'payload' || !msg.payload || msg.payload.length === 0) {
                finish(new MalformedInput('ERR_ATTEST_PROTOCOL', 'the first attestation message must carry a non-empty payload'));
                return;
              }
              impl
                .attest(new Uint8Array(msg.payload), {
                  signal: controller.signal,
                  untrustedForwardedHost: firstMetadata(call, 'x-untrusted-forwarded-host'),
                  untrustedClientIp: firstMetadata(call, 'x-forwarded-client-ip'),
                  challenge: (bytes) => {
                    if (finished) return Promise.reject(new InternalError('ERR_STREAM_CLOSED', 'attestation stream closed'));
                    if (pending) return Promise.reject(new InternalError('ERR_ATTEST_PROTOCOL', 'a challenge is already outstanding'));
                    if (bytes.length === 0) return Promise.reject(new InternalError('ERR_ATTEST_PROTOCOL', 'refusing to send an empty challenge'));
                    return new Promise<Uint8Array>((resolve, reject) => {
                      pending = { resolve, reject };
                      call.write({ challenge: Buffer.from(bytes) });
                    });
                  },
                })
                .then(
                  (attrs) => {
                    if (finished) return;
                    finished = true;
                    recordAttestation(metrics, 'node_attestation', startedAt, ATTESTATION_OK);
                    call.write({
                      agent_attributes: {
                        spiffe_id: attrs.spiffeId,
                        selector_values: [...attrs.selectorValues],
                        can_reattest: attrs.canReattest,
                      },
                    });
                    call.end();
                  },
                  (err: unknown) => finish(err),
                );
              return;
            }
            if (msg.request !== 'challenge_response' || !pending) {
              finish(new MalformedInput('ERR_ATTEST_PROTOCOL', 'unexpected message: expected a challenge response to an outstanding challenge'));
              return;
            }
            const waiter = pending;
            pending = undefined;
            waiter.resolve(new Uint8Array(msg.challenge_response ?? Buffer.alloc(0)));
          });
          // SPIRE cancels instead of half-closing; either way the work stops.
          call.on('cancelled', () => finish());
          call.on('end', () => {
            if (!finished) finish(new MalformedInput('ERR_ATTEST_PROTOCOL', 'stream ended before attestation completed'));
          });
          call.on('error', () => finish());
        },
      });
    },
  };
}

interface ChallengeMessage {
  challenge?: Buffer;
}

export function agentNodeAttestorService(impl: AgentNodeAttestor, log: Logger, metrics: Metrics = NO_METRICS): ServiceRegistration {
  return {
    serviceName: ServiceNames.agentNodeAttestor,
    addToServer(server) {
      server.addService(serviceDefinition(ServiceNames.agentNodeAttestor), {
        AidAttestation: (call: grpc.ServerDuplexStream<ChallengeMessage, object>) => {
          const controller = new AbortController();
          let finished = false;
          // The agent never learns the server's verdict; what it can report is its own part: the evidence (payload)
          // and each challenge answer, with how long the TPM took (a slow TPM shows up here before nonce_ttl bites).
          const evidence = (step: 'payload' | 'challenge', startedAt: number, err?: unknown) =>
            recordAttestation(metrics, 'agent_evidence', startedAt, {
              step,
              ...(err === undefined ? ATTESTATION_OK : controller.signal.aborted ? ATTESTATION_CANCELLED : attestationFailure(err)),
            });
          const beganAt = Date.now();
          const sessionPromise = impl.begin(controller.signal);
          sessionPromise.then(
            () => evidence('payload', beganAt),
            (err: unknown) => evidence('payload', beganAt, err),
          );
          let queue: Promise<void> = Promise.resolve();

          const finish = (err?: unknown) => {
            if (finished) return;
            finished = true;
            controller.abort();
            sessionPromise.then((s) => s.close?.()).catch(() => undefined);
            if (err !== undefined) call.emit('error', toStatus(err, log, { method: 'AidAttestation' }));
          };

          sessionPromise.then(
            (session) => {
              if (finished) return;
              if (session.payload.length === 0) {
                finish(new InternalError('ERR_ATTEST_PROTOCOL', 'attestor produced an empty payload'));
                return;
              }
              call.write({ payload: Buffer.from(session.payload) });
            },
            (err: unknown) => finish(err),
          );

          call.on('data', (msg: ChallengeMessage) => {
            queue = queue
              .then(async () => {
                const session = await sessionPromise;
                if (finished) return;
                const answeringAt = Date.now();
                let response: Uint8Array;
                try {
                  response = await session.respond(new Uint8Array(msg.challenge ?? Buffer.alloc(0)));
                  if (response.length === 0) throw new InternalError('ERR_ATTEST_PROTOCOL', 'attestor produced an empty challenge response');
                } catch (err) {
                  evidence('challenge', answeringAt, err);
                  throw err;
                }
                evidence('challenge', answeringAt);
                if (!finished) call.write({ challenge_response: Buffer.from(response) });
              })
              .catch((err: unknown) => finish(err));
          });
          call.on('cancelled', () => finish());
          call.on('end', () => {
            queue.finally(() => {
              if (!finished) {
                finish();
                call.end();
              }
            });
          });
          call.on('error', () => finish());
        },
      });
    },
  };
}

interface WorkloadAttestRequest {
  pid: number;
}

export function workloadAttestorService(impl: WorkloadAttestor, log: Logger, metrics: Metrics = NO_METRICS): ServiceRegistration {
  return {
    serviceName: ServiceNames.workloadAttestor,
    addToServer(server) {
      server.addService(serviceDefinition(ServiceNames.workloadAttestor), {
        Attest: unary<WorkloadAttestRequest, object>(log, 'Attest', async (request, signal) => {
          const startedAt = Date.now();
          try {
            if (!Number.isInteger(request.pid) || request.pid <= 0) {
              throw new MalformedInput('ERR_PID', `pid ${request.pid} is not a valid process ID`, { fields: { pid: request.pid } });
            }
            const selectorValues = await impl.attest(request.pid, signal);
            recordAttestation(metrics, 'workload_attestation', startedAt, ATTESTATION_OK);
            return { selector_values: selectorValues };
          } catch (err) {
            recordAttestation(metrics, 'workload_attestation', startedAt, signal.aborted ? ATTESTATION_CANCELLED : attestationFailure(err));
            throw err;
          }
        }),
        // SPIRE >= 1.15.2 falls back to Attest for PID references when this is Unimplemented.
        AttestReference: (_call: grpc.ServerUnaryCall<object, object>, callback: grpc.sendUnaryData<object>) => {
          callback({ code: grpc.status.UNIMPLEMENTED, details: 'AttestReference is not implemented; use Attest' });
        },
      });
    },
  };
}
