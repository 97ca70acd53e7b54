/**
 * One attestation decision as a structured event, and the same decision as an IETF RATS attestation result in the
 * EAR form (draft-ietf-rats-ear): `ear.status` per submodule plus an AR4SI trustworthiness vector that says which
 * claim the verifier appraised and how. Pure: no I/O, no clock (the caller passes the timestamps).
 *
 * The revoker (src/revocation/) acts on these events; the shape is versioned so that it can refuse what it does
 * not understand instead of guessing.
 */
import { isAttestorError } from '../errors.js';

export const DECISION_EVENT_VERSION = 1;
export const DECISION_EVENT_TYPE = 'spire-edge.attestation.decision';
/** The EAR profile this result follows (draft-ietf-rats-ear §3). */
export const EAR_PROFILE = 'tag:github.com,2023:veraison/ear';
/** Name of the EAR submodule for the TPM appraisal. */
export const EAR_SUBMODULE = 'tpm';

export type EarStatus = 'none' | 'affirming' | 'warning' | 'contraindicated';
export type Outcome = 'accepted' | 'refused';

/** AR4SI claims the TPM verifier appraises (draft-ietf-rats-ar4si §2.3). */
export type Ar4siClaim = 'instance-identity' | 'configuration' | 'executables' | 'hardware';

/**
 * AR4SI values used here. 0: no claim; 2: affirming ("trustworthy/approved/genuine"); 32: warning (a passed check
 * with a caveat: here, policies that failed in report mode); 96: contraindicated ("known bad": a policy rule
 * failed, or the identity is revoked); 97: contraindicated ("not recognized": untrusted EK, bad quote).
 */
export const Ar4si = { NONE: 0, AFFIRMING: 2, WARNING: 32, CONTRAINDICATED: 96, UNRECOGNIZED: 97 } as const;

export interface FailedPolicy {
  readonly policy: string;
  /** Every failed rule of that policy, as named in its violations. */
  readonly rules: readonly string[];
}

/** Filled in by the policy gate while deciding, so a refused or report-mode decision can name every failure. */
export interface PolicyReport {
  passed: string[];
  failed: FailedPolicy[];
}

export interface ClaimAppraisal {
  readonly status: EarStatus;
  readonly value: number;
  readonly detail: string;
}

export interface DecisionEvent {
  readonly version: typeof DECISION_EVENT_VERSION;
  readonly type: typeof DECISION_EVENT_TYPE;
  readonly event_id: string;
  readonly outcome: Outcome;
  readonly status: EarStatus;
  /** Absent when the EK was never trusted (the node has no agent ID then). */
  readonly agent_id?: string;
  readonly ek_hash?: string;
  /** SPIRE's untrusted forwarded host, a hint only. */
  readonly node_hint?: string;
  readonly code?: string;
  readonly rule?: string;
  readonly reason?: string;
  readonly policy_match?: string;
  readonly policies: { readonly passed: readonly string[]; readonly failed: readonly FailedPolicy[] };
  readonly quirks: readonly string[];
  readonly secure_boot?: string;
  /** Enrolment state when enrolment is required (src/nodeattestor/enrolment.ts). */
  readonly enrolment?: string;
  readonly appraisal: Readonly<Record<Ar4siClaim, ClaimAppraisal>>;
  readonly started_at: string;
  readonly decided_at: string;
  readonly duration_ms: number;
  /** The EAR claims set (draft-ietf-rats-ear). */
  readonly ear: EarClaims;
  /** The EAR as a signed JWT, when a signing key is configured. */
  ear_jwt?: string;
}

export interface EarClaims {
  readonly eat_profile: typeof EAR_PROFILE;
  readonly iat: number;
  readonly 'ear.verifier-id': { readonly developer: string; readonly build: string };
  readonly 'ear.raw-evidence'?: string;
  readonly submods: Readonly<
    Record<
      string,
      {
        readonly 'ear.status': EarStatus;
        readonly 'ear.trustworthiness-vector': Readonly<Partial<Record<Ar4siClaim, number>>>;
        readonly 'ear.appraisal-policy-id'?: string;
      }
    >
  >;
  /** The subject: the agent ID when known (EAT `sub`). */
  readonly sub?: string;
}

export interface DecisionInput {
  readonly eventId: string;
  readonly outcome: Outcome;
  readonly audit: Readonly<Record<string, string | number | boolean | undefined>>;
  readonly policies: PolicyReport;
  readonly policyMatch?: string;
  readonly error?: unknown;
  readonly startedAt: Date;
  readonly decidedAt: Date;
  readonly verifierBuild: string;
}

const MAX_REASON_CHARS = 2048;

/** Which claim a refusal's error code speaks about; the policy rule refines executables vs configuration. */
function refusedClaim(code: string | undefined, rule: string | undefined): { claim: Ar4siClaim; value: number } {
  if (!code) return { claim: 'hardware', value: Ar4si.UNRECOGNIZED };
  if (code === 'ERR_ENROLMENT_REVOKED') return { claim: 'instance-identity', value: Ar4si.CONTRAINDICATED };
  if (code.startsWith('ERR_ENROLMENT') || code.startsWith('ERR_EK_') || code === 'ERR_TPM_EK_INVALID') {
    return { claim: 'instance-identity', value: Ar4si.UNRECOGNIZED };
  }
  if (code === 'ERR_POLICY_VIOLATION') {
    const executables = /boot_applications|kernels|boot_loader/.test(rule ?? '');
    return { claim: executables ? 'executables' : 'configuration', value: Ar4si.CONTRAINDICATED };
  }
  if (code.startsWith('ERR_EVENTLOG') || code === 'ERR_POLICY_NO_EVENTLOG' || code === 'ERR_LOG_TOO_LARGE') {
    return { claim: 'executables', value: Ar4si.UNRECOGNIZED };
  }
  // Credential activation, quote, nonce, AK, wire: the evidence does not come from a TPM we recognize.
  return { claim: 'hardware', value: Ar4si.UNRECOGNIZED };
}

function statusOf(value: number): EarStatus {
  if (value === 0) return 'none';
  if (value < 32) return 'affirming';
  if (value < 96) return 'warning';
  return 'contraindicated';
}

/** Builds the event. Steps the decision never reached are `none`: nothing was appraised there. */
export function buildDecisionEvent(input: DecisionInput): DecisionEvent {
  const { audit, policies, outcome } = input;
  const str = (k: string) => (typeof audit[k] === 'string' ? (audit[k] as string) : undefined);
  const err = input.error;
  const code = outcome === 'refused' ? (isAttestorError(err) ? err.code : 'ERR_INTERNAL') : undefined;
  const fields = isAttestorError(err) ? err.fields : {};
  const rule = outcome === 'refused' ? (typeof fields['rule'] === 'string' ? fields['rule'] : undefined) : undefined;
  const reason = outcome === 'refused' ? String((err as Error | undefined)?.message ?? err).slice(0, MAX_REASON_CHARS) : undefined;
  const quirks = (str('quirks') ?? '').split(',').filter(Boolean);

  const appraisal: Record<Ar4siClaim, ClaimAppraisal> = {
    'instance-identity': { status: 'none', value: Ar4si.NONE, detail: 'not appraised' },
    hardware: { status: 'none', value: Ar4si.NONE, detail: 'not appraised' },
    executables: { status: 'none', value: Ar4si.NONE, detail: 'not appraised' },
    configuration: { status: 'none', value: Ar4si.NONE, detail: 'not appraised' },
  };
  const set = (claim: Ar4siClaim, value: number, detail: string) => (appraisal[claim] = { status: statusOf(value), value, detail });
  const ekTrusted = str('ek_hash') !== undefined;
  if (ekTrusted) set('instance-identity', Ar4si.AFFIRMING, 'EK trusted (certificate chain or allowlist)');
  if (outcome === 'accepted') {
    set('hardware', Ar4si.AFFIRMING, 'credential activated and quote verified');
    const reportFailures = policies.failed.length > 0;
    const bootDetail = policies.passed.length ? `policies passed: ${policies.passed.join(', ')}` : 'no boot policy configured';
    if (reportFailures) {
      const names = policies.failed.map((f) => `${f.policy} (${f.rules.join(', ')})`).join('; ');
      set('configuration', Ar4si.WARNING, `would have failed: ${names}`);
      set('executables', Ar4si.WARNING, `would have failed: ${names}`);
    } else {
      set('configuration', Ar4si.AFFIRMING, bootDetail);
      set('executables', Ar4si.AFFIRMING, bootDetail);
    }
  } else {
    const { claim, value } = refusedClaim(code, rule);
    // Reaching boot policy means the TPM evidence itself verified; enrolment is consulted after everything else.
    if (claim === 'executables' || claim === 'configuration' || code?.startsWith('ERR_ENROLMENT')) set('hardware', Ar4si.AFFIRMING, 'credential activated and quote verified');
    if (code?.startsWith('ERR_ENROLMENT')) {
      const bootDetail = policies.passed.length ? `policies passed: ${policies.passed.join(', ')}` : 'no boot policy configured';
      set('configuration', Ar4si.AFFIRMING, bootDetail);
      set('executables', Ar4si.AFFIRMING, bootDetail);
    }
    set(claim, value, `${rule ?? code}: ${reason}`);
  }
  const worst = Math.max(...Object.values(appraisal).map((a) => a.value));
  const status: EarStatus = outcome === 'refused' ? 'contraindicated' : statusOf(worst);
  const vector: Partial<Record<Ar4siClaim, number>> = {};
  for (const [claim, a] of Object.entries(appraisal) as [Ar4siClaim, ClaimAppraisal][]) if (a.value !== Ar4si.NONE) vector[claim] = a.value;

  const agentId = str('agent_id');
  const ear: EarClaims = {
    eat_profile: EAR_PROFILE,
    iat: Math.floor(input.decidedAt.getTime() / 1000),
    'ear.verifier-id': { developer: 'spire-edge-attestors', build: input.verifierBuild },
    ...(agentId ? { sub: agentId } : {}),
    submods: {
      [EAR_SUBMODULE]: {
        'ear.status': status,
        'ear.trustworthiness-vector': vector,
        ...(policies.passed.length || policies.failed.length
          ? { 'ear.appraisal-policy-id': [...policies.passed, ...policies.failed.map((f) => f.policy)].join(',') }
          : {}),
      },
    },
  };
  return {
    version: DECISION_EVENT_VERSION,
    type: DECISION_EVENT_TYPE,
    event_id: input.eventId,
    outcome,
    status,
    ...(agentId ? { agent_id: agentId } : {}),
    ...(str('ek_hash') ? { ek_hash: str('ek_hash') } : {}),
    ...(str('node_hint') ? { node_hint: str('node_hint') } : {}),
    ...(code ? { code } : {}),
    ...(rule ? { rule } : {}),
    ...(reason ? { reason } : {}),
    ...(input.policyMatch ? { policy_match: input.policyMatch } : {}),
    policies: { passed: [...policies.passed], failed: policies.failed.map((f) => ({ policy: f.policy, rules: [...f.rules] })) },
    quirks,
    ...(str('secure_boot') ? { secure_boot: str('secure_boot') } : {}),
    ...(str('enrolment') ? { enrolment: str('enrolment') } : {}),
    appraisal,
    started_at: input.startedAt.toISOString(),
    decided_at: input.decidedAt.toISOString(),
    duration_ms: Math.max(0, input.decidedAt.getTime() - input.startedAt.getTime()),
    ear,
  };
}
