import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { OomRecord } from '../../src/record/record';
import { encodeRecordJson } from '../../src/record/json';
import {
  dedupToken,
  encodeBatch,
  encodeRow,
  fromClickHouseTime,
  rowToRecord,
  toClickHouseTime,
  wellFormed,
} from '../../src/sinks/clickhouse/encoder';
import { createTableSql, migrate, MIGRATIONS, type SqlRunner } from '../../src/sinks/clickhouse/schema';
import { sampleRecord } from '../servers/clickhouse/records';

describe('clickhouse encoder: time', () => {
  test('RFC 3339 UTC → DateTime64 basic text, all 9 digits kept', () => {
    assert.equal(toClickHouseTime('2026-11-23T06:41:00.123456789Z'), '2026-11-23 06:41:00.123456789');
    assert.equal(toClickHouseTime('2026-11-23T06:41:00Z'), '2026-11-23 06:41:00');
    assert.equal(toClickHouseTime('2026-11-23T06:41:00.5Z'), '2026-11-23 06:41:00.5');
  });
  test('other offsets go through Date (UTC, ms); garbage is null', () => {
    assert.equal(toClickHouseTime('2026-11-23T08:41:00.250+02:00'), '2026-11-23 06:41:00.250');
    assert.equal(toClickHouseTime('yesterday'), null);
  });
  test('back to RFC 3339 with 9 digits', () => {
    assert.equal(fromClickHouseTime('2026-11-23 06:41:00.123456789'), '2026-11-23T06:41:00.123456789Z');
    assert.equal(fromClickHouseTime('2026-11-23 06:41:00.5'), '2026-11-23T06:41:00.500000000Z');
    assert.equal(fromClickHouseTime('2026-11-23 06:41:00'), '2026-11-23T06:41:00.000000000Z');
  });
});

describe('clickhouse encoder: rows', () => {
  test('a row is the JSONL record with the time rewritten', () => {
    const r = sampleRecord();
    const row = encodeRow(r);
    assert.equal(row, encodeRecordJson(r).replace('"time":"2026-11-23T06:41:00.123456789Z"', '"time":"2026-11-23 06:41:00.123456789"'));
    assert.deepEqual(JSON.parse(row), { ...r, time: '2026-11-23 06:41:00.123456789' });
  });

  test('hostile strings survive JSON; lone surrogates become U+FFFD', () => {
    const hostile = {
      victim_comm: 'q"\\\n\t\u0001\u007f\ufffd\ufffd é☃',
      trigger_comm: '\ud800x\udc00y\ud83d\ude00',
      victim_cgroup: '/a"b/\\ud800 literal/\u0000nul/"time":"2020-01-01T00:00:00Z"',
      oom_cgroup: "/it's\r\n/😀",
      host: 'h\u2028\u2029',
    };
    const r = sampleRecord(hostile);
    const row = encodeRow(r);
    assert.ok(!row.includes('\n'), 'one line');
    assert.ok(Buffer.from(row, 'utf8').toString('utf8') === row, 'valid UTF-8 round trip');
    const back = JSON.parse(row) as Record<string, unknown>;
    assert.equal(back.victim_comm, hostile.victim_comm);
    assert.equal(back.trigger_comm, '\ufffdx\ufffdy\ud83d\ude00', 'a surrogate pair is kept, lone halves replaced');
    assert.equal(back.victim_cgroup, hostile.victim_cgroup, 'literal backslash-u text and a fake "time" key are untouched');
    assert.equal(back.oom_cgroup, hostile.oom_cgroup);
    assert.equal(back.host, hostile.host);
    assert.equal(back.time, '2026-11-23 06:41:00.123456789');
    assert.ok(!/\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])/i.test(row.replace(/\\\\/g, '')), 'no lone surrogate escape left');
  });

  test('wellFormed', () => {
    assert.equal(wellFormed('a\ud800'), 'a\ufffd');
    assert.equal(wellFormed('\udfff\ud83d\ude00'), '\ufffd\ud83d\ude00');
    assert.equal(wellFormed('plain'), 'plain');
  });

  test('an odd time still encodes (slow path), a non-date is passed on for the server to refuse', () => {
    assert.equal(JSON.parse(encodeRow(sampleRecord({ time: '2026-11-23T08:41:00+02:00' }))).time, '2026-11-23 06:41:00.000');
    assert.equal(JSON.parse(encodeRow(sampleRecord({ time: 'nope' }))).time, 'nope');
  });

  test('extra fields of a newer record are kept (the server skips unknown ones)', () => {
    const r = { ...sampleRecord(), future_field: 7 } as OomRecord;
    assert.equal(JSON.parse(encodeRow(r)).future_field, 7);
  });

  test('batch: one line per record, newline-terminated UTF-8', () => {
    const rs = [sampleRecord(), sampleRecord({ victim_comm: 'é☃' })];
    const buf = encodeBatch(rs);
    const lines = buf.toString('utf8').split('\n');
    assert.equal(lines.length, 3);
    assert.equal(lines[2], '');
    assert.equal(JSON.parse(lines[1]!).victim_comm, 'é☃');
  });

  test('rowToRecord inverts a ClickHouse JSONEachRow row (quoted 64-bit ints, Bool or UInt8)', () => {
    const r = sampleRecord({ memcg_limit_bytes: 9223372036854771712, domain_pages: 4096 });
    const row: Record<string, unknown> = {
      ...JSON.parse(encodeRow(r)),
      memcg_limit_bytes: '9223372036854771712',
      memcg_usage_bytes: '67108864',
      victim_total_vm_kb: '137512',
      domain_pages: '4096',
    };
    assert.deepEqual(rowToRecord(row), r);
    assert.deepEqual(rowToRecord({ ...row, constraint_inferred: 1 }), r);
    assert.deepEqual(rowToRecord({ ...row, constraint_inferred: 0 }).constraint_inferred, false);
  });
});

describe('clickhouse encoder: insert_deduplication_token', () => {
  test('deterministic from the event ids, order-sensitive', () => {
    const a = [sampleRecord({ event_id: 'a' }), sampleRecord({ event_id: 'b' })];
    assert.equal(dedupToken(a), dedupToken([...a]));
    assert.equal(dedupToken(a), dedupToken([sampleRecord({ event_id: 'a', victim_comm: 'other' }), sampleRecord({ event_id: 'b' })]));
    assert.notEqual(dedupToken(a), dedupToken([a[1]!, a[0]!]));
    assert.notEqual(dedupToken(a), dedupToken([a[0]!]));
    assert.match(dedupToken(a), /^oomtrail-2-[0-9a-f]{40}$/);
  });
});

describe('clickhouse schema', () => {
  test('DDL: DateTime64(9) + Delta/ZSTD, LowCardinality dimensions, monthly partitions, TTL with ttl_only_drop_parts', () => {
    const ddl = createTableSql({ database: 'oomtrail', table: 'oom_kills', ttlDays: 30 });
    assert.match(ddl, /`time`\s+DateTime64\(9, 'UTC'\) CODEC\(Delta\(8\), ZSTD\(1\)\)/);
    for (const c of ['host', 'kernel_release', 'hook', 'victim_comm', 'trigger_comm', 'constraint', 'container_runtime', 'k8s_qos', 'agent_version']) {
      assert.match(ddl, new RegExp('`' + c + '`\\s+LowCardinality\\(String\\)'), c);
    }
    assert.match(ddl, /ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM\(time\)\nORDER BY \(host, victim_cgroup, time, event_id\)/);
    assert.match(ddl, /TTL toDateTime\(time\) \+ INTERVAL 30 DAY/);
    assert.match(ddl, /ttl_only_drop_parts = 1/);
    assert.match(ddl, /non_replicated_deduplication_window = 1000/);
    assert.ok(!/TTL/.test(createTableSql({ database: 'd', table: 't', ttlDays: 0 })), 'ttl_days 0: no TTL');
  });

  test('every record field has a column', () => {
    const ddl = createTableSql({ database: 'd', table: 't', ttlDays: 1 });
    for (const k of Object.keys(sampleRecord())) assert.match(ddl, new RegExp('`' + k + '`\\s+\\w'), k);
  });

  function fakeServer(): SqlRunner & { log: string[]; versions: number[]; tableExists: boolean } {
    const s = {
      log: [] as string[],
      versions: [] as number[],
      tableExists: false,
      async command(sql: string) {
        s.log.push(sql);
        const m = /VALUES \('t', (\d+),/.exec(sql);
        if (m) s.versions.push(Number(m[1]));
        if (/^CREATE TABLE IF NOT EXISTS `d`.`t`/.test(sql)) s.tableExists = true;
      },
      async text(sql: string) {
        if (sql.startsWith('SELECT max(version)')) return `${Math.max(0, ...s.versions)}\n`;
        if (sql.startsWith('EXISTS TABLE')) return s.tableExists ? '1\n' : '0\n';
        throw new Error(`unexpected ${sql}`);
      },
    };
    return s;
  }

  test('migrate: applies pending versions once, in order; a newer agent adds a column; a dropped table is recreated', async () => {
    const srv = fakeServer();
    const o = { database: 'd', table: 't', ttlDays: 7 };
    const n = MIGRATIONS.length;
    const all = MIGRATIONS.map((m) => m.version);
    const r1 = await migrate(srv, o, '0.1.0');
    assert.deepEqual(r1, { before: 0, applied: all, after: n, recreated: false });
    const r2 = await migrate(srv, o, '0.1.0');
    assert.deepEqual(r2, { before: n, applied: [], after: n, recreated: false });
    const next = [...MIGRATIONS, { version: n + 1, description: 'add x', statements: () => ['ALTER TABLE `d`.`t` ADD COLUMN IF NOT EXISTS x UInt8'] }];
    const r3 = await migrate(srv, o, '0.2.0', next);
    assert.deepEqual(r3.applied, [n + 1]);
    const r4 = await migrate(srv, o, '0.1.0'); // an older agent afterwards
    assert.deepEqual(r4, { before: n + 1, applied: [], after: n + 1, recreated: false });
    srv.tableExists = false;
    const r5 = await migrate(srv, o, '0.2.0', next);
    assert.deepEqual(r5, { before: n + 1, applied: [...all, n + 1], after: n + 1, recreated: true });
    assert.ok(srv.log[0]!.startsWith('CREATE DATABASE IF NOT EXISTS `d`'));
  });
});
