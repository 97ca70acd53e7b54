/**
 * Test-only agent whose "TPM" is software (test/tpm/soft-tpm.ts): it answers the server's challenge by activating
 * the credential with the EK private key and signing a quote with the AK private key. A real TPM never signs what an
 * attacker chooses, so this is how the server's checks are tested against evidence a compromised or fake agent would
 * send: every field of the payload, the quote and the response can be overridden. Honest-path tests use swtpm.
 */
import { HashAlg } from '../../src/tpm/alg.js';
import { parseCredentialFile } from '../../src/tpm/activation.js';
import { BytesWriter } from '../../src/tpm/bytes.js';
import { PcrSelection } from '../../src/tpm/pcrs.js';
import { ekPubHash, hierarchyQualifiedName, publicName, publicToSpkiDer, qualifiedName } from '../../src/tpm/public.js';
import { decodeChallenge, encodePayload, encodeResponse, type AttestationChallenge, type ChallengeResponse } from '../../src/nodeattestor/wire.js';
import type { ServerAttestIo } from '../../src/plugin/types.js';
import { softActivateCredential, softEk, softKey, softQuote, type KeyKind, type QuoteSpec, type SoftKey } from '../tpm/soft-tpm.js';

export interface SoftAgentOptions {
  readonly ek?: SoftKey;
  readonly ak?: SoftKey;
  /** PCR values the soft TPM reports (sha256 bank, by index); unset PCRs are all zeros. */
  readonly pcrs?: ReadonlyMap<number, Uint8Array>;
}

type PayloadFields = Partial<Parameters<typeof encodePayload>[0]>;
type ResponseFields = { [K in keyof Omit<ChallengeResponse, 'v'>]?: NonNullable<ChallengeResponse[K]> extends Uint8Array ? Uint8Array : ChallengeResponse[K] };

/** What a forging agent changes in its answer; `challenge` is what the server sent, decoded. */
export interface Forgery {
  readonly quote?: (challenge: AttestationChallenge) => Partial<QuoteSpec>;
  readonly response?: (challenge: AttestationChallenge, honest: ResponseFields) => ResponseFields;
  /** Signs the quote with this key instead of the AK. */
  readonly signer?: SoftKey;
}

export class SoftAgent {
  readonly ek: SoftKey;
  readonly ak: SoftKey;
  readonly #pcrs: ReadonlyMap<number, Uint8Array>;

  constructor(options: SoftAgentOptions = {}) {
    this.ek = options.ek ?? softEk('rsa');
    this.ak = options.ak ?? softKey('rsa');
    this.#pcrs = options.pcrs ?? new Map();
  }

  static of(ekKind: KeyKind, akKind: KeyKind = 'rsa', slot = 0): SoftAgent {
    return new SoftAgent({ ek: softEk(ekKind, 100 + slot), ak: softKey(akKind, { slot }) });
  }

  /** The EK hash an operator allowlists (sha256 of the PKIX public key). */
  get ekHash(): string {
    return ekPubHash(publicToSpkiDer(this.ek.pub));
  }

  payload(over: PayloadFields = {}): Uint8Array {
    return encodePayload({
      ek_pub: new BytesWriter().tpm2b(this.ek.pub.tpmtBytes).finish(),
      ak_pub: new BytesWriter().tpm2b(this.ak.pub.tpmtBytes).finish(),
      ...over,
    });
  }

  /** The honest answer of a TPM holding this EK and AK, with the forgery applied. */
  respond(challengeBytes: Uint8Array, forgery: Forgery = {}): Uint8Array {
    const challenge = decodeChallenge(challengeBytes);
    const secret = softActivateCredential(this.ek, publicName(this.ak.pub), parseCredentialFile(challenge.credential));
    const selection = PcrSelection.parse(challenge.pcrs);
    const values = selection.banks.flatMap((bank) =>
      bank.indices.map((i) => (bank.hash.equals(HashAlg.SHA256) ? this.#pcrs.get(i) : undefined) ?? new Uint8Array(bank.hash.size)),
    );
    const spec: QuoteSpec = {
      selection,
      values,
      nonce: challenge.nonce,
      qualifiedSigner: qualifiedName(qualifiedName(hierarchyQualifiedName(), this.ek.pub), this.ak.pub),
      ...forgery.quote?.(challenge),
    };
    const q = softQuote(forgery.signer ?? this.ak, spec);
    const honest: ResponseFields = { secret, attest: q.attestBytes, signature: q.signatureBytes, pcr_values: q.pcrValues };
    const { secret: s, attest, signature, pcr_values, ima_log, ima_offset, ima_total } = { ...honest, ...forgery.response?.(challenge, honest) };
    return encodeResponse({ secret: s!, attest: attest!, signature: signature!, pcr_values: pcr_values!, ima_log, ima_offset, ima_total });
  }

  /** Server-side io for one Attest stream answered by this agent. */
  io(forgery: Forgery = {}, hooks: { onChallenge?: (bytes: Uint8Array) => void } = {}): ServerAttestIo {
    return {
      signal: new AbortController().signal,
      challenge: async (bytes) => {
        hooks.onChallenge?.(bytes);
        return this.respond(bytes, forgery);
      },
    };
  }
}
