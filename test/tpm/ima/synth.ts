/**
 * Test helper: writes synthetic IMA measurement lists (binary and ASCII) the way the kernel does, so tests can
 * tamper with them and extend them into a real TPM.
 */
import { createHash } from 'node:crypto';
import { encodeTemplateData, formatImaAsciiLine, imaDigest, type ImaEntry, type ImaEventFields, type ImaHashName, type ImaTemplateName } from '../../../src/tpm/ima/index.js';

export interface SynthEntry extends Partial<ImaEventFields> {
  readonly template: ImaTemplateName;
  readonly path: string;
  /** File content: its digest becomes the entry's file digest (unless `digest` is given). */
  readonly content?: string | Uint8Array;
  /** Log the entry as invalidated (template hash all zeros). */
  readonly invalidate?: boolean;
  readonly pcr?: number;
}

export function fileDigest(alg: ImaHashName, content: string | Uint8Array): Uint8Array {
  return imaDigest(alg, typeof content === 'string' ? new TextEncoder().encode(content) : content);
}

/** Fully formed entries (as the parser would return them) with SHA-1 template hashes. */
export function synthEntries(specs: readonly SynthEntry[], templateHashAlg: ImaHashName = 'sha1'): ImaEntry[] {
  return specs.map((s, index) => {
    const digestAlg = s.template === 'ima' ? 'sha1' : (s.digestAlg ?? 'sha256');
    const fields: ImaEventFields = {
      digestAlg,
      digest: s.digest ?? fileDigest(digestAlg, s.content ?? s.path),
      path: s.path,
      ...(s.template === 'ima-sig' ? { signature: s.signature ?? new Uint8Array(0) } : {}),
      ...(s.template === 'ima-buf' ? { buffer: s.buffer ?? new Uint8Array(0) } : {}),
      ...(s.template === 'ima-cgpath' || s.template === 'ima-dep-cgn'
        ? { dependencies: s.dependencies ?? '/usr/bin/containerd-shim-runc-v2:/usr/lib/systemd/systemd:swapper/0', cgroup: s.cgroup ?? '/' }
        : {}),
    };
    const templateData = encodeTemplateData(s.template, fields);
    const templateHash = s.invalidate ? new Uint8Array(IMA_SIZE[templateHashAlg]) : imaDigest(templateHashAlg, templateData);
    return { ...fields, index, offset: 0, pcr: s.pcr ?? 10, template: s.template, templateHash, templateHashAlg, templateData, invalidated: !!s.invalidate };
  });
}
const IMA_SIZE: Record<ImaHashName, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64, sm3_256: 32 };

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** binary_runtime_measurements bytes for entries. */
export function toBinaryList(entries: readonly ImaEntry[]): Buffer {
  return Buffer.concat(
    entries.flatMap((e) => {
      const head = [u32(e.pcr), Buffer.from(e.templateHash), u32(e.template.length), Buffer.from(e.template)];
      if (e.template === 'ima') {
        const name = Buffer.from(e.path);
        return [...head, Buffer.from(e.digest), u32(name.length), name];
      }
      return [...head, u32(e.templateData.length), Buffer.from(e.templateData)];
    }),
  );
}

/** ascii_runtime_measurements text for entries. */
export function toAsciiList(entries: readonly ImaEntry[]): string {
  return entries.map((e) => `${formatImaAsciiLine(e)}\n`).join('');
}

/** PCR 10 (sha1/sha256) after extending entries, computed independently of the code under test. */
export function expectedPcr10(entries: readonly ImaEntry[], bank: 'sha1' | 'sha256'): string {
  let pcr = Buffer.alloc(bank === 'sha1' ? 20 : 32);
  for (const e of entries) {
    const d = e.invalidated ? Buffer.alloc(pcr.length, 0xff) : createHash(bank).update(e.templateData).digest();
    pcr = createHash(bank).update(Buffer.concat([pcr, d])).digest();
  }
  return pcr.toString('hex');
}
