/**
 * @module tpm/creation
 * The AK creation evidence that go-attestation (and so spire-tpm-plugin) sends instead of a quote:
 * TPMT_PUBLIC, TPMS_CREATION_DATA, and TPM2_CertifyCreation's TPMS_ATTEST with its TPMT_SIGNATURE, the AK
 * signing its own creation. This does NOT prove the AK lives in the EK's TPM (anyone can sign their own key's
 * creation); credential activation against the returned Name does. What it pins down is that the Name we bind
 * the credential to is the Name of this exact public area, and that the public area is an AK by our checklist.
 */
import { MalformedInput } from '../errors.js';
import { ALLOWED_AK_HASHES, checkAkAttributes } from './activation.js';
import { MAX_NAME_SIZE, parseAttest } from './attest.js';
import { BytesReader } from './bytes.js';
import { TPM_GENERATED_VALUE, TPM_ST } from './constants.js';
import { HashAlg } from './alg.js';
import { parseTpmtPublic, publicName, type TpmPublic } from './public.js';
import { parseSignature, verifySignature } from './signature.js';

export const ERR_CREATION_MALFORMED = 'ERR_AK_CREATION_MALFORMED';
export const ERR_CREATION_EVIDENCE = 'ERR_AK_CREATION_EVIDENCE';
/** TPMS_CREATION_DATA is a PCR selection, digests, a name and outsideInfo: well under this. */
export const MAX_CREATION_DATA_SIZE = 1024;

export interface AkCreationEvidence {
  /** TPMT_PUBLIC, no size prefix. */
  readonly publicArea: Uint8Array;
  /** TPMS_CREATION_DATA, no size prefix. */
  readonly creationData: Uint8Array;
  /** TPMS_ATTEST from TPM2_CertifyCreation, no size prefix. */
  readonly creationAttest: Uint8Array;
  /** TPMT_SIGNATURE over creationAttest by the AK itself. */
  readonly creationSignature: Uint8Array;
}

export interface CheckedAk {
  readonly akPublic: TpmPublic;
  /** u16 nameAlg ‖ digest: what the credential is bound to. */
  readonly akName: Uint8Array;
}

function evidenceError(message: string): MalformedInput {
  return new MalformedInput(ERR_CREATION_EVIDENCE, `AK creation evidence: ${message}`, { fields: { rule: ERR_CREATION_EVIDENCE } });
}

/**
 * The checks go-attestation's CheckAKParameters makes, in our terms: the AK checklist on the public area;
 * a TPM_GENERATED creation attestation whose objectName is this public area's Name and whose creationHash is
 * H_nameAlg(creationData); and the AK's signature over that attestation, with an allowed hash.
 * Structural problems are MalformedInput; an AK that fails the checklist is AttestationRefused (from activation.ts).
 */
export function checkAkCreation(evidence: AkCreationEvidence): CheckedAk {
  const akPublic = parseTpmtPublic(evidence.publicArea);
  checkAkAttributes(akPublic);
  if (evidence.creationData.length > MAX_CREATION_DATA_SIZE) throw evidenceError(`creation data exceeds ${MAX_CREATION_DATA_SIZE} bytes`);
  const attest = parseAttest(evidence.creationAttest);
  if (attest.magic !== TPM_GENERATED_VALUE) throw evidenceError('creation attestation magic is not TPM_GENERATED_VALUE');
  if (attest.type !== TPM_ST.ATTEST_CREATION || attest.attested.kind !== 'other') {
    throw evidenceError(`attestation type 0x${attest.type.toString(16)} is not TPM_ST_ATTEST_CREATION`);
  }
  // TPMS_CREATION_INFO: TPM2B_NAME objectName ‖ TPM2B_DIGEST creationHash.
  const r = new BytesReader(attest.attested.raw, 'TPMS_CREATION_INFO');
  const objectName = Uint8Array.from(r.tpm2b('objectName', MAX_NAME_SIZE));
  const creationHash = Uint8Array.from(r.tpm2b('creationHash', HashAlg.SHA512.size));
  r.end();
  const akName = publicName(akPublic);
  if (!bytesEqual(objectName, akName)) throw evidenceError("creation attestation names a different key than the AK's public area");
  if (!bytesEqual(creationHash, akPublic.nameAlg.digest(evidence.creationData))) {
    throw evidenceError('creation hash does not match the creation data');
  }
  const signature = parseSignature(evidence.creationSignature);
  if (!ALLOWED_AK_HASHES.some((h) => h.equals(signature.hashAlg))) {
    throw evidenceError(`creation signature hash ${signature.hashAlg.name} is not allowed`);
  }
  if (!verifySignature(akPublic, signature, evidence.creationAttest)) {
    throw evidenceError('creation attestation signature does not verify with the AK');
  }
  return { akPublic, akName };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
