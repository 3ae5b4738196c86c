/*
 * The ClickHouse sink against a scripted HTTP server (what it sends, how it reads answers) and its configuration.
 * The real servers (chdb 26.9, clickhouse-server 18.16) are in test/integration/clickhouse-*.test.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import zlib from 'node:zlib';
import winston from 'winston';
import { ConfigError, loadConfig } from '../../src/config/load';
import type { ClickHouseSinkConfig } from '../../src/sinks/clickhouse/config';
import { createClickHouseSink } from '../../src/sinks/clickhouse/index';
import { ClickHouseSink } from '../../src/sinks/clickhouse/sink';
import { dedupToken, encodeBatch } from '../../src/sinks/clickhouse/encoder';
import type { Logger } from '../../src/observe/logger';
import { sampleRecord } from '../servers/clickhouse/records';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-ch-unit-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Seen {
  method: string;
  url: URL;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  query: string;
}
type Answer = { status?: number; body?: string; headers?: Record<string, string> };

/** An HTTP server that records every request and answers with `answer(req)`. */
async function scripted(answer: (r: Seen) => Answer): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
      const url = new URL(req.url ?? '/', 'http://x');
      const s: Seen = { method: req.method ?? '', url, headers: req.headers, body, query: url.searchParams.get('query') ?? body.toString('utf8') };
      seen.push(s);
      const a = answer(s);
      const text = a.body ?? '';
      res.writeHead(a.status ?? 200, { 'Content-Length': Buffer.byteLength(text), 'Keep-Alive': 'timeout=10', ...(a.headers ?? {}) });
      res.end(text);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function config(over: Partial<ClickHouseSinkConfig> = {}): ClickHouseSinkConfig {
  const { config: c } = loadConfig({ etcDir: tmp, env: {} });
  return { ...c.sinks.clickhouse, enabled: true, create_schema: false, ...over };
}

function memoryLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const logger = winston.createLogger({ level: 'debug', format: winston.format.simple(), transports: [new winston.transports.Stream({ stream })] });
  return { logger, lines };
}

const version = (v: string) => (s: Seen): Answer => (/SELECT version\(\)/.test(s.query) ? { body: `${v}\n` } : {});

describe('clickhouse sink: what goes over the wire', () => {
  test('one INSERT … FORMAT JSONEachRow per batch: gzip body = encodeBatch, token, skip unknown fields', async () => {
    const srv = await scripted(version('26.9.2.1'));
    const { logger } = memoryLogger();
    const sink = createClickHouseSink(config({ url: srv.url, password: 'pw' }), { logger });
    try {
      const batch = [sampleRecord({ event_id: 'a1' }), sampleRecord({ event_id: 'a2', victim_comm: 'q"\\\n' })];
      assert.deepEqual(await sink.write(batch), { status: 'delivered' });
      const ins = srv.seen.find((s) => s.query.startsWith('INSERT'))!;
      assert.equal(ins.query, 'INSERT INTO `oomtrail`.`oom_kills` FORMAT JSONEachRow');
      assert.equal(ins.headers['content-encoding'], 'gzip');
      assert.deepEqual(ins.body, encodeBatch(batch));
      assert.equal(ins.url.searchParams.get('insert_deduplication_token'), dedupToken(batch));
      assert.equal(ins.url.searchParams.get('input_format_skip_unknown_fields'), '1');
      assert.equal(ins.url.searchParams.get('async_insert'), null);
      assert.equal(ins.headers.authorization, `Basic ${Buffer.from('default:pw').toString('base64')}`);
      // the retry of the same batch carries the same token
      await sink.write(batch);
      const tokens = srv.seen.filter((s) => s.query.startsWith('INSERT')).map((s) => s.url.searchParams.get('insert_deduplication_token'));
      assert.equal(tokens[0], tokens[1]);
      assert.equal(srv.seen.filter((s) => /version\(\)/.test(s.query)).length, 1, 'the version is probed once');
    } finally {
      await sink.close();
      await srv.close();
    }
  });

  test('18.16: no token (unknown setting there) and compression off sends plain bytes; async insert settings on 26.9', async () => {
    const old = await scripted(version('18.16.1'));
    const cur = await scripted(version('26.9.2.1'));
    const sink = createClickHouseSink(config({ url: old.url, compression: false }), { logger: memoryLogger().logger });
    const asy = createClickHouseSink(config({ url: cur.url, async_insert: true }), { logger: memoryLogger().logger });
    const asyOld = createClickHouseSink(config({ url: old.url, async_insert: true }), { logger: memoryLogger().logger });
    try {
      const batch = [sampleRecord()];
      assert.equal((await sink.write(batch)).status, 'delivered');
      assert.equal((await asy.write(batch)).status, 'delivered');
      const plain = old.seen.find((s) => s.query.startsWith('INSERT'))!;
      assert.equal(plain.url.searchParams.get('insert_deduplication_token'), null);
      assert.equal(plain.headers['content-encoding'], undefined);
      assert.deepEqual(plain.body, encodeBatch(batch));
      const async1 = cur.seen.find((s) => s.query.startsWith('INSERT'))!;
      assert.equal(async1.url.searchParams.get('async_insert'), '1');
      assert.equal(async1.url.searchParams.get('wait_for_async_insert'), '1');
      assert.equal(async1.url.searchParams.get('insert_deduplication_token'), null, 'tokens do not dedup async inserts on non-replicated tables');
      const r = await asyOld.write(batch);
      assert.ok(r.status === 'retryable' && r.afterMs === 60000 && /no async inserts/.test(r.reason), JSON.stringify(r));
    } finally {
      await sink.close();
      await asy.close();
      await asyOld.close();
      await old.close();
      await cur.close();
    }
  });

  test("keep-alive: idle sockets are closed before the server's keep-alive timeout", async () => {
    const srv = await scripted((s) => (/version\(\)/.test(s.query) ? { body: '26.9.2.1\n', headers: { 'Keep-Alive': 'timeout=2' } } : {}));
    const { logger, lines } = memoryLogger();
    const sink = createClickHouseSink(config({ url: srv.url, keep_alive_idle_ms: 5000 }), { logger }) as ClickHouseSink;
    try {
      assert.equal((await sink.write([sampleRecord()])).status, 'delivered');
      assert.equal(sink.server.keepAliveIdleMs, 1000);
      assert.ok(lines.some((l) => l.includes('server keep-alive timeout is 2000 ms')));
    } finally {
      await sink.close();
      await srv.close();
    }
  });

  test('create_schema: database, migrations table, version check, table, version row — then inserts', async () => {
    const srv = await scripted((s) => {
      if (/version\(\)/.test(s.query)) return { body: '26.9.2.1\n' };
      if (s.query.startsWith('SELECT max(version)')) return { body: '0\n' };
      if (s.query.startsWith('EXISTS TABLE')) return { body: '0\n' };
      return {};
    });
    const sink = createClickHouseSink(config({ url: srv.url, create_schema: true }), { logger: memoryLogger().logger });
    try {
      assert.equal((await sink.write([sampleRecord()])).status, 'delivered');
      const first = srv.seen.map((s) => s.query.split('\n')[0]!.trim().slice(0, 60));
      assert.deepEqual(first, [
        'SELECT version()',
        'CREATE DATABASE IF NOT EXISTS `oomtrail`',
        'CREATE TABLE IF NOT EXISTS `oomtrail`.`oomtrail_schema_migrations`',
        'SELECT max(version) FROM `oomtrail`.`oomtrail_schema_migrations` WHERE `table` = \'oom_kills\'',
        'EXISTS TABLE `oomtrail`.`oom_kills`',
        'CREATE TABLE IF NOT EXISTS `oomtrail`.`oom_kills`',
        'INSERT INTO `oomtrail`.`oomtrail_schema_migrations` (`table`, `version`, `description`, `agent_version`) VALUES (\'oom_kills\', 1, \'oom_kills: one row per OOM victim\', \'0.1.0\')',
        // migration 2: the memory trail's columns
        ...['kind', 'victim_exit_latency_ms', 'victim_reaped_latency_ms', 'trail', 'pressure'].map(
          (c) => `ALTER TABLE \`oomtrail\`.\`oom_kills\` ADD COLUMN IF NOT EXISTS \`${c}\``,
        ),
        'INSERT INTO `oomtrail`.`oomtrail_schema_migrations` (`table`, `version`, `description`, `agent_version`) VALUES (\'oom_kills\', 2, ',
        // migration 3: runtime names, init vs child
        ...['victim_ns_pid', 'victim_is_container_init', 'container_name', 'container_image', 'pod_name', 'pod_namespace', 'k8s_container', 'labels', 'oom_group_kill', 'oom_group_kill_size'].map(
          (c) => `ALTER TABLE \`oomtrail\`.\`oom_kills\` ADD COLUMN IF NOT EXISTS \`${c}\``,
        ),
        'INSERT INTO `oomtrail`.`oomtrail_schema_migrations` (`table`, `version`, `description`, `agent_version`) VALUES (\'oom_kills\', 3, ',
        // migration 4: why this kill, one ALTER
        'ALTER TABLE `oomtrail`.`oom_kills` ADD COLUMN IF NOT EXISTS `at_kill_source`',
        'INSERT INTO `oomtrail`.`oomtrail_schema_migrations` (`table`, `version`, `description`, `agent_version`) VALUES (\'oom_kills\', 4, ',
        // migration 5: candidates_source
        'ALTER TABLE `oomtrail`.`oom_kills` ADD COLUMN IF NOT EXISTS `candidates_source`',
        'INSERT INTO `oomtrail`.`oomtrail_schema_migrations` (`table`, `version`, `description`, `agent_version`) VALUES (\'oom_kills\', 5, ',
        // migration 6: oom_scope, workload_kind, workload_name, one ALTER
        'ALTER TABLE `oomtrail`.`oom_kills` ADD COLUMN IF NOT EXISTS `oom_scope`',
        'INSERT INTO `oomtrail`.`oomtrail_schema_migrations` (`table`, `version`, `description`, `agent_version`) VALUES (\'oom_kills\', 6, ',
        // migration 7: workload_source
        'ALTER TABLE `oomtrail`.`oom_kills` ADD COLUMN IF NOT EXISTS `workload_source`',
        'INSERT INTO `oomtrail`.`oomtrail_schema_migrations` (`table`, `version`, `description`, `agent_version`) VALUES (\'oom_kills\', 7, ',
        'INSERT INTO `oomtrail`.`oom_kills` FORMAT JSONEachRow',
      ].map((q) => q.slice(0, 60)));
    } finally {
      await sink.close();
      await srv.close();
    }
  });
});

describe('clickhouse sink: answers', () => {
  test('503 + Retry-After → retryable after it; 429 too; a data error → rejected with the message', async () => {
    let next: Answer = {};
    const srv = await scripted((s) => (/version\(\)/.test(s.query) ? { body: '26.9.2.1\n' } : next));
    const sink = createClickHouseSink(config({ url: srv.url }), { logger: memoryLogger().logger });
    try {
      next = { status: 503, body: 'busy', headers: { 'Retry-After': '4' } };
      const r1 = await sink.write([sampleRecord()]);
      assert.equal(r1.status, 'retryable');
      assert.equal(r1.status === 'retryable' && r1.afterMs, 4000);
      next = { status: 429, body: 'slow down' };
      const r2 = await sink.write([sampleRecord()]);
      assert.ok(r2.status === 'retryable' && r2.afterMs === 1000);
      next = {
        status: 400,
        body: "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'x'. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 26.9.2.1)\n",
        headers: { 'X-ClickHouse-Exception-Code': '27' },
      };
      const r3 = await sink.write([sampleRecord()]);
      assert.equal(r3.status, 'rejected');
      assert.match(r3.status === 'rejected' ? r3.reason : '', /insert: HTTP 400, code 27 \(CANNOT_PARSE_INPUT_ASSERTION_FAILED\): Cannot parse input/);
      next = { status: 200, body: 'Code: 241. DB::Exception: Memory limit exceeded', headers: { 'X-ClickHouse-Exception-Code': '241' } };
      assert.equal((await sink.write([sampleRecord()])).status, 'retryable', 'an exception header on a 200 is a failure');
    } finally {
      await sink.close();
      await srv.close();
    }
  });

  test('one bad record does not take the batch with it: bisected, the good ones inserted, the bad one refused with the reason', async () => {
    const inserted: string[] = [];
    const srv = await scripted((s) => {
      if (/version\(\)/.test(s.query)) return { body: '26.9.2.1\n' };
      const lines = s.body.toString('utf8').split('\n').filter(Boolean);
      if (lines.some((l) => l.includes('"victim_comm":"BAD'))) {
        return { status: 400, body: "Code: 27. DB::Exception: Cannot parse input: expected '\"'. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 26.9.2.1)\n" };
      }
      for (const l of lines) inserted.push(JSON.parse(l).event_id);
      return {};
    });
    const sink = createClickHouseSink(config({ url: srv.url }), { logger: memoryLogger().logger });
    try {
      const batch = Array.from({ length: 8 }, (_, i) => sampleRecord({ event_id: `e${i}`, victim_comm: i === 2 || i === 5 ? 'BAD' : 'ok' }));
      const r = await sink.write(batch);
      assert.equal(r.status, 'delivered');
      const refused = r.status === 'delivered' ? r.rejectedRecords ?? [] : [];
      assert.deepEqual(refused.map((x) => x.record.event_id), ['e2', 'e5']);
      assert.match(refused[0]!.reason, /code 27 \(CANNOT_PARSE_INPUT_ASSERTION_FAILED\)/);
      assert.deepEqual([...inserted].sort(), ['e0', 'e1', 'e3', 'e4', 'e6', 'e7']);
      const tokens = srv.seen.filter((s) => s.query.startsWith('INSERT')).map((s) => s.url.searchParams.get('insert_deduplication_token'));
      assert.equal(new Set(tokens).size, tokens.length, 'every part has its own token');
      // every record bad: the batch is rejected as a whole
      const all = await sink.write([sampleRecord({ event_id: 'b1', victim_comm: 'BAD' }), sampleRecord({ event_id: 'b2', victim_comm: 'BAD' })]);
      assert.equal(all.status, 'rejected');
    } finally {
      await sink.close();
      await srv.close();
    }
  });

  test('a batch holding things that are not records (null, no event_id) is answered, never thrown', async () => {
    const srv = await scripted((s) => {
      if (/version\(\)/.test(s.query)) return { body: '26.9.2.1\n' };
      return s.body.toString('utf8').includes('"a":1')
        ? { status: 400, body: 'Code: 117. DB::Exception: Unknown row. (INCORRECT_DATA) (version 26.9.2.1)\n' }
        : {};
    });
    const sink = createClickHouseSink(config({ url: srv.url }), { logger: memoryLogger().logger });
    try {
      const junk = { a: 1 } as unknown as ReturnType<typeof sampleRecord>;
      const r = await sink.write([sampleRecord({ event_id: 'g1' }), junk, null as unknown as typeof junk]);
      assert.equal(r.status, 'delivered');
      assert.deepEqual(r.status === 'delivered' ? r.rejectedRecords?.map((x) => x.record) : [], [junk, null]);
    } finally {
      await sink.close();
      await srv.close();
    }
  });

  test('isolation: the row the server names is cut out (~2 inserts per bad record); a wrong row number loses nothing', async () => {
    for (const lie of [false, true]) {
      const inserted: string[] = [];
      let inserts = 0;
      const srv = await scripted((s) => {
        if (/version\(\)/.test(s.query)) return { body: '26.9.2.1\n' };
        inserts++;
        const lines = s.body.toString('utf8').split('\n').filter(Boolean);
        const at = lines.findIndex((l) => l.includes('"victim_comm":"BAD'));
        if (at >= 0) {
          // the real server's row (1-based), or a made-up one
          const row = lie ? 1 : at + 1;
          return { status: 400, body: `Code: 27. DB::Exception: Cannot parse input: expected '"': (at row ${row})\n: While executing ParallelParsingBlockInputFormat. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 26.9.2.1)\n` };
        }
        for (const l of lines) inserted.push(JSON.parse(l).event_id);
        return {};
      });
      const sink = createClickHouseSink(config({ url: srv.url }), { logger: memoryLogger().logger });
      try {
        const bad = new Set([7, 300, 301, 999]);
        const batch = Array.from({ length: 1000 }, (_, i) => sampleRecord({ event_id: `e${i}`, victim_comm: bad.has(i) ? 'BAD' : 'ok' }));
        const r = await sink.write(batch);
        assert.equal(r.status, 'delivered');
        const refused = r.status === 'delivered' ? r.rejectedRecords ?? [] : [];
        assert.deepEqual(refused.map((x) => x.record.event_id).sort(), ['e7', 'e300', 'e301', 'e999'].sort());
        assert.equal(inserted.length, 996);
        assert.equal(new Set(inserted).size, 996);
        // truthful rows: 1 + 3 per bad record at most; a lying server falls back to bisection (≤ 2·4·log2(1000) + 1)
        assert.ok(inserts <= (lie ? 81 : 13), `${inserts} inserts (lie=${lie})`);
      } finally {
        await sink.close();
        await srv.close();
      }
    }
  });

  test('wrong password: retryable after config_error_retry_ms, one error log, password_file re-read, password never logged', async () => {
    const file = path.join(tmp, 'pw');
    fs.writeFileSync(file, 'wrong-secret-1\n');
    let good = 'right-secret-2';
    const srv = await scripted((s) => {
      const auth = Buffer.from(String(s.headers.authorization ?? '').slice(6), 'base64').toString();
      if (auth !== `default:${good}`) {
        return { status: 401, body: 'Code: 193, e.displayText() = DB::Exception: Wrong password for user default, e.what() = DB::Exception\n' };
      }
      return /version\(\)/.test(s.query) ? { body: '18.16.1\n' } : {};
    });
    const { logger, lines } = memoryLogger();
    const sink = createClickHouseSink(config({ url: srv.url, password_file: file, config_error_retry_ms: 12345 }), { logger });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await sink.write([sampleRecord()]);
        assert.equal(r.status, 'retryable');
        assert.ok(r.status === 'retryable' && r.afterMs === 12345);
        assert.match(r.status === 'retryable' ? r.reason : '', /HTTP 401, code 193 \(WRONG_PASSWORD\): Wrong password for user default/);
      }
      const errors = lines.filter((l) => l.startsWith('error'));
      assert.equal(errors.length, 1, `one error line, not one per attempt: ${errors.join('')}`);
      assert.match(errors[0]!, /records stay spooled; retrying every 12345 ms; check sinks.clickhouse.username and password/);
      // the operator fixes the file: the next attempt authenticates, no restart
      fs.writeFileSync(file, `${good}\n`);
      assert.equal((await sink.write([sampleRecord()])).status, 'retryable', 'the failing attempt notices the change…');
      assert.equal((await sink.write([sampleRecord()])).status, 'delivered', '…the next one uses it');
      assert.ok(lines.some((l) => l.includes('password_file changed')));
      const all = lines.join('');
      assert.ok(!all.includes('wrong-secret-1') && !all.includes(good), 'no password in the log');
      good = 'x';
    } finally {
      await sink.close();
      await srv.close();
    }
  });

  test('195 IP_ADDRESS_NOT_ALLOWED: the hint names the host rule, not the password; password_file is not re-read', async () => {
    const file = path.join(tmp, 'pw195');
    fs.writeFileSync(file, 'first-secret\n');
    const srv = await scripted(() => ({
      status: 403,
      body: 'Code: 195. DB::Exception: default: Authentication failed: User default is not allowed to connect from address 10.1.2.3. (IP_ADDRESS_NOT_ALLOWED) (version 26.9.2.1)\n',
    }));
    const { logger, lines } = memoryLogger();
    const sink = createClickHouseSink(config({ url: srv.url, password_file: file, config_error_retry_ms: 777 }), { logger });
    try {
      const r = await sink.write([sampleRecord()]);
      assert.ok(r.status === 'retryable' && r.afterMs === 777, JSON.stringify(r));
      fs.writeFileSync(file, 'second-secret\n');
      await sink.write([sampleRecord()]);
      const errors = lines.filter((l) => l.startsWith('error'));
      assert.equal(errors.length, 1, errors.join(''));
      assert.match(errors[0]!, /does not let this user connect from this host's address/);
      assert.doesNotMatch(errors[0]!, /password/);
      assert.ok(!lines.some((l) => l.includes('password_file changed')), 'a new password cannot fix the host rule: no reconnect');
    } finally {
      await sink.close();
      await srv.close();
    }
  });

  test('nobody listening: retryable, the reason names the error, never the password', async () => {
    const srv = await scripted(() => ({}));
    const url = srv.url;
    await srv.close();
    const { logger, lines } = memoryLogger();
    const sink = createClickHouseSink(config({ url, password: 'hunter2-secret' }), { logger });
    try {
      const r = await sink.write([sampleRecord()]);
      assert.equal(r.status, 'retryable');
      assert.match(r.status === 'retryable' ? r.reason : '', /ECONNREFUSED/);
      assert.ok(r.status === 'retryable' && r.afterMs === undefined, 'network errors use the lane backoff');
      assert.ok(!JSON.stringify(r).includes('hunter2') && !lines.join('').includes('hunter2'));
      const h = await sink.healthcheck();
      assert.equal(h.healthy, false);
      assert.match(h.detail ?? '', /ECONNREFUSED/);
    } finally {
      await sink.close();
    }
  });

  test('healthcheck is SELECT 1 with credentials', async () => {
    const srv = await scripted((s) => (s.query.startsWith('SELECT 1') ? { body: '1\n' } : {}));
    const sink = createClickHouseSink(config({ url: srv.url, password: 'pw' }), { logger: memoryLogger().logger });
    try {
      assert.deepEqual(await sink.healthcheck(), { healthy: true });
      assert.ok(srv.seen[0]!.headers.authorization);
      assert.equal(srv.seen[0]!.query.split('\n')[0]!.trim(), 'SELECT 1');
    } finally {
      await sink.close();
      await srv.close();
    }
  });
});

describe('clickhouse sink: configuration', () => {
  const EMPTY = fs.mkdtempSync(path.join(tmp, 'etc-'));
  test('defaults', () => {
    const c = loadConfig({ etcDir: EMPTY, env: {} }).config.sinks.clickhouse;
    assert.deepEqual(
      { ...c },
      {
        enabled: false,
        url: 'http://127.0.0.1:8123',
        database: 'oomtrail',
        table: 'oom_kills',
        username: 'default',
        password: '',
        password_file: '',
        tls: { ca_file: '', cert_file: '', key_file: '' },
        compression: true,
        request_timeout_ms: 30000,
        async_insert: false,
        create_schema: true,
        ttl_days: 365,
        keep_alive_idle_ms: 2000,
        config_error_retry_ms: 60000,
      },
    );
  });

  test('every key from the environment', () => {
    const c = loadConfig({
      etcDir: EMPTY,
      env: {
        OOMTRAIL_SINKS_CLICKHOUSE_ENABLED: 'yes',
        OOMTRAIL_SINKS_CLICKHOUSE_URL: 'https://ch.example:8443',
        OOMTRAIL_SINKS_CLICKHOUSE_DATABASE: 'ops',
        OOMTRAIL_SINKS_CLICKHOUSE_TABLE: 'kills',
        OOMTRAIL_SINKS_CLICKHOUSE_USERNAME: 'agent',
        OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE: '/run/secrets/ch',
        OOMTRAIL_SINKS_CLICKHOUSE_TLS_CA_FILE: '/etc/ca.pem',
        OOMTRAIL_SINKS_CLICKHOUSE_TLS_CERT_FILE: '/etc/c.pem',
        OOMTRAIL_SINKS_CLICKHOUSE_TLS_KEY_FILE: '/etc/k.pem',
        OOMTRAIL_SINKS_CLICKHOUSE_COMPRESSION: 'off',
        OOMTRAIL_SINKS_CLICKHOUSE_REQUEST_TIMEOUT_MS: '5000',
        OOMTRAIL_SINKS_CLICKHOUSE_ASYNC_INSERT: 'true',
        OOMTRAIL_SINKS_CLICKHOUSE_CREATE_SCHEMA: '0',
        OOMTRAIL_SINKS_CLICKHOUSE_TTL_DAYS: '0',
        OOMTRAIL_SINKS_CLICKHOUSE_KEEP_ALIVE_IDLE_MS: '0',
        OOMTRAIL_SINKS_CLICKHOUSE_CONFIG_ERROR_RETRY_MS: '1000',
      },
    }).config.sinks.clickhouse;
    assert.equal(c.url, 'https://ch.example:8443');
    assert.equal(c.tls.key_file, '/etc/k.pem');
    assert.equal(c.compression, false);
    assert.equal(c.ttl_days, 0);
    assert.equal(c.password_file, '/run/secrets/ch');
    const env = { OOMTRAIL_SINKS_CLICKHOUSE_ENABLED: 'yes', OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD: 's3cret' };
    assert.equal(loadConfig({ etcDir: EMPTY, env }).config.sinks.clickhouse.password, 's3cret');
    // both at once: the sink's check runs at load, naming the key and where it was set, never the password
    assert.throws(
      () => loadConfig({ etcDir: EMPTY, env: { ...env, OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE: '/run/secrets/ch' } }),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.key === 'sinks.clickhouse.password_file' &&
        e.env === 'OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE' &&
        !e.message.includes('s3cret'),
    );
  });

  test('bad values name the key; the password is never echoed', () => {
    const bad = (env: Record<string, string>): ConfigError => {
      try {
        loadConfig({ etcDir: EMPTY, env });
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err;
      }
      throw new Error('expected a ConfigError');
    };
    assert.match(bad({ OOMTRAIL_SINKS_CLICKHOUSE_URL: 'http://u:pw@h:8123' }).message, /sinks\.clickhouse\.url: must not carry credentials/);
    assert.match(bad({ OOMTRAIL_SINKS_CLICKHOUSE_URL: 'ftp://h' }).message, /http:\/\/ or https:\/\//);
    assert.match(bad({ OOMTRAIL_SINKS_CLICKHOUSE_TABLE: 'a-b; DROP' }).message, /sinks\.clickhouse\.table: must be an identifier/);
    assert.match(bad({ OOMTRAIL_SINKS_CLICKHOUSE_TTL_DAYS: '-1' }).message, /ttl_days/);
    const f = path.join(tmp, 'pw.yaml');
    fs.writeFileSync(f, 'sinks:\n  clickhouse:\n    password: 314159265\n');
    let e: unknown;
    try {
      loadConfig({ file: f, env: {} });
    } catch (err) {
      e = err;
    }
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /sinks\.clickhouse\.password: expected a string/);
    assert.ok(!e.message.includes('314159265'));
  });

  test('createClickHouseSink refuses inconsistent files with a ConfigError (exit 78)', () => {
    const c = config();
    const pw = path.join(tmp, 'pw2');
    fs.writeFileSync(pw, 'topsecret\n');
    const err = (over: Partial<ClickHouseSinkConfig>): ConfigError => {
      try {
        createClickHouseSink({ ...c, ...over }, { logger: memoryLogger().logger });
      } catch (e) {
        assert.ok(e instanceof ConfigError, String(e));
        return e;
      }
      throw new Error('expected a ConfigError');
    };
    assert.match(err({ password: 'x', password_file: pw }).message, /either password or password_file/);
    const missing = err({ password_file: path.join(tmp, 'nope') });
    assert.match(missing.message, /password_file: cannot read .*nope: ENOENT/);
    assert.equal(missing.exitCode, 78);
    assert.match(err({ tls: { ca_file: '/x', cert_file: '', key_file: '' } }).message, /need an https:\/\/ url/);
    assert.match(err({ url: 'https://h:8443', tls: { ca_file: '/x', cert_file: '/c', key_file: '' } }).message, /cert_file and key_file go together/);
    assert.match(err({ url: 'https://h:8443', tls: { ca_file: path.join(tmp, 'nope.pem'), cert_file: '', key_file: '' } }).message, /tls\.ca_file: cannot read/);
  });
});
