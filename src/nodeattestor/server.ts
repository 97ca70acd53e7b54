/**
 * Server side of NodeAttestor "tpm": pure TypeScript, no TPM tools. One attestation is
 *
 *   payload (EK, AK public, event log) → EK trust → AK checklist → challenge {credential bound to the
 *   AK name, fresh nonce, PCR selection} → response {secret, quote} → secret (constant time) →
 *   nonce (single use, 60 s) → quote (signature, magic, type, nonce, exact selection, PCR digest) →
 *   event-log replay against the quoted PCRs → boot facts → policy → selectors.
 *
 * Every step consumes only what the step before verified. A refusal is PERMISSION_DENIED naming the
 * node and the rule; malformed input is INVALID_ARGUMENT. One audit line is logged per decision.
 */
import { createHash, randomBytes as nodeRandomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { AttestationRefused, InvalidConfig, isAttestorError, NotConfigured } from '../errors.js';
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
import { EkTrust, type TrustedEk } from './ek-trust.js';
import { BoundedCache } from './bounded-cache.js';
import { NonceStore } from './nonce-store.js';
import { nodeSelectors } from './selectors.js';
import { checkNodeIma, imaConfigShape, loadImaGate, type ImaGate } from './ima-gate.js';
import { decodePayload, decodeResponse, encodeChallenge } from './wire.js';

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
    /** How long a challenge's nonce may be answered; 0 would refuse every attestation. */
    nonce_ttl: duration()
      .refine((ms) => ms >= 1_000 && ms <= 600_000, { message: 'must be between 1s and 10m (the agent answers within one round trip)' })
      .default(60_000),
    /** The plugin name in SPIRE's config; agent IDs are /spire/agent/<name>/<ek hash>. */
    plugin_name: z.string().regex(/^[A-Za-z0-9._-]+$/).default('tpm'),
    /** IMA runtime integrity (src/nodeattestor/ima-gate.ts, docs/ima.md). */
    ...imaConfigShape,
  })
  .refine((c) => c.ek_ca_path !== undefined || (c.ek_hash_allowlist !== undefined && c.ek_hash_allowlist.length > 0), {
    message: 'set ek_ca_path, ek_hash_allowlist or both: without either no EK could be trusted',
  });
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
  readonly nonces: NonceStore;
  /** Boot facts are a pure function of the log bytes and which PCRs verified: derive once per distinct boot. */
  readonly bootFacts: BoundedCache<string, BootFacts>;
}

const BOOT_FACTS_CACHE_ENTRIES = 1024;

export class TpmServerAttestor implements ServerNodeAttestor {
  readonly #log: Logger;
  readonly #now: () => Date;
  readonly #random: (size: number) => Uint8Array;
  readonly #readFile: (path: string) => Promise<Uint8Array>;
  #state: ServerState | undefined;

  constructor(log: Logger, options: TpmServerOptions = {}) {
    this.#log = log;
    this.#now = options.now ?? (() => new Date());
    this.#random = options.randomBytes ?? ((n) => new Uint8Array(nodeRandomBytes(n)));
    this.#readFile = options.readFile ?? ((p) => readFile(p).then((b) => new Uint8Array(b)));
  }

  async configure(raw: Record<string, unknown>, core: CoreConfig): Promise<void> {
    this.#state = await this.#load(raw, core);
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
    const ima = selection ? await problems.check(() => loadImaGate(config, selection, this.#readFile)) : undefined;
    if (!selection || !ekTrust) return problems.fail();
    problems.throwIfAny();
    if (config.policy_path && !config.require_event_log) {
      this.#log.warn('policy_path is set but require_event_log is false: nodes without an event log skip boot policies');
    }
    // Keep the nonce store across reconfiguration so in-flight challenges stay single-use.
    const nonces =
      this.#state && this.#state.config.nonce_ttl === config.nonce_ttl
        ? this.#state.nonces
        : new NonceStore({ ttlMs: config.nonce_ttl, now: () => this.#now().getTime() });
    return {
      config,
      trustDomain: TrustDomain.parse(core.trustDomain),
      selection,
      ekTrust,
      policies,
      policyMatch: config.policy_match,
      ima,
      nonces,
      bootFacts: new BoundedCache(BOOT_FACTS_CACHE_ENTRIES),
    };
  }

  async attest(payloadBytes: Uint8Array, io: ServerAttestIo): Promise<AgentAttributes> {
    const state = this.#state;
    if (!state) throw new NotConfigured('ERR_NOT_CONFIGURED', 'tpm server attestor is not configured');
    const started = performance.now();
    const audit: Record<string, string | number | boolean | undefined> = { node_hint: io.untrustedForwardedHost };
    try {
      const attributes = await this.#attest(state, payloadBytes, io, audit);
      this.#log.info('Attestation decision', {
        ...audit,
        outcome: 'accepted',
        duration_ms: Math.round(performance.now() - started),
      });
      return attributes;
    } catch (err) {
      const fields = isAttestorError(err) ? err.fields : {};
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

  async #attest(
    state: ServerState,
    payloadBytes: Uint8Array,
    io: ServerAttestIo,
    audit: Record<string, string | number | boolean | undefined>,
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

    // Only a trusted EK earns parsing a (possibly megabytes long) event log.
    const eventLog = payload.event_log ? parseEventLog(payload.event_log) : undefined;
    if (!eventLog && state.config.require_event_log) {
      throw new AttestationRefused('ERR_EVENTLOG_MISSING', `node ${node}: no measured-boot event log was sent and require_event_log is on`, {
        fields: { rule: 'require_event_log' },
      });
    }

    // 3. The AK must be a restricted, TPM-resident signing key before anything is bound to it.
    checkAkAttributes(akPublic);
    const akName = publicName(akPublic);

    // 4. One round: a credential only the TPM holding this EK and an object named akName can open,
    //    plus a fresh nonce for the quote.
    const secret = this.#random(SECRET_BYTES);
    const nonce = this.#random(NONCE_BYTES);
    const credential = makeCredential({ ekPublic, akName, secret, randomBytes: this.#random });
    state.nonces.issue(nonce);
    const responseBytes = await io.challenge(
      encodeChallenge({ credential: encodeCredentialFile(credential), nonce, pcrs: state.selection.toString() }),
    );
    const response = decodeResponse(responseBytes);

    // 5. Freshness and residency: the nonce is spent now, whatever happens next.
    state.nonces.consume(nonce, node);
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

    // 7. Measured boot: the log counts only where it replays to quoted PCRs.
    let verified: VerifiedEvents | undefined;
    let facts: BootFacts | undefined;
    if (eventLog) {
      verified = replayEventLog(eventLog, quoted);
      const factsKey = bootFactsKey(payload.event_log!, verified);
      facts = state.bootFacts.get(factsKey);
      if (!facts) {
        facts = deriveBootFacts(verified);
        state.bootFacts.set(factsKey, facts);
      }
      audit['secure_boot'] = facts.secureBoot.state;
      if (verified.appliedQuirks.length) audit['quirks'] = verified.appliedQuirks.map((q) => q.id).join(',');
    }
    audit['policy_match'] = state.policies.length ? state.policyMatch : undefined;
    const passedPolicies = enforcePolicies(state.policies, state.policyMatch, facts, verified, node, (failed) => {
      audit['policies_failed'] = failed;
    });
    if (passedPolicies.length) audit['policies'] = passedPolicies.join(',');

    const selectorValues = nodeSelectors({
      ek,
      quoted,
      selectorPcrs: state.config.selector_pcrs,
      facts,
      passedPolicies,
    });
    if (state.ima) selectorValues.push(...checkNodeIma(state.ima, response.ima_log ?? payload.ima_log, quoted, node));
    return { spiffeId: agentId, selectorValues, canReattest: true };
  }
}

/** Same log bytes and the same verified PCRs and quirks give the same verified events, hence the same facts. */
function bootFactsKey(logBytes: Uint8Array, verified: VerifiedEvents): string {
  const pcrs = [...new Set(verified.events.map((e) => e.pcrIndex))].sort((a, b) => a - b).join(',');
  const quirks = verified.appliedQuirks.map((q) => `${q.id}@${q.pcrIndex}`).join(',');
  return `${createHash('sha256').update(logBytes).digest('hex')}|${verified.events.length}|${pcrs}|${quirks}`;
}
