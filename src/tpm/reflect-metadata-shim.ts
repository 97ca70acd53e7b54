/**
 * @module tpm/reflect-metadata-shim
 * @peculiar/x509 resolves its algorithm providers through tsyringe, which refuses to load unless the
 * `Reflect.getMetadata` API (the reflect-metadata proposal) exists. The reflect-metadata package is not among our
 * dependencies, so this installs the functions tsyringe and tslib's `__metadata` use, backed by a WeakMap.
 * It runs only when no implementation is present and does no I/O. Import it before `@peculiar/x509`.
 */

type MetadataMap = Map<unknown, unknown>;
const store = new WeakMap<object, Map<PropertyKey | undefined, MetadataMap>>();

function mapFor(target: object, key: PropertyKey | undefined, create: boolean): MetadataMap | undefined {
  let byKey = store.get(target);
  if (byKey === undefined) {
    if (!create) return undefined;
    store.set(target, (byKey = new Map()));
  }
  let map = byKey.get(key);
  if (map === undefined && create) byKey.set(key, (map = new Map()));
  return map;
}

interface ReflectMetadataApi {
  getMetadata?: (metadataKey: unknown, target: object, propertyKey?: PropertyKey) => unknown;
  defineMetadata?: (metadataKey: unknown, value: unknown, target: object, propertyKey?: PropertyKey) => void;
  hasMetadata?: (metadataKey: unknown, target: object, propertyKey?: PropertyKey) => boolean;
  metadata?: (metadataKey: unknown, value: unknown) => (target: object, propertyKey?: PropertyKey) => void;
}

const api = Reflect as unknown as ReflectMetadataApi;
if (typeof api.getMetadata !== 'function') {
  const getMetadata = (metadataKey: unknown, target: object, propertyKey?: PropertyKey): unknown => {
    // Walk the prototype chain, as reflect-metadata does for inherited constructor metadata.
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const map = mapFor(t, propertyKey, false);
      if (map?.has(metadataKey)) return map.get(metadataKey);
    }
    return undefined;
  };
  const defineMetadata = (metadataKey: unknown, value: unknown, target: object, propertyKey?: PropertyKey): void => {
    mapFor(target, propertyKey, true)!.set(metadataKey, value);
  };
  Object.assign(Reflect, {
    getMetadata,
    defineMetadata,
    getOwnMetadata: (metadataKey: unknown, target: object, propertyKey?: PropertyKey): unknown =>
      mapFor(target, propertyKey, false)?.get(metadataKey),
    hasOwnMetadata: (metadataKey: unknown, target: object, propertyKey?: PropertyKey): boolean =>
      mapFor(target, propertyKey, false)?.has(metadataKey) ?? false,
    hasMetadata: (metadataKey: unknown, target: object, propertyKey?: PropertyKey): boolean =>
      getMetadata(metadataKey, target, propertyKey) !== undefined,
    metadata:
      (metadataKey: unknown, value: unknown) =>
      (target: object, propertyKey?: PropertyKey): void =>
        defineMetadata(metadataKey, value, target, propertyKey),
  });
}

export {};
