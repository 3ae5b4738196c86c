import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { silentLogger } from '../../src/observe/logger';
import { MetricsRegistry, PipelineMetrics } from '../../src/observe/metrics';
import { deriveEventId, type OomRecord } from '../../src/record/record';
import type { HealthStatus, Sink, WriteResult } from '../../src/sinks/sink';
import { Lane, type LaneOptions } from '../../src/pipeline/lane';
import { Router } from '../../src/pipeline/router';
import { baseRecord } from '../helpers/records';

function makeRecord(i: number): OomRecord {
  return baseRecord({
    event_id: deriveEventId('boot-1', BigInt(i), 1000 + i),
    time: '2024-05-01T12:00:00.000000001Z',
    host: 'node-a',
    boot_id: 'boot-1',
    kernel_release: '6.8.0',
    hook: 'kprobe',
    victim_pid: 1000 + i,
    victim_tid: 1000 + i,
    victim_comm: 'stress',
    victim_total_vm_kb: 1,
    victim_anon_rss_kb: 2,
    victim_file_rss_kb: 3,
    victim_shmem_rss_kb: 4,
    victim_pgtables_kb: 5,
    trigger_pid: 1,
    trigger_comm: 'x',
    constraint: 'global',
    oom_cgroup: '/',
    victim_cgroup: '/user.slice',
    cgroup_version: 2,
    memcg_limit_bytes: null,
    memcg_usage_bytes: null,
  });
}

type Script = (batch: readonly OomRecord[], call: number) => WriteResult | Promise<WriteResult>;

/** Test double for a Sink: answers from a script and records every batch it was given. */
class ScriptedTestSink implements Sink {
  readonly calls: { batch: readonly OomRecord[]; json: string; at: number }[] = [];
  closed = false;
  constructor(
    readonly name: string,
    public script: Script = () => ({ status: 'delivered' }),
  ) {}
  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    this.calls.push({ batch, json: JSON.stringify(batch), at: Date.now() });
    return this.script(batch, this.calls.length);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {
    this.closed = true;
  }
  async healthcheck(): Promise<HealthStatus> {
    return { healthy: true };
  }
  delivered(): string[] {
    return this.calls.flatMap((c) => c.batch.map((r) => r.event_id));
  }
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-lane-'));
}

function laneOpts(sink: Sink, spoolDir: string, over: Partial<LaneOptions> = {}): LaneOptions {
  return {
    sink,
    spoolDir,
    fsync: 'never',
    maxSpoolBytes: 0,
    batch: { maxEvents: 5, maxBytes: 1 << 20, maxAgeMs: 20 },
    retry: { initialMs: 1, maxMs: 5 },
    logger: silentLogger(),
    ...over,
  };
}

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, 2));
  }
}

test('delivered: batches are written, acked and removed from the spool', async () => {
  const dir = tmpDir();
  const sink = new ScriptedTestSink('primary');
  const metrics = new PipelineMetrics(new MetricsRegistry());
  // max age 500 ms, not 20: the 7 accepts must land before the first batch's age runs out, else a loaded machine
  // batches [3, 4] (seen once under load)
  const lane = new Lane(laneOpts(sink, dir, { metrics, batch: { maxEvents: 5, maxBytes: 1 << 20, maxAgeMs: 500 } }));
  await lane.open();
  for (let i = 0; i < 7; i++) assert.equal(await lane.accept(makeRecord(i)), 'spooled');
  await until(() => lane.delivered === 7, 5000);
  assert.deepEqual(sink.calls.map((c) => c.batch.length), [5, 2], 'max events, then max age');
  assert.deepEqual(sink.delivered(), Array.from({ length: 7 }, (_, i) => makeRecord(i).event_id));
  await until(() => lane.spoolRecords === 0);
  assert.equal(lane.spoolBytes, 0);
  assert.ok(lane.lastSuccessMs !== null);
  assert.equal(lane.failingSinceMs, null);
  assert.equal(metrics.sinkDelivered.get({ sink: 'primary' }), 7);
  assert.equal(metrics.spoolRecords.get({ sink: 'primary' }), 0);
  assert.ok(metrics.sinkLastSuccess.get({ sink: 'primary' }) > 1.7e9);
  await lane.close();
  assert.equal(sink.closed, true);
});

test('retryable: the identical batch is retried after backoff (honouring afterMs); never a drop', async () => {
  const dir = tmpDir();
  const sink = new ScriptedTestSink('flaky', (_b, call) =>
    call === 1 ? { status: 'retryable', reason: 'http 503' } : call === 2 ? { status: 'retryable', reason: 'http 429', afterMs: 60 } : { status: 'delivered' },
  );
  const metrics = new PipelineMetrics(new MetricsRegistry());
  const lane = new Lane(laneOpts(sink, dir, { metrics, batch: { maxEvents: 3, maxBytes: 1 << 20, maxAgeMs: 1000 } }));
  await lane.open();
  for (let i = 0; i < 3; i++) await lane.accept(makeRecord(i));
  await until(() => sink.calls.length >= 1);
  await until(() => lane.failingSinceMs !== null);
  await until(() => lane.delivered === 3);
  assert.equal(sink.calls.length, 3);
  assert.equal(sink.calls[1].batch, sink.calls[0].batch, 'same batch object');
  assert.equal(sink.calls[2].json, sink.calls[0].json, 'same bytes');
  assert.ok(sink.calls[2].at - sink.calls[1].at >= 55, `retry-after honoured (${sink.calls[2].at - sink.calls[1].at} ms)`);
  assert.equal(lane.retried, 2);
  assert.equal(metrics.sinkRetried.get({ sink: 'flaky' }), 2);
  assert.deepEqual(lane.dropped(), {});
  assert.equal(lane.failingSinceMs, null, 'streak ends on success');
  await lane.close();
});

test('rejected: records go to the dead-letter file with the reason, then are acked', async () => {
  const dir = tmpDir();
  const sink = new ScriptedTestSink('strict', () => ({ status: 'rejected', reason: 'Code: 53 type mismatch' }));
  const metrics = new PipelineMetrics(new MetricsRegistry());
  const lane = new Lane(laneOpts(sink, dir, { metrics, fsync: 'always', batch: { maxEvents: 2, maxBytes: 1 << 20, maxAgeMs: 1000 } }));
  await lane.open();
  await lane.accept(makeRecord(1));
  await lane.accept(makeRecord(2));
  await until(() => lane.rejected === 2);
  await until(() => lane.spoolRecords === 0);
  assert.equal(lane.deadLetterPath, path.join(dir, 'strict.dead-letter.jsonl'));
  const lines = fs.readFileSync(lane.deadLetterPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 2);
  for (const [i, line] of lines.entries()) {
    assert.deepEqual(Object.keys(line), ['reason', 'sink', 'time', 'record']);
    assert.equal(line.reason, 'Code: 53 type mismatch');
    assert.equal(line.sink, 'strict');
    assert.ok(!Number.isNaN(Date.parse(line.time)));
    assert.deepEqual(line.record, makeRecord(i + 1));
  }
  assert.equal(sink.calls.length, 1, 'a rejected batch is never retried');
  assert.equal(metrics.sinkRejected.get({ sink: 'strict' }), 2);
  assert.equal(lane.failingSinceMs, null, 'a rejection does not mark the sink as down');
  await lane.close();
});

test('the same rejection reason is one warning a minute (the rest debug, counted into the next); another reason warns', async () => {
  const dir = tmpDir();
  let reason = 'HTTP 403: forbidden';
  const sink = new ScriptedTestSink('strict2', () => ({ status: 'rejected', reason }));
  const lines: Array<[string, string, Record<string, unknown>]> = [];
  const logger = silentLogger();
  for (const level of ['warn', 'debug'] as const) (logger as unknown as Record<string, unknown>)[level] = (m: string, f: Record<string, unknown>) => lines.push([level, m, f]);
  const lane = new Lane(laneOpts(sink, dir, { logger, batch: { maxEvents: 1, maxBytes: 1 << 20, maxAgeMs: 1 } }));
  await lane.open();
  for (let i = 1; i <= 3; i++) {
    await lane.accept(makeRecord(i));
    await until(() => lane.rejected === i);
  }
  reason = 'HTTP 422: invalid';
  await lane.accept(makeRecord(4));
  await until(() => lane.rejected === 4);
  const rejections = lines.filter(([, m]) => m.startsWith('lane: sink rejected batch'));
  assert.deepEqual(rejections.map(([level, , f]) => `${level} ${f.reason}`), ['warn HTTP 403: forbidden', 'debug HTTP 403: forbidden', 'debug HTTP 403: forbidden', 'warn HTTP 422: invalid']);
  assert.equal(fs.readFileSync(lane.deadLetterPath, 'utf8').trim().split('\n').length, 4, 'every record dead-lettered');
  await lane.close();
});

test('partial success: delivered with rejectedRecords dead-letters exactly those, each with its reason, never resends', async () => {
  const dir = tmpDir();
  const sink = new ScriptedTestSink('partial', (batch, call) =>
    call === 1
      ? { status: 'retryable', reason: 'http 503' }
      : {
          status: 'delivered',
          rejectedRecords: [
            { record: batch[1]!, reason: 'Loki HTTP 400: timestamp too old' },
            { record: batch[3]!, reason: 'Loki HTTP 400: line too long' },
          ],
        },
  );
  const metrics = new PipelineMetrics(new MetricsRegistry());
  const lane = new Lane(laneOpts(sink, dir, { metrics, fsync: 'always', batch: { maxEvents: 4, maxBytes: 1 << 20, maxAgeMs: 1000 } }));
  await lane.open();
  for (let i = 0; i < 4; i++) await lane.accept(makeRecord(i));
  await until(() => lane.delivered + lane.rejected === 4);
  await until(() => lane.spoolRecords === 0);
  assert.equal(lane.delivered, 2);
  assert.equal(lane.rejected, 2);
  assert.equal(sink.calls.length, 2, 'retried once after the 503, never after the partial success');
  const lines = fs.readFileSync(lane.deadLetterPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => [l.record.event_id, l.reason]),
    [
      [makeRecord(1).event_id, 'Loki HTTP 400: timestamp too old'],
      [makeRecord(3).event_id, 'Loki HTTP 400: line too long'],
    ],
  );
  assert.equal(metrics.sinkDelivered.get({ sink: 'partial' }), 2);
  assert.equal(metrics.sinkRejected.get({ sink: 'partial' }), 2);
  assert.equal(lane.failingSinceMs, null);
  await lane.close();
});

test('replay: what a lane could not deliver is delivered by the next lane on the same spool', async () => {
  const dir = tmpDir();
  const down = new ScriptedTestSink('ch', () => ({ status: 'retryable', reason: 'ECONNREFUSED' }));
  const lane1 = new Lane(laneOpts(down, dir));
  await lane1.open();
  for (let i = 0; i < 7; i++) await lane1.accept(makeRecord(i));
  const t0 = Date.now();
  const left = await lane1.drain(80);
  assert.ok(Date.now() - t0 < 500, 'drain respects its deadline');
  assert.equal(left, 7);
  assert.ok(lane1.failingSinceMs !== null && lane1.failingSinceMs >= 0);
  await lane1.close();
  assert.equal(await lane1.accept(makeRecord(99)), 'dropped');
  assert.deepEqual(lane1.dropped(), { lane_closed: 1 });

  const up = new ScriptedTestSink('ch');
  const lane2 = new Lane(laneOpts(up, dir));
  await lane2.open();
  await until(() => lane2.delivered === 7);
  assert.deepEqual(
    up.calls.flatMap((c) => c.batch),
    Array.from({ length: 7 }, (_, i) => makeRecord(i)),
    'records replayed exactly, in order',
  );
  assert.equal(await lane2.drain(1000), 0);
  await lane2.close();
});

test('bounded memory: while the sink is down the lane reads at most one batch from disk at a time', async () => {
  const dir = tmpDir();
  let up = false;
  const sink = new ScriptedTestSink('loki', () => (up ? { status: 'delivered' } : { status: 'retryable', reason: 'down' }));
  const opts = laneOpts(sink, dir, { batch: { maxEvents: 5, maxBytes: 1 << 20, maxAgeMs: 5 } });
  const lane = new Lane(opts);
  await lane.open();
  for (let i = 0; i < 60; i++) {
    await lane.accept(makeRecord(i));
    if (i % 7 === 0) await new Promise((r) => setTimeout(r, 3)); // let age-closed batches form
  }
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(lane.spoolRecords, 60);
  assert.ok(lane.memory.bufferedHighWater <= 10, `high water ${lane.memory.bufferedHighWater} (one open + one in-flight batch)`);
  await lane.drain(0);
  await lane.close();

  // Restart with a backlog of 60 on disk and the sink still down: replay reads batch-sized chunks only.
  const lane2 = new Lane({ ...opts, sink });
  await lane2.open();
  await new Promise((r) => setTimeout(r, 30));
  const mem = lane2.memory;
  if (process.env.OOMTRAIL_TEST_VERBOSE) console.log('lane memory while sink down', mem, 'calls', sink.calls.length);
  assert.equal(lane2.spoolRecords, 60);
  assert.equal(mem.largestRead, 5, 'one batch per read');
  assert.ok(mem.bufferedHighWater <= 10, `high water ${mem.bufferedHighWater}`);
  const before = sink.calls.length;
  assert.ok(lane2.retried > 0);
  assert.equal(sink.calls[before - 1].json, sink.calls[before - 2].json, 'the failing batch is retried unchanged');
  up = true;
  await until(() => lane2.delivered === 60);
  const delivered = sink.calls.slice(before).flatMap((c) => c.batch.map((r) => r.event_id));
  assert.deepEqual(delivered, Array.from({ length: 60 }, (_, i) => makeRecord(i).event_id), 'each record once, in order');
  assert.ok(lane2.memory.largestRead <= 5);
  await lane2.close();
});

test('spool full: accept reports a drop counted as spool_full, earlier records are kept', async () => {
  const dir = tmpDir();
  const metrics = new PipelineMetrics(new MetricsRegistry());
  const sink = new ScriptedTestSink('kafka', () => ({ status: 'retryable', reason: 'broker down' }));
  const frame = Buffer.byteLength(JSON.stringify(makeRecord(1))) + 16;
  const lane = new Lane(laneOpts(sink, dir, { metrics, maxSpoolBytes: frame * 2 }));
  await lane.open();
  assert.equal(await lane.accept(makeRecord(1)), 'spooled');
  assert.equal(await lane.accept(makeRecord(2)), 'spooled');
  assert.equal(await lane.accept(makeRecord(3)), 'dropped');
  assert.deepEqual(lane.dropped(), { spool_full: 1 });
  assert.equal(metrics.dropped.get({ stage: 'spool', reason: 'spool_full' }), 1);
  assert.equal(lane.spoolRecords, 2);
  await lane.drain(10);
  await lane.close();
});

test('router: a hung sink never stalls another; health reports the failing sink', async () => {
  const dir = tmpDir();
  const hung = new ScriptedTestSink('hung', () => new Promise<WriteResult>(() => undefined));
  const down = new ScriptedTestSink('down', () => ({ status: 'retryable', reason: 'http 502' }));
  const ok = new ScriptedTestSink('ok');
  let now = 1_000_000;
  const clock = { now: () => now };
  const lanes = [hung, down, ok].map((s) => new Lane(laneOpts(s, dir, { ...clock, closeGraceMs: 20 })));
  const router = new Router(lanes, silentLogger());
  await router.open();
  for (let i = 0; i < 12; i++) assert.deepEqual(await router.route(makeRecord(i)), ['spooled', 'spooled', 'spooled']);
  await until(() => lanes[2].delivered === 12);
  await until(() => down.calls.length > 0);
  assert.deepEqual(router.health(60_000), { healthy: true });
  now += 61_000;
  const h = router.health(60_000);
  assert.equal(h.healthy, false);
  assert.match(h.reason ?? '', /sink down failing for 61s: http 502/);
  const left = await router.drain(30);
  assert.deepEqual(left, { hung: 12, down: 12, ok: 0 });
  await router.close();
});

test('close(graceMs): a write that never returns is waited for at most graceMs; its records stay spooled', async () => {
  const dir = tmpDir();
  const hung = new ScriptedTestSink('hung', () => new Promise<WriteResult>(() => undefined));
  const lane = new Lane(laneOpts(hung, dir, { closeGraceMs: 10_000 }));
  await lane.open();
  for (let i = 0; i < 3; i++) assert.equal(await lane.accept(makeRecord(i)), 'spooled');
  await until(() => hung.calls.length > 0);
  assert.equal(await lane.drain(20), 3);
  const t0 = Date.now();
  await lane.close(50);
  const ms = Date.now() - t0;
  assert.ok(ms < 1_000, `close waited ${ms} ms despite graceMs 50 (closeGraceMs 10000)`);
  assert.equal(hung.closed, true);

  const again = new Lane(laneOpts(new ScriptedTestSink('hung'), dir));
  await again.open();
  assert.equal(again.spoolRecords, 3, 'the abandoned batch is still spooled');
  await again.close();
});

test('a Retry-After beyond ~24.8 days does not spin: the lane waits instead of retrying every millisecond', async () => {
  const dir = tmpDir();
  const thirtyDays = 30 * 24 * 3600 * 1000;
  const sink = new ScriptedTestSink('far', () => ({ status: 'retryable', reason: 'HTTP 429', afterMs: thirtyDays }));
  const lane = new Lane(laneOpts(sink, dir));
  await lane.open();
  await lane.accept(makeRecord(1));
  await until(() => sink.calls.length >= 1);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(sink.calls.length, 1, `one attempt, then a long wait (got ${sink.calls.length} attempts in 300 ms)`);
  await lane.close(50);
});
