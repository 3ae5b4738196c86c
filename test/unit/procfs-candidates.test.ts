/*
 * The candidate list's last fallback without a kernel: /proc status texts as 6.18 prints them, a
 * fake cgroup subtree and /proc, the victim's row from the kernel event, ranking by badness, the
 * record's candidates_source, its ClickHouse round trip (migration 5) and the console line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseProcStatus, parseStartTime, readCgroupTasks, subtreeTgids, type ProcTask } from '../../src/collectors/oomkill/procfs';
import { candidatesFromProcfs } from '../../src/pipeline/assemble/explain';
import { enrich } from '../../src/pipeline/assemble/enrich';
import { OomReportParser } from '../../src/collectors/kmsg/report';
import type { RawOomEvent } from '../../src/collectors/oomkill/event';
import type { HostFacts } from '../../src/host/facts';
import { encodeRow, rowToRecord, toClickHouseTime } from '../../src/sinks/clickhouse/encoder';
import { formatKillBlock } from '../../src/sinks/console/format';
import { baseRecord } from '../helpers/records';

// /proc/<pid>/status of a sleeping dd on 6.18 (trimmed to the lines around what is read)
const STATUS_DD = `Name:\tdd
Umask:\t0022
State:\tS (sleeping)
Tgid:\t5101
Ngid:\t0
Pid:\t5101
PPid:\t5000
Uid:\t1000\t0\t0\t0
Gid:\t0\t0\t0\t0
VmPeak:\t   12712 kB
VmSize:\t   12712 kB
VmRSS:\t    9880 kB
RssAnon:\t    8448 kB
RssFile:\t    1432 kB
RssShmem:\t       0 kB
VmData:\t    8528 kB
VmPTE:\t      60 kB
VmSwap:\t      16 kB
Threads:\t1
`;
// a kernel thread: no mm, no Vm*/Rss* lines
const STATUS_KTHREAD = 'Name:\tkworker/0:1\nState:\tI (idle)\nTgid:\t12\nPid:\t12\nPPid:\t2\nUid:\t0\t0\t0\t0\nThreads:\t1\n';

test('parseProcStatus: uid is the real one, sizes in kB; a task without an mm is no row', () => {
  assert.deepEqual(parseProcStatus(STATUS_DD), { tgid: 5101, uid: 1000, rss_anon_kb: 8448, rss_file_kb: 1432, rss_shmem_kb: 0, swap_kb: 16, pgtables_kb: 60 });
  assert.equal(parseProcStatus(STATUS_KTHREAD), null);
  assert.equal(parseProcStatus(''), null);
});

/** /proc/<pid>/stat as 6.18 prints it (a `dd` of this host's), with this pid, comm and start time (field 22). */
const statLine = (pid: number, comm: string, start: number) =>
  `${pid} (${comm}) R 18900 18900 3401 34817 18900 4194304 2311 0 0 0 12 31 0 0 20 0 1 0 ${start} 139337728 2164 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n`;

/** A cgroup dir with a child (the kernel scans the subtree) and a /proc with the given processes. */
function fakeTree(): { cg: string; proc: string; cleanup: () => void } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-procfs-'));
  const cg = path.join(base, 'cg');
  fs.mkdirSync(path.join(cg, 'child', 'grandchild'), { recursive: true });
  fs.writeFileSync(path.join(cg, 'cgroup.procs'), '5100\n5101\n');
  fs.writeFileSync(path.join(cg, 'child', 'cgroup.procs'), '5102\n12\n5101\n');
  fs.writeFileSync(path.join(cg, 'child', 'grandchild', 'cgroup.procs'), '5103\n');
  const proc = path.join(base, 'proc');
  const put = (pid: number, status: string, adj: string, comm: string) => {
    fs.mkdirSync(path.join(proc, String(pid)), { recursive: true });
    fs.writeFileSync(path.join(proc, String(pid), 'status'), status);
    fs.writeFileSync(path.join(proc, String(pid), 'oom_score_adj'), adj);
    fs.writeFileSync(path.join(proc, String(pid), 'comm'), comm);
    fs.writeFileSync(path.join(proc, String(pid), 'stat'), statLine(pid, comm.trim(), 1000 + pid));
  };
  put(5100, STATUS_DD.replace(/5101/g, '5100'), '0\n', 'victim\n');
  put(5101, STATUS_DD, '-1000\n', 'dd\n');
  put(5102, STATUS_DD.replace(/5101/g, '5102').replace('8448 kB', '20000 kB'), '500\n', 'big one\n');
  put(12, STATUS_KTHREAD, '0\n', 'kworker/0:1\n');
  // 5103 listed but gone before its /proc files were read
  return { cg, proc, cleanup: () => fs.rmSync(base, { recursive: true, force: true }) };
}

test('readCgroupTasks: the whole subtree, each process once, without the victim, kernel threads or the gone', () => {
  const t = fakeTree();
  try {
    assert.deepEqual(subtreeTgids(t.cg).sort(), [12, 5100, 5101, 5102, 5103]);
    assert.equal(subtreeTgids(t.cg, 3).length, 3, 'capped: the decode path stays short');
    const r = readCgroupTasks(t.cg, new Set([5100]), t.proc);
    const byPid = [...r.tasks].sort((a, b) => a.pid - b.pid);
    assert.deepEqual(byPid.map((x) => [x.pid, x.comm, x.oom_score_adj, x.rss_anon_kb]), [[5101, 'dd', -1000, 8448], [5102, 'big one', 500, 20000]]);
    assert.equal(r.skipped, 2, 'the kernel thread and the gone process');
    assert.ok(r.ms >= 0);
  } finally {
    t.cleanup();
  }
});

test('readCgroupTasks: a row is one process — a pid that went to another process between the reads is dropped', () => {
  const t = fakeTree();
  try {
    // stand-in for a pid reuse between opens (not reproducible on demand): the second read of 5102's
    // stat shows another start time, as a new process under that pid would
    let statReads = 0;
    const read = (file: string) => {
      const text = fs.readFileSync(file, 'utf8');
      if (file.endsWith('/5102/stat') && ++statReads > 1) return statLine(5102, 'big one', 999_999);
      return text;
    };
    const r = readCgroupTasks(t.cg, new Set([5100]), t.proc, read);
    assert.deepEqual(r.tasks.map((x) => x.pid).sort(), [5101]);
    assert.equal(r.skipped, 3, 'the kernel thread, the gone process and the changed one');
    assert.equal(parseStartTime(statLine(7, 'a) b (c', 4242)), 4242, 'a comm with ") " does not shift the fields');
  } finally {
    t.cleanup();
  }
});

const facts: HostFacts = { host: 'h1', bootId: 'b-1', kernelRelease: '6.18.0', pageSize: 4096, cgroupVersion: 1, agentVersion: '9.9.9' };

function raw(over: Partial<RawOomEvent> = {}): RawOomEvent {
  return {
    bootNs: 5_000_000_123n,
    totalVmPages: 33512,
    anonRssPages: 16320,
    fileRssPages: 409,
    shmemRssPages: 0,
    pgtablesBytes: 192512,
    gfpMask: 0xcc0,
    order: 0,
    domainPages: 16384,
    memcgLimitPages: 16384,
    memcgUsagePages: 16384,
    victimPid: 5100,
    victimTid: 5100,
    victimUid: 0,
    triggerPid: 5100,
    triggerTid: 5100,
    oomScoreAdj: 0,
    hook: 'tp_btf',
    constraint: 'memcg',
    constraintInferred: true,
    victimComm: 'dd',
    triggerComm: 'dd',
    victimCgroup: { id: 1n, path: '/x', truncated: false },
    oomCgroup: { id: 1n, path: '/x', truncated: false },
    ...over,
  };
}

const task = (over: Partial<ProcTask>): ProcTask => ({
  pid: 1, tgid: 1, comm: 'sleep', uid: 0, rss_anon_kb: 100, rss_file_kb: 1000, rss_shmem_kb: 0, swap_kb: 0, pgtables_kb: 40, oom_score_adj: 0, ...over,
});

test('candidatesFromProcfs: the victim row from the event, the others from /proc, ranked by badness', () => {
  const tasks = [
    task({ pid: 7001, tgid: 7001, comm: 'holder', uid: 1000, rss_anon_kb: 36864, rss_file_kb: 1432, rss_shmem_kb: 4, swap_kb: 8, pgtables_kb: 124, oom_score_adj: 0 }),
    task({ pid: 7002, tgid: 7002, comm: 'pinned', oom_score_adj: -1000 }),
    task({ pid: 7003, tgid: 7003, comm: 'tiny' }),
    task({ pid: 5100, tgid: 5100, comm: 'stale victim' }), // listed anyway: the event's row wins
  ];
  const c = candidatesFromProcfs(raw(), tasks, 16384, 4096, 5)!;
  assert.deepEqual(c.map((x) => x.pid), [5100, 7001, 7003, 7002]);
  assert.deepEqual(c[0], {
    pid: 5100, tgid: 5100, comm: 'dd', uid: 0, rss_kb: (16320 + 409) * 4, rss_anon_kb: 16320 * 4, rss_file_kb: 409 * 4, rss_shmem_kb: 0,
    swapents: null, pgtables_kb: 188, oom_score_adj: 0, points: 16320 + 409 + 47, victim: true,
  });
  assert.deepEqual(c[1], {
    pid: 7001, tgid: 7001, comm: 'holder', uid: 1000, rss_kb: 36864 + 1432 + 4, rss_anon_kb: 36864, rss_file_kb: 1432, rss_shmem_kb: 4,
    swapents: 2, pgtables_kb: 124, oom_score_adj: 0, points: (36864 + 1432 + 4) / 4 + 2 + 31, victim: false,
  });
  assert.equal(c[3].points, null, '-1000 listed (the kernel lists it) but never chosen');
  // oom_score_adj scaled by the domain: a +800 small task outranks a bigger 0
  const adj = candidatesFromProcfs(raw({ oomScoreAdj: 800, anonRssPages: 2000, fileRssPages: 0 }), tasks.slice(0, 1), 16384, 4096, 5)!;
  assert.deepEqual(adj.map((x) => [x.pid, x.points]), [[5100, 2000 + 47 + 800 * 16], [7001, 9575 + 2 + 31]]);
  // top N cut; the victim kept even below it
  const small = candidatesFromProcfs(raw({ anonRssPages: 10, fileRssPages: 0, pgtablesBytes: 0 }), tasks, 16384, 4096, 1)!;
  assert.deepEqual(small.map((x) => [x.pid, x.victim]), [[7001, false], [5100, true]]);
  // no victim counters in the event (pre-6.8 tracepoint without a task): nothing rather than a row of guesses
  assert.equal(candidatesFromProcfs(raw({ anonRssPages: null }), tasks, 16384, 4096, 5), null);
});

test('enrich: candidates_source kmsg with a printed table, procfs with a /proc read, null without either', () => {
  const procfsTasks = { tasks: [task({ pid: 7001, tgid: 7001 })], ms: 0.3, skipped: 0 };
  const r1 = enrich(raw({ procfsTasks }), facts, (ns) => ns);
  assert.equal(r1.candidates_source, 'procfs');
  assert.deepEqual(r1.candidates!.map((c) => c.pid), [5100, 7001]);
  const p = new OomReportParser();
  p.feed(
    [
      'dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0',
      'Tasks state (memory values in pages):',
      '[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name',
      '[   5100]     0  5100    33512    16729    16320      409         0   192512        0             0 dd',
      'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,task_memcg=/x,task=dd,pid=5100,uid=0',
    ].map((message, i) => ({ seq: i, usec: i, message })),
  );
  const r2 = enrich(raw({ kernelReport: p.find(5100), procfsTasks }), facts, (ns) => ns);
  assert.equal(r2.candidates_source, 'kmsg', 'the printed table wins');
  assert.deepEqual(r2.candidates!.map((c) => c.pid), [5100]);
  const r3 = enrich(raw(), facts, (ns) => ns);
  assert.equal(r3.candidates, null);
  assert.equal(r3.candidates_source, null);
});

test('ClickHouse (migration 5): candidates_source round-trips; absent stays absent, null stays null', () => {
  for (const src of ['kmsg', 'procfs', null, undefined] as const) {
    const r = baseRecord(src === undefined ? {} : { candidates_source: src });
    const row = JSON.parse(encodeRow(r)) as Record<string, unknown>;
    if (src !== undefined) assert.equal(row.candidates_source, src ?? '-');
    const back = { candidates_source: '', ...row, time: toClickHouseTime(r.time) };
    assert.deepEqual(rowToRecord(back), r);
  }
});

test('console: a procfs list says it was read after the kill', () => {
  const cand = { pid: 1, tgid: 1, comm: 'dd', uid: 0, rss_kb: 100, rss_anon_kb: 100, rss_file_kb: 0, rss_shmem_kb: 0, swapents: null, pgtables_kb: 4, oom_score_adj: 0, points: 26, victim: true };
  const text = formatKillBlock(baseRecord({ candidates: [cand], candidates_source: 'procfs' }));
  assert.match(text, /candidates \[procfs\] read from \/proc right after the kill/);
  assert.match(text, /top      pid 1 \(dd\) points 26/);
  assert.doesNotMatch(formatKillBlock(baseRecord({ candidates: [cand], candidates_source: 'kmsg' })), /procfs/);
});
