/**
 * go-plugin's magic cookie: SPIRE sets `<Type>=<Type>` (e.g. NodeAttestor=NodeAttestor) in the
 * plugin's environment. Checked before anything heavy loads, like go-plugin's Serve does, so a
 * binary run by hand, or declared under the wrong plugin type, exits at once with a clear message.
 * This module must stay dependency-free: entry points import it before the runtime.
 */
import { writeSync } from 'node:fs';
import type { PluginType } from './types.js';

export const CORE_PROTOCOL_VERSION = 1;
/** SPIRE's plugin API version (HandshakeConfig.ProtocolVersion). */
export const APP_PROTOCOL_VERSION = 1;

export type CookieCheck = { ok: true } | { ok: false; reason: string };

export function checkHandshakeEnvironment(type: PluginType, env: NodeJS.ProcessEnv): CookieCheck {
  if (env[type] !== type) {
    return {
      ok: false,
      reason:
        `This binary is a SPIRE ${type} plugin. It is not meant to be run directly: ` +
        `declare it in server.conf or agent.conf as \`${type} "<name>" { plugin_cmd = "..." }\` and let SPIRE start it. ` +
        `(missing or wrong magic cookie ${type}=${type})`,
    };
  }
  const versions = env['PLUGIN_PROTOCOL_VERSIONS'];
  if (versions !== undefined && versions !== '') {
    const offered = versions.split(',').map((v) => v.trim());
    if (!offered.includes(String(APP_PROTOCOL_VERSION))) {
      return {
        ok: false,
        reason: `SPIRE offered plugin protocol versions [${versions}], this plugin speaks ${APP_PROTOCOL_VERSION}`,
      };
    }
  }
  return { ok: true };
}

/** Exits with status 1 and a message on stderr when the environment is not SPIRE's. */
export function requireHandshakeEnvironment(type: PluginType): void {
  const result = checkHandshakeEnvironment(type, process.env);
  if (!result.ok) {
    writeSync(2, result.reason + '\n');
    process.exit(1);
  }
}
