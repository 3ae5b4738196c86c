import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, MAX_TIMER_MS } from '../../src/pipeline/retry';

const opts = { initialMs: 100, maxMs: 5000 };

test('full jitter: between 0 and min(max, initial * 2^attempt)', () => {
  assert.equal(backoffMs(0, opts, undefined, () => 0), 0);
  assert.equal(backoffMs(0, opts, undefined, () => 1), 100);
  assert.equal(backoffMs(3, opts, undefined, () => 1), 800);
  assert.equal(backoffMs(3, opts, undefined, () => 0.5), 400);
  assert.equal(backoffMs(10, opts, undefined, () => 1), 5000);
  assert.equal(backoffMs(10_000, opts, undefined, () => 1), 5000, 'no overflow for huge attempts');
  for (let attempt = 0; attempt < 20; attempt++) {
    for (let i = 0; i < 50; i++) {
      const d = backoffMs(attempt, opts);
      assert.ok(d >= 0 && d <= Math.min(5000, 100 * 2 ** attempt), `attempt ${attempt}: ${d}`);
    }
  }
});

test('never less than the server retry-after, even above the cap', () => {
  assert.equal(backoffMs(0, opts, 250, () => 0), 250);
  assert.equal(backoffMs(5, opts, 250, () => 1), 3200);
  assert.equal(backoffMs(20, opts, 60_000, () => 1), 60_000);
  assert.equal(backoffMs(0, opts, 0.4, () => 0), 1, 'rounded up');
});

test('tolerates nonsense inputs', () => {
  assert.equal(backoffMs(-3, opts, undefined, () => 1), 100);
  assert.equal(backoffMs(NaN, opts, NaN, () => 1), 100);
  assert.equal(backoffMs(2, opts, -5, () => 2), 400, 'random clamped to 1');
  assert.equal(backoffMs(2, { initialMs: 100, maxMs: 10 }, undefined, () => 1), 100, 'max below initial');
});

test('a Retry-After beyond what a Node timer holds is clamped to 2^31-1 ms, not wrapped to 1 ms', async () => {
  const thirtyDays = 30 * 24 * 3600 * 1000;
  const d = backoffMs(0, opts, thirtyDays, () => 0);
  assert.equal(d, MAX_TIMER_MS);
  assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  assert.equal(backoffMs(3, { initialMs: 1000, maxMs: 2 ** 40 }, undefined, () => 1), 8000);
  assert.equal(backoffMs(60, { initialMs: 1000, maxMs: 2 ** 40 }, undefined, () => 1), MAX_TIMER_MS, 'a huge max_ms too');
  // and the clamped value really waits: a timer of it has not fired 50 ms later
  let fired = false;
  const t = setTimeout(() => (fired = true), d);
  await new Promise((r) => setTimeout(r, 50));
  clearTimeout(t);
  assert.equal(fired, false);
});
