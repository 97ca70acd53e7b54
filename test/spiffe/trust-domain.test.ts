import { describe, expect, it } from 'vitest';
import { SpiffeId, TrustDomain } from '../../src/spiffe/trust-domain.js';

describe('TrustDomain', () => {
  it('accepts exactly [a-z0-9._-] (every byte value checked)', () => {
    const accepted: string[] = [];
    for (let b = 0; b < 256; b++) {
      const c = String.fromCharCode(b);
      try {
        TrustDomain.parse(`a${c}b`);
        accepted.push(c);
      } catch (err) {
        expect(err).toMatchObject({ code: 'ERR_TRUST_DOMAIN' });
      }
    }
    expect(accepted.join('')).toBe('-.0123456789_abcdefghijklmnopqrstuvwxyz');
  });

  it('accepts the spiffe:// form and rejects empty', () => {
    expect(TrustDomain.parse('spiffe://example.org').name).toBe('example.org');
    expect(() => TrustDomain.parse('')).toThrow();
  });
});

describe('SpiffeId', () => {
  const td = TrustDomain.parse('example.org');
  it('builds agent IDs from segments and round-trips through parse', () => {
    const id = SpiffeId.fromSegments(td, 'spire', 'agent', 'tpm', 'ab'.repeat(32));
    expect(id.toString()).toBe(`spiffe://example.org/spire/agent/tpm/${'ab'.repeat(32)}`);
    expect(SpiffeId.parse(id.toString()).equals(id)).toBe(true);
  });

  it.each(['', '.', '..', 'a/b', 'a b', 'é'])('rejects the segment %j', (segment) => {
    expect(() => SpiffeId.fromSegments(td, 'spire', segment)).toThrow(expect.objectContaining({ code: 'ERR_SPIFFE_ID' }));
  });
});
