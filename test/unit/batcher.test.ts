import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batcher, BatcherError } from '../../src/pipeline/batcher';

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

function collect(limits: { maxEvents: number; maxBytes: number; maxAgeMs: number }, onBatch?: (b: string[]) => Promise<void>) {
  const batches: string[][] = [];
  const b = new Batcher<string>({
    ...limits,
    sizeOf: (s) => s.length,
    onBatch: async (batch) => {
      batches.push(batch);
      await onBatch?.(batch);
    },
  });
  return { b, batches };
}

test('closes a batch at max events', async () => {
  const { b, batches } = collect({ maxEvents: 3, maxBytes: 1000, maxAgeMs: 1000 });
  for (const s of ['a', 'b', 'c', 'd']) await b.add(s);
  assert.deepEqual(batches, [['a', 'b', 'c']]);
  assert.equal(b.count, 1);
  b.stop();
});

test('closes a batch before it would exceed max bytes; an oversized item travels alone', async () => {
  const { b, batches } = collect({ maxEvents: 100, maxBytes: 10, maxAgeMs: 1000 });
  await b.add('aaaa');
  await b.add('bbbb');
  await b.add('cccc'); // 12 > 10: 'aaaa','bbbb' go first
  assert.deepEqual(batches, [['aaaa', 'bbbb']]);
  await b.add('x'.repeat(25));
  assert.deepEqual(batches, [['aaaa', 'bbbb'], ['cccc'], ['x'.repeat(25)]]);
  assert.equal(b.count, 0);
  await b.add('dddddddddd'); // exactly max bytes closes at once
  assert.equal(batches.length, 4);
});

test('closes a batch at max age (mock timers)', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { b, batches } = collect({ maxEvents: 100, maxBytes: 1000, maxAgeMs: 500 });
  await b.add('a');
  t.mock.timers.tick(300);
  await b.add('b'); // age counts from the first item, not the last
  t.mock.timers.tick(199);
  await settle();
  assert.deepEqual(batches, []);
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(batches, [['a', 'b']]);
  await b.add('c');
  t.mock.timers.tick(499);
  await settle();
  assert.equal(batches.length, 1);
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(batches, [['a', 'b'], ['c']]);
});

test('flush forces the open batch out; flushing nothing is a no-op', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { b, batches } = collect({ maxEvents: 100, maxBytes: 1000, maxAgeMs: 500 });
  await b.flush();
  assert.deepEqual(batches, []);
  await b.add('a');
  await b.flush();
  assert.deepEqual(batches, [['a']]);
  t.mock.timers.tick(1000); // the age timer was cancelled by flush
  await settle();
  assert.equal(batches.length, 1);
});

test('backpressure: batches are handed over one at a time, add waits for the batch it closed', async () => {
  let release!: () => void;
  let inFlight = 0;
  let maxInFlight = 0;
  const { b, batches } = collect({ maxEvents: 2, maxBytes: 1000, maxAgeMs: 1000 }, async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise<void>((r) => (release = r));
    inFlight--;
  });
  await b.add('a');
  let done = false;
  const p = b.add('b').then(() => (done = true));
  await settle();
  assert.equal(done, false);
  assert.deepEqual(batches, [['a', 'b']]);
  release();
  await p;
  await b.add('c');
  const p2 = b.add('d');
  await settle();
  release();
  await p2;
  assert.deepEqual(batches, [['a', 'b'], ['c', 'd']]);
  assert.equal(maxInFlight, 1);
});

test('a batch that ages while another is in flight waits for it instead of queueing up', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  let release!: () => void;
  const { b, batches } = collect({ maxEvents: 3, maxBytes: 1000, maxAgeMs: 100 }, () => new Promise<void>((r) => (release = r)));
  await b.add('a');
  t.mock.timers.tick(100);
  await settle();
  assert.deepEqual(batches, [['a']]); // in flight, not released
  await b.add('b');
  t.mock.timers.tick(500);
  await settle();
  assert.deepEqual(batches, [['a']], 'aged batch held back while one is in flight');
  await b.add('c'); // still filling the open batch
  assert.equal(b.count, 2);
  release();
  await settle();
  await settle();
  assert.deepEqual(batches, [['a'], ['b', 'c']], 'released as soon as the in-flight batch is handled');
  release();
  await b.flush();
});

test('age timer does not keep the process alive', () => {
  const b = new Batcher<string>({ maxEvents: 10, maxBytes: 100, maxAgeMs: 60_000, sizeOf: () => 1, onBatch: () => undefined });
  void b.add('a');
  const timer = (b as unknown as { timer: NodeJS.Timeout }).timer;
  assert.equal(timer.hasRef(), false);
  b.stop();
});

test('rejects bad limits', () => {
  assert.throws(
    () => new Batcher({ maxEvents: 0, maxBytes: 1, maxAgeMs: 1, sizeOf: () => 1, onBatch: () => undefined }),
    (e: unknown) => e instanceof BatcherError && e.code === 'BATCHER_CONFIG',
  );
});
