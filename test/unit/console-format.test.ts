import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatKillBlock } from '../../src/sinks/console/format';
import { baseRecord } from '../helpers/records';

test('a kill is one block naming victim, sizes, cgroups and trail', () => {
  const text = formatKillBlock(
    baseRecord({
      trail: {
        start: '2026-11-23T06:40:50.000000000Z',
        step_ms: 1000,
        usage_bytes: [10 << 20, 40 << 20, 64 << 20],
        limit_bytes: [64 << 20, 64 << 20, 64 << 20],
        reclaim_stall_ms: [0, 0, 1.5],
        reclaimed_pages: [0, 0, 0],
        psi_some_avg10: [0, 0, 0],
        psi_full_avg10: [0, 0, 0],
        psi_scope: 'system',
      },
      victim_exit_latency_ms: 4.25,
    }),
  );
  assert.match(text, /^OOM kill  2026-11-23T06:41:00\.123456789Z  host node-1  \[memcg, inferred, hook tp_btf\]\n/);
  assert.match(text, /victim   pid 4242 \(dd\)/);
  assert.match(text, /cgroup   victim \/oomtrail-test  oom \/oomtrail-test  limit 64\.0 MiB/);
  assert.match(text, /trail    usage 10\.0 MiB -> 64\.0 MiB over 3 s, reclaim stall 1\.5 ms/);
  assert.match(text, /exited   4\.3 ms after the kill/);
  assert.ok(text.endsWith('event_id 0123456789abcdef0123456789abcdef\n'));
});

test('a memory_pressure record is one warning line, not a kill block', () => {
  const text = formatKillBlock(
    baseRecord({
      kind: 'memory_pressure',
      pressure: { reasons: ['usage'], usage_ratio: 0.93, psi_some_avg10: null, psi_full_avg10: null, reclaim_stall_ms: null },
    }),
  );
  assert.equal(text.split('\n').length, 2);
  assert.match(text, /^memory pressure .* cgroup \/oomtrail-test  \[usage\] usage 93% of 64\.0 MiB\n$/);
  assert.doesNotMatch(text, /OOM kill/);
});
