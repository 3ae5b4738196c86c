/*
 * A recording HTTP pass-through between the sink and a ClickHouse server (127.0.0.1 only): it keeps each
 * request's method, URL and headers (never the body) so tests can count requests (no retry storm) and see
 * what went over the wire (gzip, auth header, settings). When the upstream fails mid-request the client's
 * socket is destroyed, as if the server had died on it.
 */
import { EventEmitter } from 'node:events';
import http from 'node:http';

export interface SeenRequest {
  at: number;
  method: string;
  url: URL;
  headers: http.IncomingHttpHeaders;
  status?: number;
}

export class RecordingProxy extends EventEmitter {
  readonly seen: SeenRequest[] = [];
  private server: http.Server;
  private agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  port = 0;

  constructor(private readonly upstreamPort: number) {
    super();
    this.server = http.createServer((req, res) => {
      const s: SeenRequest = { at: Date.now(), method: req.method ?? '', url: new URL(req.url ?? '/', 'http://x'), headers: req.headers };
      this.seen.push(s);
      this.emit('request', s);
      const up = http.request(
        { host: '127.0.0.1', port: this.upstreamPort, method: req.method, path: req.url, headers: req.headers, agent: this.agent },
        (ur) => {
          s.status = ur.statusCode;
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          ur.pipe(res);
          ur.on('error', () => res.destroy());
        },
      );
      up.on('error', () => {
        req.socket.destroy();
      });
      req.pipe(up);
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Requests whose SQL starts with `prefix` (the query URL parameter, else unknown → ''). */
  matching(prefix: string): SeenRequest[] {
    return this.seen.filter((s) => (s.url.searchParams.get('query') ?? '').startsWith(prefix));
  }

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    this.agent.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
