/**
 * A go-plugin client written the way SPIRE's catalog drives an external plugin
 * (pkg/common/catalog/external.go + go-plugin client.go), for conformance tests:
 *  - exec the binary with SPIRE's environment: <Type>=<Type>, PLUGIN_MIN_PORT/MAX_PORT, PLUGIN_PROTOCOL_VERSIONS=1;
 *  - read the FIRST stdout line only, trim it, split on "|" and check it as go-plugin does;
 *  - dial plaintext gRPC over the unix socket with the dummy authority "unused";
 *  - open GRPCBroker/StartStream and GRPCStdio/StreamStdio at once, serve host services on our own
 *    unix socket and push ConnInfo{service_id: 1} down the broker stream;
 *  - Init with host service names, Configure, use the plugin, then Deinit + Shutdown and wait 2 s.
 * Everything after the handshake on stdout is recorded (it must stay empty), and every stderr line is
 * kept for the hclog checks.
 */
import * as grpc from '@grpc/grpc-js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { clientConstructor, serviceDefinition, ServiceNames } from '../../src/plugin/protos.js';

export type AnyClient = grpc.Client & Record<string, (...args: any[]) => any>;

export interface HandshakeParts {
  core: string;
  app: string;
  network: string;
  address: string;
  protocol: string;
  rest: string[];
}

/** go-plugin client.go: TrimSpace, split on "|", at least 4 parts, protocol defaults to netrpc. */
export function parseHandshake(line: string): HandshakeParts {
  const parts = line.trim().split('|');
  if (parts.length < 4) throw new Error(`Unrecognized remote plugin message: ${line}`);
  if (parts[0] !== '1') throw new Error(`Incompatible core API version with plugin: ${parts[0]}`);
  if (parts[1] !== '1') throw new Error(`Incompatible API version with plugin: ${parts[1]}`);
  if (parts[2] !== 'unix' && parts[2] !== 'tcp') throw new Error(`Unknown address type: ${parts[2]}`);
  const protocol = parts[4] ?? 'netrpc';
  if (protocol !== 'grpc') throw new Error(`Unsupported plugin protocol "${protocol}"`);
  if (parts.length > 6) throw new Error('unexpected multiplexing field in handshake');
  return { core: parts[0]!, app: parts[1]!, network: parts[2]!, address: parts[3]!, protocol, rest: parts.slice(5) };
}

export interface HostServiceOptions {
  /** Agent IDs the fake AgentStore reports as attested (OK); others get NOT_FOUND. */
  attestedAgents?: Set<string>;
}

export interface LaunchOptions {
  binary: string;
  type: 'NodeAttestor' | 'WorkloadAttestor';
  /** Override or remove environment entries (undefined removes). */
  env?: Record<string, string | undefined>;
  args?: string[];
  hostServices?: HostServiceOptions;
  startTimeoutMs?: number;
}

export class PluginHarness {
  readonly child: ChildProcess;
  readonly handshakeLine: string;
  readonly handshake: HandshakeParts;
  readonly extraStdout: string[];
  readonly stderrLines: string[];
  readonly hostServiceCalls: string[] = [];
  /** Every Metrics host-service call the plugin made, as SPIRE's metrics service received it. */
  readonly metricCalls: MetricCall[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #conn: grpc.Channel | undefined;
  #clients = new Map<string, AnyClient>();
  #brokerCall: grpc.ClientDuplexStream<any, any> | undefined;
  #stdioCall: grpc.ClientReadableStream<any> | undefined;
  #hostServer: grpc.Server | undefined;
  #hostDir: string | undefined;

  private constructor(
    child: ChildProcess,
    line: string,
    exited: PluginHarness['exited'],
    extraStdout: string[],
    stderrLines: string[],
  ) {
    this.child = child;
    this.extraStdout = extraStdout;
    this.stderrLines = stderrLines;
    this.handshakeLine = line;
    this.handshake = parseHandshake(line);
    this.exited = exited;
  }

  static async launch(options: LaunchOptions): Promise<PluginHarness> {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
    Object.assign(env, {
      [options.type]: options.type,
      PLUGIN_MIN_PORT: '10000',
      PLUGIN_MAX_PORT: '25000',
      PLUGIN_PROTOCOL_VERSIONS: '1',
    });
    for (const [k, v] of Object.entries(options.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const child = spawn(options.binary, options.args ?? [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const stderrLines: string[] = [];
    createInterface({ input: child.stderr! }).on('line', (l) => stderrLines.push(l));
    const stdoutLines = createInterface({ input: child.stdout! });
    const extra: string[] = [];
    const first = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timeout while waiting for plugin to start')), options.startTimeoutMs ?? 60_000);
      let got = false;
      stdoutLines.on('line', (line) => {
        if (!got) {
          got = true;
          clearTimeout(timer);
          resolve(line);
        } else extra.push(line);
      });
      exited.then(({ code }) => {
        if (!got) {
          clearTimeout(timer);
          reject(Object.assign(new Error(`plugin exited before we could connect (code ${code})`), { code, stderr: stderrLines }));
        }
      });
    });
    const harness = new PluginHarness(child, first, exited, extra, stderrLines);
    await harness.#connect(options.hostServices ?? {});
    return harness;
  }

  async #connect(hostOptions: HostServiceOptions): Promise<void> {
    const target = this.handshake.network === 'unix' ? `unix:${this.handshake.address}` : this.handshake.address;
    const channelOptions = {
      'grpc.default_authority': 'unused',
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      'grpc.enable_channelz': 0,
    };
    const BrokerClient = clientConstructor(ServiceNames.broker);
    const broker = new BrokerClient(target, grpc.credentials.createInsecure(), channelOptions) as unknown as AnyClient;
    this.#clients.set(ServiceNames.broker, broker);
    this.#conn = broker.getChannel() as grpc.Channel;
    this.#brokerCall = broker['StartStream']!() as grpc.ClientDuplexStream<any, any>;
    this.#brokerCall.on('error', () => undefined);
    this.#brokerCall.on('data', () => undefined);
    this.#stdioCall = this.client(ServiceNames.stdio)['StreamStdio']!({}) as grpc.ClientReadableStream<any>;
    this.#stdioCall.on('error', () => undefined);
    this.#stdioCall.on('data', () => undefined);

    // Host services, served on our own listener and announced through the broker (broker.Accept(1)).
    this.#hostDir = mkdtempSync(join(tmpdir(), 'host-'));
    const hostSocket = join(this.#hostDir, 'host.sock');
    const server = new grpc.Server();
    const attested = hostOptions.attestedAgents ?? new Set<string>();
    server.addService(serviceDefinition(ServiceNames.agentStore), {
      GetAgentInfo: (call: grpc.ServerUnaryCall<{ agent_id: string }, object>, cb: grpc.sendUnaryData<object>) => {
        this.hostServiceCalls.push(`GetAgentInfo:${call.request.agent_id}`);
        if (attested.has(call.request.agent_id)) cb(null, { info: { agent_id: call.request.agent_id } });
        else cb({ code: grpc.status.NOT_FOUND, details: 'no such node' });
      },
    });
    const recordMetric = (method: MetricCall['method']) => (call: grpc.ServerUnaryCall<any, object>, cb: grpc.sendUnaryData<object>) => {
      const r = call.request as { key: string[]; val?: number; time?: string; labels: { name: string; value: string }[] };
      this.metricCalls.push({ method, key: r.key, val: r.val, time: r.time, labels: Object.fromEntries(r.labels.map((l) => [l.name, l.value])) });
      cb(null, {});
    };
    server.addService(serviceDefinition(ServiceNames.metrics), {
      IncrCounter: recordMetric('IncrCounter'),
      MeasureSince: recordMetric('MeasureSince'),
      AddSample: recordMetric('AddSample'),
      SetGauge: recordMetric('SetGauge'),
      EmitKey: recordMetric('EmitKey'),
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${hostSocket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.#hostServer = server;
    this.#brokerCall.write({ service_id: 1, network: 'unix', address: hostSocket });
  }

  client(serviceName: string): AnyClient {
    let client = this.#clients.get(serviceName);
    if (!client) {
      const Ctor = clientConstructor(serviceName);
      const target = this.handshake.network === 'unix' ? `unix:${this.handshake.address}` : this.handshake.address;
      client = new Ctor(target, grpc.credentials.createInsecure(), {
        channelOverride: this.#conn,
      } as grpc.ClientOptions) as unknown as AnyClient;
      this.#clients.set(serviceName, client);
    }
    return client;
  }

  unary<T = any>(serviceName: string, method: string, request: object, timeoutMs = 30_000): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client(serviceName)[method]!(request, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: T) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  init(hostServiceNames: string[] = [ServiceNames.agentStore, ServiceNames.metrics]): Promise<{ plugin_service_names: string[] }> {
    return this.unary(ServiceNames.init, 'Init', { host_service_names: hostServiceNames });
  }

  configure(hcl: string, trustDomain = 'example.org'): Promise<object> {
    return this.unary(ServiceNames.config, 'Configure', { core_configuration: { trust_domain: trustDomain }, hcl_configuration: hcl });
  }

  /**
   * SPIRE's unload: Deinit, close the broker, Shutdown, then wait for exit before SIGKILL. SPIRE waits 2 s; tests
   * pass a wider `graceMs` where they check that the plugin exits by itself (its own 1.5 s guard is what keeps it
   * inside SPIRE's 2 s), so that a loaded CI machine cannot turn a scheduling delay into a failure.
   */
  async unload(graceMs = 2_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }> {
    await this.unary(ServiceNames.init, 'Deinit', {}, 10_000).catch(() => undefined);
    this.#brokerCall?.cancel();
    await this.unary(ServiceNames.controller, 'Shutdown', {}, graceMs).catch(() => undefined);
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs));
    const result = await Promise.race([this.exited, timeout]);
    this.close();
    if (result === 'timeout') {
      this.child.kill('SIGKILL');
      const after = await this.exited;
      return { ...after, killed: true };
    }
    return { ...result, killed: false };
  }

  close(): void {
    this.#stdioCall?.cancel();
    this.#brokerCall?.cancel();
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
    this.#hostServer?.forceShutdown();
    if (this.#hostDir) rmSync(this.#hostDir, { recursive: true, force: true });
  }

  /** Test teardown: SIGKILL (as SPIRE does after a failed unload) and remove the socket directory it left. */
  async kill(): Promise<void> {
    this.close();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    if (this.handshake.network === 'unix' && basename(dirname(this.handshake.address)).startsWith('plugin-')) {
      rmSync(dirname(this.handshake.address), { recursive: true, force: true });
    }
  }
}

/** go-plugin log_entry.go parseJSON + hclog layout: what SPIRE requires of each stderr line. */
export function checkHclogLine(line: string): string | undefined {
  let entry: unknown;
  try {
    entry = JSON.parse(line);
  } catch {
    return `not JSON: ${line}`;
  }
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return `not a JSON object: ${line}`;
  const e = entry as Record<string, unknown>;
  if (typeof e['@message'] !== 'string') return `@message is not a string: ${line}`;
  if (typeof e['@level'] !== 'string' || !/^(trace|debug|info|warn|error)$/i.test(e['@level'])) return `bad @level: ${line}`;
  if (e['@module'] !== undefined && typeof e['@module'] !== 'string') return `@module is not a string: ${line}`;
  if (e['@timestamp'] !== undefined) {
    if (typeof e['@timestamp'] !== 'string' || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$/.test(e['@timestamp'])) {
      return `@timestamp does not match 2006-01-02T15:04:05.000000Z07:00: ${line}`;
    }
  }
  if (Buffer.byteLength(line) >= 64 * 1024) return 'line exceeds 64 KiB';
  return undefined;
}

/** Server NodeAttestor Attest as SPIRE's facade drives it: payload, then answer each challenge. */
export interface MetricCall {
  readonly method: 'IncrCounter' | 'MeasureSince' | 'AddSample' | 'SetGauge' | 'EmitKey';
  readonly key: readonly string[];
  readonly val: number | undefined;
  /** MeasureSince: unix nanoseconds (int64 as a decimal string). */
  readonly time: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
}

export function attestThroughServer(
  harness: PluginHarness,
  payload: Uint8Array,
  answer: (challenge: Buffer) => Buffer | Promise<Buffer>,
): Promise<{ spiffe_id: string; selector_values: string[]; can_reattest: boolean; challenges: number }> {
  return new Promise((resolve, reject) => {
    const call = harness.client(ServiceNames.serverNodeAttestor)['Attest']!() as grpc.ClientDuplexStream<any, any>;
    let challenges = 0;
    let done = false;
    call.on('data', async (msg: any) => {
      if (msg.response === 'agent_attributes') {
        done = true;
        resolve({ ...msg.agent_attributes, challenges });
        call.cancel(); // SPIRE cancels instead of half-closing
      } else if (msg.response === 'challenge') {
        challenges++;
        try {
          call.write({ challenge_response: await answer(msg.challenge) });
        } catch (err) {
          reject(err);
          call.cancel();
        }
      } else {
        reject(new Error('plugin response missing challenge or agent attributes'));
      }
    });
    call.on('error', (err) => {
      if (!done) reject(err);
    });
    call.on('end', () => {
      if (!done) reject(new Error('plugin closed stream unexpectedly'));
    });
    call.write({ payload: Buffer.from(payload) });
  });
}

/**
 * Agent AidAttestation as SPIRE's agent facade drives it: Recv the payload first, forward it via
 * `exchange`, which returns challenges one at a time (or undefined when the server is done).
 */
export function aidAttestation(
  harness: PluginHarness,
  exchange: (payloadOrResponse: Buffer, isPayload: boolean) => Promise<Buffer | undefined>,
): Promise<{ payload: Buffer; responses: Buffer[] }> {
  return new Promise((resolve, reject) => {
    const call = harness.client(ServiceNames.agentNodeAttestor)['AidAttestation']!() as grpc.ClientDuplexStream<any, any>;
    let payload: Buffer | undefined;
    const responses: Buffer[] = [];
    let done = false;
    const step = async (bytes: Buffer, isPayload: boolean) => {
      try {
        const challenge = await exchange(bytes, isPayload);
        if (challenge === undefined) {
          done = true;
          resolve({ payload: payload!, responses });
          call.cancel();
        } else call.write({ challenge });
      } catch (err) {
        done = true;
        reject(err);
        call.cancel();
      }
    };
    call.on('data', (msg: any) => {
      if (msg.data === 'payload' && payload === undefined) {
        payload = msg.payload;
        void step(msg.payload, true);
      } else if (msg.data === 'challenge_response') {
        responses.push(msg.challenge_response);
        void step(msg.challenge_response, false);
      } else reject(new Error(`unexpected agent message ${msg.data}`));
    });
    call.on('error', (err) => {
      if (!done) reject(err);
    });
  });
}
