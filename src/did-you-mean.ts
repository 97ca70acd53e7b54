/**
 * "Did you mean" for configuration keys: the known key an unknown one was most likely meant to be. Shared by plugin
 * configs and policy files.
 */

/** Levenshtein distance, bounded: config keys are short. */
function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The known key an unknown one was most likely meant to be (a typo, a missing `_`, a prefix), if any. */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  const norm = (k: string) => k.toLowerCase().replace(/[-_.:\s]/g, '');
  let best: { key: string; distance: number } | undefined;
  for (const candidate of known) {
    const d = norm(candidate) === norm(key) ? 0 : editDistance(key.toLowerCase(), candidate.toLowerCase());
    let stem = 0;
    while (stem < key.length && stem < candidate.length && key[stem]!.toLowerCase() === candidate[stem]!.toLowerCase()) stem++;
    // A shared stem of most of the word: `policy` for `policies`, `policy` for `policy_path`.
    const prefix = stem >= 4 && stem * 2 >= Math.max(key.length, candidate.length);
    const limit = Math.max(1, Math.min(3, Math.floor(candidate.length / 4)));
    if ((d <= limit || prefix) && (best === undefined || d < best.distance)) best = { key: candidate, distance: d };
  }
  return best?.key;
}

