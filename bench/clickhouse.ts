/*
 * ClickHouse sink throughput, in one run, against a real server started here (test/servers/clickhouse):
 *   - sink:        records/s through ClickHouseSink.write (encode, gzip level 1, token, one INSERT per batch, answer)
 *   - plain-gzip6: records/s of a plain @clickhouse/client insert({ values, format: 'JSONEachRow' }) of the same rows,
 *                  with request compression on (the client's gzip: zlib's default level 6)
 *   - plain-gzip1: the same with { codec: 'gzip', level: 1 } (the sink's level: isolates the sink's own overhead)
 *   - plain-raw / sink-raw: both without compression
 * The same rows (same seed per batch) go to one table per mode; modes are interleaved batch by batch so a noisy
 * neighbour slows them alike. Only the insert calls are timed (record generation is not). Rows are checked after.
 *
 *   npx tsc -p . && node dist/bench/clickhouse.js [records=1000000] [batch=10000] [server=debian|chdb]
 *
 * `debian` = clickhouse-server 18.16 (a real multi-threaded server; old-type table, no dedup token);
 * `chdb`   = ClickHouse 26.9 through the single-threaded Python front (production schema, dedup token on).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { silentLogger } from '../src/observe/logger';
import { loadConfig } from '../src/config/load';
import { createClickHouseSink } from '../src/sinks/clickhouse/index';
import { toClickHouseTime, wellFormed } from '../src/sinks/clickhouse/encoder';
import { createTableSql } from '../src/sinks/clickhouse/schema';
import type { Sink } from '../src/sinks/sink';
import type { OomRecord } from '../src/record/record';
import { oldServerTableSql, rows, sql, startChdb, startClickHouse18, type ServerHandle } from '../test/servers/clickhouse/servers';
import { syntheticRecords } from '../test/servers/clickhouse/records';

const N = Number(process.argv[2] ?? 1_000_000);
const BATCH = Number(process.argv[3] ?? 10_000);
const SERVER = process.argv[4] ?? 'debian';

type Mode = 'sink' | 'plain-gzip6' | 'plain-gzip1' | 'sink-raw' | 'plain-raw';
const MODES: Mode[] = ['sink', 'plain-gzip6', 'plain-gzip1', 'sink-raw', 'plain-raw'];

/** What a plain client user would hand to insert(): the record with the time in ClickHouse's text. */
function plainRow(r: OomRecord): Record<string, unknown> {
  return { ...r, time: toClickHouseTime(r.time), victim_comm: wellFormed(r.victim_comm) };
}

async function main(): Promise<void> {
  const now = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-bench-ch-'));
  const server: ServerHandle = SERVER === 'chdb' ? await startChdb({ password: 'bench', dir }) : await startClickHouse18({ password: 'bench', dir });
  try {
    const version = (await sql(server, 'SELECT version()')).trim();
    await sql(server, 'CREATE DATABASE IF NOT EXISTS bench');
    const table = (m: Mode) => `t_${m.replace(/-/g, '_')}`;
    for (const m of MODES) {
      const ddl = SERVER === 'chdb' ? createTableSql({ database: 'bench', table: table(m), ttlDays: 0 }) : oldServerTableSql('bench', table(m));
      await sql(server, ddl);
    }
    const { config } = loadConfig({ etcDir: os.tmpdir() + '/oomtrail-bench-no-etc', env: {} });
    const base = { ...config.sinks.clickhouse, enabled: true, url: server.url, password: server.password, create_schema: false, database: 'bench' };
    const sinks: Partial<Record<Mode, Sink>> = {
      sink: createClickHouseSink({ ...base, table: table('sink') }, { logger: silentLogger() }),
      'sink-raw': createClickHouseSink({ ...base, table: table('sink-raw'), compression: false }, { logger: silentLogger() }),
    };
    const plain = (compression: false | 1 | 6): ClickHouseClient =>
      createClient({
        url: server.url,
        password: server.password,
        database: 'bench',
        compression: { request: compression === false ? false : compression === 6 ? true : { codec: 'gzip', level: 1 } },
      });
    const clients: Partial<Record<Mode, ClickHouseClient>> = { 'plain-gzip6': plain(6), 'plain-gzip1': plain(1), 'plain-raw': plain(false) };

    const ms: Record<Mode, number> = { sink: 0, 'plain-gzip6': 0, 'plain-gzip1': 0, 'sink-raw': 0, 'plain-raw': 0 };
    const batches = Math.ceil(N / BATCH);
    const insert = async (m: Mode, recs: OomRecord[], rowsForPlain: Record<string, unknown>[]): Promise<number> => {
      const t0 = performance.now();
      if (m === 'sink' || m === 'sink-raw') {
        const r = await sinks[m]!.write(recs);
        if (r.status !== 'delivered') throw new Error(`${m}: ${JSON.stringify(r)}`);
      } else {
        await clients[m]!.insert({ table: table(m), values: rowsForPlain, format: 'JSONEachRow' });
      }
      return performance.now() - t0;
    };
    // warm-up: connections, JIT (not counted; those rows are removed again)
    {
      const w = syntheticRecords(Math.min(BATCH, 1000), 999_999, now);
      const wr = w.map(plainRow);
      for (const m of MODES) await insert(m, w, wr);
      for (const m of MODES) await sql(server, `TRUNCATE TABLE bench.${table(m)}`);
    }
    const t0 = performance.now();
    for (let i = 0; i < batches; i++) {
      const recs = syntheticRecords(Math.min(BATCH, N - i * BATCH), 1000 + i, now);
      const plainRows = recs.map(plainRow);
      const order = [...MODES.slice(i % MODES.length), ...MODES.slice(0, i % MODES.length)];
      for (const m of order) ms[m] += await insert(m, recs, plainRows);
      if ((i + 1) % Math.max(1, Math.floor(batches / 10)) === 0) process.stderr.write(`  ${i + 1}/${batches} batches\n`);
    }
    const wall = performance.now() - t0;
    for (const m of MODES) {
      const got = (await rows<{ n: number }>(server, `SELECT count() AS n FROM bench.${table(m)}`))[0]!.n;
      if (got !== N) throw new Error(`${m}: ${got} rows in bench.${table(m)}, expected ${N}`);
    }
    const rate = (m: Mode) => N / (ms[m] / 1000);
    const line = (m: Mode) => `${m.padEnd(12)} ${(ms[m] / 1000).toFixed(2).padStart(8)} s  ${Math.round(rate(m)).toLocaleString('en-US').padStart(10)} records/s`;
    console.log(`ClickHouse sink benchmark: ${N.toLocaleString('en-US')} records, batches of ${BATCH}, server ${server.kind} ${version}, node ${process.version}`);
    for (const m of MODES) console.log(line(m));
    console.log(`ratio sink / plain-gzip6 = ${(rate('sink') / rate('plain-gzip6')).toFixed(3)}   (the sink's default vs a plain client with compression on)`);
    console.log(`ratio sink / plain-gzip1 = ${(rate('sink') / rate('plain-gzip1')).toFixed(3)}   (same gzip level: the sink's own overhead)`);
    console.log(`ratio sink-raw / plain-raw = ${(rate('sink-raw') / rate('plain-raw')).toFixed(3)}   (no compression)`);
    console.log(`all rows present in every table; wall ${(wall / 1000).toFixed(1)} s incl. generating records`);
    for (const s of Object.values(sinks)) await s!.close();
    for (const c of Object.values(clients)) await c!.close();
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
