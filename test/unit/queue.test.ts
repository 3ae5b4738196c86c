import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BoundedQueue, QueueError } from '../../src/pipeline/queue';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('block: a full queue makes push wait, and a waiting push is never a drop', async () => {
  const q = new BoundedQueue<number>(2, 'block');
  await q.push(1);
  await q.push(2);
  let third = false;
  const p = q.push(3).then(() => (third = true));
  await tick();
  assert.equal(third, false);
  assert.equal(q.depth, 2);
  assert.equal(await q.shift(), 1);
  await p;
  assert.equal(third, true);
  assert.deepEqual([await q.shift(), await q.shift()], [2, 3]);
  assert.deepEqual(q.dropped(), {});
});

test('drop_newest: the new item is discarded and counted', async () => {
  const dropped: unknown[] = [];
  const q = new BoundedQueue<number>(2, 'drop_newest', { onDrop: (reason, item) => dropped.push([reason, item]) });
  for (const i of [1, 2, 3, 4]) await q.push(i);
  assert.deepEqual(q.dropped(), { queue_full_drop_newest: 2 });
  assert.deepEqual(dropped, [['queue_full_drop_newest', 3], ['queue_full_drop_newest', 4]]);
  assert.deepEqual([await q.shift(), await q.shift()], [1, 2]);
});

test('drop_oldest: the oldest item is evicted and counted', async () => {
  const q = new BoundedQueue<number>(2, 'drop_oldest');
  for (const i of [1, 2, 3, 4, 5]) await q.push(i);
  assert.deepEqual(q.dropped(), { queue_full_drop_oldest: 3 });
  assert.equal(q.depth, 2);
  assert.deepEqual([await q.shift(), await q.shift()], [4, 5]);
});

test('shift waits for an item; a push goes straight to a waiting consumer', async () => {
  const q = new BoundedQueue<string>(1, 'drop_newest');
  const s = q.shift();
  await q.push('a');
  assert.equal(await s, 'a');
  assert.equal(q.depth, 0);
  assert.deepEqual(q.dropped(), {});
});

test('close: queued items still come out, then undefined; later and blocked pushes are counted', async () => {
  const q = new BoundedQueue<number>(1, 'block');
  await q.push(1);
  const blocked = q.push(2);
  q.close();
  await blocked; // released, not hung
  await q.push(3);
  assert.equal(await q.shift(), 1);
  assert.equal(await q.shift(), undefined);
  assert.deepEqual(q.dropped(), { queue_closed: 2 });

  const empty = new BoundedQueue<number>(1, 'block');
  const waiting = empty.shift();
  empty.close();
  assert.equal(await waiting, undefined);
});

test('keeps FIFO order over many items (internal compaction)', async () => {
  const q = new BoundedQueue<number>(5000, 'block');
  for (let i = 0; i < 5000; i++) await q.push(i);
  for (let i = 0; i < 3000; i++) assert.equal(await q.shift(), i);
  for (let i = 5000; i < 6000; i++) await q.push(i);
  for (let i = 3000; i < 6000; i++) assert.equal(await q.shift(), i);
  assert.equal(q.depth, 0);
});

test('rejects a bad configuration with a typed error', () => {
  assert.throws(() => new BoundedQueue(0, 'block'), (e: unknown) => e instanceof QueueError && e.code === 'QUEUE_CONFIG' && !e.retriable);
  assert.throws(() => new BoundedQueue(1, 'nope' as 'block'), QueueError);
});
