// SPIRE agent NodeAttestor "tpm". Thin entry point: the cookie check comes first, before the runtime loads.
import { requireHandshakeEnvironment } from '../src/plugin/cookie.js';

requireHandshakeEnvironment('NodeAttestor');

void Promise.all([import('../src/plugin/serve.js'), import('../src/nodeattestor/agent.js')]).then(([{ runPlugin }, { TpmAgentAttestor }]) =>
  runPlugin({ type: 'NodeAttestor', role: 'agent', create: (ctx) => new TpmAgentAttestor(ctx.log) }, 'tpm-agent'),
);
