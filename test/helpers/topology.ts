/**
 * Runs kubeedge-demo/topology.ts roles on the real-SPIRE helpers: the same plugin declarations and settings the
 * manifests embed, with our built binaries as plugin_cmd (and their real checksums).
 */
import type { AgentRole, PluginDecl, ServerRole } from '../../kubeedge-demo/topology.js';
import { builtPlugin } from './binaries.js';
import type { BuiltinPlugin, ExternalPlugin, ServerOptions } from './spire.js';

export function helperPlugin(p: PluginDecl): ExternalPlugin | BuiltinPlugin {
  return p.binary ? { type: p.type, name: p.name, cmd: builtPlugin(p.binary), data: p.data } : { type: p.type, name: p.name, data: p.data };
}

/** SpireServer.start options for a role; its data dir must be `<dir>/data`, where the helper keeps it. */
export function serverRoleOptions(role: ServerRole): Pick<ServerOptions, 'trustDomain' | 'server' | 'keyManager' | 'dataStore' | 'plugins'> {
  return { trustDomain: role.trustDomain, server: role.settings, keyManager: role.keyManager, dataStore: role.dataStore, plugins: role.plugins.map(helperPlugin) };
}

export function agentRoleOptions(role: AgentRole): { agent: AgentRole['settings']; plugins: (ExternalPlugin | BuiltinPlugin)[] } {
  return { agent: role.settings, plugins: role.plugins.map(helperPlugin) };
}
