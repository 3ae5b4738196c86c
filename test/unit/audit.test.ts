import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KillLedger } from '../../src/pipeline/ledger';
import { cgroupShortfalls } from '../../src/pipeline/audit';

function ledgerWithBase(): KillLedger {
  const ledger = KillLedger.open(fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-audit-')), 'boot-0');
  // /a first seen at 1 s with 5 kills of its own, /b at 2 s with 0
  ledger.state.cg_base = { '/a': [5, 1_000_000], '/b': [0, 2_000_000] };
  return ledger;
}

test('cgroup shortfall: counter growth less the kills recorded there since first seen', () => {
  const ledger = ledgerWithBase();
  ledger.add(100, 500_000, 'before-base', '/a'); // before /a's base: already in its 5
  ledger.add(101, 1_500_000, 'e1', '/a');
  ledger.add(102, 2_500_000, 'e2', '/b');
  assert.deepEqual(cgroupShortfalls(ledger, [{ rel: '/a', kills: 8 }, { rel: '/b', kills: 1 }, { rel: '/new', kills: 3 }, { rel: '/b', kills: null }], []), [['/a', 2]]);
});

test('cgroup shortfall: a memory.oom.group sweep line repeated (counted twice by the kernel) is taken off its cgroup, not another', () => {
  const ledger = ledgerWithBase();
  ledger.add(201, 3_000_000, 'g1', '/b');
  ledger.add(202, 3_000_100, 'g2', '/b');
  // the kernel counted pid 201 twice: /b's counter says 3 for 2 recorded kills
  const repeated = [{ pid: 201, usec: 3_000_050 }];
  assert.deepEqual(cgroupShortfalls(ledger, [{ rel: '/a', kills: 5 }, { rel: '/b', kills: 3 }], repeated), []);
  assert.deepEqual(cgroupShortfalls(ledger, [{ rel: '/b', kills: 3 }], []), [['/b', 1]], 'without the repeat it would be blamed');
  // a repeat of a kill recorded without a cgroup (its oom-kill: line rate-limited) is taken off nowhere
  ledger.add(203, 4_000_000, 'g3');
  assert.deepEqual(cgroupShortfalls(ledger, [{ rel: '/b', kills: 4 }], [...repeated, { pid: 203, usec: 4_000_010 }]), [['/b', 1]]);
  assert.equal(ledger.countWithoutCgroupSince(0), 1);
  assert.equal(ledger.countWithoutCgroupSince(4_000_001), 0);
});
