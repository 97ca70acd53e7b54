// SPIRE agent NodeAttestor "tpm". Thin entry point: --version and the cookie check come first, before the runtime loads.
import { answerVersionFlag } from '../src/plugin/build-info.js';
import { requireHandshakeEnvironment } from '../src/plugin/cookie.js';

answerVersionFlag('tpm-agent');
requireHandshakeEnvironment('NodeAttestor');

void Promise.all([import('../src/plugin/serve.js'), import('../src/nodeattestor/agent.js')]).then(([{ runPlugin }, { TpmAgentAttestor }]) =>
  runPlugin({ type: 'NodeAttestor', role: 'agent', create: (ctx) => new TpmAgentAttestor(ctx.log) }, 'tpm-agent'),
);
