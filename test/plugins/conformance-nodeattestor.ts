/**
 * A minimal server NodeAttestor used only by the runtime conformance tests. It exercises the
 * whole runtime: typed config (quoted keys, nested blocks, lists), a challenge round trip,
 * host-service access (AgentStore) and error mapping.
 */
import { requireHandshakeEnvironment } from '../../src/plugin/cookie.js';

requireHandshakeEnvironment('NodeAttestor');

void import('./lib/conformance.js').then(({ definition }) =>
  import('../../src/plugin/serve.js').then(({ runPlugin }) => runPlugin(definition, 'conformance')),
);
