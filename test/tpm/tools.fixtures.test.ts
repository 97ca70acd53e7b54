/**
 * Offline re-verification of the attestation records captured by scripts/capture-attestation-fixture.ts through
 * src/tpm/tools.ts (no TPM needed): EK chain to the recorded local CA, EK cert key == EK public, AK under the EK
 * (qualifiedSigner), quote signature/nonce/PCR digest, and the recorded event log replaying to the quoted PCRs.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { checkAkAttributes } from '../../src/tpm/activation.js';
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { PcrSelection } from '../../src/tpm/pcrs.js';
import { hierarchyQualifiedName, parseTpm2bPublic, publicName, publicToSpkiDer, qualifiedName } from '../../src/tpm/public.js';
import { verifyQuote } from '../../src/tpm/quote.js';
import { replayEventLog } from '../../src/tpm/replay.js';

interface AttestationRecord {
  ca: { rootPem: string; intermediatePem: string };
  ek: { kind: string; certDerB64: string; publicB64: string };
  ak: { publicB64: string; nameHex: string };
  quote: { selection: string; nonceHex: string; attestB64: string; signatureB64: string; pcrValuesB64: string };
  eventLog: { b64: string; sha256: string };
  expectedPcrs: { sha256: Record<string, string> };
  tpm: { firmwareVersion: string };
}

const dir = join(import.meta.dirname, '../fixtures/attestations');
const b = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));
const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex');

for (const name of ['swtpm-rsa-sha256', 'swtpm-ecc384-sha256']) {
  describe(`fixture ${name}`, () => {
    const rec = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as AttestationRecord;
    const sidecar = JSON.parse(readFileSync(join(dir, `${name}.source.json`), 'utf8')) as { sha256: string };

    it('matches the sha256 in its sidecar', () => {
      expect(createHash('sha256').update(readFileSync(join(dir, `${name}.json`))).digest('hex')).toBe(sidecar.sha256);
    });

    it('EK cert chains to the recorded local CA and carries the EK public key', () => {
      const root = new X509Certificate(rec.ca.rootPem);
      const inter = new X509Certificate(rec.ca.intermediatePem);
      const ekCert = new X509Certificate(Buffer.from(rec.ek.certDerB64, 'base64'));
      expect(root.verify(root.publicKey)).toBe(true);
      expect(inter.verify(root.publicKey)).toBe(true);
      expect(ekCert.verify(inter.publicKey)).toBe(true);
      const ekPub = parseTpm2bPublic(b(rec.ek.publicB64));
      expect(hex(publicToSpkiDer(ekPub))).toBe(hex(new Uint8Array(ekCert.publicKey.export({ format: 'der', type: 'spki' }))));
    });

    it('quote verifies with the AK, binds the AK to the EK, and the event log replays to the quoted PCRs', () => {
      const ekPub = parseTpm2bPublic(b(rec.ek.publicB64));
      const akPub = parseTpm2bPublic(b(rec.ak.publicB64));
      checkAkAttributes(akPub);
      expect(hex(publicName(akPub))).toBe(rec.ak.nameHex);
      const attest = b(rec.quote.attestB64);
      expect(hex(attest).startsWith('ff5443478018')).toBe(true);
      expect(hex(attest)).toContain(rec.tpm.firmwareVersion);
      const quoted = verifyQuote({
        akPublic: akPub,
        attestBytes: attest,
        signatureBytes: b(rec.quote.signatureB64),
        pcrValues: b(rec.quote.pcrValuesB64),
        expectedSelection: PcrSelection.parse(rec.quote.selection),
        nonce: new Uint8Array(Buffer.from(rec.quote.nonceHex, 'hex')),
        expectedQualifiedSigner: qualifiedName(qualifiedName(hierarchyQualifiedName(), ekPub), akPub),
      });
      const logBytes = b(rec.eventLog.b64);
      expect(createHash('sha256').update(logBytes).digest('hex')).toBe(rec.eventLog.sha256);
      const values = quoted.bank('sha256');
      for (const [i, v] of Object.entries(rec.expectedPcrs.sha256)) expect(hex(values.get(Number(i))!)).toBe(v);
      const verified = replayEventLog(parseEventLog(logBytes), quoted);
      expect(verified).toBeDefined();
    });
  });
}
