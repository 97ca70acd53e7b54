/** The decision-event fields the revoker relies on (src/nodeattestor/decision-event.ts writes them). */
import { z } from '../plugin/config-schema.js';

/** The fields of a decision event the revoker relies on; anything else in the line is ignored. */
export const eventSchema = z.object({
  version: z.literal(1),
  type: z.literal('spire-edge.attestation.decision'),
  event_id: z.string().min(1).max(128),
  outcome: z.enum(['accepted', 'refused']),
  status: z.string(),
  agent_id: z.string().startsWith('spiffe://').max(2048).optional(),
  ek_hash: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  code: z.string().max(128).optional(),
  rule: z.string().max(4096).optional(),
  decided_at: z.string(),
});
export type RevokerEvent = z.output<typeof eventSchema>;
