/**
 * Server side of spire-tpm-plugin's protocol, so a fleet migrates without a flag day: swap the server plugin
 * first (`legacy_agents = "allow"`), roll agents at any pace, then set "deny" (docs/migration.md).
 *
 *   payload (EK PEM, AK creation evidence) → EK trust (same as ours) → AK checklist + creation evidence →
 *   challenge {credential bound to the AK name} → response {secret} → secret (constant time) → selectors.
 *
 * A legacy agent proves only that its AK is resident in the TPM holding a trusted EK. It sends no quote and no
 * event log, so boot policies cannot judge it: with policies enforced it is refused, in report mode it gets no
 * policy:* selector. Every legacy admission carries `legacy_agent:true` so entries can tell the two apart.
 */
import { AttestationRefused } from '../errors.js';
import type { AgentAttributes, ServerAttestIo } from '../plugin/types.js';
import type { MeasuredBootPolicy } from '../policy/policy.js';
import { makeCredential, secretsEqual } from '../tpm/activation.js';
import { checkAkCreation } from '../tpm/creation.js';
import { defaultEkPublicFromSpki } from '../tpm/ek-template.js';
import { ekPubHash } from '../tpm/public.js';
import { SpiffeId, type TrustDomain } from '../spiffe/trust-domain.js';
import type { EkTrust } from './ek-trust.js';
import { decodeLegacyPayload, decodeLegacyResponse, encodeLegacyChallenge } from './legacy-wire.js';
import type { PolicyMatch } from './policy-gate.js';
import { ekSelectors } from './selectors.js';

export type LegacyAgents = 'allow' | 'deny';
export const LEGACY_AGENT_SELECTOR = 'legacy_agent:true';
/** go-attestation's activation secret length. */
const LEGACY_SECRET_BYTES = 32;

export interface LegacyAttestContext {
  readonly legacyAgents: LegacyAgents;
  readonly trustDomain: TrustDomain;
  readonly pluginName: string;
  readonly ekTrust: EkTrust;
  readonly policies: readonly MeasuredBootPolicy[];
  readonly policyMatch: PolicyMatch;
  readonly now: Date;
  readonly randomBytes: (size: number) => Uint8Array;
}

export async function attestLegacyAgent(
  ctx: LegacyAttestContext,
  payloadBytes: Uint8Array,
  io: ServerAttestIo,
  audit: Record<string, string | number | boolean | undefined>,
): Promise<AgentAttributes> {
  audit['legacy_agent'] = true;
  const payload = decodeLegacyPayload(payloadBytes);
  // Audited before any refusal: the hash an operator allowlists, and spire-tpm-plugin's pub_hash.
  const pubHash = ekPubHash(payload.ekSpki);
  audit['ek_hash'] = pubHash;
  const node = pubHash.slice(0, 16);
  if (ctx.legacyAgents !== 'allow') {
    throw new AttestationRefused(
      'ERR_LEGACY_AGENT_DENIED',
      `node ${node}: sent spire-tpm-plugin's attestation payload and legacy_agents is "deny"; upgrade the agent to tpm-agent, ` +
        'or set legacy_agents = "allow" on the server while migrating (docs/migration.md)',
      { fields: { rule: 'legacy_agents' } },
    );
  }

  const ekPublic = defaultEkPublicFromSpki(payload.ekSpki);
  const ek = await ctx.ekTrust.verify({ ekPublic, certificate: payload.ekCertificate, intermediates: [], now: ctx.now });
  const agentId = SpiffeId.fromSegments(ctx.trustDomain, 'spire', 'agent', ctx.pluginName, ek.pubHash).toString();
  audit['agent_id'] = agentId;

  if (ctx.policies.length > 0) {
    audit['policy_match'] = ctx.policyMatch;
    audit['policies_failed'] = `${ctx.policies.map((p) => p.name).join(', ')}: legacy agent sends no quote or event log`;
    if (ctx.policyMatch !== 'report') {
      throw new AttestationRefused(
        'ERR_LEGACY_AGENT_POLICY',
        `node ${node}: boot policies are enforced (policy_match = "${ctx.policyMatch}") and a spire-tpm-plugin agent sends no quote ` +
          'or event log to judge; upgrade the agent to tpm-agent, or use policy_match = "report" while migrating',
        { fields: { rule: 'legacy_agents: boot policy' } },
      );
    }
  }

  // The Name the credential is bound to is that of a checked AK public area.
  const ak = checkAkCreation(payload.ak);
  const secret = ctx.randomBytes(LEGACY_SECRET_BYTES);
  const credential = makeCredential({ ekPublic, akName: ak.akName, secret, randomBytes: ctx.randomBytes });
  const response = decodeLegacyResponse(await io.challenge(encodeLegacyChallenge(credential)));
  if (!secretsEqual(secret, response.secret)) {
    throw new AttestationRefused('ERR_CREDENTIAL_SECRET', `node ${node}: credential activation failed: the AK is not in the TPM holding this EK`, {
      fields: { rule: 'credential activation' },
    });
  }
  return { spiffeId: agentId, selectorValues: [...ekSelectors(ek), LEGACY_AGENT_SELECTOR], canReattest: true };
}
