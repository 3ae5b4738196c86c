/*
 * The agent's stop: bounded by its deadline even when a sink never answers (a stand-in whose write, flush and
 * close never return: a broker gone, a hung mount), and its last line true: `every record delivered` only when
 * it is so. A stand-in collector emits decoded events (no BPF here).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import type { AppConfig } from '../../src/config/schema';
import { silentLogger } from '../../src/observe/logger';
import { Agent, describeStop, type StopReport } from '../../src/pipeline/agent';
import type { OomRecord } from '../../src/record/record';
import type { Sink } from '../../src/sinks/sink';
import { memorySink, rawEvent as event, standInCollector } from '../helpers/stand-ins';
import { SmallTmpfs } from '../helpers/tmpfs';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-stop-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;

function config(): AppConfig {
  const c = structuredClone(loadConfig({ etcDir: path.join(tmp, 'no-etc'), env: {} }).config);
  c.pipeline.spool.dir = path.join(tmp, `spool-${n++}`);
  c.pipeline.spool.fsync = 'never';
  c.metrics.listen = '';
  c.collectors.oomkill.backfill = false;
  return c;
}

/** Stand-in for a sink that never answers: every call stays pending for ever. */
const neverAnswers = (name: string): Sink => ({
  name,
  batchMaxAgeMs: 0,
  write: () => new Promise(() => undefined),
  flush: () => new Promise(() => undefined),
  close: () => new Promise(() => undefined),
  healthcheck: () => new Promise(() => undefined),
});


async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a sink that never answers: the stop returns at its deadline, and says the record is undelivered and where', async () => {
  const c = config();
  const { collector, emit } = standInCollector();
  const got: OomRecord[] = [];
  const agent = new Agent({ config: c, logger: silentLogger(), collector, sinks: [memorySink('console', got), neverAnswers('kafka')], sources: ['test'], deathWaitMs: 0 });
  await agent.start();
  await emit(event(4242));
  await until(() => got.length === 1);
  const DEADLINE = 600;
  const t0 = Date.now();
  const report = await agent.stop(DEADLINE);
  const ms = Date.now() - t0;
  assert.ok(ms >= DEADLINE - 200 && ms < DEADLINE + 100, `stop took ${ms} ms for a ${DEADLINE} ms deadline`);
  assert.equal(report.complete, false, 'the hung sink did not finish');
  const kafka = report.lanes.find((l) => l.sink === 'kafka')!;
  assert.deepEqual([kafka.spooled, kafka.memory, kafka.closed], [1, 0, false]);
  const line = describeStop(report);
  assert.equal(
    line,
    `stopped; 1 record undelivered (held in the spool ${c.pipeline.spool.dir}, sent at the next start: kafka 1) (kafka did not finish within the ${DEADLINE} ms stop deadline)`,
  );
  assert.doesNotMatch(line, /every record delivered/);
});

test('a sink that never answers, nothing to send: the stop still ends at the deadline and does not claim a clean close', async () => {
  const c = config();
  const { collector } = standInCollector();
  const agent = new Agent({ config: c, logger: silentLogger(), collector, sinks: [neverAnswers('kafka')], sources: ['test'], deathWaitMs: 0 });
  await agent.start();
  const t0 = Date.now();
  const report = await agent.stop(400);
  const ms = Date.now() - t0;
  assert.ok(ms < 400 + 150, `stop took ${ms} ms`);
  assert.equal(describeStop(report), 'stopped; every record delivered (kafka did not finish within the 400 ms stop deadline)');
});

test('every sink answers: the stop is quick and says every record delivered', async () => {
  const c = config();
  const { collector, emit } = standInCollector();
  const got: OomRecord[] = [];
  const agent = new Agent({ config: c, logger: silentLogger(), collector, sinks: [memorySink('file', got)], sources: ['test'], deathWaitMs: 0 });
  await agent.start();
  await emit(event(1));
  await emit(event(2));
  const t0 = Date.now();
  const report = await agent.stop(5000);
  assert.ok(Date.now() - t0 < 1000);
  assert.equal(got.length, 2);
  assert.equal(report.complete, true);
  assert.equal(describeStop(report), 'stopped; every record delivered');
});

test('describeStop names every place undelivered records are, and counts them', () => {
  const base: StopReport = { complete: true, deadlineMs: 10_000, ms: 12, spoolDir: '/var/lib/oomtrail/spool', lanes: [] };
  const lane = (sink: string, over: Partial<StopReport['lanes'][number]>) => ({ sink, spooled: 0, memory: 0, memoryInJournal: 0, dropped: {}, closed: true, ...over });
  assert.equal(describeStop({ ...base, lanes: [lane('console', {}), lane('file', {})] }), 'stopped; every record delivered');
  assert.equal(
    describeStop({ ...base, lanes: [lane('console', {}), lane('file', { memory: 20 })] }),
    'stopped; 20 records undelivered (held in memory only, lost at exit: file 20)',
  );
  assert.equal(
    describeStop({
      ...base,
      lanes: [lane('kafka', { spooled: 3 }), lane('file', { memory: 5, memoryInJournal: 2, dropped: { hold_full: 4 } }), lane('loki', { dropped: { spool_full: 1 } })],
    }),
    'stopped; 13 records undelivered (held in the spool /var/lib/oomtrail/spool, sent at the next start: kafka 3; ' +
      'in memory and in the journal /var/lib/oomtrail/spool/.journal, re-sent at the next start: file 2; in memory only, lost at exit: file 3; ' +
      'dropped: file 4 (hold_full 4), loki 1 (spool_full 1))',
  );
});

test('the journal keeps what a lane could not take, for that lane alone: re-sent at the next start there, not elsewhere', { skip: process.getuid?.() === 0 ? false : 'needs root (mounts a small tmpfs)' }, async () => {
  const c = config();
  // only the file lane's spool is on the full disk: the journal and the console lane's spool are writable
  const disk = new SmallTmpfs(path.join(c.pipeline.spool.dir, 'file'), 128);
  disk.mount();
  try {
    const consoleGot: OomRecord[] = [];
    const fileGot: OomRecord[] = [];
    let fileUp = false;
    const file: Sink = {
      ...memorySink('file', fileGot),
      write: async (batch) => {
        if (!fileUp) return { status: 'retryable', reason: 'down' };
        fileGot.push(...batch);
        return { status: 'delivered' };
      },
    };
    const first = standInCollector();
    const agent = new Agent({ config: c, logger: silentLogger(), collector: first.collector, sinks: [memorySink('console', consoleGot), file], sources: ['test'], deathWaitMs: 0 });
    await agent.start();
    disk.fill();
    await first.emit(event(777));
    await until(() => consoleGot.length === 1);
    const report = await agent.stop(300);
    assert.equal(
      describeStop(report),
      `stopped; 1 record undelivered (held in memory and in the journal ${c.pipeline.spool.dir}/.journal, re-sent at the next start: file 1)`,
    );

    // the next start, with space and the file sink back: the record goes to the file sink, and not again to the console
    disk.free();
    fileUp = true;
    const second = standInCollector();
    const again = new Agent({ config: c, logger: silentLogger(), collector: second.collector, sinks: [memorySink('console', consoleGot), file], sources: ['test'], deathWaitMs: 0 });
    await again.start();
    await until(() => fileGot.length === 1);
    const report2 = await again.stop(2000);
    assert.equal(describeStop(report2), 'stopped; every record delivered');
    assert.deepEqual(fileGot.map((r) => r.victim_pid), [777]);
    assert.deepEqual(consoleGot.map((r) => r.victim_pid), [777], 'the console had it once, in the first run');
    assert.equal(fileGot[0].event_id, consoleGot[0].event_id);
  } finally {
    disk.unmount();
  }
});
