/**
 * The TPM attestor's messages between agent and server, inside SPIRE's opaque payload and
 * challenge bytes. JSON with base64 fields, versioned, size-capped and strictly validated: the
 * server parses every TPM structure again and trusts nothing here until it is verified.
 */
import { MalformedInput } from '../errors.js';
import { z } from '../plugin/config-schema.js';
import { MAX_IMA_ENTRIES } from '../tpm/ima/log.js';

export const WIRE_VERSION = 1;
/** Event logs are typically < 100 KiB; IMA logs can reach megabytes. */
export const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;
export const MAX_CHALLENGE_BYTES = 64 * 1024;
/**
 * SPIRE's server reads at most 4 MiB per agent message (grpc-go's default receive size; SPIRE does not raise it), so
 * IMA lists travel in chunks of at most this many bytes (base64 in JSON: 2.5 MiB becomes 3.4 MiB).
 */
export const MAX_IMA_CHUNK_BYTES = 2.5 * 1024 * 1024;
export const DEFAULT_IMA_CHUNK_BYTES = 2 * 1024 * 1024;
/** Largest IMA list one attestation gathers (all chunks): about 550,000 ima-ng entries. */
export const MAX_IMA_LIST_BYTES = 64 * 1024 * 1024;
/** Quote parts are small; the IMA log read after the quote (base64, up to 8 MiB raw) dominates. */
export const MAX_RESPONSE_BYTES = 64 * 1024 + 12 * 1024 * 1024;
/** Deepest nesting any message has (payload → tpm → field), with one level of slack. */
export const MAX_JSON_DEPTH = 4;
/** Most object members plus array elements in one message (the payload has about 20). */
export const MAX_JSON_MEMBERS = 256;

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A base64 JSON string field, length-bounded before decoding (shared with the spire-tpm-plugin wire format). */
export function b64(maxBytes: number) {
  return z
    .string()
    .max(Math.ceil(maxBytes / 3) * 4 + 4)
    .refine((s) => s.length % 4 === 0 && BASE64.test(s), 'expected base64')
    .transform((s) => new Uint8Array(Buffer.from(s, 'base64')));
}

const payloadSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  ek_pub: b64(4096),
  ek_cert: b64(16 * 1024).optional(),
  ek_intermediates: z.array(b64(16 * 1024)).max(8).optional(),
  ak_pub: b64(4096),
  event_log: b64(8 * 1024 * 1024).optional(),
  ima_log: b64(8 * 1024 * 1024).optional(),
  tpm: z
    .strictObject({
      manufacturer: z.string().max(64),
      vendor: z.string().max(128),
      firmware_version: z.string().max(32),
    })
    .optional(),
});

const challengeSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  credential: b64(4096),
  nonce: b64(64),
  pcrs: z.string().max(256),
  /**
   * Incremental IMA: the entries before this index are already verified for this node (server state), so the agent
   * sends the list from here. Sent only to agents that reported `ima_total` before (older agents refuse unknown fields).
   */
  ima_offset: z.number().int().min(1).max(MAX_IMA_ENTRIES).optional(),
});

const responseSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  secret: b64(64),
  attest: b64(4096),
  signature: b64(4096),
  pcr_values: b64(24 * 64 * 4),
  /** The IMA log, read after the quote so PCR 10 never runs ahead of it (the server takes the quoted prefix). */
  ima_log: b64(8 * 1024 * 1024).optional(),
  /** Index of the first entry in ima_log: the challenge's ima_offset, or 0 (absent) for the whole list. */
  ima_offset: z.number().int().min(0).max(MAX_IMA_ENTRIES).optional(),
  /** Complete entries in the agent's whole list (sent with ima_log; marks an agent that can send increments). */
  ima_total: z.number().int().min(0).max(MAX_IMA_ENTRIES).optional(),
});

/**
 * A second challenge, after the quote: the server could not use the increment the agent sent (the TPM was reset or
 * restarted since the state it continued, or it does not continue the stored PCR 10) and asks for the whole list.
 */
const imaResendSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  ima_resend: z.literal(true),
  /** First entry wanted (absent: 0, the whole list). Also how the server asks for the next chunk of a long list. */
  from: z.number().int().min(1).max(MAX_IMA_ENTRIES).optional(),
});

const imaResendResponseSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  ima_log: b64(8 * 1024 * 1024),
  /** Index of the first entry in ima_log: the request's `from` (absent: 0). */
  ima_offset: z.number().int().min(0).max(MAX_IMA_ENTRIES).optional(),
  ima_total: z.number().int().min(0).max(MAX_IMA_ENTRIES).optional(),
});

export type ImaResendResponse = z.output<typeof imaResendResponseSchema>;

export type AttestationPayload = z.output<typeof payloadSchema>;
export type AttestationChallenge = z.output<typeof challengeSchema>;
export type ChallengeResponse = z.output<typeof responseSchema>;

type Encodable = Record<string, unknown>;
/** Encoder inputs accept any Uint8Array view (the decoders produce fresh ArrayBuffer-backed copies). */
type Loose<T> = { [K in keyof T]: T[K] extends Uint8Array | undefined ? Uint8Array | Extract<T[K], undefined> : T[K] extends Uint8Array[] | undefined ? Uint8Array[] | Extract<T[K], undefined> : T[K] };

function toJsonValue(value: unknown): unknown {
  // Converted before JSON.stringify: a Buffer's own toJSON would otherwise win over any replacer.
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  if (Array.isArray(value)) return value.map(toJsonValue);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, toJsonValue(v)]));
  }
  return value;
}

function encode(message: Encodable): Uint8Array {
  return new Uint8Array(Buffer.from(JSON.stringify(toJsonValue(message)), 'utf8'));
}

/**
 * One linear pass over the bytes before JSON.parse: nesting deeper than MAX_JSON_DEPTH or more than
 * MAX_JSON_MEMBERS members is refused, so parsing costs no more than copying the strings. (Without it a 16 MiB
 * `[[[[…` or `{"a":0,"b":0,…` payload from a client that has proven nothing makes V8 build millions of objects.)
 * Structural characters are ASCII, so scanning UTF-8 bytes is exact; string contents are skipped.
 */
function checkJsonShape(what: string, bytes: Uint8Array): void {
  let depth = 0;
  let members = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c) i++; // backslash: skip the escaped character
      else if (b === 0x22) inString = false;
      continue;
    }
    if (b === 0x22) inString = true;
    else if (b === 0x7b || b === 0x5b) {
      if (++depth > MAX_JSON_DEPTH) throw new MalformedInput('ERR_WIRE_SHAPE', `${what}: JSON nested deeper than ${MAX_JSON_DEPTH} at byte ${i}`);
    } else if (b === 0x7d || b === 0x5d) depth--;
    else if (b === 0x2c || b === 0x3a) {
      if (++members > 2 * MAX_JSON_MEMBERS) throw new MalformedInput('ERR_WIRE_SHAPE', `${what}: more than ${MAX_JSON_MEMBERS} JSON members`);
    }
  }
}

function decode<T extends z.ZodType>(what: string, schema: T, bytes: Uint8Array, maxBytes: number): z.output<T> {
  if (bytes.length > maxBytes) throw new MalformedInput('ERR_WIRE_TOO_LARGE', `${what} is ${bytes.length} bytes, more than ${maxBytes}`);
  checkJsonShape(what, bytes);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new MalformedInput('ERR_WIRE_SYNTAX', `${what} is not UTF-8 JSON`);
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const where = issue.path.length ? `field "${issue.path.join('.')}"` : 'message';
    const detail = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : issue.message;
    throw new MalformedInput('ERR_WIRE_FIELD', `${what}: ${where}: ${detail}`);
  }
  return result.data;
}

export const encodePayload = (p: Loose<Omit<AttestationPayload, 'v'>>) => encode({ v: WIRE_VERSION, ...p });
export const decodePayload = (b: Uint8Array) => decode('attestation payload', payloadSchema, b, MAX_PAYLOAD_BYTES);
export const encodeChallenge = (c: Loose<Omit<AttestationChallenge, 'v'>>) => encode({ v: WIRE_VERSION, ...c });
export const decodeChallenge = (b: Uint8Array) => decode('challenge', challengeSchema, b, MAX_CHALLENGE_BYTES);
export const encodeResponse = (r: Loose<Omit<ChallengeResponse, 'v'>>) => encode({ v: WIRE_VERSION, ...r });
export const decodeResponse = (b: Uint8Array) => decode('challenge response', responseSchema, b, MAX_RESPONSE_BYTES);
export const encodeImaResend = (from?: number) => encode({ v: WIRE_VERSION, ima_resend: true, ...(from ? { from } : {}) });
/** The server's request for IMA entries from `from` (0: the whole list), or undefined for anything else (a challenge). */
export const decodeImaResend = (b: Uint8Array): { from: number } | undefined => {
  try {
    return { from: decode('IMA resend request', imaResendSchema, b, MAX_CHALLENGE_BYTES).from ?? 0 };
  } catch {
    return undefined;
  }
};
/** True for the server's request to resend IMA entries (anything else is decoded as a challenge). */
export const isImaResend = (b: Uint8Array): boolean => decodeImaResend(b) !== undefined;
export const encodeImaResendResponse = (r: Loose<Omit<ImaResendResponse, 'v'>>) => encode({ v: WIRE_VERSION, ...r });
export const decodeImaResendResponse = (b: Uint8Array) => decode('IMA resend response', imaResendResponseSchema, b, MAX_RESPONSE_BYTES);
