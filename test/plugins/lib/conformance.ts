import { AttestationRefused, MalformedInput, NotConfigured } from '../../../src/errors.js';
import { block, parseConfig, z } from '../../../src/plugin/config-schema.js';
import type { PluginDefinition, ServerNodeAttestor } from '../../../src/plugin/types.js';
import { SpiffeId, TrustDomain } from '../../../src/spiffe/trust-domain.js';

const schema = z.strictObject({
  shared_secret: z.string().min(1),
  rounds: z.number().int().min(0).max(5).default(1),
  tofu: z.boolean().default(false),
  pcrs: block(z.strictObject({ index: z.array(z.number().int().min(0).max(23)) })).optional(),
});
type Config = z.output<typeof schema> & { trustDomain: TrustDomain };

export const definition: PluginDefinition = {
  type: 'NodeAttestor',
  role: 'server',
  create(ctx): ServerNodeAttestor {
    let config: Config | undefined;
    return {
      async configure(raw, core) {
        config = { ...parseConfig(schema, raw, 'conformance'), trustDomain: TrustDomain.parse(core.trustDomain) };
      },
      async validate(raw) {
        parseConfig(schema, raw, 'conformance');
        return [];
      },
      async attest(payload, io) {
        if (!config) throw new NotConfigured('ERR_NOT_CONFIGURED', 'not configured');
        const node = Buffer.from(payload).toString('utf8');
        if (!/^[a-z0-9-]{1,64}$/.test(node)) throw new MalformedInput('ERR_PAYLOAD', 'payload must be a node name');
        for (let round = 0; round < config.rounds; round++) {
          const challenge = Buffer.from(`${round}:${config.shared_secret}`);
          const response = Buffer.from(await io.challenge(challenge));
          if (!response.equals(Buffer.from([...challenge].reverse()))) {
            throw new AttestationRefused('ERR_CHALLENGE', `node ${node}: wrong challenge response in round ${round}`);
          }
        }
        const spiffeId = SpiffeId.fromSegments(config.trustDomain, 'spire', 'agent', 'conformance', node).toString();
        if (config.tofu && (await ctx.host.agentExists(spiffeId, io.signal))) {
          throw new AttestationRefused('ERR_TOFU', `node ${node} has already attested`);
        }
        ctx.log.info('Node attested', { node, spiffe_id: spiffeId });
        return { spiffeId, selectorValues: [`node:${node}`, `pcrs:${config.pcrs?.index.join(',') ?? ''}`], canReattest: !config.tofu };
      },
    };
  },
};
