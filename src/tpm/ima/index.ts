/**
 * @module tpm/ima
 * IMA measurement lists: parsing (binary and ASCII; templates ima, ima-ng, ima-sig, ima-buf, ima-cgpath,
 * ima-dep-cgn), template-hash checks and PCR 10 replay. Pure: no I/O.
 */
export * from './hash.js';
export * from './templates.js';
export * from './log.js';
export * from './verify.js';
export { sm3 } from './sm3.js';
export * from './signature.js';
export * from './slice.js';
