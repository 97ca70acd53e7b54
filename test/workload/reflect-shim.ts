// Test-only: @peculiar/x509 loads tsyringe, which refuses to start without the Reflect metadata API.
// A WeakMap-backed stand-in for the four functions it and tslib use. Import before @peculiar/x509.
type Store = Map<unknown, unknown>;
const meta = new WeakMap<object, Map<PropertyKey | undefined, Store>>();
function get(target: object, key: PropertyKey | undefined, create: boolean): Store | undefined {
  let byKey = meta.get(target);
  if (!byKey) {
    if (!create) return undefined;
    meta.set(target, (byKey = new Map()));
  }
  let m = byKey.get(key);
  if (!m && create) byKey.set(key, (m = new Map()));
  return m;
}
const R = Reflect as unknown as Record<string, unknown>;
if (typeof R['getMetadata'] !== 'function') {
  R['defineMetadata'] = (k: unknown, v: unknown, t: object, p?: PropertyKey) => void get(t, p, true)!.set(k, v);
  R['getOwnMetadata'] = (k: unknown, t: object, p?: PropertyKey) => get(t, p, false)?.get(k);
  R['getMetadata'] = (k: unknown, t: object, p?: PropertyKey): unknown => {
    for (let o: object | null = t; o; o = Object.getPrototypeOf(o) as object | null) {
      const m = get(o, p, false);
      if (m?.has(k)) return m.get(k);
    }
    return undefined;
  };
  R['hasMetadata'] = (k: unknown, t: object, p?: PropertyKey) => (R['getMetadata'] as (...a: unknown[]) => unknown)(k, t, p) !== undefined;
  R['metadata'] = (k: unknown, v: unknown) => (t: object, p?: PropertyKey) => void get(t, p, true)!.set(k, v);
}
export {};
