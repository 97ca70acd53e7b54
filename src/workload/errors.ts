/**
 * Workload-attestor errors that need a status errors.ts does not have. They extend the shared
 * AttestorError, so src/plugin/status.ts maps them through `grpcCode` like every other error.
 */
import { AttestorError, GrpcCode } from '../errors.js';

/** The process is in a container but no pod/container record appeared before the deadline (SPIRE: DeadlineExceeded). */
export class WorkloadNotFound extends AttestorError {
  readonly grpcCode = GrpcCode.DEADLINE_EXCEEDED;
}

/** The PID does not exist (it exited before or during attestation): NOT_FOUND. */
export class ProcessGone extends AttestorError {
  readonly grpcCode = GrpcCode.NOT_FOUND;
}

/** The caller's signal was aborted (SPIRE's RPC context ended): CANCELLED. */
export class AttestationCancelled extends AttestorError {
  readonly grpcCode = GrpcCode.CANCELLED;
}

/** Stable codes used by src/workload/ (tests assert these, never messages). */
export const WorkloadErrorCode = {
  CGROUP_MALFORMED: 'ERR_WORKLOAD_CGROUP_MALFORMED',
  MOUNTINFO_MALFORMED: 'ERR_WORKLOAD_MOUNTINFO_MALFORMED',
  POD_UID_INVALID: 'ERR_WORKLOAD_POD_UID_INVALID',
  CONTAINER_ID_INVALID: 'ERR_WORKLOAD_CONTAINER_ID_INVALID',
  MULTIPLE_CONTAINER_IDS: 'ERR_WORKLOAD_MULTIPLE_CONTAINER_IDS',
  MULTIPLE_POD_UIDS: 'ERR_WORKLOAD_MULTIPLE_POD_UIDS',
  MATCHER_EMPTY_ID: 'ERR_WORKLOAD_MATCHER_EMPTY_ID',
  MATCHER_INVALID: 'ERR_WORKLOAD_MATCHER_INVALID',
  STAT_MALFORMED: 'ERR_WORKLOAD_STAT_MALFORMED',
  PID_INVALID: 'ERR_WORKLOAD_PID_INVALID',
  PID_GONE: 'ERR_WORKLOAD_PID_GONE',
  PID_REUSED: 'ERR_WORKLOAD_PID_REUSED',
  PROC_READ: 'ERR_WORKLOAD_PROC_READ',
  EXE_TOO_LARGE: 'ERR_WORKLOAD_EXE_TOO_LARGE',
  SOURCE_UNAVAILABLE: 'ERR_WORKLOAD_SOURCE_UNAVAILABLE',
  SOURCE_TLS: 'ERR_WORKLOAD_SOURCE_TLS',
  SOURCE_HTTP_STATUS: 'ERR_WORKLOAD_SOURCE_HTTP_STATUS',
  SOURCE_BODY: 'ERR_WORKLOAD_SOURCE_BODY',
  SOURCE_TOO_LARGE: 'ERR_WORKLOAD_SOURCE_TOO_LARGE',
  SNAPSHOT_STALE: 'ERR_WORKLOAD_SNAPSHOT_STALE',
  NO_SNAPSHOT: 'ERR_WORKLOAD_NO_SNAPSHOT',
  POD_NOT_FOUND: 'ERR_WORKLOAD_POD_NOT_FOUND',
  DUPLICATE_CONTAINER: 'ERR_WORKLOAD_DUPLICATE_CONTAINER',
  RUNTIME_UNAVAILABLE: 'ERR_WORKLOAD_RUNTIME_UNAVAILABLE',
  RUNTIME_NOT_FOUND: 'ERR_WORKLOAD_RUNTIME_NOT_FOUND',
  NO_POD_SOURCE: 'ERR_WORKLOAD_NO_POD_SOURCE',
  CANCELLED: 'ERR_WORKLOAD_CANCELLED',
  CONFIG: 'ERR_WORKLOAD_CONFIG',
  NOT_CONFIGURED: 'ERR_WORKLOAD_NOT_CONFIGURED',
} as const;
export type WorkloadErrorCodeValue = (typeof WorkloadErrorCode)[keyof typeof WorkloadErrorCode];
