/**
 * spire-tpm-plugin's agent protocol (github.com/spiffe/spire-tpm-plugin pkg/common, on go-attestation's
 * attest.AttestationParameters and attest.EncryptedCredential), as Go's encoding/json writes it: struct field
 * names as keys, []byte as standard base64, nil as null.
 *
 *   payload   {"EK": PEM(CERTIFICATE?, PUBLIC KEY), "AK": {"Public", "UseTCSDActivationFormat", "CreateData",
 *              "CreateAttestation", "CreateSignature"}}
 *   challenge {"EC": {"Credential": TPM2B_ID_OBJECT, "Secret": TPM2B_ENCRYPTED_SECRET}}   (size prefixes included)
 *   response  {"Secret": the activated secret}
 *
 * Decoding is as strict and size-capped as wire.ts; nothing here is trusted until legacy-attest.ts verifies it.
 */
import { MalformedInput } from '../errors.js';
import { z } from '../plugin/config-schema.js';
import { BytesWriter } from '../tpm/bytes.js';
import { b64 } from './wire.js';

export const MAX_LEGACY_PAYLOAD_BYTES = 64 * 1024;
export const MAX_LEGACY_RESPONSE_BYTES = 4 * 1024;
const MAX_EK_PEM_BYTES = 16 * 1024;

const payloadSchema = z.strictObject({
  EK: b64(MAX_EK_PEM_BYTES),
  AK: z.strictObject({
    Public: b64(1024).nullable(),
    UseTCSDActivationFormat: z.boolean(),
    CreateData: b64(1024).nullable(),
    CreateAttestation: b64(1024).nullable(),
    CreateSignature: b64(1024).nullable(),
  }),
});

const responseSchema = z.strictObject({ Secret: b64(64) });

export interface LegacyPayload {
  /** DER of the EK certificate, when the agent had one in NV. */
  readonly ekCertificate: Uint8Array | undefined;
  /** PKIX SubjectPublicKeyInfo DER of the EK. */
  readonly ekSpki: Uint8Array;
  readonly ak: {
    readonly publicArea: Uint8Array;
    readonly creationData: Uint8Array;
    readonly creationAttest: Uint8Array;
    readonly creationSignature: Uint8Array;
  };
}

/**
 * Go's encoding/json writes AttestationData's fields in declaration order with no whitespace, so a real
 * spire-tpm-plugin payload starts with `{"EK":`; ours is `{"v":…`. A cheap prefix test keeps a 16 MiB
 * payload of ours from being parsed twice.
 */
export function isLegacyPayload(bytes: Uint8Array): boolean {
  const prefix = '{"EK":';
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix.charCodeAt(i)) return false;
  return true;
}

function parseJson<T extends z.ZodType>(what: string, schema: T, bytes: Uint8Array, maxBytes: number): z.output<T> {
  if (bytes.length > maxBytes) throw new MalformedInput('ERR_LEGACY_WIRE_TOO_LARGE', `legacy ${what} is ${bytes.length} bytes, more than ${maxBytes}`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new MalformedInput('ERR_LEGACY_WIRE_SYNTAX', `legacy ${what} is not UTF-8 JSON`);
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const where = issue.path.length ? `field "${issue.path.join('.')}"` : 'message';
    const detail = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : issue.message;
    throw new MalformedInput('ERR_LEGACY_WIRE_FIELD', `legacy ${what} (spire-tpm-plugin): ${where}: ${detail}`);
  }
  return result.data;
}

const PEM_BLOCK = /-----BEGIN ([A-Z ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----\r?\n?/g;

/** common.EncodeEK's output: an optional CERTIFICATE block, then exactly one PUBLIC KEY block, nothing else. */
function parseEkPem(pemBytes: Uint8Array): { certificate: Uint8Array | undefined; spki: Uint8Array } {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(pemBytes);
  const blocks = [...text.matchAll(PEM_BLOCK)];
  const leftover = text.replace(PEM_BLOCK, '').trim();
  const types = blocks.map((b) => b[1]);
  const valid =
    leftover === '' &&
    ((types.length === 1 && types[0] === 'PUBLIC KEY') || (types.length === 2 && types[0] === 'CERTIFICATE' && types[1] === 'PUBLIC KEY'));
  if (!valid) {
    throw new MalformedInput(
      'ERR_LEGACY_WIRE_FIELD',
      `legacy attestation payload (spire-tpm-plugin): field "EK": expected PEM blocks [CERTIFICATE,] PUBLIC KEY, got [${types.join(', ')}]${leftover ? ' and stray text' : ''}`,
    );
  }
  const der = (b: RegExpMatchArray) => new Uint8Array(Buffer.from(b[2]!.replace(/\s+/g, ''), 'base64'));
  return { certificate: blocks.length === 2 ? der(blocks[0]!) : undefined, spki: der(blocks[blocks.length - 1]!) };
}

export function decodeLegacyPayload(bytes: Uint8Array): LegacyPayload {
  const raw = parseJson('attestation payload', payloadSchema, bytes, MAX_LEGACY_PAYLOAD_BYTES);
  const ek = parseEkPem(raw.EK);
  const { Public, CreateData, CreateAttestation, CreateSignature, UseTCSDActivationFormat } = raw.AK;
  // TPM 1.2 AKs (and the trousers daemon format) come without TPM 2.0 creation evidence.
  if (UseTCSDActivationFormat || !Public || !CreateData || !CreateAttestation || !CreateSignature) {
    throw new MalformedInput(
      'ERR_LEGACY_TPM12',
      'legacy attestation payload (spire-tpm-plugin): field "AK": no TPM 2.0 creation data/attestation/signature (TPM 1.2 is not supported)',
    );
  }
  return {
    ekCertificate: ek.certificate,
    ekSpki: ek.spki,
    ak: { publicArea: Public, creationData: CreateData, creationAttest: CreateAttestation, creationSignature: CreateSignature },
  };
}

/** The challenge: go-attestation expects both blobs with their TPM2B size prefix (it strips two bytes). */
export function encodeLegacyChallenge(credential: { idObject: Uint8Array; encryptedSecret: Uint8Array }): Uint8Array {
  const b64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
  const message = {
    EC: {
      Credential: b64(new BytesWriter().tpm2b(credential.idObject).finish()),
      Secret: b64(new BytesWriter().tpm2b(credential.encryptedSecret).finish()),
    },
  };
  return new Uint8Array(Buffer.from(JSON.stringify(message), 'utf8'));
}

export function decodeLegacyResponse(bytes: Uint8Array): { secret: Uint8Array } {
  return { secret: parseJson('challenge response', responseSchema, bytes, MAX_LEGACY_RESPONSE_BYTES).Secret };
}
