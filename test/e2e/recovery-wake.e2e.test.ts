/*
 * The live recovery notices a lost event from the kernel log alone. Real OOM kills on this host; the collector is a
 * stand-in (named here): its loss counter is set by the test before the kill, as the kernel side of a full ring buffer
 * counts a loss before the kill is logged, and it delivers nothing. Nothing wakes the recovery but its own read of the
 * log, as the busy timer or a long synchronous loop reads it: such a read takes the line, and the collector's wait on
 * the log's descriptor then never wakes for it. Before the fix the loss was noticed only at the next delivery or
 * wake-up (a 6.1 VM's test of 12 lost kills took 68 s instead of 12, and its audit called one of them missed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DropRecovery } from '../../src/pipeline/recovery';
import { RecordAssembler } from '../../src/pipeline/assemble/assemble';
import { KillLedger } from '../../src/pipeline/ledger';
import { MetricsRegistry, PipelineMetrics } from '../../src/observe/metrics';
import { readHostFacts } from '../../src/host/facts';
import { systemClock } from '../../src/host/clock';
import type { Logger } from '../../src/observe/logger';
import type { OomRecord } from '../../src/record/record';
import { makeTestCgroup, removeCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { sleep } from '../helpers/agent';

test('a lost kill is recovered as soon as the recovery reads its line, with no delivery and no wake-up to prompt it', { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-recovery-wake-'));
  const facts = readHostFacts();
  const ledger = KillLedger.open(dir, facts.bootId);
  const logs: string[] = [];
  const log = (msg: string) => void logs.push(msg);
  const logger = { error: log, warn: log, info: log, debug: log } as unknown as Logger;
  const got: OomRecord[] = [];
  let lost = 0n;
  const recovery = new DropRecovery({
    ledger,
    assembler: new RecordAssembler({ facts, clock: systemClock }),
    record: async (items) => {
      for (const { record, tUs, key } of items) {
        ledger.add(record.victim_pid, tUs, record.event_id, record.victim_cgroup, facts.bootId, key);
        got.push(record);
      }
    },
    metrics: new PipelineMetrics(new MetricsRegistry()),
    logger,
    flush: async () => true,
    lost: () => lost,
    journald: null,
  });
  // no `watch`: the collector's wait on the log's descriptor never wakes the recovery here
  recovery.start();
  const cg = makeTestCgroup(`oomtrail-recovery-wake-${process.pid}`);
  try {
    lost = 1n;
    const [pid] = await causeKills(cg, 1);
    const t0 = Date.now();
    recovery.read();
    while (!got.some((r) => r.victim_pid === pid) && Date.now() - t0 < 5_000) await sleep(50);
    const rec = got.find((r) => r.victim_pid === pid);
    assert.ok(rec, `the kill of pid ${pid} was not recovered within 5 s of reading its line:\n${logs.join('\n')}`);
    assert.equal(rec.hook, 'kmsg');
    assert.equal(got.length, 1, 'once');
    assert.ok(logs.some((l) => /kernel ring buffer was full: 1 OOM events lost; recovering them from the kernel log/.test(l)), logs.join('\n'));
  } finally {
    await recovery.stop();
    await removeCgroup(cg.dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
