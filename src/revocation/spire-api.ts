/**
 * The SPIRE server Agent API (spire.api.server.agent.v1.Agent) on the admin socket: just GetAgent, BanAgent and
 * DeleteAgent. A banned agent can neither renew its SVID nor re-attest; deleting the record lifts the ban, so the
 * node can attest afresh. Descriptors come from the bundled proto set (src/plugin/protos.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { clientConstructor, ServiceNames } from '../plugin/protos.js';
import { SpiffeId } from '../spiffe/trust-domain.js';

export interface AgentRecord {
  readonly id: string;
  readonly banned: boolean;
  readonly selectors: readonly { type: string; value: string }[];
  readonly attestationType: string;
  readonly serial: string;
}

interface RawAgent {
  id?: { trust_domain: string; path: string };
  attestation_type?: string;
  x509svid_serial_number?: string;
  selectors?: { type: string; value: string }[];
  banned?: boolean;
}

/** A call failed in a way worth retrying (SPIRE down, deadline, overload). */
export function isTransient(err: unknown): boolean {
  const code = (err as { code?: number }).code;
  return code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED || code === grpc.status.RESOURCE_EXHAUSTED || code === grpc.status.ABORTED || code === grpc.status.UNKNOWN || code === grpc.status.INTERNAL || code === grpc.status.CANCELLED;
}

function spiffeIdMessage(agentId: string): { trust_domain: string; path: string } {
  const id = SpiffeId.parse(agentId);
  return { trust_domain: id.trustDomain.name, path: id.path };
}

export class SpireAgentApi {
  readonly #client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  readonly #timeoutMs: number;

  constructor(adminSocket: string, timeoutMs: number) {
    const Client = clientConstructor(ServiceNames.agentApi);
    // Reconnect quickly after an outage; the revoker's own backoff paces the retries.
    this.#client = new Client(`unix:${adminSocket}`, grpc.credentials.createInsecure(), {
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
    }) as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
    this.#timeoutMs = timeoutMs;
  }

  #call<T>(method: string, request: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = this.#client[method]!.bind(this.#client);
      fn(request, { deadline: Date.now() + this.#timeoutMs }, (err: grpc.ServiceError | null, response: T) => (err ? reject(err) : resolve(response)));
    });
  }

  /** undefined when SPIRE has no such agent. */
  async get(agentId: string): Promise<AgentRecord | undefined> {
    try {
      const a = await this.#call<RawAgent>('GetAgent', { id: spiffeIdMessage(agentId) });
      return {
        id: a.id ? `spiffe://${a.id.trust_domain}${a.id.path}` : agentId,
        banned: a.banned === true,
        selectors: a.selectors ?? [],
        attestationType: a.attestation_type ?? '',
        serial: a.x509svid_serial_number ?? '',
      };
    } catch (err) {
      if ((err as { code?: number }).code === grpc.status.NOT_FOUND) return undefined;
      throw err;
    }
  }

  async ban(agentId: string): Promise<void> {
    await this.#call('BanAgent', { id: spiffeIdMessage(agentId) });
  }

  /** Deletes the agent record, which lifts a ban. false when there was none. */
  async delete(agentId: string): Promise<boolean> {
    try {
      await this.#call('DeleteAgent', { id: spiffeIdMessage(agentId) });
      return true;
    } catch (err) {
      if ((err as { code?: number }).code === grpc.status.NOT_FOUND) return false;
      throw err;
    }
  }

  /** Every agent whose ID ends with /<suffix> (an EK hash names its agent that way). */
  async findBySuffix(suffix: string): Promise<string[]> {
    const out: string[] = [];
    let pageToken = '';
    do {
      const r = await this.#call<{ agents?: RawAgent[]; next_page_token?: string }>('ListAgents', { page_size: 500, page_token: pageToken, output_mask: {} });
      for (const a of r.agents ?? []) if (a.id && a.id.path.endsWith(`/${suffix}`)) out.push(`spiffe://${a.id.trust_domain}${a.id.path}`);
      pageToken = r.next_page_token ?? '';
    } while (pageToken);
    return out;
  }

  close(): void {
    this.#client.close();
  }
}
