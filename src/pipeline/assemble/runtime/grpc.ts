import http2 from 'node:http2';
import net from 'node:net';
import { RuntimeApiError } from './http';

/*
 * The few gRPC calls the containerd source makes, over node:http2 on a unix socket: length-prefixed
 * protobuf messages (RFC-less but simple: 1 byte "compressed" = 0, 4 bytes big-endian length, the message),
 * status in the `grpc-status` trailer. No compression, no TLS: a local socket only.
 */

export function frame(msg: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  Buffer.from(msg.buffer, msg.byteOffset, msg.length).copy(b, 5);
  return b;
}

/** Splits concatenated gRPC messages off `buf`; returns the messages and what is left over. */
export function unframe(buf: Buffer): { msgs: Buffer[]; rest: Buffer } {
  const msgs: Buffer[] = [];
  let off = 0;
  while (buf.length - off >= 5) {
    const len = buf.readUInt32BE(off + 1);
    if (buf.length - off < 5 + len) break;
    if (buf[off] !== 0) throw new RuntimeApiError('RUNTIME_PROTOCOL', 'compressed gRPC message');
    msgs.push(buf.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  return { msgs, rest: buf.subarray(off) };
}

export class GrpcConn {
  private session: http2.ClientHttp2Session | null = null;

  constructor(private readonly socket: string) {}

  private connect(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const s = http2.connect('http://localhost', { createConnection: () => net.connect(this.socket) });
    s.on('error', () => undefined); // each stream reports its own failure
    s.on('close', () => {
      if (this.session === s) this.session = null;
    });
    this.session = s;
    return s;
  }

  /**
   * One call; `onMsg` gets each response message. Resolves at the end of the response (grpc-status 0),
   * rejects on any other status, a transport error, `timeoutMs` (0 = none, for streams) or `signal`.
   */
  call(
    method: string,
    req: Uint8Array,
    headers: Record<string, string>,
    onMsg: (m: Buffer) => void,
    opts: { timeoutMs: number; signal?: AbortSignal; onOpen?: () => void },
  ): { done: Promise<void>; cancel: () => void } {
    let stream: http2.ClientHttp2Stream | null = null;
    const done = new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stream?.close(http2.constants.NGHTTP2_CANCEL);
        reject(e instanceof RuntimeApiError ? e : new RuntimeApiError('RUNTIME_UNREACHABLE', `${this.socket}: ${e.message}`));
      };
      const timer = opts.timeoutMs > 0 ? setTimeout(() => fail(new RuntimeApiError('RUNTIME_TIMEOUT', `${method}: no answer in ${opts.timeoutMs} ms`)), opts.timeoutMs) : undefined;
      if (opts.signal?.aborted) return fail(new RuntimeApiError('RUNTIME_TIMEOUT', `${method}: given up`));
      opts.signal?.addEventListener('abort', () => fail(new RuntimeApiError('RUNTIME_TIMEOUT', `${method}: given up`)), { once: true });
      let session: http2.ClientHttp2Session;
      try {
        session = this.connect();
      } catch (e) {
        return fail(e as Error);
      }
      stream = session.request({
        ':method': 'POST',
        ':path': method,
        'content-type': 'application/grpc',
        te: 'trailers',
        ...headers,
      });
      let buf: Buffer = Buffer.alloc(0);
      let status: string | undefined;
      let message = '';
      stream.on('response', (h) => {
        status = h['grpc-status'] as string | undefined; // a trailers-only answer carries it here
        message = (h['grpc-message'] as string | undefined) ?? '';
        opts.onOpen?.();
      });
      stream.on('trailers', (t) => {
        status = t['grpc-status'] as string | undefined;
        message = (t['grpc-message'] as string | undefined) ?? '';
      });
      stream.on('data', (d: Buffer) => {
        try {
          const u = unframe(Buffer.concat([buf, d]));
          buf = u.rest;
          for (const m of u.msgs) onMsg(m);
        } catch (e) {
          fail(e as Error);
        }
      });
      stream.on('error', (e) => fail(e));
      stream.on('close', () => {
        if (settled) return;
        if (status === '0') {
          settled = true;
          clearTimeout(timer);
          resolve();
        } else fail(new RuntimeApiError('RUNTIME_HTTP', `${method}: grpc-status ${status ?? 'none'} ${decodeURIComponent(message)}`));
      });
      stream.end(frame(req));
    });
    return { done, cancel: () => stream?.close(http2.constants.NGHTTP2_CANCEL) };
  }

  close(): void {
    this.session?.close();
    this.session = null;
  }
}
