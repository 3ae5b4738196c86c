/*
 * JSONEachRow vs RowBinary for the production schema, on the current engine (chdb 26.9): is RowBinary worth a
 * hand-written encoder? Measures, for the same rows, the JS encode time and the server's insert time of each body
 * (uncompressed, pre-encoded, one request per batch), and checks both tables hold identical rows.
 *
 *   npx tsc -p . && node dist/bench/clickhouse-rowbinary.js [records=100000] [batch=10000]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTableSql } from '../src/sinks/clickhouse/schema';
import { encodeBatch, wellFormed } from '../src/sinks/clickhouse/encoder';
import type { OomRecord } from '../src/record/record';
import { sql, startChdb } from '../test/servers/clickhouse/servers';
import { syntheticRecords } from '../test/servers/clickhouse/records';

const N = Number(process.argv[2] ?? 100_000);
const BATCH = Number(process.argv[3] ?? 10_000);

/** RowBinary for the production column order (a bench-only encoder: no schema evolution, no validation). */
class RowBinaryWriter {
  buf = Buffer.allocUnsafe(1 << 20);
  off = 0;
  private need(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n));
    this.buf.copy(b, 0, 0, this.off);
    this.buf = b;
  }
  u8(v: number): void {
    this.need(1);
    this.buf[this.off++] = v;
  }
  u16(v: number): void {
    this.need(2);
    this.off = this.buf.writeUInt16LE(v, this.off);
  }
  u32(v: number): void {
    this.need(4);
    this.off = this.buf.writeUInt32LE(v, this.off);
  }
  i16(v: number): void {
    this.need(2);
    this.off = this.buf.writeInt16LE(v, this.off);
  }
  u64(v: number): void {
    this.need(8);
    this.off = this.buf.writeUInt32LE(v % 4294967296, this.off);
    this.off = this.buf.writeUInt32LE(Math.floor(v / 4294967296), this.off);
  }
  i64big(v: bigint): void {
    this.need(8);
    this.off = this.buf.writeBigInt64LE(v, this.off);
  }
  str(s: string): void {
    const max = s.length * 3;
    this.need(max + 5);
    // length prefix (LEB128) then the bytes: write the bytes after a 5-byte gap, then move if the prefix is shorter
    const start = this.off + 5;
    const n = this.buf.write(s, start, 'utf8');
    let len = n;
    let p = this.off;
    do {
      let byte = len & 0x7f;
      len >>>= 7;
      if (len) byte |= 0x80;
      this.buf[p++] = byte;
    } while (len);
    if (p !== start) this.buf.copy(this.buf, p, start, start + n);
    this.off = p + n;
  }
  nullable<T>(v: T | null, write: (x: T) => void): void {
    if (v === null) this.u8(1);
    else {
      this.u8(0);
      write(v);
    }
  }
}

function timeNs(t: string): bigint {
  const secs = Date.parse(t.slice(0, 19) + 'Z') / 1000;
  const frac = (/\.(\d+)Z$/.exec(t)?.[1] ?? '').padEnd(9, '0').slice(0, 9);
  return BigInt(secs) * 1_000_000_000n + BigInt(frac);
}

function encodeRowBinary(records: readonly OomRecord[]): Buffer {
  const w = new RowBinaryWriter();
  const u32 = (x: number) => w.u32(x);
  const u64 = (x: number) => w.u64(x);
  const str = (x: string) => w.str(x);
  for (const r of records) {
    w.i64big(timeNs(r.time));
    w.str(r.event_id);
    w.u16(r.schema_version);
    w.str(r.host);
    w.str(r.boot_id);
    w.str(r.kernel_release);
    w.str(r.hook);
    w.u32(r.victim_pid);
    w.u32(r.victim_tid);
    w.str(wellFormed(r.victim_comm));
    w.nullable(r.victim_uid, u32);
    w.nullable(r.victim_total_vm_kb, u64);
    w.nullable(r.victim_anon_rss_kb, u64);
    w.nullable(r.victim_file_rss_kb, u64);
    w.nullable(r.victim_shmem_rss_kb, u64);
    w.nullable(r.victim_pgtables_kb, u64);
    w.nullable(r.victim_oom_score_adj, (x) => w.i16(x));
    w.u32(r.trigger_pid);
    w.str(wellFormed(r.trigger_comm));
    w.str(r.constraint);
    w.u8(r.constraint_inferred ? 1 : 0);
    w.str(wellFormed(r.oom_cgroup));
    w.str(wellFormed(r.victim_cgroup));
    w.nullable(r.cgroup_version, (x) => w.u8(x));
    w.nullable(r.memcg_limit_bytes, u64);
    w.nullable(r.memcg_usage_bytes, u64);
    w.nullable(r.domain_pages, u64);
    w.nullable(r.gfp_mask, str);
    w.nullable(r.order, (x) => w.i16(x));
    w.str(r.container_id);
    w.str(r.container_runtime);
    w.str(r.pod_uid);
    w.str(r.k8s_qos);
    w.str(r.agent_version);
  }
  return w.buf.subarray(0, w.off);
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-bench-rb-'));
  const ch = await startChdb({ password: 'bench', dir });
  try {
    await sql(ch, 'CREATE DATABASE IF NOT EXISTS rb');
    for (const t of ['json', 'rowbinary']) await sql(ch, createTableSql({ database: 'rb', table: t, ttlDays: 0 }));
    const now = Date.now();
    const ms = { jsonEncode: 0, rbEncode: 0, jsonInsert: 0, rbInsert: 0, jsonBytes: 0, rbBytes: 0 };
    for (let i = 0; i * BATCH < N; i++) {
      const recs = syntheticRecords(Math.min(BATCH, N - i * BATCH), 5000 + i, now);
      let t = performance.now();
      const json = encodeBatch(recs);
      ms.jsonEncode += performance.now() - t;
      t = performance.now();
      const rb = encodeRowBinary(recs);
      ms.rbEncode += performance.now() - t;
      ms.jsonBytes += json.length;
      ms.rbBytes += rb.length;
      const first = i % 2 === 0;
      for (const which of first ? ['json', 'rb'] : ['rb', 'json']) {
        t = performance.now();
        if (which === 'json') await sql(ch, 'INSERT INTO rb.json FORMAT JSONEachRow', { data: json });
        else await sql(ch, 'INSERT INTO rb.rowbinary FORMAT RowBinary', { data: rb });
        if (which === 'json') ms.jsonInsert += performance.now() - t;
        else ms.rbInsert += performance.now() - t;
      }
    }
    const diff = (a: string, b: string) => `(SELECT count() FROM (SELECT * FROM rb.${a} EXCEPT SELECT * FROM rb.${b}))`;
    const same = (await sql(ch, `SELECT ${diff('json', 'rowbinary')} + ${diff('rowbinary', 'json')} = 0 AND (SELECT count() FROM rb.json) = ${N} AND (SELECT count() FROM rb.rowbinary) = ${N}`)).trim();
    const rate = (msv: number) => Math.round(N / (msv / 1000)).toLocaleString('en-US');
    console.log(`JSONEachRow vs RowBinary, ${N.toLocaleString('en-US')} records in batches of ${BATCH}, chdb ${(await sql(ch, 'SELECT version()')).trim()}`);
    console.log(`  encode (JS)     JSONEachRow ${rate(ms.jsonEncode)} records/s   RowBinary ${rate(ms.rbEncode)} records/s`);
    console.log(`  insert (server) JSONEachRow ${rate(ms.jsonInsert)} records/s   RowBinary ${rate(ms.rbInsert)} records/s`);
    console.log(`  end to end      JSONEachRow ${rate(ms.jsonEncode + ms.jsonInsert)} records/s   RowBinary ${rate(ms.rbEncode + ms.rbInsert)} records/s`);
    console.log(`  bytes/record    JSONEachRow ${Math.round(ms.jsonBytes / N)}   RowBinary ${Math.round(ms.rbBytes / N)}`);
    console.log(`  identical rows in both tables: ${same === '1' || same === 'true' ? 'yes' : 'NO'}`);
    if (same !== '1' && same !== 'true') {
      console.log(await sql(ch, 'SELECT * FROM (SELECT * FROM rb.json EXCEPT SELECT * FROM rb.rowbinary) ORDER BY event_id LIMIT 1 FORMAT Vertical'));
      console.log(await sql(ch, 'SELECT * FROM (SELECT * FROM rb.rowbinary EXCEPT SELECT * FROM rb.json) ORDER BY event_id LIMIT 1 FORMAT Vertical'));
      process.exitCode = 1;
    }
  } finally {
    await ch.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
