/**
 * A test client that speaks spiffe/spire-tpm-plugin's agent protocol against a real swtpm, written from that
 * repository's documented protocol (pkg/common/tpm_attestor.go, pkg/agent/agent.go at commit 2de71e2a) and
 * go-attestation's AttestationParameters / EncryptedCredential (attest/attest.go, attest/activation.go,
 * attest/wrapped_tpm20.go at 5514d092, the version spire-tpm-plugin pins). The real Go agent could not be built
 * here: the Go module proxy answers 403 for github.com/spiffe/spire-tpm-plugin.
 *
 * What the Go agent does, done with tpm2-tools: take the RSA EK (cert from NV 0x01c00002 when present; or the ECC P-256 EK), create
 * an AK under the storage root key with go-attestation's AK attributes, certify its own creation, send
 * {"EK": PEM(CERTIFICATE, PUBLIC KEY), "AK": AttestationParameters}; then activate the credential of
 * {"EC": {"Credential", "Secret"}} (both with TPM2B size prefixes) and answer {"Secret"}.
 * Deliberately independent of src/nodeattestor/legacy-wire.ts, so the test checks the server against the
 * protocol and not against itself.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeCredentialFile } from '../../src/tpm/activation.js';
import { Tpm2Tools } from '../../src/tpm/tools.js';
import { parseTpm2bPublic, publicToSpkiDer } from '../../src/tpm/public.js';
import { tpm2 } from './swtpm.js';

/** go-attestation's akTemplateRSA: FlagSignerDefault | FlagNoDA. */
const GO_ATTESTATION_AK_ATTRIBUTES = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign|noda';

function pem(type: string, der: Uint8Array): string {
  const body = Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${type}-----\n${body}-----END ${type}-----\n`;
}

/** Go's encoding/json of a []byte. */
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

/** Strips a TPM2B size prefix after checking it (tpm2-tools writes several of its outputs as TPM2B). */
function tpm2bContents(bytes: Uint8Array, what: string): Uint8Array {
  const size = (bytes[0]! << 8) | bytes[1]!;
  if (size !== bytes.length - 2) throw new Error(`${what}: not a TPM2B (size ${size}, file ${bytes.length})`);
  return bytes.subarray(2);
}

export interface LegacyAgentOptions {
  /** Send the EK certificate as spire-tpm-plugin does when NV holds one; default true. */
  readonly sendCertificate?: boolean;
  /** Persistent handle for the AK (the Go agent keeps it as a blob; we persist it to activate through Tpm2Tools). */
  readonly akHandle?: number;
  /** The EK go-attestation would pick: RSA-2048 (default) or, on a TPM with only that, ECC P-256. */
  readonly ekKind?: 'rsa' | 'ecc-p256';
}

export class LegacyTpmAgent {
  readonly #tcti: string;
  readonly #tools: Tpm2Tools;
  readonly #dir = mkdtempSync(join(tmpdir(), 'legacy-agent-'));
  readonly #akHandle: number;
  readonly #sendCertificate: boolean;
  readonly #ekKind: 'rsa' | 'ecc-p256';
  /** The pub_hash spire-tpm-plugin computes: sha256 of the PKIX EK key. */
  ekSpki: Uint8Array | undefined;

  constructor(tcti: string, options: LegacyAgentOptions = {}) {
    this.#tcti = tcti;
    this.#tools = new Tpm2Tools({ tcti, workDir: this.#dir });
    this.#akHandle = options.akHandle ?? 0x81010020;
    this.#sendCertificate = options.sendCertificate ?? true;
    this.#ekKind = options.ekKind ?? 'rsa';
  }

  #file(name: string): string {
    return join(this.#dir, name);
  }

  /** swtpm has no resource manager: flush transients after every command (the .ctx files are saved contexts). */
  async #run(tool: string, args: string[]): Promise<void> {
    try {
      await tpm2(this.#tcti, tool, args);
    } finally {
      await tpm2(this.#tcti, 'tpm2_flushcontext', ['-t']).catch(() => undefined);
      await tpm2(this.#tcti, 'tpm2_flushcontext', ['-s']).catch(() => undefined);
    }
  }

  /** The AttestationData JSON, with a fresh AK each time as the Go agent makes one per attestation. */
  async payload(): Promise<Buffer> {
    const ek = await this.#tools.ekPublic(this.#ekKind);
    const cert = this.#sendCertificate ? await this.#tools.readEkCertificate(this.#ekKind) : undefined;
    const spki = publicToSpkiDer(parseTpm2bPublic(ek.publicArea));
    if (cert && !Buffer.from(new X509Certificate(cert).publicKey.export({ type: 'spki', format: 'der' })).equals(Buffer.from(spki))) {
      throw new Error('EK certificate does not certify the EK');
    }
    this.ekSpki = spki;

    const f = (n: string) => this.#file(n);
    await this.#run('tpm2_evictcontrol', ['-C', 'o', '-c', `0x${this.#akHandle.toString(16)}`]).catch(() => undefined);
    await this.#run('tpm2_createprimary', ['-C', 'o', '-g', 'sha256', '-G', 'rsa2048:null:aes128cfb', '-c', f('srk.ctx')]);
    await this.#run('tpm2_create', [
      '-C', f('srk.ctx'), '-G', 'rsa2048:rsassa-sha256:null', '-g', 'sha256', '-a', GO_ATTESTATION_AK_ATTRIBUTES,
      '-u', f('ak.pub'), '-r', f('ak.priv'),
      '--creation-data', f('creation.data'), '-t', f('creation.ticket'), '-d', f('creation.hash'),
    ]);
    await this.#run('tpm2_load', ['-C', f('srk.ctx'), '-u', f('ak.pub'), '-r', f('ak.priv'), '-c', f('ak.ctx')]);
    await this.#run('tpm2_certifycreation', [
      '-C', f('ak.ctx'), '-c', f('ak.ctx'), '-d', f('creation.hash'), '-t', f('creation.ticket'),
      '-g', 'sha256', '-s', 'rsassa', '-o', f('creation.sig'), '--attestation', f('creation.attest'),
    ]);
    await this.#run('tpm2_evictcontrol', ['-C', 'o', '-c', f('ak.ctx'), `0x${this.#akHandle.toString(16)}`]);

    const read = (n: string) => new Uint8Array(readFileSync(f(n)));
    const attestation = {
      EK: b64(Buffer.from((cert ? pem('CERTIFICATE', cert) : '') + pem('PUBLIC KEY', spki))),
      AK: {
        Public: b64(tpm2bContents(read('ak.pub'), 'ak.pub')),
        UseTCSDActivationFormat: false,
        CreateData: b64(tpm2bContents(read('creation.data'), 'creation data')),
        CreateAttestation: b64(read('creation.attest')), // already a bare TPMS_ATTEST
        CreateSignature: b64(read('creation.sig')),
      },
    };
    return Buffer.from(JSON.stringify(attestation));
  }

  /** Activates {"EC": {...}} with the EK and the AK, as go-attestation's ActivateCredential does. */
  async answer(challenge: Buffer): Promise<Buffer> {
    const ec = (JSON.parse(challenge.toString('utf8')) as { EC: { Credential: string; Secret: string } }).EC;
    const credential = Buffer.from(ec.Credential, 'base64');
    const secret = Buffer.from(ec.Secret, 'base64');
    const blob = encodeCredentialFile({
      idObject: tpm2bContents(credential, 'EC.Credential'),
      encryptedSecret: tpm2bContents(secret, 'EC.Secret'),
    });
    const ek = await this.#tools.ekPublic(this.#ekKind);
    const opened = await this.#tools.activateCredential({ akHandle: this.#akHandle, ekHandle: ek.handle, ekKind: this.#ekKind, credentialBlob: blob });
    return Buffer.from(JSON.stringify({ Secret: b64(opened) }));
  }

  close(): void {
    this.#tools.close();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
