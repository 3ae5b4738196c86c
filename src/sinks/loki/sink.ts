import http from 'node:http';
import https from 'node:https';
import type { OomRecord } from '../../record/record';
import type { Logger } from '../../observe/logger';
import type { HealthStatus, RejectedRecord, Sink, WriteResult } from '../sink';
import { ConfigError } from '../../config/errors';
import { readSecretFileAsync, StartProblems } from '../secret';
import { checkLokiConfig, parseStaticLabels, type LokiSinkConfig } from './config';
import { encodeBody, StreamBuilder, type Degradations, type LokiEntry, type LokiStream } from './encode';
import { classifyPush, type PushOutcome } from './response';

export const PUSH_PATH = '/loki/api/v1/push';
export const READY_PATH = '/ready';
/** Smallest request the adaptive splitting goes down to (it always sends at least one entry). */
const MIN_REQUEST_BYTES = 1024;
/**
 * Entries per request when finding out which of them Loki ignored without naming them: Loki's ingester names at
 * most `max_returned_stream_errors` (default 10) failed entries per stream; smaller still if that does not suffice.
 */
const RECHECK_ENTRIES = 10;
/** Loki's answers are short; more than this is cut (and never needed for classification). */
const MAX_ANSWER_BYTES = 256 * 1024;

export interface LokiSinkStats {
  /** Push requests sent (each carries one stream). */
  requests: number;
  /** HTTP answers by status code ('error' = no answer: refused, reset, timeout). */
  responses: Record<string, number>;
  entries_sent: number;
  entries_delivered: number;
  /** Entries dead-lettered: refused by Loki (400) or invalid before sending. */
  entries_rejected: number;
  /** Entries that had to be sent again (429, 5xx, network). */
  entries_resent: number;
  /** Request bodies as sent (snappy-compressed protobuf, or JSON). */
  bytes_sent: number;
  /** The same requests before compression. */
  bytes_uncompressed: number;
  degradations: Degradations;
}

export interface LokiSinkOptions {
  logger?: Logger;
}

/** Per lane batch: what is still to be sent, kept across the lane's retries of the same (frozen) batch array. */
interface BatchProgress {
  streams: Array<{ stream: LokiStream; pending: LokiEntry[]; recheck: LokiEntry[]; recheckMax: number }>;
  rejected: RejectedRecord[];
}

interface Answer {
  status: number;
  body: string;
  retryAfter: string | null;
}

class NoAnswer extends Error {}

/**
 * Pushes records to Loki. One request per stream, so that every answer concerns exactly one stream and a partial
 * success (Loki writes the valid entries, then answers 400/429) can be attributed entry by entry: entries Loki
 * wrote are never sent again, entries it refused are reported back as rejected with Loki's reason.
 */
export class LokiSink implements Sink {
  readonly name = 'loki';
  private readonly builder: StreamBuilder;
  private readonly agent: http.Agent;
  private readonly base: string;
  private readonly isHttps: boolean;
  private readonly logger: Logger | undefined;
  private readonly progress = new WeakMap<readonly OomRecord[], BatchProgress>();
  private sizeCap: number;
  private readonly warned = new Set<string>();
  private readonly counters = {
    requests: 0,
    responses: {} as Record<string, number>,
    entries_sent: 0,
    entries_delivered: 0,
    entries_rejected: 0,
    entries_resent: 0,
    bytes_sent: 0,
    bytes_uncompressed: 0,
  };

  constructor(
    private readonly config: LokiSinkConfig,
    opts: LokiSinkOptions = {},
  ) {
    const invalid = ConfigError.of(checkLokiConfig(config));
    if (invalid) throw invalid;
    const labels = parseStaticLabels(config.labels);
    this.logger = opts.logger;
    this.builder = new StreamBuilder(config.limits, labels);
    if (this.builder.droppedStaticLabels.length > 0) {
      this.logger?.warn('loki: static labels beyond limits.max_label_names_per_series are not sent', {
        dropped: this.builder.droppedStaticLabels,
        max_label_names_per_series: config.limits.max_label_names_per_series,
      });
    }
    this.base = config.url.replace(/\/+$/, '');
    this.isHttps = this.base.startsWith('https:');
    this.sizeCap = config.batch_max_bytes;
    // the paths are not printed: a file name can hold a token, as for the secret keys
    const start = new StartProblems('sinks.loki');
    const read = (key: string, file: string): Buffer | undefined => (file ? start.file(key, file, true) : undefined);
    const tls = this.isHttps
      ? { ca: read('tls.ca_file', config.tls.ca_file), cert: read('tls.cert_file', config.tls.cert_file), key: read('tls.key_file', config.tls.key_file) }
      : {};
    start.throwIfAny();
    this.agent = this.isHttps
      ? new https.Agent({
          keepAlive: true,
          maxSockets: 8,
          ...tls,
          rejectUnauthorized: !config.tls.insecure_skip_verify,
        })
      : new http.Agent({ keepAlive: true, maxSockets: 8 });
  }

  stats(): LokiSinkStats {
    return { ...this.counters, responses: { ...this.counters.responses }, degradations: { ...this.builder.degradations } };
  }

  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    let p = this.progress.get(batch);
    if (!p) {
      const { streams, invalid } = this.builder.build(batch);
      this.warnDegradations();
      p = {
        streams: streams.map((stream) => ({ stream, pending: [...stream.entries], recheck: [], recheckMax: RECHECK_ENTRIES })),
        rejected: invalid.map(({ record, reason }) => ({ record, reason })),
      };
      this.counters.entries_rejected += invalid.length;
      for (const r of invalid) this.logger?.warn('loki: record cannot be sent, dead-lettering it', { event_id: r.record.event_id, reason: r.reason });
      this.progress.set(batch, p);
    }
    let auth: Record<string, string>;
    try {
      auth = await this.authHeaders();
    } catch (err) {
      return { status: 'retryable', reason: (err as Error).message };
    }
    const outcomes = await Promise.all(p.streams.filter((s) => s.pending.length + s.recheck.length > 0).map((s) => this.sendStream(s, p, auth)));
    const retry = outcomes.filter((o): o is { reason: string; afterMs?: number } => o !== null);
    if (retry.length > 0) {
      const afterMs = retry.reduce<number | undefined>((m, o) => (o.afterMs === undefined ? m : Math.max(m ?? 0, o.afterMs)), undefined);
      const reason = [...new Set(retry.map((o) => o.reason))].join(' | ');
      return afterMs === undefined ? { status: 'retryable', reason } : { status: 'retryable', reason, afterMs };
    }
    this.progress.delete(batch);
    if (p.rejected.length === 0) return { status: 'delivered' };
    const reasons = [...new Set(p.rejected.map((r) => r.reason))];
    if (p.rejected.length === batch.length && reasons.length === 1) return { status: 'rejected', reason: reasons[0]! };
    return { status: 'delivered', rejectedRecords: p.rejected };
  }

  /**
   * Sends a stream's pending entries in order, in requests of at most `sizeCap` bytes; null when none is left.
   * Entries a partial answer left unsure (see PushOutcome.unsure) are sent again first, a few per request.
   */
  private async sendStream(
    s: BatchProgress['streams'][number],
    p: BatchProgress,
    auth: Record<string, string>,
  ): Promise<{ reason: string; afterMs?: number } | null> {
    while (s.pending.length + s.recheck.length > 0) {
      const rechecking = s.recheck.length > 0;
      const queue = rechecking ? s.recheck : s.pending;
      let n = 0;
      let bytes = 0;
      while (n < queue.length && (n === 0 || bytes + queue[n]!.size <= this.sizeCap) && (!rechecking || n < s.recheckMax)) bytes += queue[n++]!.size;
      const chunk = queue.slice(0, n);
      const outcome = await this.push(s.stream, chunk, auth);
      const unsure = outcome.unsure ?? [];
      const settled = new Set<LokiEntry>([...outcome.delivered, ...outcome.rejected.map((r) => r.entry), ...unsure]);
      if (rechecking) s.recheck = s.recheck.filter((e) => !settled.has(e));
      else s.pending = s.pending.filter((e) => !settled.has(e));
      if (unsure.length > 0) {
        // unsure again in a recheck: Loki names fewer than we hoped (max_returned_stream_errors); halve the requests
        if (rechecking) s.recheckMax = Math.max(1, Math.floor(chunk.length / 2));
        s.recheck.push(...unsure);
        this.counters.entries_resent += unsure.length;
        this.logger?.warn('loki: Loki ignored more entries than it named; sending the unnamed ones again in small requests to find out which', {
          stream: s.stream.key,
          unsure: unsure.length,
          per_request: s.recheckMax,
        });
      }
      this.counters.entries_delivered += outcome.delivered.length;
      this.counters.entries_rejected += outcome.rejected.length;
      for (const r of outcome.rejected) p.rejected.push({ record: r.entry.record, reason: r.reason });
      if (outcome.rejected.length > 0) {
        this.logger?.warn('loki: entries refused by Loki; they will be dead-lettered, the rest of the request was written', {
          stream: s.stream.key,
          refused: outcome.rejected.length,
          written: outcome.delivered.length,
          reason: outcome.rejected[0]!.reason,
        });
      }
      if (outcome.retry.length > 0) {
        this.counters.entries_resent += outcome.retry.length;
        if (outcome.shrink) this.sizeCap = Math.max(MIN_REQUEST_BYTES, Math.floor(bytes / 2));
        return { reason: outcome.retryReason ?? 'loki: retry', ...(outcome.afterMs !== undefined ? { afterMs: outcome.afterMs } : {}) };
      }
      if (this.sizeCap < this.config.batch_max_bytes) this.sizeCap = Math.min(this.config.batch_max_bytes, this.sizeCap * 2);
    }
    return null;
  }

  private async push(stream: LokiStream, entries: LokiEntry[], auth: Record<string, string>): Promise<PushOutcome> {
    const { body, contentType, rawBytes } = encodeBody([{ key: stream.key, labels: stream.labels, entries }], this.config.encoding);
    this.counters.requests++;
    this.counters.entries_sent += entries.length;
    this.counters.bytes_sent += body.length;
    this.counters.bytes_uncompressed += rawBytes;
    let answer: Answer;
    try {
      answer = await this.request('POST', PUSH_PATH, { ...auth, 'Content-Type': contentType }, body);
    } catch (err) {
      this.count('error');
      return { delivered: [], rejected: [], retry: entries, retryReason: `loki: ${(err as Error).message}` };
    }
    this.count(String(answer.status));
    return classifyPush(answer.status, answer.body, entries, answer.retryAfter);
  }

  async healthcheck(): Promise<HealthStatus> {
    try {
      const a = await this.request('GET', READY_PATH, await this.authHeaders());
      if (a.status === 200) return { healthy: true };
      return { healthy: false, detail: `GET ${READY_PATH}: HTTP ${a.status}: ${a.body.trim().slice(0, 200)}` };
    } catch (err) {
      // NoAnswer already names the request
      return { healthy: false, detail: err instanceof NoAnswer ? err.message : `GET ${READY_PATH}: ${(err as Error).message}` };
    }
  }

  async flush(): Promise<void> {
    // nothing is buffered in the sink: every write answers only once its requests are answered
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }

  // --- internals -------------------------------------------------------------------------------

  private count(key: string): void {
    this.counters.responses[key] = (this.counters.responses[key] ?? 0) + 1;
  }

  private warnDegradations(): void {
    const d = this.builder.degradations;
    for (const [key, n] of Object.entries(d)) {
      if (n > 0 && key !== 'static_labels_dropped' && !this.warned.has(key)) {
        this.warned.add(key);
        this.logger?.warn('loki: a piece of an entry was dropped or cut to stay within Loki\'s limits (the line keeps every field)', {
          what: key,
          limits: this.config.limits,
        });
      }
    }
  }

  /** Tenant and credentials. Secrets are read from their files at each call and never appear in a message. */
  private async authHeaders(): Promise<Record<string, string>> {
    const h: Record<string, string> = {};
    if (this.config.tenant_id) h['X-Scope-OrgID'] = this.config.tenant_id;
    const secret = async (key: string, file: string): Promise<string> => {
      try {
        return await readSecretFileAsync(file);
      } catch (err) {
        throw new Error(`loki: cannot read sinks.loki.${key} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    };
    if (this.config.basic_auth_user) {
      const password = await secret('basic_auth_password_file', this.config.basic_auth_password_file);
      h.Authorization = 'Basic ' + Buffer.from(`${this.config.basic_auth_user}:${password}`).toString('base64');
    } else if (this.config.bearer_token_file) {
      h.Authorization = 'Bearer ' + (await secret('bearer_token_file', this.config.bearer_token_file)).trim();
    }
    return h;
  }

  private request(method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
    const url = new URL(this.base + path);
    const mod = this.isHttps ? https : http;
    const timeoutMs = this.config.request_timeout_ms;
    return new Promise<Answer>((resolve, reject) => {
      const req = mod.request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            'User-Agent': 'oomtrail',
            ...headers,
            ...(body ? { 'Content-Length': String(body.length) } : {}),
          },
        },
        (res) => {
          const parts: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            if (size < MAX_ANSWER_BYTES) parts.push(d);
            size += d.length;
          });
          res.on('end', () => {
            clearTimeout(timer);
            const ra = res.headers['retry-after'];
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8'), retryAfter: Array.isArray(ra) ? ra[0]! : (ra ?? null) });
          });
          res.on('error', (err) => {
            clearTimeout(timer);
            reject(new NoAnswer(`${method} ${path}: answer cut: ${err.message}`));
          });
        },
      );
      const timer = setTimeout(() => req.destroy(new NoAnswer(`${method} ${path}: no answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(err instanceof NoAnswer ? err : new NoAnswer(`${method} ${path}: ${err.code ?? ''} ${err.message}`.replace(/\s+/g, ' ')));
      });
      req.end(body);
    });
  }
}
