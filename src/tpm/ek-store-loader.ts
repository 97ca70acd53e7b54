/**
 * @module tpm/ek-store-loader
 * Reads `ek_ca_path` entries (files or directories of PEM bundles / DER certificates) and builds an EkTrustStore.
 * Fails closed with InvalidConfig naming the path: a missing path, a file where a directory was written
 * (trailing `/`), an empty directory, an unreadable or unparsable file, or no root at all. (spire-tpm-plugin's
 * fail-open bug, PR #23, came from treating ENOTDIR like "not found".)
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidConfig } from '../errors.js';
import { ERR_EK_CA_CONFIG, EkTrustStore, parseCertificates } from './ek.js';

/** Largest single CA file read (the tpm-ca-certificates intermediate bundle is ~300 KiB). */
export const MAX_CA_FILE_SIZE = 16 * 1024 * 1024;

function configError(path: string, message: string, cause?: unknown): InvalidConfig {
  return new InvalidConfig(ERR_EK_CA_CONFIG, `ek_ca_path: ${path}: ${message}`, { fields: { path }, ...(cause === undefined ? {} : { cause }) });
}

async function readCaFile(path: string, inDirectory = false): Promise<{ source: string; bytes: Uint8Array; inDirectory: boolean }> {
  const info = await stat(path).catch((cause: unknown) => {
    throw configError(path, 'cannot be read', cause);
  });
  if (!info.isFile()) throw configError(path, 'is not a regular file');
  if (info.size > MAX_CA_FILE_SIZE) throw configError(path, `is larger than ${MAX_CA_FILE_SIZE} bytes`);
  const bytes = await readFile(path).catch((cause: unknown) => {
    throw configError(path, 'cannot be read', cause);
  });
  return { source: path, bytes: new Uint8Array(bytes), inDirectory };
}

function holdsCertificate(bytes: Uint8Array): boolean {
  try {
    return parseCertificates(bytes).length > 0;
  } catch {
    return false;
  }
}

/**
 * Loads every path: a file is one PEM bundle or DER certificate; a directory contributes each regular,
 * non-hidden file directly inside it (sorted, not recursive). Returns the store, or throws InvalidConfig.
 */
export async function loadEkTrustStore(
  paths: readonly string[],
  warn?: (message: string, fields: Readonly<Record<string, string>>) => void,
): Promise<EkTrustStore> {
  if (paths.length === 0) throw new InvalidConfig(ERR_EK_CA_CONFIG, 'ek_ca_path: no path given');
  const entries: { source: string; bytes: Uint8Array; inDirectory: boolean }[] = [];
  for (const path of paths) {
    if (path.length === 0) throw configError('""', 'empty path');
    const info = await stat(path).catch((cause: unknown) => {
      throw configError(path, 'does not exist or cannot be accessed', cause);
    });
    if (info.isDirectory()) {
      const names = (await readdir(path).catch((cause: unknown) => {
        throw configError(path, 'cannot be listed', cause);
      }))
        .filter((n) => !n.startsWith('.'))
        .sort();
      if (names.length === 0) throw configError(path, 'directory holds no certificate');
      let certificates = 0;
      for (const name of names) {
        const info = await stat(join(path, name)).catch(() => undefined);
        if (info?.isDirectory()) continue; // not recursive: subdirectories are not CA files
        const entry = await readCaFile(join(path, name), true);
        if (holdsCertificate(entry.bytes)) certificates++;
        entries.push(entry);
      }
      // Non-certificate files are skipped with a warning (fromEntries), but a README alone is no CA directory.
      if (certificates === 0) throw configError(path, 'directory holds no certificate');
    } else if (path.endsWith('/')) {
      throw configError(path, 'is a file, a directory was expected');
    } else {
      entries.push(await readCaFile(path));
    }
  }
  return EkTrustStore.fromEntries(entries, warn);
}
