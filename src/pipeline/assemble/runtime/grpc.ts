import http2 from 'node:http2';
import net from 'node:net';
import { RuntimeApiError } from './http';

/*
 * The few gRPC calls the containerd source makes, over node:http2 on a unix socket: length-prefixed
 * protobuf messages (RFC-less but simple: 1 byte "compressed" = 0, 4 bytes big-endian length, the message),
 * status in the `grpc-status` trailer. No compression, no TLS: a local socket only. Kept instead of
 * @grpc/grpc-js (33 packages, 14 MB, and a 4 MiB default receive limit below containerd's List of a busy
 * node): a real containerd's List of 500 containers with 20 kB specs takes ~60 ms here. Every reply is
 * treated as hostile: capped, reassembled in linear time, its status text decoded without throwing.
 */

export function frame(msg: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  Buffer.from(msg.buffer, msg.byteOffset, msg.length).copy(b, 5);
  return b;
}

/** The most of a peer's `grpc-message` kept (it lands in a log line). */
const STATUS_MESSAGE_MAX = 256;

/** A peer's `grpc-message` (percent-encoded by the spec): decoded when it can be, shown raw when not; bounded. */
export function statusMessage(raw: unknown): string {
  const s = typeof raw === 'string' ? raw.slice(0, STATUS_MESSAGE_MAX * 3) : '';
  let out: string;
  try {
    out = decodeURIComponent(s);
  } catch {
    out = s; // a malformed escape from a bad peer: its text as sent, never a throw inside a stream listener
  }
  return out.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, STATUS_MESSAGE_MAX);
}

/**
 * Reassembles gRPC messages from a stream's chunks in linear time: chunks are kept in a list and joined once
 * a whole message is there (a 10 MB reply in 16 kB chunks costs one copy, not one per chunk). A message
 * longer than `maxBytes`, or a reply whose messages add up past it, is refused as soon as its length prefix says so.
 */
export class MessageReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private total = 0;

  constructor(private readonly maxBytes: number) {}

  /** Takes one chunk; returns the messages it completed. Throws RuntimeApiError past the cap. */
  push(d: Buffer): Buffer[] {
    this.chunks.push(d);
    this.buffered += d.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < 5) break;
      const head = this.peek(5);
      const len = head.readUInt32BE(1);
      if (head[0] !== 0) throw new RuntimeApiError('RUNTIME_PROTOCOL', 'compressed gRPC message');
      if (len > this.maxBytes || this.total + len > this.maxBytes) {
        throw new RuntimeApiError('RUNTIME_PROTOCOL', `reply over ${this.maxBytes} bytes (a message of ${len} after ${this.total})`);
      }
      if (this.buffered < 5 + len) break;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
      out.push(all.subarray(5, 5 + len));
      const rest = all.subarray(5 + len);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
      this.total += len;
    }
    return out;
  }

  /** For a long-lived stream: the cap applies to each message, not the sum. */
  resetTotal(): void {
    this.total = 0;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const joined = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [joined];
    return joined;
  }
}

/**
 * 64 MiB: containerd's List of 1,000 containers with 20 kB OCI specs is ~20 MB; a peer sending more is
 * refused (error, retried later) rather than buffered into the agent's MemoryMax.
 */
export const DEFAULT_MAX_REPLY_BYTES = 64 << 20;

export class GrpcConn {
  private session: http2.ClientHttp2Session | null = null;

  constructor(
    private readonly socket: string,
    /** the most bytes one call's reply may carry (all its messages together; for a stream, each message) */
    private readonly maxReplyBytes: number = DEFAULT_MAX_REPLY_BYTES,
  ) {}

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
    opts: { timeoutMs: number; signal?: AbortSignal; onOpen?: () => void; stream?: boolean },
  ): { done: Promise<void>; cancel: () => void } {
    let stream: http2.ClientHttp2Stream | null = null;
    const done = new Promise<void>((resolve, reject) => {
      let settled = false;
      let session: http2.ClientHttp2Session | undefined;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stream?.close(http2.constants.NGHTTP2_CANCEL);
        const err = e instanceof RuntimeApiError ? e : new RuntimeApiError('RUNTIME_UNREACHABLE', `${this.socket}: ${e.message}`);
        // a peer that overran the cap or spoke garbage may keep pushing on this connection (node's session then
        // refuses every later stream: ENHANCE_YOUR_CALM): the next call starts on a new one
        if (err.code === 'RUNTIME_PROTOCOL' || err.code === 'RUNTIME_UNREACHABLE') this.drop(session);
        reject(err);
      };
      const timer = opts.timeoutMs > 0 ? setTimeout(() => fail(new RuntimeApiError('RUNTIME_TIMEOUT', `${method}: no answer in ${opts.timeoutMs} ms`)), opts.timeoutMs) : undefined;
      if (opts.signal?.aborted) return fail(new RuntimeApiError('RUNTIME_TIMEOUT', `${method}: given up`));
      opts.signal?.addEventListener('abort', () => fail(new RuntimeApiError('RUNTIME_TIMEOUT', `${method}: given up`)), { once: true });
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
      // a stream's cap is per message (it runs for days); a call's is for its whole reply
      const reader = new MessageReader(this.maxReplyBytes);
      let status: string | undefined;
      let message = '';
      stream.on('response', (h) => {
        status = h['grpc-status'] as string | undefined; // a trailers-only answer carries it here
        message = statusMessage(h['grpc-message']);
        opts.onOpen?.();
      });
      stream.on('trailers', (t) => {
        status = t['grpc-status'] as string | undefined;
        message = statusMessage(t['grpc-message']);
      });
      stream.on('data', (d: Buffer) => {
        if (settled) return;
        try {
          for (const m of reader.push(d)) {
            onMsg(m);
            if (opts.stream) reader.resetTotal();
          }
        } catch (e) {
          // a message that does not decode is the peer's fault, like one over the cap
          fail(e instanceof RuntimeApiError ? e : new RuntimeApiError('RUNTIME_PROTOCOL', `${method}: ${(e as Error).message}`));
        }
      });
      stream.on('error', (e) => fail(e));
      stream.on('close', () => {
        if (settled) return;
        if (status === '0') {
          settled = true;
          clearTimeout(timer);
          resolve();
        } else fail(new RuntimeApiError('RUNTIME_HTTP', `${method}: grpc-status ${(status ?? 'none').slice(0, 8)} ${message}`));
      });
      stream.end(frame(req));
    });
    return { done, cancel: () => stream?.close(http2.constants.NGHTTP2_CANCEL) };
  }

  private drop(s: http2.ClientHttp2Session | undefined): void {
    if (!s) return;
    if (this.session === s) this.session = null;
    s.destroy();
  }

  close(): void {
    this.session?.close();
    this.session = null;
  }
}
