/**
 * Raw Attest / AidAttestation streams for attacks that spire-relay.ts's one-shot relay cannot express: holding a
 * challenge open, answering late, opening and cancelling many streams.
 */
import type * as grpc from '@grpc/grpc-js';
import { ServiceNames } from '../../src/plugin/protos.js';
import type { PluginHarness } from '../helpers/plugin-harness.js';
import type { AgentAttributesMessage } from '../helpers/spire-relay.js';

export interface ServerAttempt {
  /** The server's challenge (rejects if the server ends the stream first). */
  readonly challenge: Promise<Buffer>;
  /** The attributes, or the server's error (`side: 'server'`). */
  readonly result: Promise<AgentAttributesMessage>;
  respond(response: Buffer): void;
  cancel(): void;
}

/** Opens the server's Attest stream as SPIRE's server does and sends `payload`. */
export function openServerAttempt(server: PluginHarness, payload: Buffer): ServerAttempt {
  const call = server.client(ServiceNames.serverNodeAttestor)['Attest']!() as grpc.ClientDuplexStream<any, any>;
  let onChallenge!: (b: Buffer) => void;
  let onChallengeError!: (e: Error) => void;
  const challenge = new Promise<Buffer>((resolve, reject) => {
    onChallenge = resolve;
    onChallengeError = reject;
  });
  const result = new Promise<AgentAttributesMessage>((resolve, reject) => {
    call.on('data', (res: any) => {
      if (res.response === 'challenge') onChallenge(res.challenge);
      else if (res.response === 'agent_attributes') resolve(res.agent_attributes);
    });
    call.on('error', (err) => {
      const tagged = Object.assign(err, { side: 'server' });
      onChallengeError(tagged);
      reject(tagged);
    });
  });
  // Callers that only care about one of the two must not see an unhandled rejection for the other.
  challenge.catch(() => undefined);
  result.catch(() => undefined);
  call.write({ payload });
  return {
    challenge,
    result,
    respond: (response) => call.write({ challenge_response: response }),
    cancel: () => call.cancel(),
  };
}

export interface AgentSession {
  readonly payload: Promise<Buffer>;
  /** The agent plugin's answer to a challenge (it drives the real TPM). */
  respond(challenge: Buffer): Promise<Buffer>;
  cancel(): void;
}

/** Opens the agent plugin's AidAttestation stream as SPIRE's agent does. */
export function openAgentSession(agent: PluginHarness): AgentSession {
  const call = agent.client(ServiceNames.agentNodeAttestor)['AidAttestation']!() as grpc.ClientDuplexStream<any, any>;
  let onPayload!: (b: Buffer) => void;
  let waiting: { resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  let failed: Error | undefined;
  const payload = new Promise<Buffer>((resolve, reject) => {
    onPayload = resolve;
    call.on('error', (err) => {
      failed = Object.assign(err, { side: 'agent' });
      reject(failed);
      waiting?.reject(failed);
    });
  });
  payload.catch(() => undefined);
  call.on('data', (msg: any) => {
    if (msg.data === 'payload') onPayload(msg.payload);
    else if (msg.data === 'challenge_response') waiting?.resolve(msg.challenge_response);
  });
  return {
    payload,
    respond: (challenge) =>
      new Promise<Buffer>((resolve, reject) => {
        if (failed) return reject(failed);
        waiting = { resolve, reject };
        call.write({ challenge });
      }),
    cancel: () => call.cancel(),
  };
}
