// SPIRE server NodeAttestor "tpm". Thin entry point: --version and the cookie check come first, before the runtime loads.
import { answerVersionFlag } from '../src/plugin/build-info.js';
import { requireHandshakeEnvironment } from '../src/plugin/cookie.js';

answerVersionFlag('tpm-server');
requireHandshakeEnvironment('NodeAttestor');

void Promise.all([import('../src/plugin/serve.js'), import('../src/nodeattestor/server.js')]).then(([{ runPlugin }, { TpmServerAttestor }]) =>
  runPlugin({ type: 'NodeAttestor', role: 'server', create: (ctx) => new TpmServerAttestor(ctx.log) }, 'tpm-server'),
);
