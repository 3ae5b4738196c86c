/* The JSONL file sink and the files a lane keeps: modes under a permissive umask, reopening after rotation. */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { silentLogger } from '../../src/observe/logger';
import { deriveEventId, type OomRecord } from '../../src/record/record';
import type { HealthStatus, Sink, WriteResult } from '../../src/sinks/sink';
import { FileSink } from '../../src/sinks/file/sink';
import { Lane, type LaneOptions } from '../../src/pipeline/lane';
import { baseRecord } from '../helpers/records';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-filesink-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;
const tmpDir = (): string => fs.mkdtempSync(path.join(tmpRoot, `${n++}-`));

function rec(i: number): OomRecord {
  return baseRecord({ event_id: deriveEventId('boot-1', BigInt(i), 1000 + i), victim_pid: 1000 + i });
}

function lines(file: string): string[] {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

function laneOpts(sink: Sink, spoolDir: string, over: Partial<LaneOptions> = {}): LaneOptions {
  return {
    sink,
    spoolDir,
    fsync: 'batch',
    maxSpoolBytes: 0,
    batch: { maxEvents: 10, maxBytes: 1 << 20, maxAgeMs: 5 },
    retry: { initialMs: 1, maxMs: 5 },
    logger: silentLogger(),
    ...over,
  };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, 2));
  }
}

class AnsweringSink implements Sink {
  constructor(
    readonly name: string,
    private readonly answer: WriteResult,
  ) {}
  async write(): Promise<WriteResult> {
    return this.answer;
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
  async healthcheck(): Promise<HealthStatus> {
    return { healthy: true };
  }
}

function walk(dir: string): string[] {
  return fs.readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    return fs.statSync(p).isDirectory() ? [p, ...walk(p)] : [p];
  });
}

test('under umask 022 (Docker, Kubernetes) events.jsonl, spool, ack state and dead letters are 0600, their dirs 0700', async () => {
  const old = process.umask(0o022);
  try {
    const state = path.join(tmpDir(), 'state'); // does not exist yet: the agent creates it
    const events = path.join(state, 'events.jsonl');
    const spoolDir = path.join(state, 'spool');
    const fileLane = new Lane(laneOpts(new FileSink({ path: events }), spoolDir));
    const deadLane = new Lane(laneOpts(new AnsweringSink('rejecting', { status: 'rejected', reason: 'HTTP 400: bad' }), spoolDir));
    // a sink that is down keeps its records (segments) in the spool
    const heldLane = new Lane(laneOpts(new AnsweringSink('held', { status: 'retryable', reason: 'down' }), spoolDir));
    const lanes = [fileLane, deadLane, heldLane];
    for (const lane of lanes) await lane.open();
    for (let i = 0; i < 3; i++) for (const lane of lanes) await lane.accept(rec(i));
    await until(() => fileLane.delivered === 3 && deadLane.rejected === 3 && heldLane.retried > 0);
    for (const lane of lanes) await lane.close(50);
    assert.equal(lines(events).length, 3);
    assert.equal(lines(path.join(spoolDir, 'rejecting.dead-letter.jsonl')).length, 3);
    const all = [state, ...walk(state)];
    const files = all.filter((p) => fs.statSync(p).isFile());
    assert.ok(files.some((f) => f.endsWith('.seg')), `a spool segment among ${files.join(', ')}`);
    assert.ok(files.some((f) => /state/.test(path.basename(f)) || /ack/.test(path.basename(f))), `an ack state file among ${files.join(', ')}`);
    for (const p of all) {
      const mode = fs.statSync(p).mode & 0o777;
      const want = fs.statSync(p).isDirectory() ? 0o700 : 0o600;
      assert.equal(mode.toString(8), want.toString(8), p);
    }
  } finally {
    process.umask(old);
  }
});

const ids = (file: string): string[] => lines(file).map((l) => (JSON.parse(l) as OomRecord).event_id);

test('mv of events.jsonl: the next batch goes to a new file at the path, the earlier one stays in the moved file', async () => {
  const events = path.join(tmpDir(), 'events.jsonl');
  const sink = new FileSink({ path: events });
  assert.equal((await sink.write([rec(0)])).status, 'delivered');
  fs.renameSync(events, `${events}.1`);
  assert.equal((await sink.write([rec(1)])).status, 'delivered');
  assert.deepEqual(ids(`${events}.1`), [rec(0).event_id]);
  assert.deepEqual(ids(events), [rec(1).event_id], 'the record acked after the mv is at the path');
  await sink.close();
});

test('rm of events.jsonl: the next batch is not acked into the deleted inode', async () => {
  const events = path.join(tmpDir(), 'events.jsonl');
  const sink = new FileSink({ path: events });
  await sink.write([rec(0)]);
  fs.unlinkSync(events);
  assert.equal((await sink.write([rec(1)])).status, 'delivered');
  assert.deepEqual(ids(events), [rec(1).event_id]);
  await sink.close();
});

test('logrotate create mode: rename, then a new empty file with its own mode: records go to it, mode kept', async () => {
  const events = path.join(tmpDir(), 'events.jsonl');
  const sink = new FileSink({ path: events });
  await sink.write([rec(0), rec(1)]);
  fs.renameSync(events, `${events}-20261130`);
  fs.writeFileSync(events, '', { mode: 0o640 }); // what `create 0640 root adm` does
  fs.chmodSync(events, 0o640);
  await sink.write([rec(2)]);
  await sink.write([rec(3)]);
  assert.deepEqual(ids(`${events}-20261130`), [rec(0).event_id, rec(1).event_id]);
  assert.deepEqual(ids(events), [rec(2).event_id, rec(3).event_id]);
  assert.equal((fs.statSync(events).mode & 0o777).toString(8), '640');
  await sink.close();
});

test('dead letters rotate at pipeline.dead_letter.max_bytes, keeping .1 .. .keep, the newest at the path', async () => {
  const spoolDir = tmpDir();
  const maxBytes = 4000;
  const lane = new Lane(
    laneOpts(new AnsweringSink('refused', { status: 'rejected', reason: 'HTTP 400: bad' }), spoolDir, {
      batch: { maxEvents: 1, maxBytes: 1 << 20, maxAgeMs: 1 },
      deadLetter: { maxBytes, keep: 2 },
    }),
  );
  await lane.open();
  const total = 40;
  for (let i = 0; i < total; i++) await lane.accept(rec(i));
  await until(() => lane.rejected === total, 10_000);
  await lane.close();
  const base = path.join(spoolDir, 'refused.dead-letter.jsonl');
  const files = [`${base}.2`, `${base}.1`, base];
  for (const f of files) {
    assert.ok(fs.existsSync(f), f);
    assert.ok(fs.statSync(f).size <= maxBytes, `${f}: ${fs.statSync(f).size} bytes`);
    assert.equal((fs.statSync(f).mode & 0o777).toString(8), '600');
  }
  assert.ok(!fs.existsSync(`${base}.3`), 'no more than keep rotated files');
  const kept = files.flatMap((f) => lines(f).map((l) => JSON.parse(l) as { reason: string; record: OomRecord }));
  assert.ok(kept.length < total, `${kept.length} of ${total}: the oldest were dropped`);
  assert.deepEqual(kept.map((d) => d.record.event_id), Array.from({ length: total }, (_, i) => rec(i).event_id).slice(total - kept.length), 'the newest, in order');
  assert.equal(kept[0]!.reason, 'HTTP 400: bad');
});
