import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TrailSampler, type PressureEvent } from '../../src/collectors/trail/sampler';
import { silentLogger } from '../../src/observe/logger';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-sampler-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A fake v1 memory hierarchy: /a (limited, holds /a/b unlimited), /c (unlimited). */
function cg(rel: string, limit: number, usage: number): void {
  const d = path.join(root, rel);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'memory.limit_in_bytes'), String(limit));
  fs.writeFileSync(path.join(d, 'memory.usage_in_bytes'), String(usage));
}
const UNLIMITED = 9223372036854771712;

test('samples limited cgroups only, fires usage pressure once per interval when rising near the limit', () => {
  cg('a', 100_000, 10_000);
  cg('a/b', UNLIMITED, 5_000);
  cg('c', UNLIMITED, 1);
  const pressures: PressureEvent[] = [];
  const s = new TrailSampler({
    logger: silentLogger(),
    cgroupVersion: 1,
    root,
    stepMs: 1000,
    samples: 4,
    maxCgroups: 100,
    reclaim: null,
    psi: null,
    pressure: { enabled: true, usageRatio: 0.9, psiFullAvg10: 10, minIntervalMs: 60_000 },
    nowBootNs: () => 1n,
    onPressure: (e) => pressures.push(e),
  });
  for (const u of [10_000, 50_000, 91_000, 95_000, 99_000, 99_000]) {
    fs.writeFileSync(path.join(root, 'a', 'memory.usage_in_bytes'), String(u));
    s.tick();
  }
  const t = s.store.snapshot('/a', (ms) => new Date(ms).toISOString())!;
  assert.deepEqual(t.usage_bytes, [91_000, 95_000, 99_000, 99_000]);
  assert.deepEqual(t.limit_bytes, [100_000, 100_000, 100_000, 100_000]);
  assert.deepEqual(t.reclaim_stall_ms, [null, null, null, null], 'no reclaim collector: unknown, not 0');
  assert.equal(s.store.snapshot('/c', String), undefined, 'unlimited cgroups are not sampled');
  assert.equal(s.store.snapshot('/a/b', String), undefined);
  assert.ok(s.store.snapshot('/', String), 'the host is sampled as /');
  assert.equal(pressures.length, 1, 'rate-limited to one per min_interval_ms');
  assert.equal(pressures[0].cgroup, '/a');
  assert.deepEqual(pressures[0].info.reasons, ['usage']);
  assert.equal(pressures[0].info.usage_ratio, 0.91);
  const now = s.sampleNow('/a')!;
  assert.equal(now.usageBytes, 99_000);
});
