/**
 * Typed errors. Every error that can reach SPIRE carries a stable string `code` and the
 * gRPC status code it maps to; src/plugin/status.ts is the only place that turns one into a status.
 * Messages name the node or PID and the rule that failed, and never echo secrets.
 */

/** gRPC status codes used by this project (numeric values from grpc/status.proto). */
export const GrpcCode = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;
export type GrpcCodeValue = (typeof GrpcCode)[keyof typeof GrpcCode];

export interface ErrorDetails {
  /** Structured fields for the audit log (node, pid, rule, observed value...). */
  readonly fields?: Readonly<Record<string, string | number | boolean | undefined>>;
  readonly cause?: unknown;
}

export abstract class AttestorError extends Error {
  abstract readonly grpcCode: GrpcCodeValue;
  readonly code: string;
  readonly fields: Readonly<Record<string, string | number | boolean | undefined>>;

  constructor(code: string, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.code = code;
    this.fields = details.fields ?? {};
  }
}

/** Input bytes or fields that do not parse: INVALID_ARGUMENT. */
export class MalformedInput extends AttestorError {
  readonly grpcCode = GrpcCode.INVALID_ARGUMENT;
}

/** Configuration that is missing, of the wrong type or unsafe: INVALID_ARGUMENT at Configure. */
export class InvalidConfig extends AttestorError {
  readonly grpcCode = GrpcCode.INVALID_ARGUMENT;
}

/**
 * Several configuration problems found in one pass: Configure fails with all of them in its message, and the
 * runtime's Validate returns each one as a note, so an operator fixes everything in one round.
 */
export class InvalidConfigList extends InvalidConfig {
  readonly problems: readonly string[];
  constructor(code: string, message: string, problems: readonly string[], details: ErrorDetails = {}) {
    super(code, message, details);
    this.problems = Object.freeze([...problems]);
  }
}

/** Verified evidence that policy refuses: PERMISSION_DENIED (stops the agent's retry loop). */
export class AttestationRefused extends AttestorError {
  readonly grpcCode = GrpcCode.PERMISSION_DENIED;
}

/** The plugin is not ready (not configured, state conflict): FAILED_PRECONDITION. */
export class NotConfigured extends AttestorError {
  readonly grpcCode = GrpcCode.FAILED_PRECONDITION;
}

/** A state that makes the answer ambiguous (e.g. two container IDs for one PID): FAILED_PRECONDITION. */
export class PreconditionFailed extends AttestorError {
  readonly grpcCode = GrpcCode.FAILED_PRECONDITION;
}

/** A TPM tool or device failed: INTERNAL. */
export class TpmToolFailed extends AttestorError {
  readonly grpcCode = GrpcCode.INTERNAL;
}

/** A dependency (pod source, runtime socket, SPIRE API) could not be reached: UNAVAILABLE. */
export class SourceUnavailable extends AttestorError {
  readonly grpcCode = GrpcCode.UNAVAILABLE;
}

/** What was looked for did not appear before its deadline (e.g. a container's pod): DEADLINE_EXCEEDED. */
export class DeadlineExceeded extends AttestorError {
  readonly grpcCode = GrpcCode.DEADLINE_EXCEEDED;
}

/** Too much outstanding work for one client (e.g. challenges per EK): RESOURCE_EXHAUSTED, retried by SPIRE's agent. */
export class ResourceExhausted extends AttestorError {
  readonly grpcCode = GrpcCode.RESOURCE_EXHAUSTED;
}

/** The subject does not exist (e.g. the PID exited): NOT_FOUND. */
export class NotFound extends AttestorError {
  readonly grpcCode = GrpcCode.NOT_FOUND;
}

/** The caller gave up (SPIRE cancelled the RPC): CANCELLED. */
export class Cancelled extends AttestorError {
  readonly grpcCode = GrpcCode.CANCELLED;
}

/** Anything else that is our fault: INTERNAL. */
export class InternalError extends AttestorError {
  readonly grpcCode = GrpcCode.INTERNAL;
}

export function isAttestorError(err: unknown): err is AttestorError {
  return err instanceof AttestorError;
}
