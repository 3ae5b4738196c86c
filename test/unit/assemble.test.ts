import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeEvent, EVENT_LAYOUT, EVENT_SIZE, FLAG, HOOK_IDS, type RawOomEvent } from '../../src/collectors/oomkill/event';
import type { ReclaimCollector, ReclaimStat, VictimDeath } from '../../src/collectors/reclaim/collector';
import { TrailSampler, type PressureEvent, type TrailSource } from '../../src/collectors/trail/sampler';
import { formatRfc3339Ms, formatRfc3339Nanos, type Clock } from '../../src/host/clock';
import type { HostFacts } from '../../src/host/facts';
import { silentLogger } from '../../src/observe/logger';
import { RecordAssembler, type DeathSource } from '../../src/pipeline/assemble/assemble';

/*
 * Record assembly (decode → enrich → trail → death amend) with every input injected: a fixed
 * clock, host facts, a trail sampler over a fake cgroupfs, a death source. No root, no libbpf.
 */

const facts: HostFacts = { host: 'h1', bootId: 'b-1', kernelRelease: '6.18.0', pageSize: 4096, cgroupVersion: 1, agentVersion: '9.9.9' };

/** Wall-clock ms of the test's time 0, and the kill's CLOCK_BOOTTIME. */
const BASE_MS = 1_700_000_000_000;
const KILL_BOOT_NS = 5_000_000_000n;

/** A clock where the kill (KILL_BOOT_NS) happened at wall clock BASE_MS + killAtMs. */
function clockWithKillAt(killAtMs: number, bootNowNs = KILL_BOOT_NS): Clock {
  const offset = BigInt(BASE_MS + killAtMs) * 1_000_000n - KILL_BOOT_NS;
  return {
    bootNowNs: () => bootNowNs,
    bootToRealtimeNs: (b) => b + offset,
    printkNowUs: () => 9_000_000,
    printkToRealtimeNs: (p) => p + offset,
  };
}

function raw(over: Partial<RawOomEvent> = {}): RawOomEvent {
  return {
    bootNs: KILL_BOOT_NS,
    totalVmPages: 1000,
    anonRssPages: 500,
    fileRssPages: 10,
    shmemRssPages: 0,
    pgtablesBytes: 8192,
    gfpMask: 0xcc0,
    order: 0,
    domainPages: 100,
    memcgLimitPages: 100,
    memcgUsagePages: 99,
    victimPid: 42,
    victimTid: 43,
    victimUid: 0,
    triggerPid: 42,
    triggerTid: 43,
    oomScoreAdj: 0,
    hook: 'fentry',
    constraint: 'memcg',
    constraintInferred: false,
    victimComm: 'hog',
    triggerComm: 'hog',
    victimCgroup: { id: 1n, path: '/a/w', truncated: false },
    oomCgroup: { id: 2n, path: '/a', truncated: false },
    ...over,
  };
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-assemble-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A fake v1 memory hierarchy with one limited cgroup; returns its directory. */
function limitedCgroup(name: string, limit: number): string {
  const d = path.join(root, name);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'memory.limit_in_bytes'), String(limit));
  fs.writeFileSync(path.join(d, 'memory.usage_in_bytes'), '0');
  return d;
}

/** Stand-in for the reclaim collector's BPF map (cumulative stall per cgroup id): no BPF in unit tests. */
function fakeReclaim(): { collector: ReclaimCollector; stallMs: Map<bigint, number> } {
  const stallMs = new Map<bigint, number>();
  const stat = (ms: number): ReclaimStat => ({
    directStallNs: BigInt(Math.round(ms * 1e6)),
    memcgStallNs: 0n,
    directReclaimed: BigInt(ms),
    memcgReclaimed: 0n,
    directCount: 1n,
    memcgCount: 0n,
  });
  const collector = {
    running: true,
    confirmsDeaths: false,
    read: () => new Map([...stallMs].map(([id, ms]) => [id, stat(ms)])),
  } as unknown as ReclaimCollector;
  return { collector, stallMs };
}

test('flags are read once, at decode: without HAS_TASK/HAS_TP_FIELDS the victim sizes are null in the record', () => {
  const build = (flags: number) => {
    const buf = Buffer.alloc(EVENT_SIZE);
    const o = EVENT_LAYOUT.offsets;
    buf.writeBigUInt64LE(KILL_BOOT_NS, o.boot_ns);
    buf.writeBigUInt64LE(1000n, o.total_vm_pages);
    buf.writeBigUInt64LE(500n, o.anon_rss_pages);
    buf.writeBigUInt64LE(8192n, o.pgtables_bytes);
    buf.writeBigUInt64LE(0xcc0n, o.gfp_mask);
    buf.writeUInt32LE(42, o.victim_pid);
    buf.writeUInt32LE(1000, o.victim_uid);
    buf.writeUInt32LE(HOOK_IDS.kprobe, o.hook);
    buf.writeUInt32LE(flags, o.flags);
    return new RecordAssembler({ facts, clock: clockWithKillAt(0) }).kill(decodeEvent(buf));
  };
  const bare = build(FLAG.HAS_OOM_CONTROL);
  assert.equal(bare.victim_total_vm_kb, null);
  assert.equal(bare.victim_anon_rss_kb, null);
  assert.equal(bare.victim_pgtables_kb, null);
  assert.equal(bare.victim_uid, null);
  assert.equal(bare.gfp_mask, '0xcc0', 'HAS_OOM_CONTROL alone still gives the oom_control fields');
  for (const f of [FLAG.HAS_TASK, FLAG.HAS_TP_FIELDS]) {
    const r = build(f);
    assert.equal(r.victim_total_vm_kb, 4000);
    assert.equal(r.victim_anon_rss_kb, 2000);
    assert.equal(r.victim_pgtables_kb, 8);
    assert.equal(r.victim_uid, 1000);
    assert.equal(r.gfp_mask, null, 'no HAS_OOM_CONTROL: no gfp_mask');
  }
  assert.equal(bare.time, formatRfc3339Ms(BASE_MS), 'dated by the injected clock');
});

test('trail window: samples after the kill are left out; at_record adds the reclaim they and the moment since counted', async () => {
  const dir = limitedCgroup('a', 100_000);
  const ino = fs.statSync(dir, { bigint: true }).ino;
  const { collector, stallMs } = fakeReclaim();
  let nowMs = BASE_MS;
  const sampler = new TrailSampler({
    logger: silentLogger(),
    cgroupVersion: 1,
    root,
    stepMs: 1000,
    samples: 10,
    maxCgroups: 10,
    reclaim: collector,
    psi: null,
    pressure: null,
    nowBootNs: () => 1n,
    nowMs: () => nowMs,
    onPressure: () => assert.fail('pressure is off'),
  });
  // six steps at t = 0 .. 5000 ms: usage grows by 10 kB and each step counts 10 ms of reclaim stall
  for (let k = 0; k <= 5; k++) {
    nowMs = BASE_MS + k * 1000;
    fs.writeFileSync(path.join(dir, 'memory.usage_in_bytes'), String(10_000 * (k + 1)));
    stallMs.set(ino, 10 * k);
    sampler.tick();
  }
  // the record is built later, at t = 5200 ms, with 7 ms more stall since the last step
  nowMs = BASE_MS + 5200;
  stallMs.set(ino, 57);
  fs.writeFileSync(path.join(dir, 'memory.usage_in_bytes'), '1234');
  const assembler = new RecordAssembler({ facts, clock: clockWithKillAt(2500), trail: sampler });
  const first = assembler.kill(raw());
  assert.equal(first.trail, undefined, 'the journaled record carries no trail');
  const r = await assembler.complete(raw(), first);
  const t = r.trail!;
  assert.ok(t, 'the OOM cgroup /a has a trail');
  assert.equal(t.start, formatRfc3339Ms(BASE_MS));
  assert.equal(t.step_ms, 1000);
  assert.deepEqual(t.usage_bytes, [10_000, 20_000, 30_000], 'samples at 0, 1000, 2000 ms; the kill was at 2500');
  assert.deepEqual(t.reclaim_stall_ms, [0, 10, 10]);
  assert.deepEqual(t.limit_bytes, [100_000, 100_000, 100_000]);
  assert.equal(t.psi_scope, 'none');
  assert.deepEqual(t.at_record, {
    time: formatRfc3339Ms(BASE_MS + 5200),
    usage_bytes: 1234,
    limit_bytes: 100_000,
    // 3 late samples x 10 ms + 7 ms since the last step
    reclaim_stall_ms: 37,
    reclaimed_pages: 37,
    psi_some_avg10: null,
    psi_full_avg10: null,
  });
  assert.equal(first.trail, undefined, 'the first record is not changed by the amend');
  // the look at the kill left the reclaim baseline alone: the next step still counts its 7 ms
  nowMs = BASE_MS + 6000;
  sampler.tick();
  assert.equal(sampler.store.latest('/a')?.reclaimStallMs, 7);
  // a cgroup the sampler does not follow: no trail, no error
  const other = await assembler.complete(raw(), assembler.kill(raw({ oomCgroup: { id: 9n, path: '/nope', truncated: false } })));
  assert.equal(other.trail, undefined);
  await sampler.stop();
});

test('a global OOM (no oom cgroup) takes the host trail "/"', async () => {
  const asked: Array<[string, number | undefined]> = [];
  const trail: TrailSource = {
    trailFor: (cg, killMs) => {
      asked.push([cg, killMs]);
      return undefined;
    },
  };
  const assembler = new RecordAssembler({ facts, clock: clockWithKillAt(1234), trail });
  await assembler.complete(raw({ oomCgroup: null }), assembler.kill(raw({ oomCgroup: null })));
  assert.deepEqual(asked, [['/', BASE_MS + 1234]]);
});

test('death amend: latencies from the victim mark, the wait bounded by deathWaitMs, none while stopping', async () => {
  const waits: number[] = [];
  let death: VictimDeath | null = { markNs: 1_000_000n, exitNs: 4_500_000n, reapedNs: null };
  const deaths: DeathSource & { confirmsDeaths: boolean } = {
    running: true,
    confirmsDeaths: true,
    confirmDeath: async (tid, markBootNs, maxWaitMs, nowBootNs) => {
      assert.equal(tid, 43, 'looked up by the victim thread');
      assert.equal(markBootNs, KILL_BOOT_NS);
      assert.equal(nowBootNs(), 7n, 'the injected clock');
      waits.push(maxWaitMs);
      return death;
    },
  };
  const assembler = new RecordAssembler({ facts, clock: clockWithKillAt(0, 7n), deaths, deathWaitMs: 750 });
  const first = assembler.kill(raw());
  const r = await assembler.complete(raw(), first);
  assert.equal(r.victim_exit_latency_ms, 3.5);
  assert.equal(r.victim_reaped_latency_ms, null, 'the exit freed the memory: no reaper');
  assert.equal('victim_exit_latency_ms' in first, false, 'the journaled record is left as it was');
  await assembler.complete(raw(), first, { wait: false });
  assert.deepEqual(waits, [750, 0]);

  death = null;
  const none = await assembler.complete(raw(), first);
  assert.equal(none.victim_exit_latency_ms, null, 'no exit seen in time: null, not absent');
  assert.equal(none.victim_reaped_latency_ms, null);

  deaths.confirmsDeaths = false;
  const unconfirmed = await assembler.complete(raw(), first);
  assert.equal('victim_exit_latency_ms' in unconfirmed, false, 'a kernel that cannot confirm deaths: no latency fields');
  const noReclaim = await new RecordAssembler({ facts, clock: clockWithKillAt(0) }).complete(raw(), first);
  assert.deepEqual(noReclaim, first, 'no death source, no trail: the record as decoded');
});

test('a pressure record carries the trail the sampler took at its decision, dated by the clock', async () => {
  const dir = limitedCgroup('p', 100_000);
  let nowMs = BASE_MS;
  const events: PressureEvent[] = [];
  const sampler = new TrailSampler({
    logger: silentLogger(),
    cgroupVersion: 1,
    root,
    stepMs: 1000,
    samples: 10,
    maxCgroups: 10,
    reclaim: null,
    psi: null,
    pressure: { enabled: true, usageRatio: 0.9, psiFullAvg10: 100, minIntervalMs: 60_000 },
    nowBootNs: () => KILL_BOOT_NS,
    nowMs: () => nowMs,
    onPressure: (ev) => events.push(ev),
  });
  for (const [k, usage] of [50_000, 95_000, 99_000].entries()) {
    nowMs = BASE_MS + k * 1000;
    fs.writeFileSync(path.join(dir, 'memory.usage_in_bytes'), String(usage));
    sampler.tick();
  }
  const ev = events.find((e) => e.cgroup === '/p');
  assert.ok(ev, 'usage rising past 90 % of the limit fired');
  assert.deepEqual(ev.trail?.usage_bytes, [50_000, 95_000], 'the trail up to the decision');
  const r = new RecordAssembler({ facts, clock: clockWithKillAt(777) }).pressure(ev);
  assert.equal(r.kind, 'memory_pressure');
  assert.equal(r.oom_cgroup, '/p');
  assert.equal(r.time, formatRfc3339Nanos(BigInt(BASE_MS + 777) * 1_000_000n));
  assert.deepEqual(r.trail, ev.trail);
  assert.equal(r.trail?.at_record, undefined, 'no kill: no at_record');
  await sampler.stop();
});

test('memory.oom.group sweeps: oom_group_kill_size counts the marks of one sweep (one thread, one OOM cgroup, one call)', async () => {
  let now = KILL_BOOT_NS;
  const clock = { ...clockWithKillAt(0), bootNowNs: () => now };
  const a = new RecordAssembler({ facts, clock });
  const group = (dtNs: bigint, over: Partial<RawOomEvent> = {}) => raw({ bootNs: KILL_BOOT_NS + dtNs, oomGroupKill: true, ...over });
  // one sweep of 3 (marks microseconds apart), a later sweep of 1 by the same thread, a sweep of 2 by another
  const evs = [group(0n), group(5_000n), group(9_000n), group(5_000_000_000n), group(10_000n, { triggerTid: 99 }), group(12_000n, { triggerTid: 99 })];
  const records = evs.map((ev) => a.kill(ev));
  now += 300_000_000n; // past the settle time
  const sizes = [];
  for (const [i, ev] of evs.entries()) sizes.push((await a.complete(ev, records[i]!)).oom_group_kill_size);
  assert.deepEqual(sizes, [3, 3, 3, 1, 2, 2]);
  const single = raw({ oomGroupKill: false });
  assert.equal((await a.complete(single, a.kill(single))).oom_group_kill_size, undefined, 'not a group kill: no size');
});

test('memory.oom.group sweeps with a collector to flush: a member reaching user space late still counts (the kernel clock decides)', async () => {
  let now = KILL_BOOT_NS;
  const clock = { ...clockWithKillAt(0), bootNowNs: () => now };
  const group = (dtNs: bigint) => raw({ bootNs: KILL_BOOT_NS + dtNs, oomGroupKill: true });
  // the sweep's third and fourth members are still in the ring when the first record is completed: the first
  // flush delivers the third (marked 600 ms after the first), the next the fourth (marked 1.5 s after the first)
  const late = [group(600_000_000n), group(1_500_000_000n)];
  let flushes = 0;
  const a: RecordAssembler = new RecordAssembler({
    facts,
    clock,
    flush: async () => {
      flushes++;
      now += 400_000_000n; // each flush takes its time, and the clock runs on
      const ev = late.shift();
      if (ev) a.kill(ev);
      return now;
    },
  });
  const first = [group(0n), group(5_000n)];
  const records = first.map((ev) => a.kill(ev));
  const sizes = [];
  for (const [i, ev] of first.entries()) sizes.push((await a.complete(ev, records[i]!)).oom_group_kill_size);
  assert.deepEqual(sizes, [4, 4], 'every member, however late it was delivered');
  assert.ok(flushes >= 3, 'flushed until the ring was read 1 s past the last mark');
});
