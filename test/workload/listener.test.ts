/** Parsing of /proc/net/tcp{,6} for the loopback pod-source owner check (listener.ts), on the kernel's own text. */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { isLoopbackHost, parseLoopbackListeners } from '../../src/workload/listener.js';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';

describe('parseLoopbackListeners', () => {
  it('finds LISTEN sockets on loopback or wildcard addresses, with their uid; skips others', () => {
    const text =
      HEADER +
      '   0: 0100007F:2852 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 4242 1 0000000000000000 100 0 0 10 0\n' + // 127.0.0.1:10322 listen
      '   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0\n' + // 0.0.0.0:22
      '   2: 7F00000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 18 1 0000000000000000 100 0 0 10 0\n' + // 10.0.0.127:8080 (little-endian), not loopback
      '   3: 0100007F:2852 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 19 1 0000000000000000 100 0 0 10 0\n' + // established, not listen
      'garbage line\n';
    expect(parseLoopbackListeners(text, false)).toEqual([
      { port: 0x2852, uid: 65534, inode: '4242' },
      { port: 22, uid: 0, inode: '17' },
    ]);
  });

  it('IPv6: ::, ::1 and v4-mapped loopback count; a global address does not', () => {
    const line = (addr: string, inode: number) =>
      `   0: ${addr}:2852 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 ${inode} 1 0000000000000000 100 0 0 10 0\n`;
    const text =
      HEADER +
      line('00000000000000000000000000000000', 1) +
      line('00000000000000000000000001000000', 2) +
      line('0000000000000000FFFF00000100007F', 3) +
      line('B80D0120000000000000000001000000', 4);
    expect(parseLoopbackListeners(text, true).map((l) => l.inode)).toEqual(['1', '2', '3']);
  });

  it('sees a real listener of this process with our uid', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    try {
      const found = parseLoopbackListeners(readFileSync('/proc/self/net/tcp', 'utf8'), false).filter((l) => l.port === port);
      expect(found).toHaveLength(1);
      expect(found[0]!.uid).toBe(process.getuid!());
    } finally {
      server.close();
    }
  });
});

describe('isLoopbackHost', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['localhost', true],
    ['[::1]', true],
    ['::1', true],
    ['10.0.0.1', false],
    ['edge-node-1', false],
    ['127.0.0.1.example.com', false],
  ])('%s → %s', (host, want) => expect(isLoopbackHost(host)).toBe(want));
});
