/*
 * "Why this kill" without a kernel: the printed-report parser on the three shapes the kernel prints
 * (6.18 v1 line by line, 6.1 v2 as one multi-line record with the old Tasks header, a global
 * Mem-Info), badness, candidates, cause, the bpf/kmsg choice, the ClickHouse round trip, the console.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OomReportParser } from '../../src/collectors/kmsg/report';
import type { KmsgRecord } from '../../src/collectors/kmsg/kmsg';
import { badness, breakdownUnflushed, candidatesFromReport, causeOf, memoryAtKill, memoryFromReport, victimShare } from '../../src/pipeline/assemble/explain';
import { decodeEvent, EVENT_LAYOUT, EVENT_SIZE, FLAG, MAK_FLAG, type RawOomEvent } from '../../src/collectors/oomkill/event';
import { encodeRow, rowToRecord, toClickHouseTime } from '../../src/sinks/clickhouse/encoder';
import { formatKillBlock, sparkline } from '../../src/sinks/console/format';
import { baseRecord } from '../helpers/records';
import { killsFromKmsg } from '../../src/collectors/kmsg/kmsg';
import { enrichKmsg } from '../../src/pipeline/assemble/enrich';
import type { MemoryAtKill, OomRecord } from '../../src/record/record';

const recs = (lines: string[]): KmsgRecord[] => lines.map((message, i) => ({ seq: 100 + i, usec: 1000 + i, message }));

// as 6.18 printed it on this host (cgroup v1), one record per line
const V1 = [
  'dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0',
  'CPU: 1 UID: 0 PID: 13550 Comm: dd Not tainted 6.18.44 #1 PREEMPT(none) ',
  'memory: usage 65536kB, limit 65536kB, failcnt 451',
  'memory+swap: usage 65536kB, limit 9007199254740988kB, failcnt 0',
  'kmem: usage 200kB, limit 9007199254740988kB, failcnt 0',
  'Memory cgroup stats for /oomtrail-x:',
  'cache 0', 'rss 66904064', 'shmem 0', 'mapped_file 0', 'dirty 0', 'writeback 0', 'swap 0',
  'total_cache 4096', 'total_rss 66904064', 'total_shmem 0', 'total_mapped_file 0', 'total_dirty 0', 'total_writeback 0', 'total_swap 0',
  'Tasks state (memory values in pages):',
  '[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name',
  '[  14532]     0 14532    33512    16729    16320      409         0   192512        0             0 dd',
  '[  14600]  1000 14600    20000     9000     9000        0         0    65536        0          -900 big holder',
  '[  14601]     0 14601     1000       10       10        0         0     4096        0         -1000 pinned',
  'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oomtrail-x,task_memcg=/oomtrail-x,task=dd,pid=14532,uid=0',
];

// 6.1 / cgroup v2: the stats arrive as one record with embedded newlines; rss is not split
const V2 = [
  'hog invoked oom-killer: gfp_mask=0x1100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0',
  'memory: usage 65536kB, limit 65536kB, failcnt 12',
  'swap: usage 0kB, limit 0kB, failcnt 0',
  'Memory cgroup stats for /t:',
  'anon 60000000\nfile 5000000\nkernel 1000000\nkernel_stack 16384\npagetables 200000\nsock 0\nshmem 4000000\nfile_mapped 100\nfile_dirty 0\nfile_writeback 0\nslab 300000\n',
  'Tasks state (memory values in pages):',
  '[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name',
  '[    200]     0   200    30000    15000   200704        0             0 hog',
  'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/t,task_memcg=/t,task=hog,pid=200,uid=0',
];

const GLOBAL = [
  'stress invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, oom_score_adj=0',
  'Mem-Info:',
  'active_anon:100 inactive_anon:50000 isolated_anon:0',
  ' active_file:10 inactive_file:20 isolated_file:0',
  ' unevictable:0 dirty:1 writeback:2',
  ' slab_reclaimable:300 slab_unreclaimable:400',
  ' mapped:5 shmem:1000 pagetables:60',
  'Node 0 active_anon:400kB inactive_anon:200000kB',
  '1234 total pagecache pages',
  'oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=stress,pid=77,uid=0',
];

test('report parser: v1 counters, total_* stats, split-rss task rows with spaces in names', () => {
  const p = new OomReportParser();
  p.feed(recs(V1));
  const r = p.find(14532)!;
  assert.ok(r);
  assert.deepEqual(r.counters.memory, { usage_kb: 65536, limit_kb: 65536, failcnt: 451 });
  assert.equal(r.counters.kmem.usage_kb, 200);
  assert.equal(r.statsCgroup, '/oomtrail-x');
  assert.equal(r.stats.total_rss, 66904064);
  assert.equal(r.tasks.length, 3);
  assert.deepEqual(r.tasks[0], { pid: 14532, uid: 0, tgid: 14532, total_vm: 33512, rss: 16729, rss_anon: 16320, rss_file: 409, rss_shmem: 0, pgtables_bytes: 192512, swapents: 0, oom_score_adj: 0, name: 'dd' });
  assert.equal(r.tasks[1].name, 'big holder');
  const m = memoryFromReport(r, 4096)!;
  assert.equal(m.source, 'kmsg');
  assert.equal(m.usage_bytes, 65536 * 1024);
  assert.equal(m.limit_bytes, 65536 * 1024);
  assert.equal(m.failcnt, 451);
  assert.equal(m.anon_bytes, 66904064, 'the hierarchical total_rss, not the local rss');
  assert.equal(m.file_bytes, 4096);
  assert.equal(m.kernel_bytes, 200 * 1024);
  assert.equal(m.swap_bytes, 0);
  assert.equal(m.slab_bytes, null, 'v1 prints no slab');
  assert.equal(p.find(1), null);
});

test('report parser: v2 multi-line stats record and the pre-6.8 Tasks header', () => {
  const p = new OomReportParser();
  p.feed(recs(V2));
  const r = p.find(200)!;
  assert.equal(r.tasks[0].rss_anon, null);
  assert.equal(r.tasks[0].rss, 15000);
  const m = memoryFromReport(r, 4096)!;
  assert.equal(m.anon_bytes, 60000000);
  assert.equal(m.file_bytes, 5000000);
  assert.equal(m.shmem_bytes, 4000000);
  assert.equal(m.kernel_bytes, 1000000);
  assert.equal(m.slab_bytes, 300000);
  assert.equal(m.pagetables_bytes, 200000);
  assert.equal(m.swap_bytes, 0, 'from the swap: line');
  assert.equal(m.failcnt, 12);
});

test('report parser: a global OOM gives the host breakdown from Mem-Info', () => {
  const p = new OomReportParser();
  p.feed(recs(GLOBAL));
  const m = memoryFromReport(p.find(77)!, 4096)!;
  assert.equal(m.scope, 'host');
  assert.equal(m.shmem_bytes, 1000 * 4096);
  assert.equal(m.anon_bytes, (50100 - 1000) * 4096, 'anon LRU without shmem');
  assert.equal(m.file_bytes, 1234 * 4096);
  assert.equal(m.slab_bytes, 700 * 4096);
  assert.equal(m.usage_bytes, null);
});

test('a report without its oom-kill line (cut by rate limiting or the ring) is never completed', () => {
  const p = new OomReportParser();
  p.feed(recs(V1.slice(0, -1)));
  p.feed(recs(V2));
  assert.equal(p.find(14532), null);
  assert.ok(p.find(200));
});

test('badness follows oom_badness: rss + swap + page tables, adj scaled by totalpages/1000 (integer first)', () => {
  assert.equal(badness({ rss: 16729, swapents: 0, pgtables_bytes: 192512, oom_score_adj: 0 }, 16384, 4096), 16729 + 47);
  // 16383 / 1000 = 16 in C: -900 * 16
  assert.equal(badness({ rss: 9000, swapents: 5, pgtables_bytes: 65536, oom_score_adj: -900 }, 16383, 4096), 9000 + 5 + 16 - 14400);
  assert.equal(badness({ rss: 10, swapents: 0, pgtables_bytes: 0, oom_score_adj: -1000 }, 16384, 4096), null);
});

test('candidates: ranked by badness, victim marked, victim kept even beyond the top N', () => {
  const p = new OomReportParser();
  p.feed(recs(V1));
  const r = p.find(14532)!;
  const all = candidatesFromReport(r, 14532, 16384, 4096, 5)!;
  assert.deepEqual(all.map((c) => c.pid), [14532, 14600, 14601]);
  assert.equal(all[0].victim, true);
  assert.equal(all[0].rss_anon_kb, 16320 * 4);
  assert.equal(all[0].rss_kb, 16729 * 4);
  assert.equal(all[0].pgtables_kb, 188);
  assert.equal(all[2].points, null);
  // the victim not among the top 1 (a task with a bigger score was exiting): still listed, marked
  const r2 = { ...r, tasks: [{ ...r.tasks[1], rss: 20000, oom_score_adj: 0 }, r.tasks[0]] };
  const top1 = candidatesFromReport(r2, 14532, 16384, 4096, 1)!;
  assert.deepEqual(top1.map((c) => [c.pid, c.victim]), [[14600, false], [14532, true]]);
});

const mak = (over: Partial<MemoryAtKill>): MemoryAtKill => ({
  source: 'bpf', scope: 'memcg', usage_bytes: 100, limit_bytes: 100, failcnt: 0, anon_bytes: 0, file_bytes: 0, shmem_bytes: 0,
  file_mapped_bytes: 0, file_dirty_bytes: 0, file_writeback_bytes: 0, kernel_bytes: 0, slab_bytes: 0, sock_bytes: 0, pagetables_bytes: 0, swap_bytes: 0, ...over,
});

test('cause: the part holding at least half, page cache without shmem, else mixed', () => {
  assert.equal(causeOf(mak({ anon_bytes: 90, file_bytes: 10 })), 'anon');
  assert.equal(causeOf(mak({ anon_bytes: 10, file_bytes: 90, shmem_bytes: 85 })), 'shmem');
  assert.equal(causeOf(mak({ anon_bytes: 10, file_bytes: 90, shmem_bytes: 5 })), 'page_cache');
  assert.equal(causeOf(mak({ anon_bytes: 10, file_bytes: 10, kernel_bytes: 60 })), 'kernel');
  assert.equal(causeOf(mak({ anon_bytes: 40, file_bytes: 35, kernel_bytes: 25 })), 'mixed');
  assert.equal(causeOf(mak({ anon_bytes: null })), null);
  assert.equal(causeOf(null), null);
  assert.equal(victimShare(50, mak({ usage_bytes: 200 })), 0.25);
  assert.equal(victimShare(null, mak({})), null);
});

test('cause unknown: a breakdown more than half of usage off (unflushed memcg stats) names no part', () => {
  const Mi = 1048576;
  // as recorded on 6.18 / v1 for a 64 MiB anon hog killed past the report rate limit in a fresh cgroup:
  // the stats never flushed (anon 0), v1's kmem a live counter; the old rule said `kernel`
  const stale = mak({ usage_bytes: 64 * Mi, anon_bytes: 0, file_bytes: 0, kernel_bytes: 0.2 * Mi });
  assert.equal(breakdownUnflushed(stale), true);
  assert.equal(causeOf(stale), 'unknown');
  // the same hog's printed (flushed) report in the same run: parts 64.0 of 64.0 MiB
  assert.equal(causeOf(mak({ usage_bytes: 64 * Mi, anon_bytes: 63.8 * Mi, file_bytes: 0, kernel_bytes: 0.2 * Mi })), 'anon');
  // the bound: parts within half of usage either way; anon + file + kernel + sock, swap outside usage
  assert.equal(causeOf(mak({ anon_bytes: 40, file_bytes: 10 })), 'anon', 'half accounted for');
  assert.equal(causeOf(mak({ anon_bytes: 39, file_bytes: 10 })), 'unknown', 'less than half');
  assert.equal(causeOf(mak({ anon_bytes: 140, file_bytes: 10 })), 'anon', 'half again as much');
  assert.equal(causeOf(mak({ anon_bytes: 141, file_bytes: 10 })), 'unknown', 'more than half phantom (stale after a reclaim)');
  assert.equal(causeOf(mak({ anon_bytes: 30, file_bytes: 0, sock_bytes: 60 })), 'anon', 'v2 socket memory is charged to usage');
  assert.equal(causeOf(mak({ anon_bytes: 90, file_bytes: 0, swap_bytes: 400 })), 'swap', 'v1 swap is not in usage');
  assert.equal(causeOf(mak({ anon_bytes: 0, file_bytes: 0, swap_bytes: 400 })), 'unknown');
  // nothing to compare against: the old rule
  assert.equal(causeOf(mak({ usage_bytes: null, anon_bytes: 5, file_bytes: 0 })), 'anon');
  assert.equal(causeOf(mak({ usage_bytes: 0, anon_bytes: 5, file_bytes: 0 })), 'anon');
  assert.equal(causeOf(mak({ scope: 'host', usage_bytes: null, anon_bytes: 5, file_bytes: 0 })), 'anon');
  assert.equal(breakdownUnflushed(mak({ anon_bytes: null })), false);
  assert.equal(causeOf(mak({ anon_bytes: null })), null);
});

function rawEvent(makFlags: number, values: Record<string, number>): RawOomEvent {
  const buf = Buffer.alloc(EVENT_SIZE);
  const o = EVENT_LAYOUT.offsets;
  buf.writeUInt32LE(FLAG.HAS_TASK | FLAG.OOM_CG_VALID | FLAG.HAS_MEMCG, o.flags);
  buf.writeUInt32LE(makFlags, o.mak_flags);
  buf.writeUInt32LE(40, o.mak_stat_slots);
  for (const [k, v] of Object.entries(values)) buf.writeBigUInt64LE(BigInt(v), o[k]);
  return decodeEvent(buf);
}

test('decode + memoryAtKill: bpf values when the kernel side read the stats; the printed breakdown when it could not', () => {
  const full = rawEvent(MAK_FLAG.COUNTERS | MAK_FLAG.STATS | MAK_FLAG.KMEM | MAK_FLAG.COMPACTED, {
    mak_usage_pages: 16384, mak_limit_pages: 16384, mak_failcnt: 7, mak_anon_pages: 16000, mak_file_pages: 300, mak_shmem_pages: 100,
    mak_kmem_usage_pages: 50, mak_slab_reclaimable_bytes: 1000, mak_slab_unreclaimable_bytes: 24, mak_swap_pages: 0,
  });
  assert.equal(full.memAtKill?.statSlots, 40);
  const m = memoryAtKill(full, 4096, 1)!;
  assert.equal(m.source, 'bpf');
  assert.equal(m.anon_bytes, 16000 * 4096);
  assert.equal(m.kernel_bytes, 50 * 4096, 'v1: the kmem counter');
  assert.equal(m.slab_bytes, 1024);
  assert.equal(m.failcnt, 7);

  // compacted array this object could not map: counters from the hook, breakdown from the report
  const unmapped = rawEvent(MAK_FLAG.COUNTERS | MAK_FLAG.COMPACTED | MAK_FLAG.UNMAPPED, { mak_usage_pages: 16384, mak_limit_pages: 16384, mak_failcnt: 451 });
  const p = new OomReportParser();
  p.feed(recs(V1));
  unmapped.kernelReport = p.find(14532);
  const u = memoryAtKill(unmapped, 4096, 1)!;
  assert.equal(u.source, 'kmsg');
  assert.equal(u.anon_bytes, 66904064);
  assert.equal(u.usage_bytes, 16384 * 4096);
  unmapped.kernelReport = null;
  assert.equal(memoryAtKill(unmapped, 4096, 1)!.anon_bytes, null, 'neither: null, never a read after the kill');
  assert.equal(rawEvent(0, {}).memAtKill, null, 'no OOM memcg read');
});

test('memoryAtKill + cause: a kill without a printed report whose stats were never flushed gives cause unknown', () => {
  // the hook's reads of such a kill (6.18, v1): usage 64 MiB, anon 0, kmem 50 pages
  const ev = rawEvent(MAK_FLAG.COUNTERS | MAK_FLAG.STATS | MAK_FLAG.KMEM | MAK_FLAG.COMPACTED, { mak_usage_pages: 16384, mak_limit_pages: 16384, mak_failcnt: 20, mak_kmem_usage_pages: 50 });
  const m = memoryAtKill(ev, 4096, 1)!;
  assert.equal(m.anon_bytes, 0);
  assert.equal(causeOf(m), 'unknown');
  const note = formatKillBlock(baseRecord({ memory_at_kill: m, cause: causeOf(m) }));
  assert.match(note, /cause unknown \(breakdown not flushed by the kernel\)/);
});

test('memoryAtKill: where the kernel printed the report, the page counters are the printed ones, the breakdown the hook\'s', () => {
  // as on 6.1: another CPU's charge stock drained between dump_header's read and the hook's
  const ev = rawEvent(MAK_FLAG.COUNTERS | MAK_FLAG.STATS | MAK_FLAG.KMEM, {
    mak_usage_pages: 16384 - 43, mak_limit_pages: 16384, mak_failcnt: 450, mak_anon_pages: 16000, mak_file_pages: 300, mak_kmem_usage_pages: 49,
  });
  assert.equal(memoryAtKill(ev, 4096, 1)!.usage_bytes, (16384 - 43) * 4096, 'no report: the hook read');
  const p = new OomReportParser();
  p.feed(recs(V1));
  ev.kernelReport = p.find(14532);
  const m = memoryAtKill(ev, 4096, 1)!;
  assert.equal(m.source, 'bpf', 'the breakdown stays the hook\'s');
  assert.equal(m.anon_bytes, 16000 * 4096);
  assert.equal(m.usage_bytes, 65536 * 1024, 'memory: usage as printed');
  assert.equal(m.failcnt, 451);
  assert.equal(m.kernel_bytes, 200 * 1024, 'v1 kmem: usage as printed');
});

const explained = (over: Partial<OomRecord> = {}): OomRecord =>
  baseRecord({
    memory_at_kill: mak({ usage_bytes: 67108864, anon_bytes: 60000000, file_bytes: 7000000, shmem_bytes: 6000000, kernel_bytes: 100000, slab_bytes: null }),
    candidates: [
      { pid: 1, tgid: 1, comm: 'dd', uid: 0, rss_kb: 60100, rss_anon_kb: 60000, rss_file_kb: 100, rss_shmem_kb: 0, swapents: 0, pgtables_kb: 188, oom_score_adj: 0, points: 15047, victim: true },
    ],
    cause: 'anon',
    victim_share: 0.9,
    ...over,
  });

test('ClickHouse: memory_at_kill as typed columns, candidates as JSON; the row reads back as the record', () => {
  for (const r of [explained(), explained({ memory_at_kill: null, candidates: null, cause: null, victim_share: null }), baseRecord()]) {
    const row = JSON.parse(encodeRow(r)) as Record<string, unknown>;
    if (r.memory_at_kill) {
      assert.equal(row.at_kill_anon_bytes, 60000000);
      assert.equal(row.at_kill_source, 'bpf');
      assert.equal(typeof row.candidates, 'string');
      assert.equal('memory_at_kill' in row, false);
    }
    // what ClickHouse sends back: every column, the absent ones at their defaults
    const back: Record<string, unknown> = { at_kill_source: '', at_kill_scope: '', cause: null, victim_share: null, candidates: '', ...row, time: toClickHouseTime(r.time) };
    for (const c of ['usage_bytes', 'limit_bytes', 'failcnt', 'anon_bytes', 'file_bytes', 'shmem_bytes', 'file_mapped_bytes', 'file_dirty_bytes', 'file_writeback_bytes', 'kernel_bytes', 'slab_bytes', 'sock_bytes', 'pagetables_bytes', 'swap_bytes']) {
      if (!(`at_kill_${c}` in back)) back[`at_kill_${c}`] = null;
    }
    assert.deepEqual(rowToRecord(back), r);
  }
});

test('console: memory at kill line, candidates with the victim marked, a sparkline of the trail', () => {
  const r = explained({
    trail: {
      start: '2026-11-30T08:00:00.000000000Z', step_ms: 1000,
      usage_bytes: [0, 16777216, 33554432, null, 67108864], limit_bytes: [67108864, 67108864, 67108864, 67108864, 67108864],
      reclaim_stall_ms: [0, 0, 0, 0, 0], reclaimed_pages: [0, 0, 0, 0, 0], psi_some_avg10: [null, null, null, null, null], psi_full_avg10: [null, null, null, null, null], psi_scope: 'none',
    },
  });
  const text = formatKillBlock(r);
  assert.match(text, /at kill  \[bpf\] usage 64\.0 MiB: anon 57\.2 MiB  file 6\.7 MiB  shmem 5\.7 MiB  kernel 0\.1 MiB  cause anon  victim 90% of usage/);
  assert.match(text, /top      pid 1 \(dd\) points 15047  rss 58\.7 MiB  adj 0  <- victim/);
  assert.match(text, /picture  ▁▃▅·█  usage of 64\.0 MiB limit, last 5 s/);
  assert.equal(sparkline({ ...r.trail!, usage_bytes: Array(100).fill(0), limit_bytes: Array(100).fill(1) }).split(' ')[0].length, 60, 'the last 60 s only');
});

test('backfill: a kill recovered from the kernel log carries the why-fields of its own printed report', () => {
  const killed = 'Memory cgroup out of memory: Killed process 14532 (dd) total-vm:134048kB, anon-rss:65280kB, file-rss:1636kB, shmem-rss:0kB, UID:0 pgtables:188kB oom_score_adj:0';
  const kills = killsFromKmsg(recs([...V1, killed, ...V1.slice(0, 3), killed.replace('14532', '99')]));
  assert.equal(kills.length, 2);
  const facts = { host: 'h', bootId: 'b', kernelRelease: 'k', pageSize: 4096, cgroupVersion: 1 as const, agentVersion: '0' };
  const r = enrichKmsg(kills[0], facts, (ns) => ns);
  assert.equal(r.memory_at_kill?.source, 'kmsg');
  assert.equal(r.memory_at_kill?.anon_bytes, 66904064);
  assert.equal(r.cause, 'anon');
  assert.deepEqual(r.candidates?.map((c) => [c.pid, c.victim]), [[14532, true], [14600, false], [14601, false]]);
  assert.equal(r.victim_share, Math.round(((65280 + 1636) * 1024 / (65536 * 1024)) * 1000) / 1000);
  // the second kill's report was cut (no oom-kill line): no why-fields rather than another kill's
  const r2 = enrichKmsg(kills[1], facts, (ns) => ns);
  assert.equal(r2.memory_at_kill, undefined);
  assert.equal(r2.candidates, undefined);
  // oom_scope from the oom-kill line's oom_memcg (outside kubepods: other); unknown without that line
  assert.equal(r.oom_scope, 'other');
  assert.equal(r2.oom_scope, undefined);
  const pod = enrichKmsg(killsFromKmsg(recs([...V1.map((l) => l.replaceAll('memcg=/oomtrail-x', 'memcg=/kubepods/burstable/pod3d274242-8ee0-11e9-a8a6-1e68d864ef1a')), killed]))[0], facts, (ns) => ns);
  assert.equal(pod.oom_scope, 'pod');
});
