/**
 * Test parts for the kubeedge-demo mTLS sample: a SPIRE-like CA minting real X.509-SVIDs (@peculiar/x509 on node
 * webcrypto) and a real gRPC SPIFFE Workload API server on a unix socket, standing in for the SPIRE agent.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import * as grpc from '@grpc/grpc-js';
import { randomBytes, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientConstructor, serviceDefinition, ServiceNames } from '../../src/plugin/protos.js';

x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
type KeyPair = webcrypto.CryptoKeyPair;

const generateKeys = async (): Promise<KeyPair> => (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as KeyPair;
/** A positive random 128-bit serial, upper-case hex like node's X509Certificate.serialNumber. */
const newSerial = (): string => {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x10;
  return bytes.toString('hex').toUpperCase();
};

export interface MintedSvid {
  readonly spiffeId: string;
  readonly serial: string;
  /** Leaf then intermediate, concatenated DER, as the Workload API sends `x509_svid`. */
  readonly chainDer: Buffer;
  readonly keyDer: Buffer;
}

/**
 * A trust domain's CA the way a nested SPIRE deployment has it: a root (the upstream authority, which is what the
 * trust bundle holds) and an intermediate signing CA (the SPIRE server's own CA) that signs the SVIDs.
 */
export class TestTrustDomain {
  private constructor(
    readonly name: string,
    readonly root: x509.X509Certificate,
    private readonly intermediate: x509.X509Certificate,
    private readonly intermediateKeys: KeyPair,
  ) {}

  static async create(name: string): Promise<TestTrustDomain> {
    const caExtensions = async (keys: KeyPair): Promise<x509.Extension[]> => [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${name}` }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ];
    const rootKeys = await generateKeys();
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: newSerial(),
      name: `O=SPIFFE, CN=${name} upstream root`,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 24 * 3_600_000),
      signingAlgorithm: ALG,
      keys: rootKeys,
      extensions: await caExtensions(rootKeys),
    });
    const intermediateKeys = await generateKeys();
    const intermediate = await x509.X509CertificateGenerator.create({
      serialNumber: newSerial(),
      subject: `O=SPIFFE, CN=${name} spire-server CA`,
      issuer: root.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 12 * 3_600_000),
      signingAlgorithm: ALG,
      publicKey: intermediateKeys.publicKey,
      signingKey: rootKeys.privateKey,
      extensions: [...(await caExtensions(intermediateKeys)), await x509.AuthorityKeyIdentifierExtension.create(root)],
    });
    return new TestTrustDomain(name, root, intermediate, intermediateKeys);
  }

  get bundleDer(): Buffer {
    return Buffer.from(this.root.rawData);
  }

  /** An X.509-SVID (spec §4/§5): one URI SAN, not a CA, digitalSignature, server+client auth; short-lived. */
  async mint(path: string, lifetimeMs = 5 * 60_000): Promise<MintedSvid> {
    const spiffeId = `spiffe://${this.name}${path}`;
    const keys = await generateKeys();
    const serial = newSerial();
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: 'O=SPIRE, C=US',
      issuer: this.intermediate.subject,
      notBefore: new Date(Date.now() - 10_000),
      notAfter: new Date(Date.now() + lifetimeMs),
      signingAlgorithm: ALG,
      publicKey: keys.publicKey,
      signingKey: this.intermediateKeys.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.intermediate),
      ],
    });
    return {
      spiffeId,
      serial,
      chainDer: Buffer.concat([Buffer.from(leaf.rawData), Buffer.from(this.intermediate.rawData)]),
      keyDer: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    };
  }
}

type Stream = grpc.ServerWritableStream<object, object>;

/**
 * A fake SPIRE agent serving SpiffeWorkloadAPI/FetchX509SVID for one workload identity.
 *
 * The gRPC server listens on a private socket; the workload's socket (`endpoint`) is a byte proxy in front of it.
 * That is how `goAway()` can look like an agent that crashed or restarted: the connection drops (the client sees
 * UNAVAILABLE), whereas shutting a grpc-js server down would cancel the streams (CANCELLED), which a Workload API
 * client rightly treats as final.
 */
export class FakeWorkloadApi {
  readonly endpoint: string;
  readonly #grpcPath: string;
  readonly #proxyPath: string;
  readonly #dir: string;
  readonly #server = new grpc.Server();
  readonly #streams = new Set<Stream>();
  readonly #sockets = new Set<net.Socket>();
  #proxy: net.Server | undefined;
  #svid: MintedSvid;
  /** Status to answer the next calls with instead of an SVID (each use consumes one). */
  readonly failNext: Array<{ code: grpc.status; details: string }> = [];
  /** Every FetchX509SVID call, with whether it carried the security header. */
  readonly calls: Array<{ header: boolean }> = [];

  private constructor(
    readonly trustDomain: TestTrustDomain,
    readonly path: string,
    svid: MintedSvid,
    dir: string,
  ) {
    this.#svid = svid;
    this.#dir = dir;
    this.#grpcPath = join(dir, 'grpc.sock');
    this.#proxyPath = join(dir, 'agent.sock');
    this.endpoint = `unix://${this.#proxyPath}`;
  }

  static async start(trustDomain: TestTrustDomain, path: string): Promise<FakeWorkloadApi> {
    const dir = mkdtempSync(join(tmpdir(), 'kubeedge-demo-'));
    const api = new FakeWorkloadApi(trustDomain, path, await trustDomain.mint(path), dir);
    api.#server.addService(serviceDefinition(ServiceNames.workloadApi), {
      FetchX509SVID: (call: Stream) => api.#fetch(call),
      FetchX509Bundles: (call: Stream) => call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'not in this fake' }),
    });
    await new Promise<void>((resolve, reject) =>
      api.#server.bindAsync(`unix://${api.#grpcPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    await api.comeBack();
    return api;
  }

  get svid(): MintedSvid {
    return this.#svid;
  }

  /** Open FetchX509SVID streams. */
  get streams(): number {
    return this.#streams.size;
  }

  #fetch(call: Stream): void {
    const header = call.metadata.get('workload.spiffe.io')[0] === 'true';
    this.calls.push({ header });
    if (!header) {
      // What SPIRE's agent answers (pkg/agent/endpoints/middleware.go).
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' });
      return;
    }
    const failure = this.failNext.shift();
    if (failure) {
      call.emit('error', failure);
      return;
    }
    this.#streams.add(call);
    const forget = (): void => void this.#streams.delete(call);
    call.on('cancelled', forget);
    call.on('close', forget);
    call.on('error', forget);
    call.write(this.#response());
  }

  #response(svid = this.#svid, announcedId = svid.spiffeId): object {
    return {
      svids: [{ spiffe_id: announcedId, x509_svid: svid.chainDer, x509_svid_key: svid.keyDer, bundle: this.trustDomain.bundleDer, hint: '' }],
      crl: [],
      federated_bundles: {},
    };
  }

  /** Pushes an arbitrary response on every open stream (a buggy or hostile agent); the current SVID is unchanged. */
  pushRaw(svid: MintedSvid, announcedId: string): void {
    for (const stream of this.#streams) stream.write(this.#response(svid, announcedId));
  }

  /** Mints a new SVID (new key, new serial) and pushes it on every open stream, as the agent does on rotation. */
  async rotate(): Promise<MintedSvid> {
    this.#svid = await this.trustDomain.mint(this.path);
    for (const stream of this.#streams) stream.write(this.#response());
    return this.#svid;
  }

  /** The agent disappears: the socket goes away and every connection drops. */
  async goAway(): Promise<void> {
    const proxy = this.#proxy;
    this.#proxy = undefined;
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    if (proxy) await new Promise<void>((resolve) => proxy.close(() => resolve()));
  }

  /** The agent is back on the same socket path. */
  async comeBack(): Promise<void> {
    if (this.#proxy) return;
    const proxy = net.createServer((downstream) => {
      const upstream = net.connect(this.#grpcPath);
      for (const s of [downstream, upstream]) {
        this.#sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          this.#sockets.delete(s);
          downstream.destroy();
          upstream.destroy();
        });
      }
      downstream.pipe(upstream).pipe(downstream);
    });
    await new Promise<void>((resolve, reject) => {
      proxy.once('error', reject);
      proxy.listen(this.#proxyPath, () => resolve());
    });
    this.#proxy = proxy;
  }

  async close(): Promise<void> {
    await this.goAway();
    this.#server.forceShutdown();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** A raw Workload API call, for checking the server side itself; resolves with the first message or rejects. */
export function rawFetch(endpoint: string, withHeader: boolean): Promise<unknown> {
  const Client = clientConstructor(ServiceNames.workloadApi);
  const client = new Client(endpoint, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (withHeader) metadata.set('workload.spiffe.io', 'true');
  const call = (client as unknown as { FetchX509SVID(r: object, m: grpc.Metadata): grpc.ClientReadableStream<unknown> }).FetchX509SVID({}, metadata);
  return new Promise<unknown>((resolve, reject) => {
    call.on('data', (message) => resolve(message));
    call.on('error', reject);
  }).finally(() => {
    call.cancel();
    client.close();
  });
}
