import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addKernelLogReader, pumpKernelLog } from '../../src/collectors/kmsg/pump';

test('the kernel-log pump reads every 32 items of a long loop, never re-entered, and stops when removed', () => {
  let reads = 0;
  let other = 0;
  const removeOther = addKernelLogReader(() => other++);
  const remove = addKernelLogReader(() => {
    reads++;
    // a reader whose own loop pumps (its follower's read) is not run inside itself
    for (let i = 0; i < 100; i++) pumpKernelLog();
  });
  try {
    for (let i = 0; i < 32 * 10; i++) pumpKernelLog();
    assert.ok(reads >= 9 && reads <= 10, `${reads} reads for 320 items`);
    assert.equal(other, reads, 'every reader runs');
    remove();
    removeOther();
    const before = reads;
    for (let i = 0; i < 320; i++) pumpKernelLog();
    assert.equal(reads, before);
  } finally {
    remove();
    removeOther();
  }
});
