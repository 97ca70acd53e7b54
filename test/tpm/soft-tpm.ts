/**
 * Test-only software stand-ins for TPM objects: node key pairs wrapped in TPMT_PUBLIC areas, and quotes signed
 * with them. They let the verifiers be tested against structures built field by field (including broken ones).
 */
import { constants, createDecipheriv, createECDH, createHmac, generateKeyPairSync, privateDecrypt, sign, timingSafeEqual, type KeyObject } from 'node:crypto';
import { kdfa, kdfe, type Credential } from '../../src/tpm/activation.js';
import { HashAlg } from '../../src/tpm/alg.js';
import { BytesReader, BytesWriter, concatBytes } from '../../src/tpm/bytes.js';
import { TPMA_OBJECT, TPM_ALG, TPM_GENERATED_VALUE, TPM_ST } from '../../src/tpm/constants.js';
import { encodeTpmtPublic, ECC_CURVES, parseTpmtPublic, type PublicTemplate, type TpmPublic, type TpmScheme, type SymmetricDef } from '../../src/tpm/public.js';
import type { PcrSelection } from '../../src/tpm/pcrs.js';

/** fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign = 0x50072, as tpm2_createak makes. */
export const AK_ATTRIBUTES =
  TPMA_OBJECT.FIXED_TPM | TPMA_OBJECT.FIXED_PARENT | TPMA_OBJECT.SENSITIVE_DATA_ORIGIN | TPMA_OBJECT.USER_WITH_AUTH |
  TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT;
/** The TCG default EK template L-1 attributes: 0x300b2. */
export const EK_ATTRIBUTES =
  TPMA_OBJECT.FIXED_TPM | TPMA_OBJECT.FIXED_PARENT | TPMA_OBJECT.SENSITIVE_DATA_ORIGIN | TPMA_OBJECT.ADMIN_WITH_POLICY |
  TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT;

export type KeyKind = 'rsa' | 'p256' | 'p384';

export interface SoftKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly pub: TpmPublic;
}

function b64urlToBytes(s: string | undefined): Uint8Array {
  return new Uint8Array(Buffer.from(s ?? '', 'base64url'));
}

const cache = new Map<string, { privateKey: KeyObject; publicKey: KeyObject }>();

export function keyPair(kind: KeyKind, slot = 0, rsaBits = 2048): { privateKey: KeyObject; publicKey: KeyObject } {
  const id = `${kind}/${slot}/${rsaBits}`;
  let kp = cache.get(id);
  if (kp === undefined) {
    kp =
      kind === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: rsaBits })
        : generateKeyPairSync('ec', { namedCurve: kind === 'p256' ? 'P-256' : 'P-384' });
    cache.set(id, kp);
  }
  return kp;
}

export interface SoftKeyOptions {
  readonly slot?: number;
  readonly rsaBits?: number;
  readonly attributes?: number;
  readonly nameAlg?: HashAlg;
  readonly scheme?: TpmScheme;
  readonly symmetric?: SymmetricDef | null;
  readonly authPolicy?: Uint8Array;
}

export function softKey(kind: KeyKind, opts: SoftKeyOptions = {}): SoftKey {
  const { privateKey, publicKey } = keyPair(kind, opts.slot ?? 0, opts.rsaBits ?? 2048);
  const jwk = publicKey.export({ format: 'jwk' });
  const base = {
    nameAlg: opts.nameAlg ?? (kind === 'p384' ? HashAlg.SHA384 : HashAlg.SHA256),
    attributes: opts.attributes ?? AK_ATTRIBUTES,
    authPolicy: opts.authPolicy ?? new Uint8Array(0),
    symmetric: opts.symmetric ?? null,
  };
  let template: PublicTemplate;
  if (kind === 'rsa') {
    const modulus = b64urlToBytes(jwk.n);
    template = {
      type: 'rsa',
      ...base,
      scheme: opts.scheme ?? { alg: TPM_ALG.RSASSA, hashAlg: HashAlg.SHA256 },
      keyBits: modulus.length * 8,
      exponent: 65537,
      modulus,
    };
  } else {
    template = {
      type: 'ecc',
      ...base,
      scheme: opts.scheme ?? { alg: TPM_ALG.ECDSA, hashAlg: HashAlg.SHA256 },
      curve: ECC_CURVES.find((c) => c.jwkName === (kind === 'p256' ? 'P-256' : 'P-384'))!,
      kdf: { alg: TPM_ALG.NULL, hashAlg: null },
      x: b64urlToBytes(jwk.x),
      y: b64urlToBytes(jwk.y),
    };
  }
  return { privateKey, publicKey, pub: parseTpmtPublic(encodeTpmtPublic(template)) };
}

/** An EK-like restricted decryption key with AES-CFB (128, or 256 for P-384 like the high-range template). */
export function softEk(kind: KeyKind, slot = 100): SoftKey {
  return softKey(kind, {
    slot,
    attributes: EK_ATTRIBUTES,
    scheme: { alg: TPM_ALG.NULL, hashAlg: null },
    symmetric: { alg: TPM_ALG.AES, keyBits: kind === 'p384' ? 256 : 128, mode: TPM_ALG.CFB },
  });
}

/** TPMT_SIGNATURE over `message` with the soft key. */
export function signTpm(key: SoftKey, message: Uint8Array, hash: HashAlg = HashAlg.SHA256, scheme?: 'rsassa' | 'rsapss'): Uint8Array {
  if (key.pub.type === 'ecc') {
    const size = key.pub.curve.size;
    const sig = sign(hash.name, message, { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
    return new BytesWriter().u16be(TPM_ALG.ECDSA).u16be(hash.id).tpm2b(sig.subarray(0, size)).tpm2b(sig.subarray(size)).finish();
  }
  const pss = scheme === 'rsapss';
  const sig = sign(hash.name, message, {
    key: key.privateKey,
    padding: pss ? constants.RSA_PKCS1_PSS_PADDING : constants.RSA_PKCS1_PADDING,
    ...(pss ? { saltLength: hash.size } : {}),
  });
  return new BytesWriter().u16be(pss ? TPM_ALG.RSAPSS : TPM_ALG.RSASSA).u16be(hash.id).tpm2b(sig).finish();
}

export interface QuoteSpec {
  readonly selection: PcrSelection;
  /** Values in selection order. */
  readonly values: readonly Uint8Array[];
  readonly nonce: Uint8Array;
  readonly hash?: HashAlg;
  readonly magic?: number;
  readonly type?: number;
  readonly qualifiedSigner?: Uint8Array;
  /** Selection written into the quote, if different from `selection`. */
  readonly quotedSelection?: PcrSelection;
  /** pcrDigest override. */
  readonly pcrDigest?: Uint8Array;
}

/** Builds a TPMS_ATTEST for a quote. */
export function buildAttest(spec: QuoteSpec): Uint8Array {
  const hash = spec.hash ?? HashAlg.SHA256;
  const digest = spec.pcrDigest ?? hash.digest(...spec.values);
  return new BytesWriter()
    .u32be(spec.magic ?? TPM_GENERATED_VALUE)
    .u16be(spec.type ?? TPM_ST.ATTEST_QUOTE)
    .tpm2b(spec.qualifiedSigner ?? Uint8Array.from([0, 0x0b, ...new Uint8Array(32)]))
    .tpm2b(spec.nonce)
    .u64be(0x15ad7n)
    .u32be(2)
    .u32be(0)
    .u8(1)
    .u64be(0x2019102300163636n)
    .bytes((spec.quotedSelection ?? spec.selection).encode())
    .tpm2b(digest)
    .finish();
}

/** A complete quote from a soft AK: attest, signature and values file. */
export function softQuote(ak: SoftKey, spec: QuoteSpec): { attestBytes: Uint8Array; signatureBytes: Uint8Array; pcrValues: Uint8Array } {
  const attestBytes = buildAttest(spec);
  const signatureBytes = signTpm(ak, attestBytes, spec.hash ?? HashAlg.SHA256);
  const w = new BytesWriter();
  for (const v of spec.values) w.bytes(v);
  return { attestBytes, signatureBytes, pcrValues: w.finish() };
}

/** The TPM side of ActivateCredential, emulated with the EK private key. Returns the secret or throws. */
export function softActivateCredential(ek: SoftKey, akName: Uint8Array, cred: Credential): Uint8Array {
  const pub = ek.pub;
  const H = pub.nameAlg;
  let seed: Uint8Array;
  if (pub.type === 'rsa') {
    seed = new Uint8Array(
      privateDecrypt(
        { key: ek.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: H.name, oaepLabel: new TextEncoder().encode('IDENTITY\0') },
        cred.encryptedSecret,
      ),
    );
  } else {
    const r = new BytesReader(cred.encryptedSecret, 'TPMS_ECC_POINT');
    const x = r.tpm2b();
    const y = r.tpm2b();
    r.end();
    const ecdh = createECDH(pub.curve.nodeName);
    const jwk = ek.privateKey.export({ format: 'jwk' });
    ecdh.setPrivateKey(Buffer.from(jwk.d!, 'base64url'));
    const z = new Uint8Array(ecdh.computeSecret(concatBytes(Uint8Array.of(4), x, y)));
    seed = kdfe(H, z, 'IDENTITY', x, pub.x, H.size * 8);
  }
  const r = new BytesReader(cred.idObject, 'TPM2B_ID_OBJECT');
  const integrity = r.tpm2b();
  const encIdentity = r.rest();
  const hmacKey = kdfa(H, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), H.size * 8);
  const expected = createHmac(H.name, hmacKey).update(encIdentity).update(akName).digest();
  if (expected.length !== integrity.length || !timingSafeEqual(expected, integrity)) throw new Error('integrity check failed');
  const symKey = kdfa(H, seed, 'STORAGE', akName, new Uint8Array(0), pub.symmetric!.keyBits);
  const d = createDecipheriv(`aes-${pub.symmetric!.keyBits}-cfb`, symKey, new Uint8Array(16));
  const plain = concatBytes(new Uint8Array(d.update(encIdentity)), new Uint8Array(d.final()));
  const pr = new BytesReader(plain, 'TPM2B_DIGEST');
  const secret = Uint8Array.from(pr.tpm2b());
  pr.end();
  return secret;
}
