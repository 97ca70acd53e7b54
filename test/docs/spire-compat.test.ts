/**
 * The SPIRE versions we claim are exactly the ones pinned in tools/spire/ (and so built and run by CI): the README
 * and docs/spire-compatibility.md may not name a version that is not tested, nor omit one that is.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/binaries.js';

const pinned = readdirSync(`${repoRoot}tools/spire`)
  .filter((d) => /^v\d+\.\d+\.\d+$/.test(d))
  .map((d) => d.slice(1))
  .sort();

describe('claimed SPIRE versions', () => {
  it('at least two versions are pinned, each with go.mod and go.sum that pin SPIRE at that version', () => {
    expect(pinned.length).toBeGreaterThanOrEqual(2);
    for (const v of pinned) {
      const mod = readFileSync(`${repoRoot}tools/spire/v${v}/go.mod`, 'utf8');
      expect(mod).toMatch(/^tool \(\s*\n\s*github\.com\/spiffe\/spire\/cmd\/spire-agent\s*\n\s*github\.com\/spiffe\/spire\/cmd\/spire-server\s*\n\)/m);
      expect(mod).toContain(`github.com/spiffe/spire v${v}`);
      expect(readFileSync(`${repoRoot}tools/spire/v${v}/go.sum`, 'utf8')).toContain(`github.com/spiffe/spire v${v} h1:`);
    }
  });

  it('the README names exactly the pinned versions as tested', () => {
    const readme = readFileSync(`${repoRoot}README.md`, 'utf8');
    const claim = /\*\*Tested with SPIRE ([^*]+)\*\*/.exec(readme);
    expect(claim, 'README: **Tested with SPIRE …**').not.toBeNull();
    expect([...claim![1]!.matchAll(/\d+\.\d+\.\d+/g)].map((m) => m[0]).sort()).toEqual(pinned);
  });

  it("docs/spire-compatibility.md's tested table lists exactly the pinned versions", () => {
    const doc = readFileSync(`${repoRoot}docs/spire-compatibility.md`, 'utf8');
    const table = doc.slice(doc.indexOf('## Tested versions'), doc.indexOf('Versions that could not be used'));
    const rows = [...table.matchAll(/^\| \*\*(\d+\.\d+\.\d+)\*\* \|/gm)].map((m) => m[1]!).sort();
    expect(rows).toEqual(pinned);
  });
});
