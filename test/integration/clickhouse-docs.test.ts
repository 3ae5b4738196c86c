/*
 * docs/queries.md's DDL (for `create_schema: false`) on the current ClickHouse engine (chdb-core 26.9 behind
 * test/servers/clickhouse/chdb_http.py): a table created from the doc's own text must be the table the sink's
 * migrations create (system.columns: names, types, defaults, codecs; and SHOW CREATE TABLE), the sink with
 * `create_schema: false` must store every field of a record in it, and every cookbook query of docs/queries.md and
 * every ClickHouse panel of the Grafana dashboard must run on it and answer as on the migrated table.
 * The DDL needs ClickHouse >= 23 (DateTime64 + codecs, LowCardinality, Bool, TTL): Debian's clickhouse-server 18.16,
 * the other test server, is a target of the sink's wire path only (its table is built by the tests with old types).
 * Needs `bash test/servers/clickhouse/setup.sh`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../../src/observe/logger';
import type { Candidate, OomRecord } from '../../src/record/record';
import { loadConfig } from '../../src/config/load';
import type { ClickHouseSinkConfig } from '../../src/sinks/clickhouse/config';
import { createClickHouseSink } from '../../src/sinks/clickhouse/index';
import { encodeRow, rowToRecord } from '../../src/sinks/clickhouse/encoder';
import { migrate } from '../../src/sinks/clickhouse/schema';
import { queriesCookbook, queriesDocDdl } from '../../scripts/gen-docs';
import { rows, sql, startChdb, type ServerHandle } from '../servers/clickhouse/servers';
import { cookbookRecords, rfc3339 } from '../servers/clickhouse/records';

const REPO = path.resolve(__dirname, '../../..');
const QUERIES = fs.readFileSync(path.join(REPO, 'docs', 'queries.md'), 'utf8');
const DASHBOARD = JSON.parse(fs.readFileSync(path.join(REPO, 'grafana', 'dashboards', 'oomtrail.json'), 'utf8'));
/** The doc's table is the one the cookbook names; the migrated one sits beside it. */
const DOC_TABLE = 'oom_kills';
const MIGRATED = 'oom_kills_migrated';
/** Record fields that no migration stores (the sink skips them on insert, on the migrated table too; the doc's
 *  column notes name them). When a migration adds one, this test fails until it leaves this list. */
const NOT_IN_SCHEMA = ['cgroup_truncated'];

const onMigrated = (q: string): string => q.replace(/\boomtrail\.oom_kills\b/g, `oomtrail.${MIGRATED}`);

/** The grafana-clickhouse-datasource macros as the plugin expands them (seconds since the epoch), host = All. */
function interpolateSql(q: string, fromS: number, toS: number): string {
  return q
    .replace(/\$__timeFilter\((\w+)\)/g, (_m, c) => `${c} >= toDateTime(${fromS}) AND ${c} <= toDateTime(${toS})`)
    .replace(/\$__timeInterval\((\w+)\)/g, (_m, c) => `toStartOfInterval(toDateTime(${c}), INTERVAL 300 second)`)
    .replace(/\$\{host:regex\}/g, '.*');
}

/** The cookbook's history plus what queries 9 and 13 need (a trail; a victim smaller than another task), and one
 *  record carrying every optional field the sink stores. */
function history(now: number): OomRecord[] {
  const recs = cookbookRecords(now);
  const cand = (pid: number, comm: string, rssKb: number, adj: number, victim: boolean): Candidate => ({
    pid, tgid: pid, comm, uid: 0, rss_kb: rssKb, rss_anon_kb: rssKb, rss_file_kb: 0, rss_shmem_kb: 0, swapents: 0, pgtables_kb: 100, oom_score_adj: adj, points: null, victim,
  });
  const t0 = recs[0]!;
  recs[0] = {
    ...t0,
    kind: 'oom_kill',
    victim_exit_latency_ms: 4.5,
    victim_reaped_latency_ms: 7.25,
    trail: {
      start: new Date(Date.parse(t0.time) - 3000).toISOString().replace('Z', '000000Z'),
      step_ms: 1000,
      usage_bytes: [20 << 20, 41 << 20, 63 << 20],
      limit_bytes: [64 << 20, 64 << 20, 64 << 20],
      reclaim_stall_ms: [0, 0, 2.25],
      reclaimed_pages: [0, 0, 12],
      psi_some_avg10: [0, 0.5, 3.25],
      psi_full_avg10: [0, 0, 1.5],
      psi_scope: 'system',
    },
    container_name: 'k8s_app_web-7d9f_shop_1',
    labels: { team: 'checkout' },
    oom_group_kill: true,
    oom_group_kill_size: 2,
    oom_scope: 'container',
    workload_kind: 'Deployment',
    workload_name: 'web',
    candidates: [cand(t0.victim_pid, 'java', 300_000, 800, true), cand(42, 'cache-warmer', 650_000, -500, false)],
    candidates_source: 'kmsg',
    memory_at_kill: {
      source: 'bpf', scope: 'memcg', usage_bytes: 1 << 30, limit_bytes: 1 << 30, failcnt: 3, anon_bytes: 1000 << 20, file_bytes: 10 << 20,
      shmem_bytes: 0, file_mapped_bytes: 1, file_dirty_bytes: 2, file_writeback_bytes: 3, kernel_bytes: 20 << 20, slab_bytes: 4, sock_bytes: 5,
      pagetables_bytes: 6, swap_bytes: 0,
    },
    cause: 'anon',
    victim_share: 0.3,
    cgroup_truncated: true,
  };
  // a memory_pressure record (early warning: no victim) with its `pressure` field
  recs.push({
    ...recs[1]!,
    event_id: 'pressure-0000000000000000000000a',
    time: rfc3339(now - 30 * 60_000),
    kind: 'memory_pressure',
    victim_pid: 0,
    victim_tid: 0,
    victim_comm: '',
    trigger_pid: 0,
    trigger_comm: '',
    pressure: { reasons: ['usage', 'psi_full'], usage_ratio: 0.95, psi_some_avg10: 20.5, psi_full_avg10: 12.25, reclaim_stall_ms: 40 },
  });
  return recs;
}

describe('docs/queries.md DDL on ClickHouse 26.9 (chdb): the migrated schema, the cookbook and the dashboard on it', () => {
  let ch: ServerHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-ch-docs-'));
  const now = Date.now();
  const records = history(now);

  const sinkConfig = (table: string): ClickHouseSinkConfig => {
    const { config } = loadConfig({ etcDir: path.join(os.tmpdir(), 'oomtrail-no-such-etc'), env: {} });
    return { ...config.sinks.clickhouse, enabled: true, url: ch.url, password: ch.password, table, create_schema: false };
  };

  before(async () => {
    ch = await startChdb({ dir: path.join(base, 'chdb') });
    await sql(ch, 'CREATE DATABASE IF NOT EXISTS oomtrail');
    // the reader's table: the doc's text as it is
    await sql(ch, queriesDocDdl(QUERIES));
    // the agent's table: every migration, as create_schema: true applies them
    const run = { command: async (q: string) => void (await sql(ch, q)), text: (q: string) => sql(ch, q) };
    await migrate(run, { database: 'oomtrail', table: MIGRATED, ttlDays: 365 }, 'docs-test');
    // the same history into both, through the sink as an agent with create_schema: false writes it
    for (const table of [DOC_TABLE, MIGRATED]) {
      const sink = createClickHouseSink(sinkConfig(table), { logger: silentLogger() });
      assert.deepEqual(await sink.write(records), { status: 'delivered' }, table);
      await sink.close();
    }
  });

  after(async () => {
    await ch?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  test('the table from the doc has the migrated columns (system.columns) and the same definition', async () => {
    const columns = (table: string) =>
      rows(ch, `SELECT name, type, position, default_kind, default_expression, compression_codec FROM system.columns WHERE database = 'oomtrail' AND table = '${table}' ORDER BY position`);
    const doc = await columns(DOC_TABLE);
    const migrated = await columns(MIGRATED);
    const names = (rs: Array<Record<string, unknown>>) => rs.map((r) => String(r.name));
    assert.deepEqual(
      { missingFromDoc: names(migrated).filter((n) => !names(doc).includes(n)), notMigrated: names(doc).filter((n) => !names(migrated).includes(n)) },
      { missingFromDoc: [], notMigrated: [] },
      'docs/queries.md DDL vs the migrations (npm run docs regenerates it)',
    );
    assert.deepEqual(doc, migrated, 'names, types, order, defaults and codecs');
    const create = async (table: string) => (await sql(ch, `SHOW CREATE TABLE oomtrail.${table} FORMAT TSVRaw`)).replace(`oomtrail.${table}`, 'T').trim();
    assert.equal(await create(DOC_TABLE), await create(MIGRATED), 'engine, keys, indices, TTL and settings too');
  });

  test('the sink (create_schema: false, in before()) stored every field of a record in the doc table, as in the migrated one', async () => {
    const docColumns = new Set((await rows<{ name: string }>(ch, `SELECT name FROM system.columns WHERE database = 'oomtrail' AND table = '${DOC_TABLE}'`)).map((r) => r.name));
    const skipped = new Set<string>();
    for (const r of records) for (const k of Object.keys(JSON.parse(encodeRow(r)))) if (!docColumns.has(k)) skipped.add(k);
    assert.deepEqual([...skipped], NOT_IN_SCHEMA, 'fields of the insert the doc table has no column for (skipped without a word)');
    const back = async (table: string) => (await rows(ch, `SELECT * FROM oomtrail.${table} FINAL ORDER BY event_id`)).map(rowToRecord);
    const doc = await back(DOC_TABLE);
    assert.equal(doc.length, records.length);
    assert.deepEqual(doc, await back(MIGRATED));
    // the record with every optional field comes back whole
    const full = records[0]!;
    const got = doc.find((r) => r.event_id === full.event_id)! as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(full)) if (!NOT_IN_SCHEMA.includes(k)) assert.deepEqual(got[k], v, k);
    for (const k of NOT_IN_SCHEMA) assert.ok(!(k in got), `${k} has no column (no migration stores it; docs/queries.md says so)`);
  });

  test('every cookbook query of docs/queries.md runs on the doc table and answers as on the migrated table', async () => {
    const cookbook = queriesCookbook(QUERIES);
    assert.ok(cookbook.size >= 13, `${cookbook.size} queries`);
    const failed: string[] = [];
    for (const [name, q] of cookbook) {
      let got: unknown[];
      try {
        got = await rows(ch, q);
      } catch (err) {
        failed.push(`${name}: ${(err as Error).message.split('\n')[0]!.slice(0, 300)}`);
        continue;
      }
      if (got.length === 0) failed.push(`${name}: empty result (the history answers every query)`);
      else if (JSON.stringify(got) !== JSON.stringify(await rows(ch, onMigrated(q)))) failed.push(`${name}: answers differ from the migrated table's`);
    }
    assert.deepEqual(failed, [], 'cookbook queries the doc table does not answer as the migrated table does');
  });

  test('every ClickHouse panel of the Grafana dashboard runs on the doc table and answers as on the migrated table', async () => {
    const panels = (DASHBOARD.panels as Array<{ title: string; datasource?: { type?: string }; targets?: Array<{ rawSql?: string }> }>).filter(
      (p) => p.datasource?.type === 'grafana-clickhouse-datasource',
    );
    assert.ok(panels.length >= 6, `${panels.length} ClickHouse panels`);
    const fromS = Math.floor(now / 1000) - 30 * 86400;
    const toS = Math.floor(now / 1000) + 3600;
    const failed: string[] = [];
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        assert.ok(t.rawSql, `${p.title}: raw SQL`);
        const q = interpolateSql(t.rawSql, fromS, toS);
        let got: unknown[];
        try {
          got = await rows(ch, q);
        } catch (err) {
          failed.push(`${p.title}: ${(err as Error).message.split('\n')[0]!.slice(0, 300)}`);
          continue;
        }
        if (got.length === 0) failed.push(`${p.title}: empty result (the history answers every panel)`);
        else if (JSON.stringify(got) !== JSON.stringify(await rows(ch, onMigrated(q)))) failed.push(`${p.title}: answers differ from the migrated table's`);
      }
    }
    assert.deepEqual(failed, [], 'dashboard panels the doc table does not answer as the migrated table does');
  });
});
