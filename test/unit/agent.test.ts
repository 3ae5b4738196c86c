import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { RawOomEvent } from '../../src/collectors/oomkill/event';
import type { PressureEvent } from '../../src/collectors/trail/sampler';
import type { Clock } from '../../src/host/clock';
import { loadConfig } from '../../src/config/load';
import { silentLogger } from '../../src/observe/logger';
import { Agent, type AgentTrail } from '../../src/pipeline/agent';
import { JOURNAL_DIR } from '../../src/pipeline/journal';
import { Spool } from '../../src/pipeline/spool';
import type { OomRecord, Trail } from '../../src/record/record';
import { memorySink, rawEvent, standInCollector } from '../helpers/stand-ins';

/*
 * Agent.consume without a kernel: a stand-in collector (no BPF here) emits a decoded event, a
 * stand-in trail answers trailFor, a stand-in death source confirms the exit; the clock is fixed.
 * What the sink receives is the assembled record; the journal entry is acked once it is spooled.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-agent-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const BASE_MS = 1_700_000_000_000;
const KILL_BOOT_NS = 5_000_000_000n;
const clock: Clock = {
  bootNowNs: () => KILL_BOOT_NS + 1_000_000n,
  // the kill happened at BASE_MS
  bootToRealtimeNs: (b) => b - KILL_BOOT_NS + BigInt(BASE_MS) * 1_000_000n,
  printkNowUs: () => 1_000_000,
  printkToRealtimeNs: (p) => p,
};

const event = (pid: number): RawOomEvent => rawEvent(pid, KILL_BOOT_NS);

const trailOf = (n: number): Trail => ({
  start: '2023-11-14T22:13:20.000000000Z',
  step_ms: 1000,
  usage_bytes: [n],
  limit_bytes: [100],
  reclaim_stall_ms: [null],
  reclaimed_pages: [null],
  psi_some_avg10: [null],
  psi_full_avg10: [null],
  psi_scope: 'none',
});

test('the agent moves assembled records from the queue to the router: kill with trail and death, pressure with its trail', async () => {
  // a writable copy of the defaults (the loaded configuration is frozen)
  const config = structuredClone(loadConfig({ etcDir: path.join(tmp, 'no-etc'), env: {} }).config);
  config.pipeline.spool.dir = path.join(tmp, 'spool');
  // the sink's own batch age wins over the pipeline's: with 60 s the records below would not arrive in time
  config.pipeline.batch.max_age_ms = 60_000;
  config.metrics.listen = '';
  config.collectors.oomkill.backfill = false;

  const { collector, emit } = standInCollector();
  const written: OomRecord[] = [];
  const sink = memorySink('mem', written, 10);
  const trailAsks: Array<[string, number | undefined]> = [];
  const hooks: { onPressure?: (ev: PressureEvent) => void } = {};
  const trail: AgentTrail = {
    start: () => undefined,
    stop: async () => undefined,
    trailFor: (cg, killMs) => {
      trailAsks.push([cg, killMs]);
      return trailOf(1);
    },
    cgroups: () => [],
    cgroupsVersion: () => 0,
  };
  const waits: number[] = [];
  const reclaim = {
    running: true,
    confirmsDeaths: true,
    start: () => undefined,
    stop: () => undefined,
    confirmDeath: async (_tid: number, mark: bigint, maxWaitMs: number) => {
      waits.push(maxWaitMs);
      return { markNs: mark, exitNs: mark + 2_000_000n, reapedNs: null };
    },
  };
  const agent = new Agent({
    config,
    logger: silentLogger(),
    collector,
    sinks: [sink],
    sources: ['test'],
    reclaim,
    trail: (p) => {
      hooks.onPressure = p;
      return trail;
    },
    deathWaitMs: 321,
    clock,
  });
  assert.ok(hooks.onPressure, 'the trail is built with its pressure receiver');
  await agent.start();
  await emit(event(4242));
  hooks.onPressure!({ cgroup: '/lim', bootNs: KILL_BOOT_NS, usageBytes: 95, limitBytes: 100, info: { reasons: ['usage'], usage_ratio: 0.95, psi_some_avg10: null, psi_full_avg10: null, reclaim_stall_ms: null }, trail: trailOf(2) });
  const deadline = Date.now() + 5000;
  while (written.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(written.length, 2, 'both records written while the agent runs, not by the stop\'s flush');
  await agent.stop(2000);

  const kill = written.find((r) => r.kind === 'oom_kill')!;
  assert.ok(kill, 'the kill reached the sink');
  assert.equal(kill.victim_pid, 4242);
  assert.equal(kill.time, '2023-11-14T22:13:20.000000000Z', 'dated by the injected clock');
  assert.deepEqual(trailAsks, [['/lim', BASE_MS]], 'the OOM cgroup trail, cut at the kill time');
  assert.deepEqual(kill.trail, trailOf(1));
  assert.equal(kill.victim_exit_latency_ms, 2);
  assert.equal(kill.victim_reaped_latency_ms, null);
  assert.deepEqual(waits, [321], 'waited at most deathWaitMs for the death');
  const pressure = written.find((r) => r.kind === 'memory_pressure')!;
  assert.ok(pressure, 'the pressure record reached the sink');
  assert.equal(pressure.oom_cgroup, '/lim');
  assert.deepEqual(pressure.trail, trailOf(2), 'with the trail the sampler took, not a second look');
  assert.equal(trailAsks.length, 1);
  // the kill's journal entry was acked once routed: nothing left to re-emit
  const journal = await Spool.open({ dir: path.join(config.pipeline.spool.dir, JOURNAL_DIR), fsync: 'never', maxBytes: 0, logger: silentLogger() });
  const pending: unknown[] = [];
  for await (const r of journal.pending()) pending.push(r);
  await journal.close();
  assert.equal(pending.length, 0);
  const ledger = fs.readFileSync(path.join(config.pipeline.spool.dir, 'kills.jsonl'), 'utf8');
  assert.match(ledger, /"p":4242/, 'the kill is in the ledger');
});
