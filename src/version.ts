/**
 * The release version (semver), compiled into every binary. package.json's "version" and the CHANGELOG's latest entry
 * must say the same (test/release/version.test.ts). Dependency-free: plugin entry points import it before the runtime.
 */
export const VERSION = '0.2.0';
export const PRODUCT = 'spire-edge-attestors';
