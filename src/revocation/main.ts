/**
 * `spire-edge-revoker` (docs/revocation.md):
 *
 *   run --config FILE [--dry-run]                 follow the decision events and act on refusals (until SIGTERM)
 *   approve <agent-id|ek-hash> --config FILE      lift a node's fence: delete the ban (agent record), remove the taint
 *   status --config FILE                          print the fenced agents and the committed offset as JSON
 *
 * Logs (hclog JSON) go to stderr; results to stdout. Exit codes: 0 success, 1 failure, 2 usage error.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../plugin/log.js';
import { loadRevokerConfig, type RevokerConfig } from './config.js';
import { loadKubeConfig, NodeFence } from './kube.js';
import { Revoker } from './revoker.js';
import { SpireAgentApi } from './spire-api.js';

export const PROGRAM = 'spire-edge-revoker';

export interface RevokerIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Aborted on SIGTERM/SIGINT by the entry point. */
  readonly signal: AbortSignal;
}

const USAGE = `Usage: ${PROGRAM} <command> --config FILE [options]

Commands:
  run                          Follow the decision events; on a refusal ban the agent and fence its Node
  approve <agent-id|ek-hash>   Lift the fence: delete the agent's ban and remove the Node taint
  status                       Print the fenced agents and the committed offset (JSON)

Options:
  --config FILE   Revoker configuration (YAML or JSON; docs/revocation.md)
  --dry-run       Log and audit what would be done, change nothing
  -h, --help      Show this help
Exit codes: 0 success, 1 failure, 2 usage error.
`;

function build(config: RevokerConfig, io: RevokerIo): { revoker: Revoker; close: () => void } {
  const log = createLogger({ module: PROGRAM, level: 'info', sink: io.stderr });
  const spire = config.spire ? new SpireAgentApi(config.spire.admin_socket, config.spire.timeout) : undefined;
  const k8s = config.kubernetes;
  const fence = k8s ? new NodeFence(loadKubeConfig({ ...(k8s.kubeconfig ? { kubeconfig: k8s.kubeconfig } : {}), inCluster: k8s.in_cluster }), k8s.taint_key) : undefined;
  return { revoker: new Revoker({ config, log, ...(spire ? { spire } : {}), ...(fence ? { fence } : {}) }), close: () => spire?.close() };
}

export async function main(argv: readonly string[], io: RevokerIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: { config: { type: 'string' }, 'dry-run': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (err) {
    io.stderr(`${PROGRAM}: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const [command, ...rest] = parsed.positionals;
  if (parsed.values.help || !command) {
    (parsed.values.help ? io.stdout : io.stderr)(USAGE);
    return parsed.values.help ? 0 : 2;
  }
  if (!['run', 'approve', 'status'].includes(command) || (command === 'approve' ? rest.length !== 1 : rest.length !== 0) || !parsed.values.config) {
    io.stderr(`${PROGRAM}: ${!parsed.values.config ? '--config is required' : `bad command line: ${argv.join(' ')}`}\n${USAGE}`);
    return 2;
  }
  let config: RevokerConfig;
  try {
    config = await loadRevokerConfig(parsed.values.config);
  } catch (err) {
    io.stderr(`${PROGRAM}: ${(err as Error).message}\n`);
    return 1;
  }
  if (parsed.values['dry-run']) config = { ...config, dry_run: true };
  const { revoker, close } = build(config, io);
  try {
    if (command === 'run') {
      await revoker.run(io.signal);
      return 0;
    }
    if (command === 'approve') {
      const entries = await revoker.approve(rest[0]!);
      io.stdout(JSON.stringify({ approved: rest[0], actions: entries }, null, 2) + '\n');
      return entries.some((e) => e.result === 'failed' || e.result === 'not_found' && e.action === 'unban' && !e.agent_id) ? 1 : 0;
    }
    const offset = await readFile(join(config.state_dir, 'offset.json'), 'utf8').then(JSON.parse, () => null);
    io.stdout(JSON.stringify({ fenced: await revoker.fenced(), offset }, null, 2) + '\n');
    return 0;
  } catch (err) {
    io.stderr(`${PROGRAM}: ${command} failed: ${(err as Error).message}\n`);
    return 1;
  } finally {
    close();
  }
}
