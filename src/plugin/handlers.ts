/**
 * Adapters between grpc-js handlers and async functions: every error becomes a status via
 * toStatus, nothing escapes as an unhandled rejection, and cancellation reaches the work as an
 * AbortSignal.
 */
import type * as grpc from '@grpc/grpc-js';
import { toStatus } from './status.js';
import type { Logger } from './types.js';

export function unary<Req, Res>(
  log: Logger,
  method: string,
  fn: (request: Req, signal: AbortSignal, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const controller = new AbortController();
    let settled = false;
    // grpc-js may report 'cancelled' after the reply is out; aborting then would only allocate an exception.
    call.on('cancelled', () => {
      if (!settled) controller.abort();
    });
    let result: Promise<Res>;
    try {
      result = fn(call.request, controller.signal, call);
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (response) => {
        settled = true;
        callback(null, response);
      },
      (err: unknown) => {
        settled = true;
        callback(toStatus(err, log, { method }));
      },
    );
  };
}
