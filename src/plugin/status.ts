/**
 * The single path from an error to a gRPC status. grpc-js turns any error without an integer
 * `code` into UNKNOWN, and a rejected promise from an async handler into nothing at all, so every
 * handler goes through the adapters in handlers.ts, which call toStatus.
 */
import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { isAttestorError } from '../errors.js';
import type { Logger } from './types.js';

export interface StatusObject {
  code: GrpcStatus;
  details: string;
}

export function toStatus(err: unknown, log?: Logger, context?: Record<string, string | number>): StatusObject {
  if (isAttestorError(err)) {
    return { code: err.grpcCode as GrpcStatus, details: err.message };
  }
  const candidate = err as Partial<ServiceError> | undefined;
  if (candidate && typeof candidate.code === 'number' && Number.isInteger(candidate.code) && typeof candidate.details === 'string') {
    return { code: candidate.code, details: candidate.details };
  }
  log?.error('Unexpected error in plugin', {
    ...context,
    error: err instanceof Error ? err.message : String(err),
    stack: err instanceof Error ? (err.stack ?? '') : '',
  });
  return { code: GrpcStatus.INTERNAL, details: 'internal error in plugin (see plugin logs)' };
}
