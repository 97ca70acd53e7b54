/**
 * The revoker's side of tpm-server's webhook sink: an HTTPS endpoint that requires a client certificate from the
 * configured CA (mTLS; optionally one of the allowed SPIFFE IDs), checks each POSTed body is a decision event, and
 * appends it (fsync'd) to `events_file` before answering 204. The tail then handles it like any other line, so a
 * received event survives a crash exactly as a file-sink event does. A body that is not an event gets 400, which
 * the sender counts as dropped instead of retrying forever.
 */
import { readFile, open } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../plugin/types.js';
import type { RevokerConfig } from './config.js';
import { eventSchema } from './event.js';

const MAX_BODY_BYTES = 256 * 1024;

export interface Receiver {
  readonly port: number;
  close(): Promise<void>;
}

export async function startReceiver(config: RevokerConfig, log: Logger): Promise<Receiver> {
  const listen = config.webhook_listen!;
  const [cert, key, ca] = await Promise.all([readFile(listen.cert_path), readFile(listen.key_path), readFile(listen.client_ca_path)]);
  let appending: Promise<void> = Promise.resolve();
  const append = (line: string) => {
    // One writer at a time, in arrival order; each line is on disk before its 204.
    const next = appending.then(async () => {
      const h = await open(config.events_file, 'a', 0o640);
      try {
        await h.write(line);
        await h.sync();
      } finally {
        await h.close();
      }
    });
    appending = next.catch(() => undefined);
    return next;
  };
  const server: Server = createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const reply = (status: number, message?: string) => {
      res.writeHead(status, message ? { 'content-type': 'text/plain' } : {}).end(message);
    };
    if (req.method !== 'POST') return reply(405, 'POST decision events here\n');
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    const uris = (peer.subjectaltname ?? '').split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
    if (listen.allowed_client_ids.length && !uris.some((u) => listen.allowed_client_ids.includes(u))) {
      log.warn('Webhook: client not allowed', { client_ids: uris.join(',') || '(none)' });
      return reply(403, 'client SPIFFE ID not allowed\n');
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY_BYTES) {
        reply(413, `body larger than ${MAX_BODY_BYTES} bytes\n`);
        req.destroy();
      } else chunks.push(d);
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return;
      const text = Buffer.concat(chunks).toString('utf8').trim();
      let ok = false;
      try {
        ok = eventSchema.safeParse(JSON.parse(text)).success && !text.includes('\n');
      } catch {
        ok = false;
      }
      if (!ok) {
        log.warn('Webhook: body is not a decision event', { bytes: size });
        return reply(400, 'not a version-1 decision event\n');
      }
      append(text + '\n').then(
        () => reply(204),
        (err: Error) => {
          log.error('Webhook: cannot append the event', { events_file: config.events_file, error: err.message });
          reply(503, 'cannot store the event\n'); // the sender retries
        },
      );
    });
  });
  const [host, portText] = splitAddress(listen.address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(portText), host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  log.info('Webhook receiver listening', { address: `${host}:${port}` });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function splitAddress(address: string): [string, string] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), address.slice(i + 1)];
}
