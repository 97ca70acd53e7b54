/**
 * Simulates a measured boot on a swtpm: every event a real firmware log says was extended is
 * extended into the TPM's PCRs, so the quote and the log agree exactly as on real hardware.
 */
import { parseEventLog } from '../../src/tpm/eventlog.js';
import { isExtendedEvent } from '../../src/tpm/replay.js';
import { toHex } from '../../src/tpm/bytes.js';
import { extendPcrs, type PcrExtend } from './swtpm.js';

const SWTPM_BANKS = new Set(['sha1', 'sha256']);

export async function simulateMeasuredBoot(tcti: string, logBytes: Uint8Array): Promise<number> {
  const log = parseEventLog(logBytes);
  const extends_: PcrExtend[] = [];
  for (const event of log.untrustedEvents) {
    if (!isExtendedEvent(event)) continue;
    for (const [bank, digest] of event.digests) {
      if (SWTPM_BANKS.has(bank)) extends_.push({ pcr: event.pcrIndex, bank: bank as PcrExtend['bank'], digestHex: toHex(digest) });
    }
  }
  await extendPcrs(tcti, extends_);
  return extends_.length;
}

/** A crypto-agile TCG_PCR_EVENT2 with one SHA-256 digest (TCG PC Client PFP §10.2.2), for appending to a log. */
export function pcrEvent2Sha256(pcrIndex: number, eventType: number, digest: Uint8Array, data: Uint8Array): Uint8Array {
  const out = Buffer.alloc(4 + 4 + 4 + 2 + 32 + 4 + data.length);
  let o = 0;
  o = out.writeUInt32LE(pcrIndex, o);
  o = out.writeUInt32LE(eventType, o);
  o = out.writeUInt32LE(1, o);
  o = out.writeUInt16LE(0x000b, o);
  out.set(digest, o);
  o += 32;
  o = out.writeUInt32LE(data.length, o);
  out.set(data, o);
  return new Uint8Array(out);
}
