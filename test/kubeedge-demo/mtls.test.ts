/**
 * kubeedge-demo/mtls against real parts: a gRPC SPIFFE Workload API server on unix sockets (one fake agent per
 * workload), X.509-SVIDs minted by a two-level test CA, and Node's HTTPS stack on loopback for mTLS.
 */
import * as grpc from '@grpc/grpc-js';
import { once } from 'node:events';
import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mtlsRequest } from '../../kubeedge-demo/mtls/client.js';
import { createMtlsServer, greeter } from '../../kubeedge-demo/mtls/server.js';
import { allowIds } from '../../kubeedge-demo/mtls/spiffe-tls.js';
import { SvidSource, splitDer, type X509Svid } from '../../kubeedge-demo/mtls/svid-source.js';
import { FakeWorkloadApi, rawFetch, TestTrustDomain } from './workload-api.js';

const TD = 'edge.example';
const SERVER_PATH = '/ns/demo/sa/greeter-server';
const CLIENT_PATH = '/ns/demo/sa/greeter-client';
const SERVER_ID = `spiffe://${TD}${SERVER_PATH}`;
const CLIENT_ID = `spiffe://${TD}${CLIENT_PATH}`;

let edge: TestTrustDomain;
let other: TestTrustDomain;
beforeAll(async () => {
  edge = await TestTrustDomain.create(TD);
  other = await TestTrustDomain.create('cloud-other.example');
});

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function agent(td: TestTrustDomain, path: string): Promise<FakeWorkloadApi> {
  const api = await FakeWorkloadApi.start(td, path);
  cleanups.push(() => api.close());
  return api;
}

function source(api: FakeWorkloadApi): SvidSource {
  const s = new SvidSource({ endpoint: api.endpoint, initialBackoffMs: 20, maxBackoffMs: 200 });
  cleanups.push(() => s.close());
  return s.start();
}

/** The next 'update' whose serial is `serial`. */
function updateWith(s: SvidSource, serial: string): Promise<X509Svid> {
  return new Promise((resolve) => {
    const onUpdate = (svid: X509Svid): void => {
      if (svid.leaf.serialNumber !== serial) return;
      s.off('update', onUpdate);
      resolve(svid);
    };
    if (s.current?.leaf.serialNumber === serial) resolve(s.current);
    else s.on('update', onUpdate);
  });
}

interface Greeting {
  hello: string;
  clientSerial: string;
  server: string;
  serverSerial: string;
}

async function greeterServer(serverSource: SvidSource, allowed = CLIENT_ID) {
  await serverSource.ready();
  const handled: string[] = [];
  const tlsErrors: Array<string | Error | undefined> = [];
  const handler = greeter(serverSource);
  const server = createMtlsServer({
    source: serverSource,
    authorizeClient: allowIds(allowed),
    handler: (req, res, peer) => {
      handled.push(peer.spiffeId);
      handler(req, res, peer);
    },
  });
  server.on('tlsClientError', (_err, socket) => tlsErrors.push(socket.authorizationError));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => closeServer(server));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/hello`;
  return { server, url, handled, tlsErrors };
}

/** The demo pair on the edge trust domain: the greeter server with its SVID source, and a ready client source. */
async function demoPair() {
  const serverApi = await agent(edge, SERVER_PATH);
  const clientApi = await agent(edge, CLIENT_PATH);
  const serverSource = source(serverApi);
  const greeter = await greeterServer(serverSource);
  const clientSource = source(clientApi);
  await clientSource.ready();
  return { serverApi, clientApi, serverSource, clientSource, ...greeter };
}

function closeServer(server: https.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

describe('fake SPIRE agent (Workload API server)', () => {
  it('refuses calls without the workload.spiffe.io header with INVALID_ARGUMENT, like SPIRE', async () => {
    const api = await agent(edge, SERVER_PATH);
    await expect(rawFetch(api.endpoint, false)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' });
    await expect(rawFetch(api.endpoint, true)).resolves.toMatchObject({ svids: [{ spiffe_id: SERVER_ID }] });
    expect(api.calls).toEqual([{ header: false }, { header: true }]);
  });
});

describe('SvidSource', () => {
  it('turns the streamed DER chain, PKCS#8 key and bundle into a usable PEM SVID', async () => {
    const api = await agent(edge, SERVER_PATH);
    const svid = await source(api).ready();
    expect(svid.spiffeId).toBe(SERVER_ID);
    expect(svid.leaf.serialNumber).toBe(api.svid.serial);
    expect(svid.certChainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2); // leaf + SPIRE server (intermediate) CA
    expect(svid.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(svid.bundlePem.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    expect(splitDer(api.svid.chainDer)).toHaveLength(2);
    expect(api.calls).toEqual([{ header: true }]);
  });

  it('retries PERMISSION_DENIED ("no identity issued" while the entry propagates) and stops on INVALID_ARGUMENT', async () => {
    const api = await agent(edge, SERVER_PATH);
    api.failNext.push({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    const retrying = source(api);
    const disconnected = once(retrying, 'disconnected');
    await expect(retrying.ready()).resolves.toMatchObject({ spiffeId: SERVER_ID });
    expect(((await disconnected)[0] as grpc.ServiceError).code).toBe(grpc.status.PERMISSION_DENIED);

    api.failNext.push({ code: grpc.status.INVALID_ARGUMENT, details: 'bad request' });
    const stopping = source(api);
    await expect(stopping.ready()).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(stopping.state).toBe('stopped');
    expect(stopping.current).toBeUndefined();
  });

  it('ignores a response whose certificate does not name the SPIFFE ID it announces, and keeps streaming', async () => {
    const api = await agent(edge, SERVER_PATH);
    const s = source(api);
    const first = await s.ready();
    const seen: string[] = [];
    s.on('update', (svid) => seen.push(svid.leaf.serialNumber));
    const forged = await edge.mint('/ns/demo/sa/someone-else');
    api.pushRaw(forged, SERVER_ID);
    const rotated = await api.rotate();
    await updateWith(s, rotated.serial);
    expect(seen).toEqual([rotated.serial]);
    expect(s.current?.spiffeId).toBe(SERVER_ID);
    expect(first.leaf.serialNumber).not.toBe(forged.serial);
  });
});

describe('mTLS between the two demo services', () => {
  it('client and server authenticate each other with their SVIDs over real HTTPS', async () => {
    const { url, handled, clientSource, serverApi, clientApi } = await demoPair();

    const res = await mtlsRequest(url, { source: clientSource, authorizeServer: allowIds(SERVER_ID) });
    expect(res.status).toBe(200);
    expect(res.serverId).toBe(SERVER_ID);
    expect(res.serverCert.serialNumber).toBe(serverApi.svid.serial);
    const body = JSON.parse(res.body) as Greeting;
    expect(body).toEqual({ hello: CLIENT_ID, clientSerial: clientApi.svid.serial, server: SERVER_ID, serverSerial: serverApi.svid.serial });
    expect(handled).toEqual([CLIENT_ID]);
  });

  it('picks up rotated SVIDs: new connections present the new certificates, both ways', async () => {
    const { serverApi, clientApi, serverSource, clientSource, url } = await demoPair();
    const call = () => mtlsRequest(url, { source: clientSource, authorizeServer: allowIds(SERVER_ID) });

    const before = await call();
    const oldServerSerial = serverApi.svid.serial;
    const oldClientSerial = clientApi.svid.serial;
    expect(before.serverCert.serialNumber).toBe(oldServerSerial);

    const newServer = await serverApi.rotate();
    await updateWith(serverSource, newServer.serial);
    const afterServerRotation = await call();
    expect(afterServerRotation.serverCert.serialNumber).toBe(newServer.serial);
    expect(newServer.serial).not.toBe(oldServerSerial);
    expect((JSON.parse(afterServerRotation.body) as Greeting).clientSerial).toBe(oldClientSerial);

    const newClient = await clientApi.rotate();
    await updateWith(clientSource, newClient.serial);
    const afterClientRotation = await call();
    expect((JSON.parse(afterClientRotation.body) as Greeting).clientSerial).toBe(newClient.serial);
    expect(newClient.serial).not.toBe(oldClientSerial);
    expect(afterClientRotation.serverCert.serialNumber).toBe(newServer.serial);
    expect(serverApi.calls).toHaveLength(1); // rotation came on the open stream, no reconnect
  });

  it('refuses a client from our trust domain whose SPIFFE ID is not allowed (403, handler never runs)', async () => {
    const serverApi = await agent(edge, SERVER_PATH);
    const intruderApi = await agent(edge, '/ns/demo/sa/intruder');
    const { url, handled } = await greeterServer(source(serverApi));
    const intruder = source(intruderApi);
    await intruder.ready();

    const res = await mtlsRequest(url, { source: intruder, authorizeServer: allowIds(SERVER_ID) });
    expect(res.status).toBe(403);
    expect(res.body).toContain('spiffe://edge.example/ns/demo/sa/intruder is not allowed');
    expect(handled).toEqual([]);
  });

  it("refuses at TLS a client whose SVID comes from another trust domain's CA, even with an allowed-looking path", async () => {
    const serverApi = await agent(edge, SERVER_PATH);
    const foreignApi = await agent(other, CLIENT_PATH);
    const serverSource = source(serverApi);
    const { server, url, handled, tlsErrors } = await greeterServer(serverSource, `spiffe://${other.name}${CLIENT_PATH}`);
    const foreign = await source(foreignApi).ready();
    // The foreign workload is made to trust the edge bundle too, so that only the server's own check can stop it.
    const trustingEdge = { current: { ...foreign, bundlePem: foreign.bundlePem + serverSource.current!.bundlePem } };

    const refused = once(server, 'tlsClientError');
    await expect(mtlsRequest(url, { source: trustingEdge, authorizeServer: allowIds(SERVER_ID) })).rejects.toMatchObject({ code: 'ECONNRESET' });
    await refused;
    // Node destroys the socket after a failed client-certificate verification; the reason is on the TLS socket.
    expect(tlsErrors).toHaveLength(1);
    expect(tlsErrors[0]).toMatch(/^UNABLE_TO_GET_ISSUER_CERT/); // OpenSSL: the chain does not reach our bundle
    expect(handled).toEqual([]);
  });

  it("the client refuses a server whose SPIFFE ID is not the expected one", async () => {
    const { url, handled, clientSource } = await demoPair();
    await expect(mtlsRequest(url, { source: clientSource, authorizeServer: allowIds(`spiffe://${TD}/ns/demo/sa/payments`) })).rejects.toThrow(
      `server SPIFFE ID ${SERVER_ID} is not allowed`,
    );
    expect(handled).toEqual([]);
  });

  it('survives the Workload API going away and coming back, then serves the SVID issued meanwhile', async () => {
    const { serverApi, serverSource, clientSource, url } = await demoPair();

    const dropped = once(serverSource, 'disconnected');
    await serverApi.goAway();
    expect(((await dropped)[0] as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
    // While the agent is away the server keeps serving with the SVID it has.
    const during = await mtlsRequest(url, { source: clientSource, authorizeServer: allowIds(SERVER_ID) });
    expect(during.status).toBe(200);

    const issuedMeanwhile = await serverApi.rotate(); // no open stream: nobody hears about it yet
    await serverApi.comeBack();
    await updateWith(serverSource, issuedMeanwhile.serial);
    expect(serverSource.state).toBe('running');

    const after = await mtlsRequest(url, { source: clientSource, authorizeServer: allowIds(SERVER_ID) });
    expect(after.serverCert.serialNumber).toBe(issuedMeanwhile.serial);
    expect(serverApi.calls.length).toBeGreaterThanOrEqual(2);
  });
});
