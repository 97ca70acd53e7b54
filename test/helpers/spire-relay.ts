/**
 * Relays one node attestation between an agent plugin and a server plugin exactly as SPIRE does:
 * the agent facade Recv()s the payload, the server facade sends it, each server challenge goes to the
 * agent and each agent response back, until the server returns agent attributes; then both streams
 * are cancelled (SPIRE never half-closes). Hooks let a test play a man in the middle.
 */
import type * as grpc from '@grpc/grpc-js';
import { ServiceNames } from '../../src/plugin/protos.js';
import type { PluginHarness } from './plugin-harness.js';

export interface AgentAttributesMessage {
  spiffe_id: string;
  selector_values: string[];
  can_reattest: boolean;
}

export interface RelayHooks {
  /** Rewrites the agent's payload before the server sees it. */
  payload?: (payload: Buffer) => Buffer;
  /** Rewrites a challenge before the agent sees it. */
  challenge?: (challenge: Buffer) => Buffer;
  /** Rewrites (or replaces) the agent's response before the server sees it. */
  response?: (response: Buffer, challenge: Buffer) => Buffer;
  /** Answers the server's challenge without asking the agent at all. */
  answer?: (challenge: Buffer) => Buffer;
}

export interface RelayResult {
  attributes: AgentAttributesMessage;
  payload: Buffer;
  challenges: Buffer[];
  responses: Buffer[];
}

export function relayAttestation(agent: PluginHarness, server: PluginHarness, hooks: RelayHooks = {}): Promise<RelayResult> {
  return new Promise((resolve, reject) => {
    const agentCall = agent.client(ServiceNames.agentNodeAttestor)['AidAttestation']!() as grpc.ClientDuplexStream<any, any>;
    let serverCall: grpc.ClientDuplexStream<any, any> | undefined;
    const challenges: Buffer[] = [];
    const responses: Buffer[] = [];
    let payload: Buffer | undefined;
    let settled = false;
    const finish = (err: Error | undefined, attributes?: AgentAttributesMessage) => {
      if (settled) return;
      settled = true;
      agentCall.cancel();
      serverCall?.cancel();
      if (err) reject(Object.assign(err, { side: (err as { side?: string }).side }));
      else resolve({ attributes: attributes!, payload: payload!, challenges, responses });
    };
    const sendToServer = (response: Buffer) => {
      const challenge = challenges[challenges.length - 1]!;
      const forwarded = hooks.response ? hooks.response(response, challenge) : response;
      responses.push(forwarded);
      serverCall!.write({ challenge_response: forwarded });
    };
    agentCall.on('data', (msg: any) => {
      if (msg.data === 'payload' && payload === undefined) {
        payload = hooks.payload ? hooks.payload(msg.payload) : msg.payload;
        serverCall = server.client(ServiceNames.serverNodeAttestor)['Attest']!() as grpc.ClientDuplexStream<any, any>;
        serverCall.on('data', (res: any) => {
          if (res.response === 'agent_attributes') finish(undefined, res.agent_attributes);
          else if (res.response === 'challenge') {
            challenges.push(res.challenge);
            if (hooks.answer) sendToServer(hooks.answer(res.challenge));
            else agentCall.write({ challenge: hooks.challenge ? hooks.challenge(res.challenge) : res.challenge });
          } else finish(new Error('plugin response missing challenge or agent attributes'));
        });
        serverCall.on('error', (err) => finish(Object.assign(err, { side: 'server' })));
        serverCall.write({ payload });
      } else if (msg.data === 'challenge_response') {
        sendToServer(msg.challenge_response);
      }
    });
    agentCall.on('error', (err) => finish(Object.assign(err, { side: 'agent' })));
  });
}
