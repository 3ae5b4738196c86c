import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { createClient, ClickHouseLogLevel, type ClickHouseClient } from '@clickhouse/client';
import type { OomRecord } from '../../record/record';
import type { Logger } from '../../observe/logger';
import type { HealthStatus, RejectedRecord, Sink, WriteResult } from '../sink';
import type { ClickHouseSinkConfig } from './config';
import { dedupToken, encodeBatch } from './encoder';
import { authFailure, classifyResponse, classifyThrown, type Classified } from './errors';
import { MIGRATIONS, migrate, tableRef, type Migration, type MigrationResult } from './schema';

const gzip = promisify(zlib.gzip);

/** The server's version, e.g. 26.9 → [26, 9]. */
export type ServerVersion = readonly [number, number];

/** `insert_deduplication_token` exists from ClickHouse 22.2 (18.16 answers "Unknown setting"). */
export function supportsDedupToken(v: ServerVersion | null): boolean {
  return v !== null && (v[0] > 22 || (v[0] === 22 && v[1] >= 2));
}

export interface ClickHouseSinkOptions {
  config: ClickHouseSinkConfig;
  logger: Logger;
  /** The password, already read from `password_file` or `password`. */
  password: string;
  /** TLS material, already read. */
  tls?: { ca_cert: Buffer; cert?: Buffer; key?: Buffer };
  /** Test seam: the schema versions this agent applies. */
  migrations?: readonly Migration[];
  /** Re-reads the password (password_file) after an authentication failure; undefined = fixed password. */
  rereadPassword?: () => string | undefined;
}

/** Internal failure carrying its classification (schema step, version probe). */
class ClassifiedError extends Error {
  constructor(readonly classified: Classified) {
    super(classified.reason);
  }
}

/**
 * Inserts each batch as one `INSERT … FORMAT JSONEachRow` over HTTP (@clickhouse/client 1.23, `exec` with a
 * pre-encoded, gzip'd body), with an `insert_deduplication_token` derived from the batch's event ids where the
 * server has it. Before the first insert: probes the server version, lowers keep-alive under the server's, and
 * (create_schema) applies the schema migrations. Classifies every failure (errors.ts); never throws from write.
 */
export class ClickHouseSink implements Sink {
  readonly name = 'clickhouse';
  private client: ClickHouseClient;
  private password: string;
  private idleMs: number;
  private ready: Promise<void> | null = null;
  private version: ServerVersion | null = null;
  private versionText = '';
  private migration: MigrationResult | null = null;
  private lastLoggedFailure: { reason: string; at: number } | null = null;
  private closed = false;
  private readonly insertSql: string;

  constructor(private readonly opts: ClickHouseSinkOptions) {
    this.password = opts.password;
    this.idleMs = opts.config.keep_alive_idle_ms;
    this.client = this.makeClient();
    this.insertSql = `INSERT INTO ${tableRef(opts.config)} FORMAT JSONEachRow`;
  }

  /** What the sink learned from the server (for tests and `check`). */
  get server(): { version: ServerVersion | null; versionText: string; dedupToken: boolean; keepAliveIdleMs: number; migration: MigrationResult | null } {
    return { version: this.version, versionText: this.versionText, dedupToken: this.useToken(), keepAliveIdleMs: this.idleMs, migration: this.migration };
  }

  private makeClient(): ClickHouseClient {
    const c = this.opts.config;
    const logger = this.opts.logger;
    // the client's own log lines (request errors, keep-alive hints) go to debug: the lane logs each failure once
    class ClientLog {
      trace(): void {}
      debug(): void {}
      info(): void {}
      warn(p: { message: string; err?: Error }): void {
        logger.debug(`clickhouse client: ${p.message}`, p.err ? { error: p.err.message } : undefined);
      }
      error(p: { message: string; err: Error }): void {
        logger.debug(`clickhouse client: ${p.message}`, { error: p.err?.message });
      }
    }
    return createClient({
      url: c.url,
      username: c.username,
      password: this.password,
      request_timeout: c.request_timeout_ms,
      // bodies are gzip'd here (level 1: ~3x cheaper than zlib's default 6 for JSON rows, nearly as small)
      compression: { request: false, response: false },
      keep_alive: this.idleMs > 0 ? { enabled: true, idle_socket_ttl: this.idleMs, eagerly_destroy_stale_sockets: true } : { enabled: false },
      max_open_connections: 2,
      application: 'oomtrail',
      ...(this.opts.tls ? { tls: this.opts.tls.cert ? { ca_cert: this.opts.tls.ca_cert, cert: this.opts.tls.cert, key: this.opts.tls.key! } : { ca_cert: this.opts.tls.ca_cert } } : {}),
      log: { LoggerClass: ClientLog, level: ClickHouseLogLevel.WARN },
    });
  }

  private async replaceClient(): Promise<void> {
    const old = this.client;
    this.client = this.makeClient();
    await old.close().catch(() => undefined);
  }

  private useToken(): boolean {
    return !this.opts.config.async_insert && supportsDedupToken(this.version);
  }

  // --- Sink ----------------------------------------------------------------------------------------------------

  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    if (batch.length === 0) return { status: 'delivered' };
    if (this.closed) return { status: 'retryable', reason: 'sink closed' };
    try {
      await this.ensureReady(batch[0]?.agent_version ?? '');
    } catch (err) {
      this.ready = null; // probe / migrate again next time
      const c = err instanceof ClassifiedError ? err.classified : classifyThrown(err);
      return this.result(c, 'preparing the table');
    }
    const first = await this.insert(batch);
    if (first === 'ok') {
      this.lastLoggedFailure = null;
      return { status: 'delivered' };
    }
    if (first.class !== 'data' || batch.length === 1) return this.result(first, 'insert');
    // One bad record must not take the batch with it: split, insert the good parts (each with its own token,
    // derived from its event ids, so a retry splits the same way and is deduplicated), refuse only the bad.
    const refused: RejectedRecord[] = [];
    const trouble = await this.isolate(batch, first, refused, { hints: true });
    if (trouble) return this.result(trouble, 'insert');
    this.lastLoggedFailure = null;
    if (refused.length === batch.length) return this.result(first, 'insert');
    return { status: 'delivered', rejectedRecords: refused };
  }

  /**
   * Splits a part ClickHouse refused as data until each refused record is alone; null when every part is settled.
   * A record is refused only after an insert of it alone was refused, so no good record is ever dead-lettered.
   * Where the server names the row it stopped at (`(at row N)`, parse errors), the part is cut around that row:
   * ~2 inserts per bad record. Otherwise (or once a named row turned out to be fine) it is halved: at most
   * ~2·log2(n) inserts per bad record, and 2n−1 for a part whose every record is bad. No budget: a budget that
   * runs out can only refuse good records or keep the whole batch retrying for ever.
   */
  private async isolate(records: readonly OomRecord[], why: Classified, refused: RejectedRecord[], opts: { hints: boolean }): Promise<Classified | null> {
    if (records.length === 1) {
      refused.push({ record: records[0]!, reason: `${this.opts.config.url} insert: ${why.reason}` });
      return null;
    }
    const at = opts.hints && why.row !== undefined && why.row >= 1 && why.row <= records.length ? why.row - 1 : -1;
    const parts =
      at >= 0
        ? [records.slice(0, at), records.slice(at, at + 1), records.slice(at + 1)].filter((p) => p.length > 0)
        : [records.slice(0, records.length >> 1), records.slice(records.length >> 1)];
    for (const part of parts) {
      const r = await this.insert(part);
      if (r === 'ok') {
        // the named row went in alone: the server's row numbers are not to be trusted for this batch
        if (at >= 0 && part.length === 1 && part[0] === records[at]) opts.hints = false;
        continue;
      }
      if (r.class !== 'data') return r;
      const trouble = await this.isolate(part, r, refused, opts);
      if (trouble) return trouble;
    }
    return null;
  }

  /** One INSERT of `records`: 'ok', or the classified failure. */
  private async insert(records: readonly OomRecord[]): Promise<'ok' | Classified> {
    let body: Buffer;
    try {
      body = encodeBatch(records);
    } catch (err) {
      // records are plain JSON data read back from the spool: one that cannot be encoded never will be
      return { class: 'data', reason: `encoding failed: ${(err as Error).message}` };
    }
    try {
      if (this.opts.config.compression) body = await gzip(body, { level: 1 });
    } catch (err) {
      return { class: 'transient', reason: `gzip failed: ${(err as Error).message}` };
    }
    const settings: Record<string, string | number> = { input_format_skip_unknown_fields: 1 };
    if (this.opts.config.async_insert) Object.assign(settings, { async_insert: 1, wait_for_async_insert: 1, async_insert_deduplicate: 1 });
    if (this.useToken()) settings.insert_deduplication_token = dedupToken(records);
    try {
      const res = await this.client.exec({
        query: this.insertSql,
        values: Readable.from([body], { objectMode: false }),
        clickhouse_settings: settings,
        http_headers: this.opts.config.compression ? { 'Content-Encoding': 'gzip' } : {},
        ignore_error_response: true,
      });
      const status = res.http_status_code ?? 0;
      const headers = res.response_headers as Record<string, string | string[] | undefined>;
      const failed = status < 200 || status >= 300 || headers['x-clickhouse-exception-code'] !== undefined;
      const text = await readText(res.stream, failed ? 64 * 1024 : 0);
      if (!failed) return 'ok';
      const c = classifyResponse(status, text, headers);
      if (c.code === 60 || c.code === 81) this.ready = null; // table or database gone: migrate again before the next try
      return c;
    } catch (err) {
      return classifyThrown(err);
    }
  }

  async flush(): Promise<void> {
    // nothing is buffered in the sink: a write resolves only when ClickHouse answered
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.client.close().catch(() => undefined);
  }

  /** `SELECT 1` with the configured credentials (unlike `/ping`, it proves authentication too). */
  async healthcheck(): Promise<HealthStatus> {
    try {
      const rs = await this.client.query({ query: 'SELECT 1', format: 'TabSeparated' });
      const text = (await rs.text()).trim();
      return text === '1' ? { healthy: true } : { healthy: false, detail: `SELECT 1 returned ${JSON.stringify(text.slice(0, 100))}` };
    } catch (err) {
      return { healthy: false, detail: classifyThrown(err).reason };
    }
  }

  // --- internals -----------------------------------------------------------------------------------------------

  private result(c: Classified, step: string): WriteResult {
    const reason = `${this.opts.config.url} ${step}: ${c.reason}`;
    switch (c.class) {
      case 'data':
        return { status: 'rejected', reason };
      case 'overload':
        return c.retryAfterMs !== undefined ? { status: 'retryable', reason, afterMs: c.retryAfterMs } : { status: 'retryable', reason };
      case 'transient':
        return { status: 'retryable', reason };
      case 'operator': {
        const afterMs = this.opts.config.config_error_retry_ms;
        this.logOperatorError(reason, afterMs, c);
        // a renewed password_file can fix bad credentials, not a host the user may not connect from (195)
        if (authFailure(c) === 'credentials') this.maybeRereadPassword();
        return { status: 'retryable', reason, afterMs };
      }
    }
  }

  /** An error only an operator can fix: logged as an error when it first appears (or changes), then every 10 min. */
  private logOperatorError(reason: string, afterMs: number, c: Classified): void {
    const now = Date.now();
    const last = this.lastLoggedFailure;
    if (last && last.reason === reason && now - last.at < 600_000) return;
    this.lastLoggedFailure = { reason, at: now };
    const hint =
      authFailure(c) === 'credentials'
        ? 'check sinks.clickhouse.username and password / password_file'
        : authFailure(c) === 'host'
          ? "the server does not let this user connect from this host's address (the user's HOST rule)"
          : c.code === 60 || c.code === 81
          ? this.opts.config.create_schema
            ? 'the table will be created again'
            : 'create the table, or set sinks.clickhouse.create_schema=true'
          : 'fix the server or the sinks.clickhouse settings';
    this.opts.logger.error(`clickhouse: ${reason} (records stay spooled; retrying every ${afterMs} ms; ${hint})`, { sink: this.name });
  }

  private maybeRereadPassword(): void {
    const next = this.opts.rereadPassword?.();
    if (next === undefined || next === this.password) return;
    this.password = next;
    this.opts.logger.info('clickhouse: password_file changed, reconnecting with the new password', { sink: this.name });
    void this.replaceClient();
  }

  private ensureReady(agentVersion: string): Promise<void> {
    if (!this.ready) {
      const p = this.prepare(agentVersion);
      this.ready = p;
      p.catch(() => undefined);
    }
    return this.ready;
  }

  private async prepare(agentVersion: string): Promise<void> {
    // 1. the version (and the server's keep-alive) — also the first proof that url and credentials work
    let headers: Record<string, string | string[] | undefined>;
    let text: string;
    try {
      const res = await this.client.exec({ query: 'SELECT version()', ignore_error_response: true });
      headers = res.response_headers as Record<string, string | string[] | undefined>;
      const status = res.http_status_code ?? 0;
      text = await readText(res.stream, 64 * 1024);
      if (status < 200 || status >= 300 || headers['x-clickhouse-exception-code'] !== undefined) {
        throw new ClassifiedError(classifyResponse(status, text, headers));
      }
    } catch (err) {
      if (err instanceof ClassifiedError) throw err;
      throw new ClassifiedError(classifyThrown(err));
    }
    this.versionText = text.trim();
    const m = /^(\d+)\.(\d+)/.exec(this.versionText);
    this.version = m ? [Number(m[1]), Number(m[2])] : null;
    const ka = /timeout=(\d+)/i.exec(String(headers['keep-alive'] ?? ''));
    if (ka && this.idleMs > 0) {
      const serverMs = Number(ka[1]) * 1000;
      if (this.idleMs >= serverMs - 500) {
        const lowered = Math.max(250, serverMs - 1000);
        this.opts.logger.info(
          `clickhouse: server keep-alive timeout is ${serverMs} ms; closing idle sockets after ${lowered} ms (keep_alive_idle_ms ${this.idleMs})`,
          { sink: this.name },
        );
        this.idleMs = lowered;
        await this.replaceClient();
      }
    }
    if (this.opts.config.async_insert && this.version && (this.version[0] < 21 || (this.version[0] === 21 && this.version[1] < 11))) {
      throw new ClassifiedError({ class: 'operator', reason: `server ${this.versionText} has no async inserts: set sinks.clickhouse.async_insert=false` });
    }
    // 2. the schema
    if (!this.opts.config.create_schema) return;
    const client = this.client;
    const runner = {
      command: async (sql: string): Promise<void> => {
        await client.command({ query: sql });
      },
      text: async (sql: string): Promise<string> => {
        const rs = await client.query({ query: sql, format: 'TabSeparated' });
        return rs.text();
      },
    };
    const o = { database: this.opts.config.database, table: this.opts.config.table, ttlDays: this.opts.config.ttl_days };
    try {
      this.migration = await migrate(runner, o, agentVersion, this.opts.migrations ?? MIGRATIONS);
    } catch (err) {
      const c = classifyThrown(err);
      // whatever the server said about our DDL, the records are fine: never dead-letter for it
      const tooOld = this.version && this.version[0] < 23 ? ` (server ${this.versionText}; the schema needs ClickHouse >= 23, or set create_schema=false and create a table yourself)` : '';
      throw new ClassifiedError({ ...c, class: c.class === 'data' ? 'operator' : c.class, reason: `schema migration failed: ${c.reason}${tooOld}` });
    }
    const known = Math.max(0, ...(this.opts.migrations ?? MIGRATIONS).map((x) => x.version));
    if (this.migration.applied.length > 0) {
      this.opts.logger.info(
        `clickhouse: schema of ${tableRef(o)} migrated to version ${this.migration.after} (applied ${this.migration.applied.join(', ')}${this.migration.recreated ? '; the table had been dropped' : ''})`,
        { sink: this.name },
      );
    }
    if (this.migration.after > known) {
      this.opts.logger.info(
        `clickhouse: schema version ${this.migration.after} of ${tableRef(o)} is newer than this agent's ${known}; inserting the columns this agent knows`,
        { sink: this.name },
      );
    }
  }
}

/** Reads a response stream to its end, keeping at most `limit` bytes of text (0: just drain it). */
async function readText(stream: Readable, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    if (size < limit) {
      chunks.push(b.subarray(0, limit - size));
      size += Math.min(b.length, limit - size);
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}
