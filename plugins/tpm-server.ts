// SPIRE server NodeAttestor "tpm". Thin entry point: the cookie check comes first, before the runtime loads.
import { requireHandshakeEnvironment } from '../src/plugin/cookie.js';

requireHandshakeEnvironment('NodeAttestor');

void Promise.all([import('../src/plugin/serve.js'), import('../src/nodeattestor/server.js')]).then(([{ runPlugin }, { TpmServerAttestor }]) =>
  runPlugin({ type: 'NodeAttestor', role: 'server', create: (ctx) => new TpmServerAttestor(ctx.log) }, 'tpm-server'),
);
