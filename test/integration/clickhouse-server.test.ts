/*
 * The ClickHouse sink's wire path against a real server over HTTP: Debian's clickhouse-server 18.16, started
 * here on a free port with a password. Real OOM kills through the real agent; batching, gzip and auth as seen
 * by a recording pass-through; faults: the server stopped for 30 s during a burst of real kills, the server
 * SIGKILLed mid-insert, a wrong password. 18.16 rejects DateTime64/LowCardinality/CODEC/TTL and
 * insert_deduplication_token, so the table here is the production schema with old types (time as String)
 * and no token: ReplacingMergeTree + FINAL is what deduplicates on this server (types are proven on chdb).
 * Needs root, a memory cgroup controller and BTF (real kills), and `bash test/servers/clickhouse/setup.sh`.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readJsonl, sleep, startAgent, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { readSpoolDir } from '../helpers/spool';
import { Lane } from '../../src/pipeline/lane';
import { silentLogger } from '../../src/observe/logger';
import type { OomRecord } from '../../src/record/record';
import { loadConfig } from '../../src/config/load';
import type { ClickHouseSinkConfig } from '../../src/sinks/clickhouse/config';
import { createClickHouseSink, ClickHouseSink } from '../../src/sinks/clickhouse/index';
import { fromClickHouseTime, rowToRecord } from '../../src/sinks/clickhouse/encoder';
import { oldServerTableSql, rows, sql, startClickHouse18, type ServerHandle } from '../servers/clickhouse/servers';
import { RecordingProxy } from '../servers/clickhouse/proxy';
import { syntheticRecords } from '../servers/clickhouse/records';

/** The record's values for `columns` only (the table may predate the newest optional record fields). */
const project = (r: OomRecord, columns: string[]): OomRecord =>
  Object.fromEntries(columns.map((k) => [k, (r as unknown as Record<string, unknown>)[k]])) as unknown as OomRecord;

const byId = (a: { event_id: string }, b: { event_id: string }) => (a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0);

/** A row of the old table → the record: the sink stored `YYYY-MM-DD hh:mm:ss.nnnnnnnnn` in the String column. */
function oldRowToRecord(row: Record<string, unknown>): OomRecord {
  const r = rowToRecord(row);
  return { ...r, time: fromClickHouseTime(String(row.time)) };
}

async function until<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined | false> | T | undefined | false, log?: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${log ? `\n${log().slice(-3000)}` : ''}`);
    await sleep(200);
  }
}

describe('clickhouse sink on clickhouse-server 18.16 (a real server over HTTP)', () => {
  let server: ServerHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-ch-server-'));
  const cgroups: TestCgroup[] = [];
  const agents: RunningAgent[] = [];
  const proxies: RecordingProxy[] = [];
  let pwFile: string;

  before(async () => {
    server = await startClickHouse18({ dir: path.join(base, 'server') });
    await sql(server, 'CREATE DATABASE IF NOT EXISTS oomtrail');
    await sql(server, oldServerTableSql('oomtrail', 'oom_kills'));
    pwFile = path.join(base, 'password');
    fs.writeFileSync(pwFile, `${server.password}\n`, { mode: 0o600 });
  });

  after(async () => {
    for (const a of agents) await a.stop('SIGKILL').catch(() => undefined);
    for (const p of proxies) await p.stop().catch(() => undefined);
    for (const cg of cgroups) await removeCgroup(cg.dir);
    await server?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  const agentEnv = (url: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    OOMTRAIL_SINKS_CLICKHOUSE_ENABLED: 'true',
    OOMTRAIL_SINKS_CLICKHOUSE_URL: url,
    OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE: pwFile,
    OOMTRAIL_SINKS_CLICKHOUSE_CREATE_SCHEMA: 'false',
    OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '200',
    OOMTRAIL_PIPELINE_RETRY_MAX_MS: '1000',
    ...extra,
  });
  const rowsOf = async (cg: TestCgroup, final = 'FINAL') =>
    (await rows(server, `SELECT * FROM oomtrail.oom_kills ${final} WHERE victim_cgroup = '${cg.kernelPath}'`)).map(oldRowToRecord).sort(byId);
  const countOf = async (cg: TestCgroup) =>
    (
      await rows<{ raw: number; final: number; ids: number }>(
        server,
        `SELECT count() AS raw, uniqExact(event_id) AS ids, (SELECT count() FROM oomtrail.oom_kills FINAL WHERE victim_cgroup = '${cg.kernelPath}') AS final FROM oomtrail.oom_kills WHERE victim_cgroup = '${cg.kernelPath}'`,
      )
    )[0]!;
  const newCgroup = (name: string) => {
    const cg = makeTestCgroup(`oomtrail-ch18-${name}-${process.pid}`);
    cgroups.push(cg);
    return cg;
  };
  const mine = (cg: TestCgroup) => (rs: OomRecord[]) => rs.filter((r) => r.victim_cgroup === cg.kernelPath);

  test('real OOM kills through the agent: rows equal the JSONL records; batched, gzip, password auth on the wire', async (t: TestContext) => {
    const proxy = new RecordingProxy(server.port);
    proxies.push(proxy);
    await proxy.start();
    const agent = await startAgent('', agentEnv(proxy.url, { OOMTRAIL_PIPELINE_BATCH_MAX_AGE_MS: '1000' }));
    agents.push(agent);
    const cg = newCgroup('wire');
    const pids = await causeKills(cg, 10, 5);
    const jsonl = mine(cg)(await agent.waitFor((rs) => mine(cg)(rs).length >= 10, 20_000, '10 JSONL records'));
    const got = await until('10 rows', 30_000, async () => {
      const rs = await rowsOf(cg);
      return rs.length >= 10 ? rs : undefined;
    }, agent.stderr);
    assert.deepEqual(new Set(jsonl.map((r) => r.victim_pid)), new Set(pids));
    assert.deepEqual(got, [...jsonl].sort(byId).map((r) => project(r, Object.keys(got[0]!))), 'SELECT returns the same field values as the JSONL sink');
    const inserts = proxy.matching('INSERT INTO `oomtrail`.`oom_kills` FORMAT JSONEachRow');
    assert.ok(inserts.length >= 1 && inserts.length <= 5, `10 records in ${inserts.length} inserts (batched)`);
    for (const s of inserts) {
      assert.equal(s.headers['content-encoding'], 'gzip');
      assert.equal(s.headers.authorization, `Basic ${Buffer.from(`default:${server.password}`).toString('base64')}`);
      assert.equal(s.url.searchParams.get('insert_deduplication_token'), null, '18.16 has no tokens');
      assert.equal(s.url.searchParams.get('input_format_skip_unknown_fields'), '1');
      assert.equal(s.status, 200);
    }
    t.diagnostic(`wire: 10 real kills -> ${inserts.length} gzip'd inserts, rows == JSONL`);
    const stopped = await agent.stop('SIGTERM');
    assert.equal(stopped.code, 0);
  });

  test('outage: server stopped for 30 s during a burst of real OOM kills: zero lost, zero duplicate event_ids (FINAL), spool drained', async (t: TestContext) => {
    const agent = await startAgent('', agentEnv(server.url));
    agents.push(agent);
    const cg = newCgroup('outage');
    const pids = await causeKills(cg, 5, 5);
    await until('the first 5 rows', 20_000, async () => (await countOf(cg)).final >= 5, agent.stderr);

    const t0 = Date.now();
    await server.stop();
    const stopMs = Date.now() - t0;
    const down = Date.now();
    let during = 0;
    while (Date.now() - down < 24_000) {
      const wave = await causeKills(cg, 5, 5);
      pids.push(...wave);
      during += wave.length;
      await sleep(4000);
    }
    // the file sink kept writing while ClickHouse was down: no head-of-line blocking between sinks
    assert.equal(mine(cg)(agent.records()).length, pids.length, 'JSONL has every kill while ClickHouse is down');
    const spooledDuring = readSpoolDir(path.join(agent.dir, 'spool', 'clickhouse')).pending.length;
    assert.ok(spooledDuring >= during - 5, `records wait in the ClickHouse spool (${spooledDuring})`);
    await sleep(Math.max(0, 30_000 - (Date.now() - down)));
    const outageMs = Date.now() - down;
    await server.start();
    const up = Date.now();
    pids.push(...(await causeKills(cg, 5, 5)));

    const c = await until('every kill as a row', 60_000, async () => {
      const n = await countOf(cg);
      return n.final >= pids.length ? n : undefined;
    }, agent.stderr);
    const drainMs = Date.now() - up;
    await until('the ClickHouse spool to drain', 20_000, () => readSpoolDir(path.join(agent.dir, 'spool', 'clickhouse')).pending.length === 0);

    const jsonl = mine(cg)(readJsonl(agent.eventsPath));
    assert.equal(jsonl.length, pids.length, 'the kernel oom_kill counter, the JSONL file and the pids agree');
    assert.equal(c.final, pids.length, 'zero rows lost');
    assert.equal(c.ids, pids.length, 'zero duplicate event_ids (with FINAL: count() FINAL == uniqExact(event_id))');
    const stored = await rowsOf(cg);
    assert.deepEqual(stored, [...jsonl].sort(byId).map((r) => project(r, Object.keys(stored[0]!))), 'field values equal the JSONL sink');
    assert.match(agent.stderr(), /lane: sink write failed, will retry .*"sink":"clickhouse".*ECONNREFUSED/, 'the outage was seen as refused connections');
    await sql(server, 'OPTIMIZE TABLE oomtrail.oom_kills FINAL');
    const optimized = await countOf(cg);
    assert.equal(optimized.raw, pids.length, 'after OPTIMIZE … FINAL plain count() is exact too');
    t.diagnostic(
      `outage: ${pids.length} real kills (${during} while the server was down ${outageMs} ms; SIGTERM stop took ${stopMs} ms); ` +
        `rows raw ${c.raw} / FINAL ${c.final} / distinct event_id ${c.ids}; all rows ${drainMs} ms after restart; spool drained`,
    );
    const stopped = await agent.stop('SIGTERM');
    assert.equal(stopped.code, 0, agent.stderr().slice(-2000));
  });

  test('server SIGKILLed mid-insert: the lane retries into the restarted server; nothing lost, FINAL has no duplicates', async (t: TestContext) => {
    await sql(server, oldServerTableSql('oomtrail', 'midkill'));
    const proxy = new RecordingProxy(server.port);
    proxies.push(proxy);
    await proxy.start();
    const { config } = loadConfig({ etcDir: base, env: {} });
    const cfg: ClickHouseSinkConfig = { ...config.sinks.clickhouse, enabled: true, url: proxy.url, password: server.password, create_schema: false, table: 'midkill' };
    const lane = new Lane({
      sink: createClickHouseSink(cfg, { logger: silentLogger() }),
      spoolDir: path.join(base, 'midkill-spool'),
      fsync: 'never',
      maxSpoolBytes: 0,
      batch: { maxEvents: 15_000, maxBytes: 64 << 20, maxAgeMs: 200 },
      retry: { initialMs: 200, maxMs: 1000 },
      logger: silentLogger(),
    });
    const recs = syntheticRecords(30_000, 77);
    let killedAt = 0;
    let executing = false;
    proxy.on('request', (s: { url: URL }) => {
      if (killedAt || !(s.url.searchParams.get('query') ?? '').startsWith('INSERT')) return;
      killedAt = Date.now();
      void (async () => {
        // wait until the server is executing the insert (system.processes), then SIGKILL it under the request
        for (let i = 0; i < 400 && !executing; i++) {
          const p = await sql(server, "SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO `oomtrail`.`midkill`%'").catch(() => '0');
          executing = Number(p.trim()) > 0;
          if (!executing) await sleep(5);
        }
        await server.kill();
        await sleep(1000);
        await server.start();
      })();
    });
    await lane.open();
    for (const r of recs) await lane.accept(r);
    await until('the lane to deliver 30000', 60_000, () => lane.delivered === 30_000);
    assert.ok(killedAt > 0 && executing, 'the server was killed while it was executing an insert');
    assert.ok(lane.retried >= 1, `the killed insert failed and was retried (${lane.retried} retries)`);
    await lane.close();
    const n = (await rows<{ raw: number; final: number; ids: number }>(server, 'SELECT count() AS raw, uniqExact(event_id) AS ids, (SELECT count() FROM oomtrail.midkill FINAL) AS final FROM oomtrail.midkill'))[0]!;
    assert.equal(n.final, 30_000, 'nothing lost');
    assert.equal(n.ids, 30_000, 'FINAL: each event_id once');
    t.diagnostic(`mid-insert SIGKILL: ${lane.retried} retries; rows raw ${n.raw}, FINAL ${n.final}, distinct ${n.ids} (a raw count above 30000 = the killed insert had committed)`);
  });

  test('wrong password: one clear error, no retry storm; fixing password_file delivers without a restart', async (t: TestContext) => {
    const badPw = path.join(base, 'bad-password');
    fs.writeFileSync(badPw, 'not-the-password\n', { mode: 0o600 });
    const proxy = new RecordingProxy(server.port);
    proxies.push(proxy);
    await proxy.start();
    const agent = await startAgent('', agentEnv(proxy.url, { OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE: badPw, OOMTRAIL_SINKS_CLICKHOUSE_CONFIG_ERROR_RETRY_MS: '4000' }));
    agents.push(agent);
    const cg = newCgroup('auth');
    await causeKills(cg, 2, 2);
    await agent.waitFor((rs) => mine(cg)(rs).length >= 2, 10_000, '2 JSONL records');
    await until('a first attempt', 10_000, () => proxy.seen.length >= 1);
    const first = proxy.seen[0]!.at;
    await sleep(Math.max(0, first + 10_000 - Date.now()));
    const inTen = proxy.seen.filter((s) => s.at <= first + 10_000).length;
    assert.ok(inTen >= 2 && inTen <= 4, `${inTen} requests in 10 s with config_error_retry_ms=4000 (no storm)`);
    assert.ok(proxy.seen.every((s) => s.status === 401));
    const errors = agent.stderr().split('\n').filter((l) => /^\S+ error clickhouse: .*WRONG_PASSWORD/.test(l));
    assert.equal(errors.length, 1, `one error line:\n${agent.stderr().slice(-3000)}`);
    assert.match(errors[0]!, /HTTP 401, code 193 \(WRONG_PASSWORD\): Wrong password for user default \(records stay spooled; retrying every 4000 ms; check sinks\.clickhouse\.username and password \/ password_file\)/);
    assert.ok(!agent.stderr().includes('not-the-password') && !agent.stderr().includes(server.password), 'no password in the log');
    assert.equal((await countOf(cg)).final, 0);
    // the operator fixes the secret file: the next attempt reads it again, no restart
    fs.writeFileSync(badPw, `${server.password}\n`);
    const fixed = Date.now();
    await until('2 rows after the fix', 20_000, async () => (await countOf(cg)).final >= 2, agent.stderr);
    assert.match(agent.stderr(), /password_file changed, reconnecting/);
    assert.match(agent.stderr(), /lane: sink recovered.*clickhouse/);
    t.diagnostic(`wrong password: ${inTen} requests in the first 10 s, 1 error line; delivered ${Date.now() - fixed} ms after the file was fixed (${proxy.seen.length} requests in all)`);
    const stopped = await agent.stop('SIGTERM');
    assert.equal(stopped.code, 0);
  });

  test("keep-alive: idle sockets are dropped before the server's keep_alive_timeout (3 s), so an idle pause never hits a reset", async (t: TestContext) => {
    const { config } = loadConfig({ etcDir: base, env: {} });
    // configured above the server's 3 s: the sink reads `Keep-Alive: timeout=3` and lowers its own idle TTL
    const sink = createClickHouseSink(
      { ...config.sinks.clickhouse, enabled: true, url: server.url, password: server.password, create_schema: false, keep_alive_idle_ms: 10_000 },
      { logger: silentLogger() },
    ) as ClickHouseSink;
    const results: string[] = [];
    for (let i = 0; i < 3; i++) {
      if (i > 0) await sleep(3300); // longer than the server keeps an idle connection
      results.push((await sink.write(syntheticRecords(10, 500 + i))).status);
    }
    assert.deepEqual(results, ['delivered', 'delivered', 'delivered'], 'no ECONNRESET after idle pauses');
    assert.equal(sink.server.keepAliveIdleMs, 2000, 'lowered to the server timeout minus 1 s');
    t.diagnostic(`keep-alive: server timeout 3000 ms, sink idle TTL ${sink.server.keepAliveIdleMs} ms; 3 writes after 3.3 s pauses all delivered first try`);
    await sink.close();
  });

  test("data the server refuses is rejected with its message (18.16's error text, which the client cannot parse)", async () => {
    const { config } = loadConfig({ etcDir: base, env: {} });
    const sink = createClickHouseSink({ ...config.sinks.clickhouse, enabled: true, url: server.url, password: server.password, create_schema: false }, { logger: silentLogger() });
    const bad = { ...syntheticRecords(1, 99)[0]!, victim_pid: 'x' } as unknown as OomRecord;
    const r = await sink.write([bad]);
    assert.equal(r.status, 'rejected');
    assert.match(r.status === 'rejected' ? r.reason : '', /HTTP 500, code 27 \(CANNOT_PARSE_INPUT_ASSERTION_FAILED\): Cannot parse input: expected " before: x"/);
    const missing = createClickHouseSink({ ...config.sinks.clickhouse, enabled: true, url: server.url, password: server.password, create_schema: false, table: 'nope' }, { logger: silentLogger() });
    const m = await missing.write(syntheticRecords(1, 98));
    assert.ok(m.status === 'retryable' && m.afterMs === 60_000 && /HTTP 404, code 60 \(UNKNOWN_TABLE\): Table oomtrail.nope doesn't exist/.test(m.reason), JSON.stringify(m));
    const schema = createClickHouseSink({ ...config.sinks.clickhouse, enabled: true, url: server.url, password: server.password, create_schema: true, database: 'prod' }, { logger: silentLogger() });
    const s = await schema.write(syntheticRecords(1, 97));
    assert.ok(s.status === 'retryable' && /schema migration failed: .*needs ClickHouse >= 23/.test(s.reason), JSON.stringify(s));
    assert.deepEqual(await sink.healthcheck(), { healthy: true });
    for (const x of [sink, missing, schema]) await x.close();
  });
});
