/**
 * @module tpm/ek-template
 * An EK known only by its PKIX public key (spire-tpm-plugin sends nothing else) rebuilt as the TPMT_PUBLIC of
 * the TCG default EK template (EK Credential Profile 2.0, templates L-1 RSA-2048 and L-2 ECC P-256: nameAlg
 * sha256, policy A, AES-128-CFB). MakeCredential needs the EK's nameAlg and symmetric definition; with these the
 * TPM's ActivateCredential on that EK opens the credential, and with anything else it simply fails: guessing
 * wrong can refuse a node, never admit one.
 */
import { createPublicKey } from 'node:crypto';
import { Buffer } from 'node:buffer';
import { MalformedInput } from '../errors.js';
import { HashAlg } from './alg.js';
import { TPMA_OBJECT, TPM_ALG } from './constants.js';
import { ECC_CURVES, encodeTpmtPublic, parseTpmtPublic, type TpmPublic } from './public.js';

export const ERR_EK_TEMPLATE = 'ERR_EK_NOT_DEFAULT_TEMPLATE';

/** fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt (0x000300b2). */
const EK_ATTRIBUTES =
  TPMA_OBJECT.FIXED_TPM | TPMA_OBJECT.FIXED_PARENT | TPMA_OBJECT.SENSITIVE_DATA_ORIGIN | TPMA_OBJECT.ADMIN_WITH_POLICY |
  TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT;
/** PolicySecret(TPM_RH_ENDORSEMENT) digest under sha256: the default EK authPolicy. */
const POLICY_A_SHA256 = Uint8Array.from(Buffer.from('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa', 'hex'));
const AES_128_CFB = { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } as const;

function templateError(message: string): MalformedInput {
  return new MalformedInput(ERR_EK_TEMPLATE, `EK public key: ${message}`, { fields: { rule: ERR_EK_TEMPLATE } });
}

/** RSA-2048 or ECC P-256 SubjectPublicKeyInfo DER → the default-template EK public area holding that key. */
export function defaultEkPublicFromSpki(spkiDer: Uint8Array): TpmPublic {
  let jwk: { kty?: string; n?: string; e?: string; crv?: string; x?: string; y?: string };
  try {
    jwk = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' }).export({ format: 'jwk' });
  } catch (cause) {
    throw new MalformedInput(ERR_EK_TEMPLATE, 'EK public key: not a PKIX SubjectPublicKeyInfo', { cause });
  }
  const bytes = (s: string | undefined) => new Uint8Array(Buffer.from(s ?? '', 'base64url'));
  if (jwk.kty === 'RSA') {
    const modulus = bytes(jwk.n);
    if (modulus.length !== 256) throw templateError(`RSA key of ${modulus.length * 8} bits; the default EK template is RSA-2048`);
    if (jwk.e !== 'AQAB') throw templateError('RSA exponent is not 65537 as in the default EK template');
    return parseTpmtPublic(
      encodeTpmtPublic({
        type: 'rsa',
        nameAlg: HashAlg.SHA256,
        attributes: EK_ATTRIBUTES,
        authPolicy: POLICY_A_SHA256,
        symmetric: AES_128_CFB,
        keyBits: 2048,
        modulus,
      }),
    );
  }
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') {
    return parseTpmtPublic(
      encodeTpmtPublic({
        type: 'ecc',
        nameAlg: HashAlg.SHA256,
        attributes: EK_ATTRIBUTES,
        authPolicy: POLICY_A_SHA256,
        symmetric: AES_128_CFB,
        curve: ECC_CURVES.find((c) => c.jwkName === 'P-256')!,
        x: bytes(jwk.x),
        y: bytes(jwk.y),
      }),
    );
  }
  throw templateError(`${jwk.kty ?? 'unknown'} ${jwk.crv ?? ''} key; only the default RSA-2048 and ECC P-256 EK templates are supported`.replace(/ +;/, ';'));
}
