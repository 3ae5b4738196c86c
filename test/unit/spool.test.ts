import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import type { Logger } from '../../src/observe/logger';
import { deriveEventId, SCHEMA_VERSION, type OomRecord } from '../../src/record/record';
import { Spool, SpoolError, SpoolFullError, tableCrc32, type FsyncPolicy } from '../../src/pipeline/spool';
import * as zlib from 'node:zlib';

function makeRecord(i: number): OomRecord {
  return {
    schema_version: SCHEMA_VERSION,
    event_id: deriveEventId('boot-1', BigInt(i) * 1_000_000_007n, 1000 + i),
    time: `2024-05-01T12:00:00.${String(i).padStart(9, '0')}Z`,
    host: 'node-a',
    boot_id: 'boot-1',
    kernel_release: '6.8.0',
    hook: 'fentry',
    victim_pid: 1000 + i,
    victim_tid: 1000 + i,
    victim_comm: `stress "ñ\\ ${i}`,
    victim_uid: null,
    victim_total_vm_kb: 1 << 20,
    victim_anon_rss_kb: 123456,
    victim_file_rss_kb: 0,
    victim_shmem_rss_kb: null,
    victim_pgtables_kb: 12,
    victim_oom_score_adj: -999,
    trigger_pid: 42,
    trigger_comm: 'java',
    constraint: 'memcg',
    constraint_inferred: false,
    oom_cgroup: '/kubepods/burstable/pod1',
    victim_cgroup: '/kubepods/burstable/pod1/ctr',
    cgroup_version: 2,
    memcg_limit_bytes: 9007199254740991,
    memcg_usage_bytes: 0.5,
    domain_pages: 262144,
    gfp_mask: 'GFP_KERNEL',
    order: 0,
    container_id: 'abc',
    container_runtime: 'containerd',
    pod_uid: 'uid-1',
    k8s_qos: 'burstable',
    agent_version: '0.1.0',
  };
}

interface Captured {
  level: string;
  msg: string;
  meta: Record<string, unknown>;
}

/** A logger that records calls, so tests can assert on warnings. */
function captureLogger(): { logger: Logger; logs: Captured[] } {
  const logs: Captured[] = [];
  const at = (level: string) => (msg: string, meta: Record<string, unknown> = {}) => {
    logs.push({ level, msg, meta });
  };
  const logger = {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    log: (level: string, msg: string, meta?: Record<string, unknown>) => at(level)(msg, meta),
  } as unknown as Logger;
  return { logger, logs };
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-spool-'));
}

async function openSpool(dir: string, extra: { fsync?: FsyncPolicy; maxBytes?: number; segmentBytes?: number; logger?: Logger } = {}) {
  return Spool.open({ dir, fsync: extra.fsync ?? 'never', maxBytes: extra.maxBytes ?? 0, segmentBytes: extra.segmentBytes, logger: extra.logger ?? captureLogger().logger });
}

async function all(spool: Spool) {
  const out = [];
  for await (const r of spool.pending(3)) out.push(r);
  return out;
}

function segments(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.seg')).sort();
}

test('crc32 fallback matches zlib', () => {
  const data = Buffer.from('The quick brown fox jumps over the lazy dog');
  assert.equal(tableCrc32(data), 0x414fa339);
  if (typeof zlib.crc32 === 'function') assert.equal(tableCrc32(data), zlib.crc32(data));
});

test('append, read, ack, reopen: records come back exactly and in order', async () => {
  const dir = tmpDir();
  const s = await openSpool(dir, { fsync: 'always' });
  const recs = Array.from({ length: 10 }, (_, i) => makeRecord(i));
  assert.deepEqual(await s.append(recs.slice(0, 4)), [1, 2, 3, 4]);
  for (const r of recs.slice(4)) await s.append([r]);
  assert.equal(s.count, 10);
  const first = await s.readPending(0, 4);
  assert.deepEqual(first.map((r) => r.seq), [1, 2, 3, 4]);
  assert.deepEqual(first.map((r) => r.record), recs.slice(0, 4));
  assert.equal(first[0].bytes, Buffer.byteLength(JSON.stringify(recs[0])));
  await s.ack([1, 2, 3, 4, 7]);
  assert.equal(s.count, 5);
  await s.close();
  await assert.rejects(s.append([recs[0]]), (e: unknown) => e instanceof SpoolError && e.code === 'SPOOL_CLOSED');

  const s2 = await openSpool(dir);
  assert.equal(s2.count, 5);
  const again = await all(s2);
  assert.deepEqual(again.map((r) => r.seq), [5, 6, 8, 9, 10]);
  assert.deepEqual(again.map((r) => r.record), [recs[4], recs[5], recs[7], recs[8], recs[9]]);
  assert.deepEqual(JSON.parse(JSON.stringify(again[0].record)), recs[4], 'event_id and every field survive');
  assert.deepEqual(await s2.append([makeRecord(11)]), [11], 'sequence numbers keep increasing across restarts');
  await s2.close();
});

test('fully acked segments are deleted and seqs stay monotonic after the spool empties', async () => {
  const dir = tmpDir();
  const s = await openSpool(dir, { segmentBytes: 2048 });
  const seqs: number[] = [];
  for (let i = 0; i < 12; i++) seqs.push(...(await s.append([makeRecord(i)])));
  const segs = s.segmentCount;
  assert.ok(segs >= 3, `expected several segments, got ${segs}`);
  assert.equal(segments(dir).length, segs);
  await s.ack(seqs.slice(0, 6));
  assert.ok(s.segmentCount < segs);
  assert.deepEqual((await all(s)).map((r) => r.seq), seqs.slice(6));
  await s.ack(seqs.slice(6));
  assert.equal(s.count, 0);
  assert.equal(s.bytes, 0);
  assert.deepEqual(segments(dir), []);
  await s.close();
  const s2 = await openSpool(dir);
  assert.deepEqual(await s2.append([makeRecord(99)]), [13]);
  await s2.close();
});

test('readPending honours max records, max bytes and continues across segments', async () => {
  const dir = tmpDir();
  const s = await openSpool(dir, { segmentBytes: 3000 });
  for (let i = 0; i < 9; i++) await s.append([makeRecord(i)]);
  const size = Buffer.byteLength(JSON.stringify(makeRecord(0)));
  assert.equal((await s.readPending(0, 100, size * 2 + 1)).length, 2);
  assert.equal((await s.readPending(0, 100, 1)).length, 1, 'always at least one record');
  const seen: number[] = [];
  for (let after = 0; ; ) {
    const chunk = await s.readPending(after, 2);
    if (chunk.length === 0) break;
    assert.ok(chunk.length <= 2);
    seen.push(...chunk.map((r) => r.seq));
    after = chunk[chunk.length - 1].seq;
  }
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  await s.close();
});

test('a garbage tail is detected, logged once with file and offset, and truncated', async () => {
  const dir = tmpDir();
  const s = await openSpool(dir);
  await s.append([makeRecord(1), makeRecord(2), makeRecord(3)]);
  await s.close();
  const [seg] = segments(dir);
  const file = path.join(dir, seg);
  const goodSize = fs.statSync(file).size;
  fs.appendFileSync(file, Buffer.from([0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]));

  const { logger, logs } = captureLogger();
  const s2 = await openSpool(dir, { logger });
  const warns = logs.filter((l) => l.level === 'warn');
  assert.equal(warns.length, 1);
  assert.equal(warns[0].meta.file, file);
  assert.equal(warns[0].meta.offset, goodSize);
  assert.equal(fs.statSync(file).size, goodSize);
  assert.deepEqual((await all(s2)).map((r) => r.record), [makeRecord(1), makeRecord(2), makeRecord(3)]);
  assert.deepEqual(await s2.append([makeRecord(4)]), [4]);
  await s2.close();

  const again = captureLogger();
  const s3 = await openSpool(dir, { logger: again.logger });
  assert.equal(again.logs.filter((l) => l.level === 'warn').length, 0);
  assert.equal(s3.count, 4);
  await s3.close();
});

test('a torn last record (truncated mid-write) and a bad checksum are skipped, never a crash', async () => {
  const dir = tmpDir();
  const s = await openSpool(dir);
  await s.append([makeRecord(1), makeRecord(2)]);
  await s.append([makeRecord(3)]);
  await s.close();
  const file = path.join(dir, segments(dir)[0]);
  const full = fs.statSync(file).size;
  fs.truncateSync(file, full - 7);
  const torn = captureLogger();
  const s2 = await openSpool(dir, { logger: torn.logger });
  assert.equal(s2.count, 2);
  assert.match(String(torn.logs[0].meta.reason), /torn/);
  await s2.close();

  // Flip one payload byte of the last record.
  const buf = fs.readFileSync(file);
  buf[buf.length - 3] ^= 0xff;
  fs.writeFileSync(file, buf);
  const bad = captureLogger();
  const s3 = await openSpool(dir, { logger: bad.logger });
  assert.equal(s3.count, 1);
  assert.match(String(bad.logs[0].meta.reason), /crc/);
  assert.deepEqual((await all(s3)).map((r) => r.record), [makeRecord(1)]);
  await s3.close();
});

test('an unreadable ack state means redelivery, never loss', async () => {
  const dir = tmpDir();
  const s = await openSpool(dir);
  await s.append([makeRecord(1), makeRecord(2), makeRecord(3)]);
  await s.ack([1]);
  await s.close();
  fs.writeFileSync(path.join(dir, 'ack.state'), 'garbage');
  const { logger, logs } = captureLogger();
  const s2 = await openSpool(dir, { logger });
  assert.equal(logs.filter((l) => l.level === 'warn').length, 1);
  assert.deepEqual((await all(s2)).map((r) => r.seq), [1, 2, 3]);
  await s2.close();
});

test('spool full: append rejects with SpoolFullError and nothing already spooled is evicted', async () => {
  const dir = tmpDir();
  const size = Buffer.byteLength(JSON.stringify(makeRecord(1))) + 16;
  const s = await openSpool(dir, { maxBytes: size * 3 });
  await s.append([makeRecord(1), makeRecord(2)]);
  await assert.rejects(s.append([makeRecord(3), makeRecord(4)]), (e: unknown) => {
    return e instanceof SpoolFullError && e instanceof SpoolError && e.code === 'SPOOL_FULL' && e.retriable;
  });
  assert.deepEqual(await s.append([makeRecord(3)]), [3], 'a failed append consumes no sequence numbers');
  await assert.rejects(s.append([makeRecord(4)]), SpoolFullError);
  await s.ack([1, 2, 3]);
  assert.deepEqual(await s.append([makeRecord(4)]), [4], 'room again once acked segments are deleted');
  await s.close();
});

test('fsync=batch: concurrent appends share fsyncs and all resolve with distinct seqs', async () => {
  const dir = tmpDir();
  const s = await openSpool(dir, { fsync: 'batch' });
  const res = await Promise.all(Array.from({ length: 50 }, (_, i) => s.append([makeRecord(i)])));
  assert.deepEqual(res.flat().sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 1));
  assert.equal(s.count, 50);
  await s.close();
});

test('SIGKILL at an arbitrary point loses nothing appended (acked records may reappear)', async () => {
  const dir = tmpDir();
  const spoolJs = path.resolve(__dirname, '../../src/pipeline/spool.js');
  const loggerJs = path.resolve(__dirname, '../../src/observe/logger.js');
  const child = `
    const { Spool } = require(${JSON.stringify(spoolJs)});
    const { silentLogger } = require(${JSON.stringify(loggerJs)});
    (async () => {
      const s = await Spool.open({ dir: ${JSON.stringify(dir)}, fsync: 'never', maxBytes: 0, segmentBytes: 4096, logger: silentLogger() });
      const rec = ${JSON.stringify(makeRecord(0))};
      for (let i = 0; ; i++) {
        const [seq] = await s.append([{ ...rec, victim_pid: i, event_id: 'e' + i }]);
        process.stdout.write('a ' + seq + '\\n');
        // Report the ack before making it: an ack cut short by the kill may or may not have landed.
        if (i % 5 === 4) { process.stdout.write('k ' + (seq - 3) + ' ' + (seq - 1) + '\\n'); await s.ack([seq - 3, seq - 1]); }
      }
    })();
  `;
  const proc = spawn(process.execPath, ['-e', child], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  await new Promise<void>((resolve) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.length > 3000 && !proc.killed) {
        proc.kill('SIGKILL');
      }
    });
    proc.on('exit', () => resolve());
  });
  const appended = new Set<number>();
  const acked = new Set<number>();
  for (const line of out.split('\n')) {
    const [kind, ...nums] = line.split(' ');
    if (kind === 'a' && nums.length === 1) appended.add(Number(nums[0]));
    if (kind === 'k' && nums.length === 2) nums.forEach((n) => acked.add(Number(n)));
  }
  assert.ok(appended.size > 50, `child appended ${appended.size}`);
  const s = await openSpool(dir);
  const pending = await all(s);
  const bySeq = new Map(pending.map((r) => [r.seq, r.record]));
  for (const seq of appended) {
    if (acked.has(seq)) continue;
    const rec = bySeq.get(seq);
    assert.ok(rec, `seq ${seq} was appended and not acked but is missing after SIGKILL`);
    assert.equal(rec.event_id, `e${rec.victim_pid}`);
  }
  const seqs = pending.map((r) => r.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  await s.close();
});
