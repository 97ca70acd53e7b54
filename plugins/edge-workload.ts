// SPIRE agent WorkloadAttestor "edge_workload" (k8s-compatible selectors for Kubernetes and KubeEdge).
// Thin entry point: --version and the cookie check come first, before the runtime loads.
import { answerVersionFlag } from '../src/plugin/build-info.js';
import { requireHandshakeEnvironment } from '../src/plugin/cookie.js';

answerVersionFlag('edge-workload');
requireHandshakeEnvironment('WorkloadAttestor');

void Promise.all([import('../src/plugin/serve.js'), import('../src/workload/attestor.js')]).then(([{ runPlugin }, { EdgeWorkloadAttestor }]) =>
  runPlugin({ type: 'WorkloadAttestor', role: 'agent', create: (ctx) => new EdgeWorkloadAttestor(ctx) }, 'edge-workload'),
);
