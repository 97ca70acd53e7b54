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
  /**
   * A workload's refusal (edge-workload's container-level IMA, src/workload/ima.ts): the pod to delete. The pod UID
   * is a precondition of the delete, so a pod recreated under the same name is left alone.
   */
  workload: z
    .object({
      pod_uid: z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/).optional(),
      pod_namespace: z.string().min(1).max(253).optional(),
      pod_name: z.string().min(1).max(253).optional(),
      container_id: z.string().max(128).optional(),
      container_name: z.string().max(253).optional(),
      pid: z.number().int().optional(),
      path: z.string().max(4096).optional(),
      digest: z.string().max(256).optional(),
      rule: z.string().max(128).optional(),
      policy: z.string().max(128).optional(),
      node_name: z.string().max(253).optional(),
    })
    .optional(),
});
export type RevokerEvent = z.output<typeof eventSchema>;
