/**
 * @module tpm/constants
 * Numeric constants from TPM 2.0 Part 2 (Structures) and the TCG EK Credential Profile.
 */

/** TPM_ALG_ID (TPM 2.0 Part 2, Table 9). */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  SM3_256: 0x0012,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  ECSCHNORR: 0x001c,
  KDF1_SP800_56A: 0x0020,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CTR: 0x0040,
  OFB: 0x0041,
  CBC: 0x0042,
  CFB: 0x0043,
  ECB: 0x0044,
} as const;

/** TPM_ECC_CURVE (TPM 2.0 Part 2, Table 10). */
export const TPM_ECC_CURVE = {
  NIST_P192: 0x0001,
  NIST_P224: 0x0002,
  NIST_P256: 0x0003,
  NIST_P384: 0x0004,
  NIST_P521: 0x0005,
} as const;

/** TPM_GENERATED_VALUE: "\xffTCG", the magic of every TPMS_ATTEST the TPM signs (Part 2, Table 7). */
export const TPM_GENERATED_VALUE = 0xff544347;

/** TPM_ST (Part 2, Table 19): attestation structure tags. */
export const TPM_ST = {
  ATTEST_NV: 0x8014,
  ATTEST_COMMAND_AUDIT: 0x8015,
  ATTEST_SESSION_AUDIT: 0x8016,
  ATTEST_CERTIFY: 0x8017,
  ATTEST_QUOTE: 0x8018,
  ATTEST_TIME: 0x8019,
  ATTEST_CREATION: 0x801a,
} as const;

/** TPMA_OBJECT bits (Part 2, Table 31). */
export const TPMA_OBJECT = {
  FIXED_TPM: 1 << 1,
  ST_CLEAR: 1 << 2,
  FIXED_PARENT: 1 << 4,
  SENSITIVE_DATA_ORIGIN: 1 << 5,
  USER_WITH_AUTH: 1 << 6,
  ADMIN_WITH_POLICY: 1 << 7,
  NO_DA: 1 << 10,
  ENCRYPTED_DUPLICATION: 1 << 11,
  RESTRICTED: 1 << 16,
  DECRYPT: 1 << 17,
  SIGN_ENCRYPT: 1 << 18,
} as const;

/** TPM_RH_ENDORSEMENT: the hierarchy handle whose qualified name is its handle (Part 1, 16 "Names"). */
export const TPM_RH_ENDORSEMENT = 0x4000000b;

/** Magic and version of the tpm2-tools makecredential output file (tpm2-tools lib/files.c). */
export const TPM2_TOOLS_FILE_MAGIC = 0xbadcc0de;
export const TPM2_TOOLS_FILE_VERSION = 1;

/** Number of PCRs in a PC Client TPM bank (TCG PC Client Platform TPM Profile). */
export const PCR_COUNT = 24;
/** sizeofSelect for a 24-PCR bank. */
export const PCR_SELECT_SIZE = 3;
