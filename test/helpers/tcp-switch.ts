/**
 * A loopback TCP forwarder whose target can be switched: the "load balancer" in front of several SPIRE servers.
 * switchTo() also closes open connections, so the next gRPC stream an agent opens lands on the new target (as
 * when a balancer drains a backend). Each accepted connection is counted per target.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface TcpSwitch {
  readonly port: number;
  /** Connections accepted per target port. */
  readonly connections: Map<number, number>;
  switchTo(targetPort: number): void;
  close(): Promise<void>;
}

export async function startTcpSwitch(initialTarget: number): Promise<TcpSwitch> {
  let target = initialTarget;
  const open = new Set<Socket>();
  const connections = new Map<number, number>();
  const server: Server = createServer((client) => {
    const to = target;
    connections.set(to, (connections.get(to) ?? 0) + 1);
    const upstream = connect(to, '127.0.0.1');
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    connections,
    switchTo(targetPort: number) {
      target = targetPort;
      for (const s of open) s.destroy();
      open.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
