/*
 * A recording pass-through in front of the real Loki: every push is decoded (snappy protobuf or JSON) so a test can
 * count how often each record was sent and how Loki answered each time. Loki dedups identical entries itself, so
 * "each event_id once in the query result" alone cannot show that a sink never resent written entries; this can.
 * When Loki is down the proxy drops the client's connection, as a stopped Loki would.
 */
import http from 'node:http';
import snappy from 'snappy';
import { decodePushRequest } from '../../../src/sinks/loki/proto';

export interface RecordedPush {
  /** Loki's status, or 0 when Loki could not be reached (the client's connection was dropped). */
  status: number;
  /** event_id of each entry, in request order. */
  ids: string[];
  /** the entries' timestamps (ns), in request order */
  tss: bigint[];
  tenant: string;
  streams: string[];
  bytes: number;
  contentType: string;
  answer: string;
  injected: boolean;
}

export interface Injection {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export function decodePush(body: Buffer, contentType: string): Array<{ labels: string; lines: Array<{ ts: bigint; line: string; metadata: Record<string, string> }> }> {
  if (contentType.startsWith('application/x-protobuf')) {
    return decodePushRequest(snappy.uncompressSync(body) as Buffer).map((s) => ({
      labels: s.labels,
      lines: s.entries.map((e) => ({
        ts: BigInt(e.timestamp.seconds) * 1_000_000_000n + BigInt(e.timestamp.nanos),
        line: e.line,
        metadata: Object.fromEntries(e.structuredMetadata.map((p) => [p.name, p.value])),
      })),
    }));
  }
  const json = JSON.parse(body.toString('utf8')) as { streams: Array<{ stream: Record<string, string>; values: Array<[string, string, Record<string, string>?]> }> };
  return json.streams.map((s) => ({
    labels: JSON.stringify(s.stream),
    lines: s.values.map(([ts, line, md]) => ({ ts: BigInt(ts), line, metadata: md ?? {} })),
  }));
}

export class RecordingProxy {
  readonly pushes: RecordedPush[] = [];
  readonly injections: Injection[] = [];
  private server: http.Server | null = null;
  private readonly upstreamAgent = new http.Agent({ keepAlive: true });
  port = 0;

  constructor(private upstream: string) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    this.upstreamAgent.destroy();
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server!.close(() => r()));
  }

  /** How many times each event_id was in a push Loki answered with one of `statuses`. */
  countsBy(statuses: (s: number) => boolean, tenant?: string): Map<string, number> {
    const m = new Map<string, number>();
    for (const p of this.pushes) if (statuses(p.status) && (tenant === undefined || p.tenant === tenant)) for (const id of p.ids) m.set(id, (m.get(id) ?? 0) + 1);
    return m;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const isPush = req.url?.startsWith('/loki/api/v1/push') ?? false;
      const contentType = String(req.headers['content-type'] ?? '');
      let rec: RecordedPush | null = null;
      if (isPush) {
        const streams = decodePush(body, contentType);
        rec = {
          status: 0,
          ids: streams.flatMap((s) => s.lines.map((l) => (JSON.parse(l.line) as { event_id: string }).event_id)),
          tss: streams.flatMap((s) => s.lines.map((l) => l.ts)),
          tenant: String(req.headers['x-scope-orgid'] ?? ''),
          streams: streams.map((s) => s.labels),
          bytes: body.length,
          contentType,
          answer: '',
          injected: false,
        };
        this.pushes.push(rec);
        const inj = this.injections.shift();
        if (inj) {
          rec.status = inj.status;
          rec.injected = true;
          rec.answer = inj.body ?? '';
          res.writeHead(inj.status, inj.headers ?? {});
          res.end(inj.body ?? '');
          return;
        }
      }
      const headers = { ...req.headers };
      delete headers.host;
      const up = http.request(this.upstream + req.url, { method: req.method, headers, agent: this.upstreamAgent }, (ures) => {
        const out: Buffer[] = [];
        ures.on('data', (d: Buffer) => out.push(d));
        ures.on('end', () => {
          const answer = Buffer.concat(out);
          if (rec) {
            rec.status = ures.statusCode ?? 0;
            rec.answer = answer.toString('utf8').slice(0, 4000);
          }
          res.writeHead(ures.statusCode ?? 502, ures.headers);
          res.end(answer);
        });
      });
      up.on('error', () => {
        // Loki is not there: drop the client's connection, as a stopped Loki would
        req.socket.destroy();
      });
      up.end(body);
    });
  }
}
