/*
 * A lane whose spool cannot be written: a real full filesystem (a small tmpfs filled to ENOSPC, so root only),
 * stand-in sinks (in memory) on the far side. What the spool cannot take is held in memory, bounded, delivered
 * from there, and spooled once space returns: in order, nothing twice.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../../src/observe/logger';
import { MetricsRegistry, PipelineMetrics } from '../../src/observe/metrics';
import { deriveEventId, type OomRecord } from '../../src/record/record';
import type { HealthStatus, Sink, WriteResult } from '../../src/sinks/sink';
import { Lane, type LaneOptions } from '../../src/pipeline/lane';
import { Spool } from '../../src/pipeline/spool';
import { baseRecord } from '../helpers/records';
import { SmallTmpfs } from '../helpers/tmpfs';

const root = process.getuid?.() === 0;
const skip = root ? false : 'needs root (mounts a small tmpfs)';
const mounts: SmallTmpfs[] = [];
after(() => {
  for (const m of mounts) m.unmount();
});

function fullDisk(): SmallTmpfs {
  const m = new SmallTmpfs(fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-hold-')), 256);
  m.mount();
  mounts.push(m);
  return m;
}

const rec = (i: number): OomRecord => baseRecord({ event_id: deriveEventId('boot-1', BigInt(i), 1000 + i), victim_pid: 1000 + i });

/** Stand-in sink: delivers while `up`, answers retryable otherwise; keeps every record it delivered. */
class SwitchableTestSink implements Sink {
  up = true;
  readonly got: string[] = [];
  constructor(readonly name: string) {}
  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    if (!this.up) return { status: 'retryable', reason: 'down' };
    this.got.push(...batch.map((r) => r.event_id));
    return { status: 'delivered' };
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
  async healthcheck(): Promise<HealthStatus> {
    return { healthy: true };
  }
}

function opts(sink: Sink, spoolDir: string, over: Partial<LaneOptions> = {}): LaneOptions {
  return {
    sink,
    spoolDir,
    fsync: 'always',
    maxSpoolBytes: 0,
    batch: { maxEvents: 5, maxBytes: 1 << 20, maxAgeMs: 5 },
    retry: { initialMs: 5, maxMs: 20 },
    logger: silentLogger(),
    ...over,
  };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function spooledIds(dir: string): Promise<string[]> {
  const spool = await Spool.open({ dir, fsync: 'never', maxBytes: 0, logger: silentLogger() });
  const ids: string[] = [];
  for await (const r of spool.pending()) ids.push(r.record.event_id);
  await spool.close();
  return ids;
}

test('spool on a full disk: records are held in memory and a working sink gets them at once, in order, counted', { skip }, async () => {
  const disk = fullDisk();
  const sink = new SwitchableTestSink('console');
  const metrics = new PipelineMetrics(new MetricsRegistry());
  const lane = new Lane(opts(sink, disk.dir, { metrics }));
  await lane.open();
  disk.fill();
  const ids = Array.from({ length: 12 }, (_, i) => rec(i).event_id);
  for (let i = 0; i < 12; i++) assert.equal(await lane.accept(rec(i)), 'held', `record ${i}`);
  assert.equal(metrics.sinkHeldTotal.get({ sink: 'console' }), 12);
  await until(() => sink.got.length === 12, 'delivery from memory');
  assert.deepEqual(sink.got, ids, 'every record once, in order, with the spool unwritable');
  await until(() => lane.heldRecords === 0, 'held records released');
  assert.equal(metrics.sinkHeld.get({ sink: 'console' }), 0);
  assert.deepEqual(lane.dropped(), {}, 'nothing dropped');
  assert.equal(await lane.drain(500), 0);
  assert.deepEqual(lane.undelivered(), { spooled: 0, memory: 0, memoryIds: [], dropped: {} });
  await lane.close(50);
});

test('full disk and the sink down: held records go to the spool when space returns, then to the sink: in order, nothing twice', { skip }, async () => {
  const disk = fullDisk();
  const sink = new SwitchableTestSink('file');
  sink.up = false;
  const metrics = new PipelineMetrics(new MetricsRegistry());
  const lane = new Lane(opts(sink, disk.dir, { metrics }));
  await lane.open();
  assert.equal(await lane.accept(rec(0)), 'spooled', 'before the disk fills');
  disk.fill();
  const results: string[] = [];
  for (let i = 1; i < 20; i++) results.push(await lane.accept(rec(i)));
  // the spool's last page still has room for a few (tmpfs allocates pages); from the first refusal on, all are held
  const spooled = results.indexOf('held') + 1;
  assert.ok(spooled >= 1 && spooled < 10, results.join(','));
  assert.deepEqual(results.slice(spooled - 1), Array(20 - spooled).fill('held'), results.join(','));
  assert.equal(metrics.sinkHeld.get({ sink: 'file' }), 20 - spooled);
  const taken = lane.whenTaken(rec(19).event_id);
  await new Promise((r) => setTimeout(r, 100)); // retries of the spool append fail meanwhile
  assert.equal(lane.heldRecords, 20 - spooled, 'held while the disk is full');
  assert.equal(lane.spoolRecords, spooled);

  disk.free();
  // a retry timer moves the held records (those not in the batch being retried) to the spool
  await until(() => lane.spoolRecords > spooled, 'held records spooled after the space returned');
  assert.equal(await taken, true, 'the last one is spooled');
  const inSpool = await spooledIds(path.join(disk.dir, 'file')); // read beside the open lane: acks may race, so only checked for duplicates
  assert.equal(new Set(inSpool).size, inSpool.length, 'no record spooled twice');
  // the one batch out to the (down) sink stays in memory until delivered; the rest is on disk now
  assert.equal(lane.heldRecords + inSpool.length, 20, `held ${lane.heldRecords}, spooled ${inSpool.length}`);

  sink.up = true;
  await until(() => sink.got.length >= 20 && lane.spoolRecords === 0 && lane.heldRecords === 0, 'all delivered');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(sink.got, Array.from({ length: 20 }, (_, i) => rec(i).event_id), 'every record once, in accept order');
  assert.equal(metrics.sinkHeld.get({ sink: 'file' }), 0);
  assert.deepEqual(lane.dropped(), {});
  await lane.close(50);
});

test('the hold is bounded: past hold.maxRecords a record is dropped and counted as hold_full', { skip }, async () => {
  const disk = fullDisk();
  const sink = new SwitchableTestSink('kafka');
  sink.up = false;
  const metrics = new PipelineMetrics(new MetricsRegistry());
  const lane = new Lane(opts(sink, disk.dir, { metrics, hold: { maxRecords: 3, maxBytes: 1 << 20 } }));
  await lane.open();
  disk.fill();
  const results = [];
  for (let i = 0; i < 5; i++) results.push(await lane.accept(rec(i)));
  assert.deepEqual(results, ['held', 'held', 'held', 'dropped', 'dropped']);
  assert.deepEqual(lane.dropped(), { hold_full: 2 });
  assert.equal(metrics.dropped.get({ stage: 'spool', reason: 'hold_full' }), 2);
  assert.equal(metrics.sinkHeld.get({ sink: 'kafka' }), 3);
  // the byte cap too
  const small = new Lane(opts(new SwitchableTestSink('loki'), disk.dir, { hold: { maxRecords: 100, maxBytes: 10 } }));
  await small.open();
  assert.equal(await small.accept(rec(9)), 'dropped');
  assert.deepEqual(small.dropped(), { hold_full: 1 });
  await small.close(10);
  await lane.close(10);
});

test('at the stop: held records are spooled if the disk takes them again, otherwise reported as in memory', { skip }, async () => {
  const disk = fullDisk();
  const down = new SwitchableTestSink('webhook');
  down.up = false;
  const lane = new Lane(opts(down, disk.dir, { retry: { initialMs: 60_000, maxMs: 60_000 } }));
  await lane.open();
  disk.fill();
  for (let i = 0; i < 4; i++) assert.equal(await lane.accept(rec(i)), 'held');
  assert.equal(await lane.drain(50), 4, 'four undelivered');
  const u = lane.undelivered();
  assert.deepEqual([u.spooled, u.memory], [0, 4], 'the disk is still full: in memory');
  assert.deepEqual(u.memoryIds, [0, 1, 2, 3].map((i) => rec(i).event_id));
  const taken = lane.whenTaken(rec(3).event_id);
  await lane.close(10);
  assert.equal(await taken, false, 'lost with the lane');
  assert.deepEqual(lane.undelivered(), u, 'still reported after the close');

  // the same with space back by the stop: the spool takes them, for the next start
  const down2 = new SwitchableTestSink('webhook2');
  down2.up = false;
  const lane2 = new Lane(opts(down2, disk.dir, { retry: { initialMs: 60_000, maxMs: 60_000 } }));
  await lane2.open();
  for (let i = 10; i < 13; i++) assert.equal(await lane2.accept(rec(i)), 'held');
  disk.free();
  assert.equal(await lane2.drain(50), 3);
  assert.deepEqual([lane2.undelivered().spooled, lane2.undelivered().memory], [3, 0]);
  await lane2.close(10);
  assert.deepEqual(await spooledIds(path.join(disk.dir, 'webhook2')), [10, 11, 12].map((i) => rec(i).event_id));
});
