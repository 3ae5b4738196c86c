/*
 * The ClickHouse sink on the current ClickHouse engine (chdb-core 26.9 behind test/servers/clickhouse/chdb_http.py):
 * the production schema (DateTime64(9) + codecs, LowCardinality, ReplacingMergeTree, TTL, dedup window), real OOM
 * kills through the real agent, hostile strings, deduplication on retry, the engine's own errors, and every
 * query of docs/queries.md run against the production schema with its result checked.
 * Needs root, a memory cgroup controller and BTF (real kills), and `bash test/servers/clickhouse/setup.sh`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup, type HogResult } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { Lane } from '../../src/pipeline/lane';
import { silentLogger } from '../../src/observe/logger';
import type { Candidate, MemoryAtKill, OomRecord } from '../../src/record/record';
import { loadConfig } from '../../src/config/load';
import type { ClickHouseSinkConfig } from '../../src/sinks/clickhouse/config';
import { createClickHouseSink, ClickHouseSink } from '../../src/sinks/clickhouse/index';
import { rowToRecord, toClickHouseTime, wellFormed } from '../../src/sinks/clickhouse/encoder';
import { MIGRATIONS } from '../../src/sinks/clickhouse/schema';
import { frontFault, frontStats, rows, sql, startChdb, type ServerHandle } from '../servers/clickhouse/servers';
import { cookbookRecords, hostileRecords, syntheticRecords } from '../servers/clickhouse/records';

const REPO = path.resolve(__dirname, '../../..');
const TABLE = 'oomtrail.oom_kills';

function sinkConfig(ch: ServerHandle, over: Partial<ClickHouseSinkConfig> = {}): ClickHouseSinkConfig {
  const { config } = loadConfig({ etcDir: path.join(os.tmpdir(), 'oomtrail-no-such-etc'), env: {} });
  return { ...config.sinks.clickhouse, enabled: true, url: ch.url, password: ch.password, ...over };
}

/** The record's values for `columns` only (a table of an older schema version lacks the newest optional fields). */
const project = (r: OomRecord, columns: string[]): OomRecord => {
  // what the table gives back for optional fields the record left out (kind's column default; unknown latency)
  const canonical: Record<string, unknown> = {
    ...r,
    kind: r.kind ?? 'oom_kill',
    victim_exit_latency_ms: r.victim_exit_latency_ms ?? undefined,
    victim_reaped_latency_ms: r.victim_reaped_latency_ms ?? undefined,
  };
  return Object.fromEntries(columns.map((k) => [k, canonical[k]])) as unknown as OomRecord;
};

const byId = (a: { event_id: string }, b: { event_id: string }) => (a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0);

async function until<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

/**
 * A real OOM victim with a hostile comm: a symlink to dd whose name is 15 raw bytes (quote, backslash, newline,
 * tab, control characters, two invalid UTF-8 bytes, UTF-8 é and ☃). exec sets comm from the name.
 */
const HOSTILE_NAME = Buffer.concat([Buffer.from('q"\\\n\t\x01\x7f', 'latin1'), Buffer.from([0xff, 0xfe]), Buffer.from(' é☃', 'utf8')]);
function spawnHostileHog(procs: string, dir: string): Promise<HogResult> {
  fs.mkdirSync(dir, { recursive: true });
  const link = Buffer.concat([Buffer.from(dir + '/'), HOSTILE_NAME]);
  try {
    fs.unlinkSync(link);
  } catch {
    // not there
  }
  fs.symlinkSync('/bin/dd', link);
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$1" && cd "$2" && exec ./* if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null', 'sh', procs, dir], { stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (_c, signal) => resolve({ pid: child.pid ?? -1, signal }));
  });
}

describe('clickhouse sink on chdb (ClickHouse 26.9 engine, production schema)', () => {
  let ch: ServerHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-ch-chdb-'));
  const cgroups: TestCgroup[] = [];
  /** The real records (JSONL) captured by the agent test: part of the cookbook's history. */
  let realRecords: OomRecord[] = [];

  before(async () => {
    ch = await startChdb({ dir: path.join(base, 'chdb') });
  });

  after(async () => {
    for (const cg of cgroups) await removeCgroup(cg.dir);
    await ch?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  test('schema: created by the sink, idempotent, versioned; a newer agent adds a column; a dropped table comes back', async () => {
    const cfg = sinkConfig(ch, { database: 'schema_test', table: 'kills', ttl_days: 30 });
    const s1 = createClickHouseSink(cfg, { logger: silentLogger() }) as ClickHouseSink;
    const recs = syntheticRecords(3, 7);
    assert.deepEqual(await s1.write(recs), { status: 'delivered' });
    const n = MIGRATIONS.length;
    assert.deepEqual(s1.server.migration, { before: 0, applied: MIGRATIONS.map((m) => m.version), after: n, recreated: false });
    assert.deepEqual(s1.server.version, [26, 9]);
    assert.equal(s1.server.dedupToken, true);
    const ddl = (await sql(ch, 'SHOW CREATE TABLE schema_test.kills FORMAT TSVRaw')).trim();
    for (const want of [
      "`time` DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1))",
      '`host` LowCardinality(String)',
      '`victim_comm` LowCardinality(String)',
      '`constraint` LowCardinality(String)',
      '`gfp_mask` LowCardinality(Nullable(String))',
      'ENGINE = ReplacingMergeTree',
      'PARTITION BY toYYYYMM(time)',
      'ORDER BY (host, victim_cgroup, time, event_id)',
      'TTL toDateTime(time) + toIntervalDay(30)',
      'ttl_only_drop_parts = 1',
      'non_replicated_deduplication_window = 1000',
    ]) {
      assert.ok(ddl.includes(want), `SHOW CREATE TABLE has ${want}:\n${ddl}`);
    }
    // a second agent: nothing to apply, same table
    const s2 = createClickHouseSink(cfg, { logger: silentLogger() }) as ClickHouseSink;
    assert.equal((await s2.write(syntheticRecords(2, 8))).status, 'delivered');
    assert.deepEqual(s2.server.migration, { before: n, applied: [], after: n, recreated: false });
    // a newer agent with one more migration (adds a column); an older agent keeps inserting afterwards
    const v2 = [...MIGRATIONS, { version: n + 1, description: 'add psi_some_avg10', statements: () => ['ALTER TABLE `schema_test`.`kills` ADD COLUMN IF NOT EXISTS psi_some_avg10 Nullable(Float32)'] }];
    const s3 = createClickHouseSink(cfg, { logger: silentLogger(), migrations: v2 }) as ClickHouseSink;
    const newer = syntheticRecords(1, 9).map((r) => ({ ...r, psi_some_avg10: 12.5 }) as OomRecord);
    assert.equal((await s3.write(newer)).status, 'delivered');
    assert.deepEqual(s3.server.migration?.applied, [n + 1]);
    const s4 = createClickHouseSink(cfg, { logger: silentLogger() }) as ClickHouseSink;
    assert.equal((await s4.write(syntheticRecords(1, 10))).status, 'delivered');
    assert.deepEqual(s4.server.migration, { before: n + 1, applied: [], after: n + 1, recreated: false });
    assert.deepEqual(await rows(ch, 'SELECT count() AS n, countIf(psi_some_avg10 = 12.5) AS psi FROM schema_test.kills'), [{ n: 7, psi: 1 }]);
    assert.deepEqual(
      await rows(ch, "SELECT version, description FROM schema_test.oomtrail_schema_migrations FINAL WHERE `table` = 'kills' ORDER BY version"),
      [...MIGRATIONS.map((m) => ({ version: m.version, description: m.description })), { version: n + 1, description: 'add psi_some_avg10' }],
    );
    // someone drops the table: the next insert fails as unknown table, the one after finds it re-created
    await sql(ch, 'DROP TABLE schema_test.kills');
    const r = await s2.write(syntheticRecords(1, 11));
    assert.equal(r.status, 'retryable');
    assert.match(r.status === 'retryable' ? r.reason : '', /code 60 \(UNKNOWN_TABLE\)/);
    assert.equal((await s2.write(syntheticRecords(1, 11))).status, 'delivered');
    assert.equal(s2.server.migration?.recreated, true);
    for (const s of [s1, s2, s3, s4]) await s.close();
  });

  test('real OOM kills through the real agent become rows equal to the JSONL records (hostile comm included)', async () => {
    const pwFile = path.join(base, 'ch-password');
    fs.writeFileSync(pwFile, `${ch.password}\n`, { mode: 0o600 });
    const agent: RunningAgent = await startAgent('', {
      OOMTRAIL_SINKS_CLICKHOUSE_ENABLED: 'true',
      OOMTRAIL_SINKS_CLICKHOUSE_URL: ch.url,
      OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE: pwFile,
      OOMTRAIL_PIPELINE_RETRY_MAX_MS: '1000',
    });
    let stopped: { code: number | null } | undefined;
    try {
      const cg = makeTestCgroup(`oomtrail-ch-chdb-${process.pid}`);
      cgroups.push(cg);
      const pids = await causeKills(cg, 4, 2);
      const hostile = await spawnHostileHog(cg.procs, path.join(base, 'hostile-bin'));
      assert.equal(hostile.signal, 'SIGKILL', 'the hostile-named hog is OOM-killed');
      pids.push(hostile.pid);
      const mine = (rs: OomRecord[]) => rs.filter((r) => r.victim_cgroup === cg.kernelPath);
      const jsonl = mine(await agent.waitFor((rs) => mine(rs).length >= 5, 20_000, '5 JSONL records'));
      assert.equal(jsonl.length, 5);
      assert.deepEqual(new Set(jsonl.map((r) => r.victim_pid)), new Set(pids));
      const got = await until('5 rows in ClickHouse', 30_000, async () => {
        // the agent's sink creates the table with its first insert: until then the table is unknown
        const rs = await rows(ch, `SELECT * FROM ${TABLE} FINAL WHERE victim_cgroup = '${cg.kernelPath}'`).catch(() => []);
        return rs.length >= 5 ? rs : undefined;
      });
      const fromCh = got.map(rowToRecord).sort(byId);
      // the record may carry optional fields newer than this schema version (skipped on insert): compare the columns
      const columns = Object.keys(fromCh[0]!);
      assert.deepEqual(fromCh, [...jsonl].sort(byId).map((r) => project(r, columns)), 'SELECT returns the same field values as the JSONL sink');
      const h = jsonl.find((r) => r.victim_pid === hostile.pid)!;
      assert.equal(h.victim_comm, HOSTILE_NAME.toString('utf8'), 'the kernel comm, invalid bytes as U+FFFD');
      assert.equal(h.victim_comm, 'q"\\\n\t\u0001\u007f\ufffd\ufffd é☃');
      const raw = await rows<{ hex: string }>(ch, `SELECT hex(victim_comm) AS hex FROM ${TABLE} WHERE event_id = '${h.event_id}'`);
      assert.equal(raw[0]!.hex, Buffer.from(h.victim_comm, 'utf8').toString('hex').toUpperCase(), 'stored bytes = the UTF-8 of the record');
      assert.match(agent.stderr(), new RegExp(`clickhouse: schema of \`oomtrail\`.\`oom_kills\` migrated to version ${MIGRATIONS.length}`));
      realRecords = jsonl;
    } finally {
      stopped = await agent.stop('SIGTERM');
    }
    assert.equal(stopped.code, 0, agent.stderr().slice(-3000));
  });

  test('hostile strings round-trip: quotes, backslashes, newlines, all control characters, lone surrogates (→ U+FFFD)', async () => {
    const sink = createClickHouseSink(sinkConfig(ch, { table: 'oom_kills_hostile' }), { logger: silentLogger() });
    const recs = hostileRecords();
    assert.deepEqual(await sink.write(recs), { status: 'delivered' });
    const back = (await rows(ch, 'SELECT * FROM oomtrail.oom_kills_hostile FINAL')).map(rowToRecord).sort(byId);
    const columns = Object.keys(back[0]!);
    const want = recs
      .map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'string' ? wellFormed(v) : v])) as unknown as OomRecord)
      .map((r) => project(r, columns))
      .sort(byId);
    assert.deepEqual(back, want);
    assert.ok(back.some((r) => r.victim_comm.includes('\u0000')), 'NUL survives');
    await sink.close();
  });

  test('dedup: a retried batch is dropped by its token (plain count() exact); a lost reply is retried by the lane; a re-cut batch is removed by FINAL', async () => {
    const sink = createClickHouseSink(sinkConfig(ch, { table: 'oom_kills_dedup' }), { logger: silentLogger() });
    const count = async (final = '') => (await rows<{ n: number }>(ch, `SELECT count() AS n FROM oomtrail.oom_kills_dedup ${final}`))[0]!.n;
    const a = syntheticRecords(100, 21);
    assert.equal((await sink.write(a)).status, 'delivered');
    // no background merges from here on, so plain count() shows exactly what was stored
    await sql(ch, 'SYSTEM STOP MERGES oomtrail.oom_kills_dedup');
    assert.equal((await sink.write(a)).status, 'delivered', 'the server answers the duplicate with success');
    assert.equal(await count(), 100, 'the identical token dropped the second block');

    // the acknowledgement of a committed insert is lost: the lane retries the identical batch, the token drops it
    const before = await frontStats(ch);
    await frontFault(ch, { drop_reply: 2 });
    const lane = new Lane({
      sink: createClickHouseSink(sinkConfig(ch, { table: 'oom_kills_dedup' }), { logger: silentLogger() }), // closed by lane.close()
      spoolDir: path.join(base, 'lane-spool'),
      fsync: 'never',
      maxSpoolBytes: 0,
      batch: { maxEvents: 250, maxBytes: 1 << 22, maxAgeMs: 50 },
      retry: { initialMs: 50, maxMs: 200 },
      logger: silentLogger(),
    });
    await lane.open();
    const b = syntheticRecords(500, 22);
    for (const r of b) await lane.accept(r);
    await until('the lane to deliver 500', 30_000, async () => lane.delivered === 500);
    assert.ok(lane.retried >= 2, `the lane retried after the lost replies (${lane.retried})`);
    assert.equal(lane.spoolRecords, 0);
    await lane.close();
    const after = await frontStats(ch);
    assert.ok(after.insert_rows! - before.insert_rows! > 500, 'dropped replies: batches were sent (and committed) more than once');
    assert.equal(await count(), 600, 'yet each row is stored once (no FINAL)');

    // the spool replays after a crash in batches cut differently: new tokens, duplicates stored, FINAL removes them
    const replay = [...b.slice(0, 50), ...syntheticRecords(10, 23)];
    assert.equal((await sink.write(replay)).status, 'delivered');
    assert.equal(await count(), 660, 'a re-cut batch is a new block: 50 duplicates stored');
    assert.equal(await count('FINAL'), 610, 'FINAL: each event_id once');
    assert.deepEqual(await rows(ch, 'SELECT uniqExact(event_id) AS u FROM oomtrail.oom_kills_dedup'), [{ u: 610 }]);
    await sql(ch, 'SYSTEM START MERGES oomtrail.oom_kills_dedup');
    await sql(ch, 'OPTIMIZE TABLE oomtrail.oom_kills_dedup FINAL');
    assert.equal(await count(), 610, 'after OPTIMIZE … FINAL plain count() is exact too');
    await sink.close();
  });

  test("the engine's own errors: wrong password, unknown table, bad data, overload with Retry-After", async () => {
    const good = createClickHouseSink(sinkConfig(ch, { table: 'oom_kills_dedup' }), { logger: silentLogger() });
    const wrong = createClickHouseSink(sinkConfig(ch, { password: 'not-it', config_error_retry_ms: 7777 }), { logger: silentLogger() });
    const r1 = await wrong.write(syntheticRecords(1, 31));
    assert.ok(r1.status === 'retryable' && r1.afterMs === 7777, JSON.stringify(r1));
    assert.match(r1.reason, /HTTP 401, code 516 \(AUTHENTICATION_FAILED\): default: Authentication failed/);
    assert.ok(!r1.reason.includes('not-it'));
    const missing = createClickHouseSink(sinkConfig(ch, { table: 'nope', create_schema: false }), { logger: silentLogger() });
    const r2 = await missing.write(syntheticRecords(1, 32));
    assert.ok(r2.status === 'retryable' && r2.afterMs === 60000, JSON.stringify(r2));
    assert.match(r2.reason, /HTTP 404, code 60 \(UNKNOWN_TABLE\): Table oomtrail.nope does not exist/);
    const bad = { ...syntheticRecords(1, 33)[0]!, victim_pid: 'not a pid' } as unknown as OomRecord;
    const r3 = await good.write([bad]);
    assert.equal(r3.status, 'rejected');
    assert.match(r3.status === 'rejected' ? r3.reason : '', /code 27 \(CANNOT_PARSE_INPUT_ASSERTION_FAILED\): Cannot parse input/);
    // one bad record in a batch: the rest is inserted, only it is refused (the lane dead-letters it)
    const mixed = syntheticRecords(5, 35);
    const r5 = await good.write([mixed[0]!, mixed[1]!, bad, mixed[2]!, mixed[3]!, mixed[4]!]);
    assert.equal(r5.status, 'delivered');
    assert.deepEqual(r5.status === 'delivered' ? r5.rejectedRecords?.map((x) => x.record) : [], [bad]);
    const ids = mixed.map((r) => `'${r.event_id}'`).join(',');
    assert.deepEqual(await rows(ch, `SELECT count() AS n FROM oomtrail.oom_kills_dedup FINAL WHERE event_id IN (${ids})`), [{ n: 5 }]);
    await frontFault(ch, { fail: 1, fail_status: 503, fail_code: 202, retry_after: '2' });
    const r4 = await good.write(syntheticRecords(1, 34));
    assert.ok(r4.status === 'retryable' && r4.afterMs === 2000, JSON.stringify(r4));
    assert.equal((await good.write(syntheticRecords(1, 34))).status, 'delivered');
    assert.deepEqual(await good.healthcheck(), { healthy: true });
    const h = await wrong.healthcheck();
    assert.equal(h.healthy, false);
    assert.match(h.detail ?? '', /516|Authentication failed/);
    for (const s of [good, wrong, missing]) await s.close();
  });

  test('a 1,000-row batch with 8 bad rows through the lane: exactly the 8 are dead-lettered, the 992 others are in the table', async () => {
    // issue #15 item 5: with a fixed isolation budget (64 inserts) this dead-lettered 380 rows, 372 of them good
    const table = 'oom_kills_isolation';
    const records = syntheticRecords(1000, 41);
    const badAt = [3, 130, 131, 377, 500, 640, 871, 998];
    const spoilers: Array<(r: OomRecord) => OomRecord> = [
      (r) => ({ ...r, victim_pid: 'not a pid' }) as unknown as OomRecord,
      (r) => ({ ...r, time: 'yesterday at noon' }),
      (r) => ({ ...r, victim_tid: { nested: true } }) as unknown as OomRecord,
      (r) => ({ ...r, schema_version: -1e30 }) as unknown as OomRecord,
    ];
    badAt.forEach((i, k) => (records[i] = spoilers[k % spoilers.length]!(records[i]!)));
    const bad = new Set(badAt.map((i) => records[i]!.event_id));
    const spoolDir = path.join(base, 'lane-isolation');
    const sink = createClickHouseSink(sinkConfig(ch, { table }), { logger: silentLogger() });
    // the table first (a write of one good record), so that the counters below see the batch's inserts only
    const warm = syntheticRecords(1, 42);
    assert.equal((await sink.write(warm)).status, 'delivered');
    const lane = new Lane({
      sink, // closed by lane.close()
      spoolDir,
      fsync: 'never',
      maxSpoolBytes: 0,
      batch: { maxEvents: 1000, maxBytes: 1 << 24, maxAgeMs: 600_000 }, // one batch of exactly 1,000
      retry: { initialMs: 50, maxMs: 200 },
      logger: silentLogger(),
    });
    await lane.open();
    const before = await frontStats(ch);
    const t0 = Date.now();
    for (const r of records) await lane.accept(r);
    await until('the lane to settle 1,000 records', 120_000, async () => lane.delivered + lane.rejected === 1000);
    const ms = Date.now() - t0;
    await lane.close();
    const after = await frontStats(ch);
    const dead = fs.readFileSync(lane.deadLetterPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { reason: string; record: OomRecord });
    const inserts = after.inserts! - before.inserts!;
    console.log(`# isolation: 1000 rows, 8 bad: ${inserts} inserts, ${after.insert_rows! - before.insert_rows!} rows sent, ${ms} ms; dead-lettered ${dead.length}`);
    assert.equal(lane.delivered, 992);
    assert.equal(lane.rejected, 8);
    assert.deepEqual(dead.map((d) => d.record.event_id).sort(), [...bad].sort(), 'exactly the bad rows are dead-lettered');
    for (const d of dead) assert.match(d.reason, /HTTP \d+, code \d+/, 'each with the server\'s reason');
    const n = async (final: string) => (await rows<{ n: number }>(ch, `SELECT count() AS n FROM oomtrail.${table} ${final}`))[0]!.n;
    assert.equal(await n('FINAL'), 993, '992 good rows + the warm-up row');
    const ids = records.filter((r) => !bad.has(r.event_id)).map((r) => `'${r.event_id}'`).join(',');
    assert.deepEqual(await rows(ch, `SELECT uniqExact(event_id) AS u FROM oomtrail.${table} WHERE event_id IN (${ids})`), [{ u: 992 }]);
    // bounded: a few inserts per bad row, not one per row (2·8·log2(1000) ≈ 160 at worst)
    assert.ok(inserts <= 2 * badAt.length * 10 + 1, `${inserts} inserts`);
  });

  test('cookbook: every query in docs/queries.md runs on the production schema and answers as the history says', async () => {
    assert.ok(realRecords.length >= 5, 'the real kills are part of the history');
    const now = Date.now();
    const synthetic = cookbookRecords(now);
    // one kill with the memory trail the agent attaches (query 9 plots it)
    const t0 = synthetic[0]!;
    const trailStart = new Date(Date.parse(t0.time) - 3000).toISOString().replace('Z', '000000Z');
    synthetic[0] = {
      ...t0,
      kind: 'oom_kill',
      victim_exit_latency_ms: 4.5,
      trail: {
        start: trailStart,
        step_ms: 1000,
        usage_bytes: [20 << 20, 41 << 20, 63 << 20],
        limit_bytes: [64 << 20, 64 << 20, 64 << 20],
        reclaim_stall_ms: [0, 0, 2.25],
        reclaimed_pages: [0, 0, 12],
        psi_some_avg10: [0, 0.5, 3.25],
        psi_full_avg10: [0, 0, 1.5],
        psi_scope: 'system',
      },
    };
    // node-a's pod, named by the runtime (migration 3): three container inits killed, then one child
    let podKill = 0;
    for (let i = 0; i < synthetic.length; i++) {
      const r = synthetic[i]!;
      if (r.host !== 'node-a' || !r.pod_uid) continue;
      const child = ++podKill === 4;
      synthetic[i] = {
        ...r,
        pod_namespace: 'shop',
        pod_name: 'web-7d9f',
        k8s_container: 'app',
        container_name: `k8s_app_web-7d9f_shop_${podKill}`,
        // migration 6
        oom_scope: 'container',
        workload_kind: 'Pod',
        workload_name: 'web-7d9f',
        container_image: 'nginx:1.27',
        labels: { team: 'checkout' },
        victim_ns_pid: child ? 57 : 1,
        victim_is_container_init: !child,
      };
    }
    assert.equal(podKill, 4);
    // "why this kill" (queries 12, 13): node-b's app filled a tmpfs; one java kill spared a bigger task
    const at = (over: Partial<MemoryAtKill>): MemoryAtKill => ({
      source: 'bpf', scope: 'memcg', usage_bytes: 1 << 30, limit_bytes: 1 << 30, failcnt: 3, anon_bytes: 100 << 20, file_bytes: 900 << 20,
      shmem_bytes: 850 << 20, file_mapped_bytes: 0, file_dirty_bytes: 0, file_writeback_bytes: 0, kernel_bytes: 20 << 20, slab_bytes: null,
      sock_bytes: null, pagetables_bytes: null, swap_bytes: 0, ...over,
    });
    const cand = (pid: number, comm: string, anonKb: number, adj: number, victim: boolean): Candidate => ({
      pid, tgid: pid, comm, uid: 0, rss_kb: anonKb, rss_anon_kb: anonKb, rss_file_kb: 0, rss_shmem_kb: 0, swapents: 0, pgtables_kb: 100, oom_score_adj: adj, points: null, victim,
    });
    for (const [i, r] of synthetic.entries()) {
      if (r.victim_comm === 'app') synthetic[i] = { ...r, memory_at_kill: at({}), cause: 'shmem', victim_share: 0.09, candidates: [cand(r.victim_pid, 'app', 90_000, 0, true)] };
    }
    const javaAt = synthetic.findIndex((r) => r.victim_comm === 'java');
    synthetic[javaAt] = {
      ...synthetic[javaAt]!,
      memory_at_kill: at({ anon_bytes: 1000 << 20, file_bytes: 10 << 20, shmem_bytes: 0 }),
      cause: 'anon',
      victim_share: 0.3,
      candidates: [cand(synthetic[javaAt]!.victim_pid, 'java', 300_000, 800, true), cand(42, 'cache-warmer', 650_000, -500, false)],
    };
    const sink = createClickHouseSink(sinkConfig(ch), { logger: silentLogger() });
    assert.equal((await sink.write(synthetic)).status, 'delivered');
    // a re-cut batch (as after an agent crash): stored twice until a merge; every query reads FINAL
    assert.equal((await sink.write(synthetic.slice(0, 6))).status, 'delivered');
    await sink.close();
    const all = [...realRecords, ...synthetic];
    const stored = await rows<{ n: number; u: number; f: number }>(ch, `SELECT count() AS n, uniqExact(event_id) AS u, (SELECT count() FROM ${TABLE} FINAL) AS f FROM ${TABLE}`);
    assert.equal(stored[0]!.u, all.length);
    assert.equal(stored[0]!.f, all.length);

    const md = fs.readFileSync(path.join(REPO, 'docs', 'queries.md'), 'utf8');
    const queries = new Map([...md.matchAll(/```sql\n-- query: (\w+)\n([\s\S]*?)```/g)].map((m) => [m[1]!, m[2]!.trim()]));
    const expected = [
      'kills_per_container_24h',
      'kills_per_pod_24h',
      'top_victims_anon_rss_7d',
      'hosts_trending_up_wow',
      'memcg_vs_global_daily_30d',
      'restart_loops_24h',
      'time_between_kills_7d',
      'latest_kills',
      'trail_of_latest_kill',
      'kills_by_namespace_7d',
      'silent_child_kills_7d',
      'page_cache_or_tmpfs_kills_7d',
      'victims_not_biggest_7d',
    ];
    assert.deepEqual([...queries.keys()], expected, 'the cookbook and this test name the same queries');
    const run = async (name: string) => rows(ch, queries.get(name)!);

    // reference answers computed here from the records themselves
    const H = 3_600_000;
    const t = (r: OomRecord) => Date.parse(r.time);
    const since = (ms: number) => all.filter((r) => t(r) >= now - ms);
    const chTime = (r: OomRecord) => toClickHouseTime(r.time)!;
    const me = os.hostname();
    const realCg = realRecords[0]!.victim_cgroup;
    const group = <K extends string>(rs: OomRecord[], key: (r: OomRecord) => K) => {
      const m = new Map<K, OomRecord[]>();
      for (const r of rs) m.set(key(r), [...(m.get(key(r)) ?? []), r]);
      return m;
    };
    const maxTime = (rs: OomRecord[]) => rs.map(chTime).sort().at(-1)!;

    // 1. per container, 24 h
    const q1 = await run('kills_per_container_24h');
    const ref1 = [...group(since(24 * H), (r) => [r.host, r.container_runtime, r.container_id, r.pod_uid, r.victim_cgroup].join('\u0001')).values()]
      .map((rs) => ({ host: rs[0]!.host, victim_cgroup: rs[0]!.victim_cgroup, kills: rs.length, last_kill: maxTime(rs), comms: [...new Set(rs.map((r) => r.victim_comm))].sort() }))
      .sort((a, b) => b.kills - a.kills || (a.last_kill < b.last_kill ? 1 : a.last_kill > b.last_kill ? -1 : 0));
    assert.deepEqual(
      q1.map((r) => ({ host: r.host, victim_cgroup: r.victim_cgroup, kills: r.kills, last_kill: r.last_kill, comms: [...(r.comms as string[])].sort() })),
      ref1,
    );
    assert.deepEqual(q1.find((r) => r.victim_cgroup === '/system.slice/app.service')?.kills, 3);
    assert.deepEqual(q1.find((r) => r.victim_cgroup === realCg)?.kills, realRecords.length);
    assert.ok(!q1.some((r) => r.host === 'node-c'), 'node-c has no kill in the last 24 h');

    // 2. per pod, 24 h: only node-a's pod (the real kills are not in a pod)
    assert.deepEqual(
      (await run('kills_per_pod_24h')).map(({ last_kill: _l, ...r }) => r),
      [{ host: 'node-a', pod_uid: '11111111-2222-3333-4444-555555555555', qos: 'burstable', kills: 4, containers: 4 }],
    );

    // 3. top victims by anon RSS, 7 d
    const q3 = await run('top_victims_anon_rss_7d');
    const ref3 = since(7 * 24 * H)
      .filter((r) => r.victim_anon_rss_kb !== null)
      .sort((a, b) => b.victim_anon_rss_kb! - a.victim_anon_rss_kb! || t(b) - t(a))
      .slice(0, 20);
    assert.deepEqual(q3.map((r) => [r.host, r.victim_comm, r.victim_pid, r.victim_anon_rss_kb]), ref3.map((r) => [r.host, r.victim_comm, r.victim_pid, r.victim_anon_rss_kb]));
    assert.deepEqual(q3.slice(0, 3).map((r) => [r.host, r.victim_comm, r.anon_rss]), [
      ['node-a', 'chrome', '8.00 GiB'],
      ['node-c', 'python3', '2.00 GiB'],
      ['node-c', 'python3', '976.56 MiB'],
    ]);

    // 4. hosts trending up week over week
    const week = 7 * 24 * H;
    const ref4 = [...group(since(2 * week), (r) => r.host).entries()]
      .map(([host, rs]) => {
        const thisWeek = rs.filter((r) => t(r) >= now - week).length;
        return { host, this_week: thisWeek, last_week: rs.length - thisWeek, increase: 2 * thisWeek - rs.length };
      })
      .filter((r) => r.this_week > r.last_week)
      .sort((a, b) => b.increase - a.increase || (a.host < b.host ? -1 : 1));
    const q4 = await run('hosts_trending_up_wow');
    assert.deepEqual(q4, ref4);
    assert.deepEqual(q4.find((r) => r.host === 'node-a'), { host: 'node-a', this_week: 5, last_week: 0, increase: 5 });
    assert.deepEqual(q4.find((r) => r.host === 'node-c'), { host: 'node-c', this_week: 2, last_week: 1, increase: 1 });
    assert.deepEqual(q4.find((r) => r.host === me), { host: me, this_week: realRecords.length, last_week: 0, increase: realRecords.length });
    assert.ok(!q4.some((r) => r.host === 'node-b'), 'node-b: 3 this week, 5 last week');

    // 5. memcg vs global per day
    const q5 = await run('memcg_vs_global_daily_30d');
    const ref5 = [...group(since(30 * 24 * H), (r) => r.time.slice(0, 10)).entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([day, rs]) => {
        const memcg = rs.filter((r) => r.constraint === 'memcg').length;
        const global = rs.filter((r) => r.constraint === 'global').length;
        return { day, memcg_kills: memcg, global_kills: global, other_kills: rs.length - memcg - global, memcg_share: Math.round((memcg / rs.length) * 1000) / 1000 };
      });
    assert.deepEqual(q5, ref5);
    assert.equal(q5.reduce((s, r) => s + (r.global_kills as number), 0), 1, 'one global OOM: chrome on node-a');

    // 6. restart loops
    const workload = (r: OomRecord) => (r.pod_uid ? `pod ${r.pod_uid}` : r.container_id ? `container ${r.container_id.slice(0, 12)}` : `cgroup ${r.victim_cgroup}`);
    const ref6 = [...group(since(24 * H), (r) => [r.host, workload(r), r.victim_comm].join('\u0001')).values()]
      .map((rs) => ({ host: rs[0]!.host, workload: workload(rs[0]!), victim_comm: rs[0]!.victim_comm, kills: rs.length, processes: new Set(rs.map((r) => r.victim_pid)).size }))
      .filter((r) => r.kills >= 3 && r.processes >= 3)
      .sort((a, b) => b.kills - a.kills || (a.host < b.host ? -1 : a.host > b.host ? 1 : a.workload < b.workload ? -1 : 1));
    const q6 = (await run('restart_loops_24h')).map(({ first_kill: _f, last_kill: _l, ...r }) => r);
    assert.deepEqual(q6, ref6);
    assert.deepEqual(q6.find((r) => r.host === 'node-a'), { host: 'node-a', workload: 'pod 11111111-2222-3333-4444-555555555555', victim_comm: 'java', kills: 4, processes: 4 });
    assert.deepEqual(q6.find((r) => r.host === 'node-b'), { host: 'node-b', workload: 'cgroup /system.slice/app.service', victim_comm: 'app', kills: 3, processes: 3 });
    assert.ok(q6.some((r) => r.host === me && r.victim_comm === 'dd' && (r.kills as number) >= 3), 'the real dd kills in one cgroup are a loop too');

    // 7. time between kills per cgroup
    const q7 = await run('time_between_kills_7d');
    const ref7 = [...group(since(week), (r) => [r.host, r.victim_cgroup].join('\u0001')).values()]
      .filter((rs) => rs.length > 1)
      .map((rs) => {
        const ts = rs.map(t).sort((a, b) => a - b);
        const gaps = ts.slice(1).map((x, i) => (x - ts[i]!) / 1000);
        return { host: rs[0]!.host, victim_cgroup: rs[0]!.victim_cgroup, kills: rs.length, avg: gaps.reduce((s, g) => s + g, 0) / gaps.length };
      });
    assert.equal(q7.length, ref7.length);
    for (const r of ref7) {
      const got = q7.find((x) => x.host === r.host && x.victim_cgroup === r.victim_cgroup);
      assert.ok(got, `${r.host} ${r.victim_cgroup}`);
      assert.equal(got.kills, r.kills);
      assert.ok(Math.abs((got.avg_gap_s as number) - r.avg) < 0.01, `${r.victim_cgroup}: ${got.avg_gap_s} vs ${r.avg}`);
    }
    assert.deepEqual(
      q7.filter((r) => r.host === 'node-b' || r.host === 'node-c'),
      [
        { host: 'node-b', victim_cgroup: '/system.slice/app.service', kills: 3, avg_gap_s: 34200, min_gap_s: 32400, max_gap_s: 36000 },
        { host: 'node-c', victim_cgroup: `/docker/${'c'.repeat(64)}`, kills: 2, avg_gap_s: 86400, min_gap_s: 86400, max_gap_s: 86400 },
      ],
    );

    // 8. latest kills
    const q8 = await run('latest_kills');
    const ref8 = [...all].sort((a, b) => (chTime(a) < chTime(b) ? 1 : chTime(a) > chTime(b) ? -1 : a.event_id < b.event_id ? -1 : 1)).slice(0, 20);
    assert.deepEqual(q8.map((r) => r.event_id), ref8.map((r) => r.event_id));
    assert.equal(q8[0]!.host, me, 'the newest kill is a real one');

    // 9. the trail of the latest kill that has one: one row per sample, in order, the series as recorded
    const withTrail = all.filter((r) => r.trail && (r.kind ?? 'oom_kill') === 'oom_kill');
    assert.ok(withTrail.length > 0, 'the history has kills with a trail');
    const latest = withTrail.sort((a, b) => (chTime(a) < chTime(b) ? 1 : -1))[0]!;
    const q9 = await run('trail_of_latest_kill');
    assert.deepEqual(q9.map((r) => r.event_id), latest.trail!.usage_bytes.map(() => latest.event_id));
    assert.deepEqual(q9.map((r) => (r.usage_bytes === null ? null : Number(r.usage_bytes))), latest.trail!.usage_bytes);
    const stepMs = latest.trail!.step_ms;
    const times = q9.map((r) => Date.parse(String(r.t).replace(' ', 'T') + 'Z'));
    for (let i = 1; i < times.length; i++) assert.equal(times[i]! - times[i - 1]!, stepMs, 'samples one step apart');
    assert.equal(times[0], Date.parse(latest.trail!.start), 'the first sample at the trail start');

    // 10. kills by namespace: only node-a's pod carries runtime names
    const q10 = (await run('kills_by_namespace_7d')).map(({ last_kill: _l, ...r }) => r);
    assert.deepEqual(q10, [{ pod_namespace: 'shop', kills: 4, pods: 1, child_kills: 1 }]);

    // 11. silent child kills: the one child of the pod; the real kills (no container) are not listed
    const ref11 = since(7 * 24 * H).filter((r) => r.container_id !== '' && r.victim_is_container_init === false);
    const q11 = await run('silent_child_kills_7d');
    assert.deepEqual(
      q11.map((r) => [r.host, r.pod_namespace, r.pod_name, r.k8s_container, r.container_image, r.victim_pid, Number(r.victim_ns_pid)]),
      ref11.map((r) => [r.host, 'shop', 'web-7d9f', 'app', 'nginx:1.27', r.victim_pid, 57]),
    );
    assert.equal(q11.length, 1);
    // the labels column holds the allow-listed map as JSON
    const lab = await rows<{ team: string }>(ch, `SELECT JSONExtractString(labels, 'team') AS team FROM ${TABLE} FINAL WHERE pod_name = 'web-7d9f' LIMIT 1`);
    assert.equal(lab[0]!.team, 'checkout');
    // 12, 13: on the synthetic hosts (kills of other tenants of this host may land in the table too)
    const synth = (rs: Array<Record<string, unknown>>) => rs.filter((r) => r.host !== me);
    const q12 = synth(await run('page_cache_or_tmpfs_kills_7d'));
    const ref12 = since(7 * 24 * H).filter((r) => r.host !== me && (r.cause === 'shmem' || r.cause === 'page_cache'));
    assert.deepEqual(q12.map((r) => r.victim_comm).sort(), ref12.map((r) => r.victim_comm).sort());
    assert.equal(q12.length, 3, "node-b's three app kills");
    assert.deepEqual(q12.map((r) => [r.cause, Number(r.shmem), Number(r.page_cache), r.victim_share])[0], ['shmem', 850 << 20, 50 << 20, 0.09]);
    const q13 = synth(await run('victims_not_biggest_7d'));
    assert.deepEqual(
      q13.map((r) => [r.victim_comm, Number(r.victim_rss_kb), Number(r.biggest_rss_kb), r.biggest_comm, Number(r.biggest_oom_score_adj)]),
      [['java', 300_000, 650_000, 'cache-warmer', -500]],
    );
  });
});
