/**
 * Server side of NodeAttestor "tpm": pure TypeScript, no TPM tools. One attestation is
 *
 *   payload (EK, AK public, event log) → EK trust → AK checklist → challenge {credential bound to the
 *   AK name, fresh nonce, PCR selection} → response {secret, quote} → secret (constant time) →
 *   nonce (this stream's, answered within nonce_ttl) → quote (signature, magic, type, nonce, exact selection, PCR
 *   digest) → event-log replay against the quoted PCRs → boot facts → policy → selectors.
 *
 * The nonce lives only in this Attest stream: a challenge and its response are one stream, SPIRE never answers a
 * challenge on another, so there is no shared store an unproven client could flood. Until the response proves the
 * EK, a client holding only a public EK certificate can make the server do MakeCredential and wait: at most
 * `max_pending_challenges_per_ek` at once per EK, each for at most `nonce_ttl`.
 *
 * Every step consumes only what the step before verified. A refusal is PERMISSION_DENIED naming the
 * node and the rule; malformed input is INVALID_ARGUMENT; a slow or busy attempt is DEADLINE_EXCEEDED or
 * RESOURCE_EXHAUSTED, which SPIRE's agent retries. One audit line is logged per decision.
 */
import { createHash, randomBytes as nodeRandomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { AttestationRefused, DeadlineExceeded, InvalidConfig, isAttestorError, NotConfigured, ResourceExhausted } from '../errors.js';
import { ConfigProblems, duration, parseConfig, z } from '../plugin/config-schema.js';
import type { AgentAttributes, CoreConfig, Logger, ServerAttestIo, ServerNodeAttestor } from '../plugin/types.js';
import { checkPoliciesAgainstSelection, enforcePolicies, loadPolicies, type PolicyMatch } from './policy-gate.js';
import type { MeasuredBootPolicy } from '../policy/policy.js';
import { checkAkAttributes, encodeCredentialFile, makeCredential, secretsEqual } from '../tpm/activation.js';
import { deriveBootFacts, type BootFacts } from '../tpm/bootfacts.js';
import { parseEventLog } from '../tpm/eventlog.js';
import { DEFAULT_PCR_SELECTION, PcrSelection } from '../tpm/pcrs.js';
import { ekPubHash, hierarchyQualifiedName, parseTpm2bPublic, publicName, publicToSpkiDer, qualifiedName } from '../tpm/public.js';
import { verifyQuote, type QuotedPcrs } from '../tpm/quote.js';
import { replayEventLog, type VerifiedEvents } from '../tpm/replay.js';
import { SpiffeId, TrustDomain } from '../spiffe/trust-domain.js';
import { toHex } from '../tpm/bytes.js';
import { EkTrust, type TrustedEk } from './ek-trust.js';
import { BoundedCache } from './bounded-cache.js';
import { nodeSelectors } from './selectors.js';
import { checkNodeIma, imaConfigShape, loadImaGate, offerImaOffset, type ImaGate } from './ima-gate.js';
import { decodePayload, decodeResponse, encodeChallenge } from './wire.js';
import { attestLegacyAgent } from './legacy-attest.js';
import { isLegacyPayload } from './legacy-wire.js';
import type { PolicyReport } from './decision-event.js';
import { DecisionEvents, decisionEventsSchema, recordDecision } from './event-sinks.js';
import { EnrolmentGate } from './enrolment.js';

export { DEFAULT_PCR_SELECTION } from '../tpm/pcrs.js';
const SECRET_BYTES = 32;
const NONCE_BYTES = 32;

export const serverConfigSchema = z
  .strictObject({
    /** Files or directories of EK roots and intermediates (PEM or DER). */
    ek_ca_path: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    /** sha256 hex of the PKIX EK public key (spire-tpm-plugin's pub_hash). */
    ek_hash_allowlist: z.array(z.string().regex(/^[0-9a-fA-F]{64}$/, 'expected 64 hex digits')).optional(),
    /** PCRs the agent must quote. */
    pcr_selection: z.string().default(DEFAULT_PCR_SELECTION),
    /** PCR indices (of the sha256 bank) exported as pcr:sha256:<i>:<hex> selectors; default: all quoted sha256 PCRs. */
    selector_pcrs: z.array(z.number().int().min(0).max(23)).optional(),
    /** Refuse agents that send no measured-boot event log. */
    require_event_log: z.boolean().default(true),
    /** Measured-boot policy file (YAML or JSON). */
    policy_path: z.string().min(1).optional(),
    /** any: at least one policy must pass; all: every policy must pass; report: selectors only. */
    policy_match: z.enum(['any', 'all', 'report']).default('any'),
    /** How long a challenge waits for its response; a TPM quote takes well under a second. */
    nonce_ttl: duration()
      .default(60_000)
      .refine((ms) => ms >= 1_000 && ms <= 600_000, 'must be between 1s and 10m'),
    /** Challenges one EK may have outstanding at once (retries and re-attestation overlap rarely). */
    max_pending_challenges_per_ek: z.number().int().min(1).max(64).default(4),
    /** The plugin name in SPIRE's config; agent IDs are /spire/agent/<name>/<ek hash>. */
    plugin_name: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,128}$/)
      .refine((name) => name !== '.' && name !== '..', 'must not be "." or ".." (it is a path segment of agent IDs)')
      .default('tpm'),
    /** Admit spire-tpm-plugin agents (EK + AK residency only, `legacy_agent:true`) while migrating: docs/migration.md. */
    legacy_agents: z.enum(['allow', 'deny']).default('deny'),
    /** Decision events (docs/revocation.md): JSONL file and/or HTTPS webhook sinks. */
    decision_events: decisionEventsSchema.optional(),
    /** required: a verified node is admitted only once its EK is approved in the enrolment store. */
    enrolment: z.enum(['required', 'off']).default('off'),
    /** The enrolment store (JSON, hot-reloaded; src/nodeattestor/enrolment.ts). */
    enrolment_path: z.string().min(1).optional(),
    /** IMA runtime integrity (src/nodeattestor/ima-gate.ts, docs/ima.md). */
    ...imaConfigShape,
  })
  .refine((c) => c.ek_ca_path !== undefined || (c.ek_hash_allowlist !== undefined && c.ek_hash_allowlist.length > 0), {
    message: 'set ek_ca_path, ek_hash_allowlist or both: without either no EK could be trusted',
  })
  .refine((c) => c.enrolment === 'off' || c.enrolment_path !== undefined, { message: 'enrolment = "required" needs enrolment_path' });
export type TpmServerConfig = z.output<typeof serverConfigSchema>;

export interface TpmServerOptions {
  readonly now?: () => Date;
  readonly randomBytes?: (size: number) => Uint8Array;
  readonly readFile?: (path: string) => Promise<Uint8Array>;
}

interface ServerState {
  readonly config: TpmServerConfig;
  readonly trustDomain: TrustDomain;
  readonly selection: PcrSelection;
  readonly ekTrust: EkTrust;
  readonly policies: readonly MeasuredBootPolicy[];
  readonly policyMatch: PolicyMatch;
  readonly ima: ImaGate | undefined;
  /** Boot facts are a pure function of the log bytes and which PCRs verified: derive once per distinct boot. */
  readonly bootFacts: BoundedCache<string, BootFacts>;
  readonly events: DecisionEvents | undefined;
  readonly enrolment: EnrolmentGate | undefined;
}

const BOOT_FACTS_CACHE_ENTRIES = 1024;

export class TpmServerAttestor implements ServerNodeAttestor {
  readonly #log: Logger;
  readonly #now: () => Date;
  readonly #random: (size: number) => Uint8Array;
  readonly #readFile: (path: string) => Promise<Uint8Array>;
  #state: ServerState | undefined;
  /** Outstanding challenges per EK hash; kept across reconfiguration with the streams they count. */
  readonly #pendingChallenges = new Map<string, number>();

  constructor(log: Logger, options: TpmServerOptions = {}) {
    this.#log = log;
    this.#now = options.now ?? (() => new Date());
    this.#random = options.randomBytes ?? ((n) => new Uint8Array(nodeRandomBytes(n)));
    this.#readFile = options.readFile ?? ((p) => readFile(p).then((b) => new Uint8Array(b)));
  }

  async configure(raw: Record<string, unknown>, core: CoreConfig): Promise<void> {
    const previous = this.#state;
    this.#state = await this.#load(raw, core);
    void previous?.events?.close(); // its queued events are still written
    this.#state.events?.start();
  }

  async validate(raw: Record<string, unknown>, core: CoreConfig): Promise<string[]> {
    await this.#load(raw, core); // loads CA files and policies too, so file problems show up in `spire-server validate`
    return [];
  }

  async #load(raw: Record<string, unknown>, core: CoreConfig): Promise<ServerState> {
    // Independent checks all run, so Configure and Validate report every problem at once.
    const problems = new ConfigProblems('tpm server');
    const config = await problems.check(() => parseConfig(serverConfigSchema, raw, 'tpm server'));
    if (!config) return problems.fail();
    const selection = await problems.check(() => {
      try {
        return PcrSelection.parse(config.pcr_selection);
      } catch (err) {
        throw new InvalidConfig('ERR_CONFIG_INVALID', `tpm server: key "pcr_selection": ${(err as Error).message}`);
      }
    });
    const ekTrust = await problems.check(() =>
      EkTrust.load({
        caPaths: config.ek_ca_path === undefined ? [] : [config.ek_ca_path].flat(),
        hashAllowlist: config.ek_hash_allowlist ?? [],
        warn: (message, fields) => this.#log.warn(message, fields),
      }),
    );
    const policies = (config.policy_path ? await problems.check(() => loadPolicies(config.policy_path!, this.#readFile)) : []) ?? [];
    if (selection) await problems.check(() => checkPoliciesAgainstSelection(policies, selection));
    const enrolment = config.enrolment === 'required' ? new EnrolmentGate(config.enrolment_path!, this.#now) : undefined;
    if (enrolment) await problems.check(() => enrolment.check());
    const ima = selection ? await problems.check(() => loadImaGate(config, selection, this.#readFile, this.#log.named('ima'))) : undefined;
    if (!selection || !ekTrust) return problems.fail();
    problems.throwIfAny();
    if (config.policy_path && !config.require_event_log) {
      this.#log.warn('policy_path is set but require_event_log is false: nodes without an event log skip boot policies');
    }
    if (config.legacy_agents === 'allow' && policies.length > 0 && config.policy_match !== 'report') {
      this.#log.warn('legacy_agents is "allow" but boot policies are enforced: spire-tpm-plugin agents will be refused until policy_match = "report"');
    }
    return {
      config,
      trustDomain: TrustDomain.parse(core.trustDomain),
      selection,
      ekTrust,
      policies,
      policyMatch: config.policy_match,
      ima,
      bootFacts: new BoundedCache(BOOT_FACTS_CACHE_ENTRIES),
      enrolment,
      events: config.decision_events ? await DecisionEvents.load(config.decision_events, this.#log.named('events'), this.#readFile) : undefined,
    };
  }

  async attest(payloadBytes: Uint8Array, io: ServerAttestIo): Promise<AgentAttributes> {
    const state = this.#state;
    if (!state) throw new NotConfigured('ERR_NOT_CONFIGURED', 'tpm server attestor is not configured');
    const started = performance.now();
    const startedAt = this.#now();
    const audit: Record<string, string | number | boolean | undefined> = { node_hint: io.untrustedForwardedHost };
    const policies: PolicyReport = { passed: [], failed: [] };
    const event = { audit, policies, policyMatch: state.policyMatch, startedAt };
    try {
      const attributes = isLegacyPayload(payloadBytes)
        ? await attestLegacyAgent(this.#legacyContext(state), payloadBytes, io, audit)
        : await this.#attest(state, payloadBytes, io, audit, policies);
      this.#log.info('Attestation decision', {
        ...audit,
        outcome: 'accepted',
        duration_ms: Math.round(performance.now() - started),
      });
      recordDecision(state.events, this.#log, { ...event, outcome: 'accepted', decidedAt: this.#now() });
      return attributes;
    } catch (err) {
      const fields = isAttestorError(err) ? err.fields : {};
      recordDecision(state.events, this.#log, { ...event, outcome: 'refused', error: err, decidedAt: this.#now() });
      this.#log.warn('Attestation decision', {
        ...audit,
        outcome: 'refused',
        code: isAttestorError(err) ? err.code : 'ERR_INTERNAL',
        rule: typeof fields['rule'] === 'string' ? fields['rule'] : undefined,
        reason: (err as Error).message,
        duration_ms: Math.round(performance.now() - started),
      });
      throw err;
    }
  }

  #legacyContext(state: ServerState) {
    const { config, trustDomain, ekTrust, policies, policyMatch } = state;
    return { legacyAgents: config.legacy_agents, trustDomain, pluginName: config.plugin_name, ekTrust, policies, policyMatch, now: this.#now(), randomBytes: this.#random };
  }

  async #attest(
    state: ServerState,
    payloadBytes: Uint8Array,
    io: ServerAttestIo,
    audit: Record<string, string | number | boolean | undefined>,
    policyReport: PolicyReport,
  ): Promise<AgentAttributes> {
    // 1. Parse everything the agent sent; nothing here is trusted yet.
    const payload = decodePayload(payloadBytes);
    const ekPublic = parseTpm2bPublic(payload.ek_pub);
    const akPublic = parseTpm2bPublic(payload.ak_pub);
    // The hash of the EK the agent sent, audited even when trust fails: the value an operator allowlists.
    audit['ek_hash'] = ekPubHash(publicToSpkiDer(ekPublic));

    // 2. Is this a TPM we trust? (certificate chain or allowlisted EK key)
    const ek: TrustedEk = await state.ekTrust.verify({
      ekPublic,
      certificate: payload.ek_cert,
      intermediates: payload.ek_intermediates ?? [],
      now: this.#now(),
    });
    const node = ek.pubHash.slice(0, 16);
    const agentId = SpiffeId.fromSegments(state.trustDomain, 'spire', 'agent', state.config.plugin_name, ek.pubHash).toString();
    audit['agent_id'] = agentId;

    if (!payload.event_log && state.config.require_event_log) {
      throw new AttestationRefused('ERR_EVENTLOG_MISSING', `node ${node}: no measured-boot event log was sent and require_event_log is on`, {
        fields: { rule: 'require_event_log' },
      });
    }

    // 3. The AK must be a restricted, TPM-resident signing key before anything is bound to it.
    checkAkAttributes(akPublic);
    const akName = publicName(akPublic);

    // 4. One round: a credential only the TPM holding this EK and an object named akName can open,
    //    plus a fresh nonce for the quote. (IMA may add a second round for the whole list: ima-gate.ts.)
    //    Incremental IMA: the offset this server has verified for this EK, never what the agent claims (no secret).
    const imaOffer = state.ima ? await offerImaOffset(state.ima, agentId) : undefined;
    const secret = this.#random(SECRET_BYTES);
    const nonce = this.#random(NONCE_BYTES);
    const release = this.#reserveChallenge(ek.pubHash, node, state.config.max_pending_challenges_per_ek);
    let responseBytes: Uint8Array;
    const issuedAt = this.#now().getTime();
    try {
      const credential = makeCredential({ ekPublic, akName, secret, randomBytes: this.#random });
      responseBytes = await withinTtl(
        io.challenge(encodeChallenge({ credential: encodeCredentialFile(credential), nonce, pcrs: state.selection.toString(), ima_offset: imaOffer?.base?.offset })),
        state.config.nonce_ttl,
        node,
      );
    } finally {
      release();
    }
    const response = decodeResponse(responseBytes);

    // 5. Freshness and residency. The nonce is this stream's and this is its only response.
    const age = this.#now().getTime() - issuedAt;
    if (age > state.config.nonce_ttl) throw nonceExpired(node, age, state.config.nonce_ttl);
    if (!secretsEqual(secret, response.secret)) {
      throw new AttestationRefused('ERR_CREDENTIAL_SECRET', `node ${node}: credential activation failed: the AK is not in the TPM holding this EK`, {
        fields: { rule: 'credential activation' },
      });
    }

    // 6. The quote: signed by that AK, over exactly the PCRs we asked for, with our nonce.
    const quoted: QuotedPcrs = verifyQuote({
      akPublic,
      attestBytes: response.attest,
      signatureBytes: response.signature,
      pcrValues: response.pcr_values,
      expectedSelection: state.selection,
      nonce,
      expectedQualifiedSigner: qualifiedName(qualifiedName(hierarchyQualifiedName(), ekPublic), akPublic),
    });

    // 7. Measured boot: the log counts only where it replays to quoted PCRs. It is parsed only now, once the TPM
    //    holding this EK has answered: parsing up to 8 MiB is not work an unproven client may cause.
    const eventLog = payload.event_log ? parseEventLog(payload.event_log) : undefined;
    let verified: VerifiedEvents | undefined;
    let facts: BootFacts | undefined;
    if (eventLog) {
      verified = replayEventLog(eventLog, quoted);
      if (![...verified.replayedPcrs.values()].some((bank) => bank.size > 0)) {
        // An empty log, or one in banks that were not quoted, verifies nothing: it is no measured-boot evidence.
        if (state.config.require_event_log) {
          throw new AttestationRefused(
            'ERR_EVENTLOG_VERIFIES_NOTHING',
            `node ${node}: the event log (${eventLog.format}, banks ${eventLog.banks.join(',')}) replays none of the quoted PCRs (${state.selection.toString()}) and require_event_log is on`,
            { fields: { rule: 'require_event_log' } },
          );
        }
      }
      const factsKey = bootFactsKey(payload.event_log!, verified);
      facts = state.bootFacts.get(factsKey);
      if (!facts) {
        facts = deriveBootFacts(verified);
        state.bootFacts.set(factsKey, facts);
      }
      audit['secure_boot'] = facts.secureBoot.state;
      const quirks = [...eventLog.parseQuirks, ...verified.appliedQuirks.map((q) => q.id)];
      if (quirks.length) audit['quirks'] = quirks.join(',');
    }
    audit['policy_match'] = state.policies.length ? state.policyMatch : undefined;
    const passedPolicies = enforcePolicies(
      state.policies,
      state.policyMatch,
      facts,
      verified,
      node,
      (failed) => {
        audit['policies_failed'] = failed;
      },
      policyReport,
    );
    if (passedPolicies.length) audit['policies'] = passedPolicies.join(',');

    const selectorValues = nodeSelectors({
      ek,
      quoted,
      selectorPcrs: state.config.selector_pcrs,
      facts,
      passedPolicies,
    });
    if (state.ima) {
      const evidence = { log: response.ima_log ?? payload.ima_log, offset: response.ima_offset ?? 0, total: response.ima_total };
      const resend = (request: Uint8Array) => withinTtl(io.challenge(request), state.config.nonce_ttl, node);
      selectorValues.push(...(await checkNodeIma(state.ima, imaOffer!, evidence, quoted, { node, agentId, now: this.#now(), audit, resend })));
    }
    // Last: only a node that proved its TPM and passed policy is recorded as pending, or admitted.
    await state.enrolment?.admit(ek.pubHash, agentId, audit);
    return { spiffeId: agentId, selectorValues, canReattest: true };
  }

  /** Counts one outstanding challenge for `ekHash`, or refuses when it has too many; returns the release. */
  #reserveChallenge(ekHash: string, node: string, limit: number): () => void {
    const pending = this.#pendingChallenges.get(ekHash) ?? 0;
    if (pending >= limit) {
      throw new ResourceExhausted('ERR_CHALLENGES_PER_EK', `node ${node}: ${pending} challenges are already outstanding for this EK (max_pending_challenges_per_ek ${limit})`, {
        fields: { rule: 'max_pending_challenges_per_ek', pending },
      });
    }
    this.#pendingChallenges.set(ekHash, pending + 1);
    return () => this.#releaseChallenge(ekHash);
  }

  /** Called once per reserved challenge, from the `finally` around it. */
  #releaseChallenge(ekHash: string): void {
    const left = (this.#pendingChallenges.get(ekHash) ?? 0) - 1;
    if (left > 0) this.#pendingChallenges.set(ekHash, left);
    else this.#pendingChallenges.delete(ekHash);
  }
}

/** A response that came (or would come) too late: not a verdict on the node, so a code SPIRE's agent retries. */
function nonceExpired(node: string, ageMs: number, ttlMs: number): DeadlineExceeded {
  return new DeadlineExceeded('ERR_NONCE_EXPIRED', `node ${node}: no challenge response within nonce_ttl (${ttlMs} ms; waited ${ageMs} ms)`, {
    fields: { rule: 'nonce freshness', age_ms: ageMs },
  });
}

/** Waits for the challenge response at most `ttlMs`; the stream is then ended by the caller's error. */
async function withinTtl(response: Promise<Uint8Array>, ttlMs: number, node: string): Promise<Uint8Array> {
  let timer: NodeJS.Timeout | undefined;
  const started = performance.now();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(nonceExpired(node, Math.round(performance.now() - started), ttlMs)), ttlMs);
  });
  try {
    return await Promise.race([response, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Boot facts are a pure function of the verified events and of which quoted PCRs are unexplained. For one
 * configuration (one PCR selection, which a verified quote matches exactly) and the same log bytes, those differ
 * between nodes in only two ways: a firmware workaround the replay needed (it adds events), and a quoted PCR without
 * events that is at reset on one node and extended on another (only the second must make its facts unknown). Every
 * other quoted PCR with events replayed, or the replay refused the node.
 */
function bootFactsKey(logBytes: Uint8Array, verified: VerifiedEvents): string {
  const quirks = verified.appliedQuirks.map((q) => [q.id, q.pcrIndex]);
  return JSON.stringify([toHex(createHash('sha256').update(logBytes).digest()), quirks, [...verified.unexplainedPcrs]]);
}
