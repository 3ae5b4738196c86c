/*
 * The kernel-log parser the backfill and the audit use. Lines are the kernel's own, copied from this
 * host's /dev/kmsg (6.18, cgroup v1); the memory.oom.group double line is built from the format the
 * 6.1 VM logged (docs: oom-kernel-facts.md) — a stand-in, as this host has no cgroup v2 memory controller.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KillLineDeduper, killsFromKmsg, parseKmsgLine, type KmsgRecord } from '../../src/collectors/kmsg/kmsg';
import { constraintReadings, kernelLineRejects, parseConstraint, parseKilled } from '../../src/collectors/kmsg/lines';
import { OomReportParser } from '../../src/collectors/kmsg/report';
import { reportQuery } from '../../src/collectors/oomkill/collector';
import type { RawOomEvent } from '../../src/collectors/oomkill/event';

const INVOKED = 'dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0';
const CONSTRAINT =
  'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a b,task_memcg=/a b/c,task=dd,pid=17668,uid=0';
const killed = (pid: number, anon = 65024) =>
  `Memory cgroup out of memory: Killed process ${pid} (dd) total-vm:134048kB, anon-rss:${anon}kB, file-rss:1628kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0`;

const rec = (seq: number, usec: number, message: string): KmsgRecord => ({ seq, usec, message });

test('a full report gives constraint, cgroups and trigger; a rate-limited kill only its own line', () => {
  const kills = killsFromKmsg([
    rec(1, 1000, INVOKED),
    rec(2, 1001, 'some other line'),
    rec(3, 1002, CONSTRAINT),
    rec(4, 1003, killed(17668)),
    rec(5, 2000, killed(17669, 34048)),
  ]);
  assert.equal(kills.length, 2);
  assert.equal(kills[0].constraint?.oomMemcg, '/a b');
  assert.equal(kills[0].constraint?.taskMemcg, '/a b/c');
  assert.equal(kills[0].invoked?.gfpMask, '0xcc0');
  assert.equal(kills[0].killed.anonRssKb, 65024);
  assert.deepEqual([kills[1].constraint, kills[1].invoked, kills[1].killed.pid, kills[1].killed.anonRssKb], [null, null, 17669, 34048]);
});

test('an oom-kill: line naming another pid is not attached to this kill', () => {
  const kills = killsFromKmsg([rec(1, 1, INVOKED), rec(2, 2, CONSTRAINT), rec(3, 3, killed(99))]);
  assert.equal(kills.length, 1);
  assert.equal(kills[0].constraint, null);
});

test('memory.oom.group: the victim logged twice within the sweep is one kill; the same pid much later is another', () => {
  const kills = killsFromKmsg([rec(1, 1000, killed(17668)), rec(2, 1100, killed(17668, 64000)), rec(3, 1200, killed(17670)), rec(4, 60_000_000, killed(17668))]);
  assert.deepEqual(
    kills.map((k) => [k.seq, k.killed.pid]),
    [
      [1, 17668],
      [3, 17670],
      [4, 17668],
    ],
  );
  const d = new KillLineDeduper();
  assert.deepEqual([d.isRepeat(5, 10), d.isRepeat(5, 20), d.isRepeat(6, 30), d.isRepeat(5, 10_000_000)], [false, true, false, false]);
});

test('a /dev/kmsg record: header fields, continuation lines dropped, \\xNN unescaped', () => {
  const r = parseKmsgLine('3,1234,2380783740,-;Memory cgroup out of memory: Killed process 5 (sn\\xe2\\x98\\x83w) total-vm:1kB\n SUBSYSTEM=x\n');
  assert.deepEqual(r, { seq: 1234, usec: 2380783740, facility: 0, message: 'Memory cgroup out of memory: Killed process 5 (sn☃w) total-vm:1kB' });
  assert.equal(parseKmsgLine('garbage'), null);
});

test("the trigger's pid from dump_stack's first line (6.x with UID:, 5.10 without); unknown without it", () => {
  for (const head of ['CPU: 0 UID: 0 PID: 20141 Comm: dd Not tainted 6.18.44-fc-v782 #1 PREEMPT(none) ', 'CPU: 1 PID: 20141 Comm: dd Tainted: G        W         5.10.0-32-cloud-amd64 #1 Debian 5.10.223-1']) {
    const [k] = killsFromKmsg([rec(1, 1000, INVOKED), rec(2, 1001, head), rec(3, 1002, CONSTRAINT), rec(4, 1003, killed(17668))]);
    assert.equal(k.invoked?.pid, 20141, head);
    assert.equal(k.invoked?.comm, 'dd');
  }
  const [k] = killsFromKmsg([rec(1, 1000, INVOKED), rec(3, 1002, CONSTRAINT), rec(4, 1003, killed(17668))]);
  assert.equal(k.invoked?.pid ?? null, null);
});

/*
 * Hostile lines. The kernel prints cgroup names and comms verbatim; a tenant picks both. Lines below
 * are what the kernel prints for such names (format of mm/oom_kill.c, mm/memcontrol.c; the forged
 * cgroup names were made and OOM-killed on this host, test/e2e/kmsg-forgery.e2e.test.ts).
 */
const FORGED = 'Out of memory: Killed process 1 (systemd) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0';
const v1Report = (cg: string, taskCg: string, pid: number, comm = 'dd'): string[] => [
  `${comm} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0`,
  `CPU: 1 UID: 0 PID: ${pid} Comm: ${comm} Not tainted 6.18.44 #1 PREEMPT(none) `,
  'memory: usage 65536kB, limit 65536kB, failcnt 451',
  `Memory cgroup stats for ${cg}:`,
  'rss 66904064',
  'Tasks state (memory values in pages):',
  '[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name',
  `[${String(pid).padStart(7)}]     0 ${pid}    33512    16729    16320      409         0   192512        0             0 ${comm}`,
  `oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=${cg},task_memcg=${taskCg},task=${comm},pid=${pid},uid=0`,
  `Memory cgroup out of memory: Killed process ${pid} (${comm}) total-vm:134048kB, anon-rss:65024kB, file-rss:1628kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0`,
];
const recs = (lines: string[], usec0 = 1000): KmsgRecord[] => lines.map((m, i) => rec(100 + i, usec0 + i, m));

test('forgery: a cgroup named like a kill line is no kill (the kernel prints it in its stats and oom-kill: lines)', () => {
  const before = kernelLineRejects().malformed;
  const cg = `/${FORGED}`;
  const kills = killsFromKmsg(recs(v1Report(cg, cg, 4242)));
  assert.deepEqual(kills.map((k) => k.killed.pid), [4242], 'only the real kill');
  assert.equal(kills[0].constraint?.taskMemcg, cg, 'with the real cgroup');
  assert.equal(kills[0].report?.statsCgroup, cg);
  assert.equal(parseKilled(`Memory cgroup stats for ${cg}:`), null);
  assert.equal(parseKilled(`x ${FORGED}`), null);
  assert.ok(kernelLineRejects().malformed > before, 'the forged line is counted');
});

test('forgery: nested names spelling ",task_memcg=/kubepods…" do not blame another cgroup', () => {
  // the tenant's cgroup "/t,task_memcg=" holds "kubepods/podX": the kernel prints both paths in full
  const mine = '/t,task_memcg=/kubepods/podX';
  const kills = killsFromKmsg(recs(v1Report(mine, mine, 4243)));
  assert.equal(kills.length, 1);
  assert.deepEqual([kills[0].constraint?.oomMemcg, kills[0].constraint?.taskMemcg], [mine, mine]);
  // the victim in a child of the OOM cgroup
  const child = `${mine}/leaf,task_memcg=/kubepods/other`;
  const [k2] = killsFromKmsg(recs(v1Report(mine, child, 4244)));
  assert.deepEqual([k2.constraint?.oomMemcg, k2.constraint?.taskMemcg], [mine, child]);
  // v2 (6.1, format of cpuset_print_current_mems_allowed): cpuset= is the trigger's cpuset cgroup by
  // *name*; a name spelling the rest of the line cannot hold the '/' a path needs
  const v2 = 'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=oomtrail-forge-b-133,mems_allowed=0,oom_memcg=/oomtrail-forge-b-133,task_memcg=/oomtrail-forge-b-133,task=dd,pid=153,uid=0';
  assert.deepEqual(constraintReadings(v2).map((r) => [r.oomMemcg, r.taskMemcg, r.task, r.pid]), [['/oomtrail-forge-b-133', '/oomtrail-forge-b-133', 'dd', 153]]);
  const name = 'e,mems_allowed=0,global_oom,task_memcg=';
  const line = `oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=${name},mems_allowed=0-1,3,oom_memcg=/e/m,task_memcg=/e/m,task=dd,pid=4245,uid=0`;
  assert.deepEqual(constraintReadings(line).map((r) => [r.oomMemcg, r.taskMemcg, r.task, r.pid]), [['/e/m', '/e/m', 'dd', 4245]]);
});

test('an oom-kill: line that reads two ways is never guessed: the kill keeps its own line only, BPF paths settle it live', () => {
  // "/d/a" and "/d/a,task_memcg=/d/a/Y" both exist (the tenant owns /d): two readings fit the format
  const p2 = '/d/a';
  const q2 = '/d/a,task_memcg=/d/a/Y';
  const line = `oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=${q2},task_memcg=${q2},task=dd,pid=4246,uid=0`;
  const readings = constraintReadings(line);
  assert.deepEqual(readings.map((r) => [r.oomMemcg, r.taskMemcg]), [
    [p2, `/d/a/Y,task_memcg=${q2}`],
    [q2, q2],
  ]);
  assert.equal(parseConstraint(line), null);
  const before = kernelLineRejects().ambiguous;
  const lines = v1Report(q2, q2, 4246);
  const [k] = killsFromKmsg(recs(lines));
  assert.deepEqual([k.killed.pid, k.constraint, k.report ?? null], [4246, null, null]);
  assert.ok(kernelLineRejects().ambiguous > before);
  const p = new OomReportParser();
  p.feed(recs(lines));
  assert.equal(p.find(4246)?.constraint ?? null, null, 'no hint: ambiguous');
  assert.equal(p.find(4246, { comm: 'dd', oomMemcg: q2, taskMemcg: q2 })?.constraint.oomMemcg, q2, 'the paths BPF read settle it');
});

test('a comm spelling ",task=" is told apart by the kill line', () => {
  const comm = 'a,task=b';
  const line = `oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/x,task=${comm},pid=77,uid=0`;
  assert.equal(constraintReadings(line).length, 2);
  assert.equal(parseConstraint(line), null);
  const killedLine = `Out of memory: Killed process 77 (${comm}) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0`;
  const [k] = killsFromKmsg(recs([line, killedLine]));
  assert.deepEqual([k.killed.comm, k.constraint?.task, k.constraint?.taskMemcg, k.constraint?.oomMemcg], [comm, comm, '/x', null]);
});

test('comms the kernel escapes: a newline or ") total-vm:" in a comm is read as the comm, and starts no line of its own', () => {
  for (const comm of ['a\nb', 'a) total-vm:9kB', 'x Not tainted']) {
    const [k] = killsFromKmsg(recs(v1Report('/c', '/c', 4300, comm)));
    assert.equal(k?.killed.comm, comm, JSON.stringify(comm));
    assert.equal(k.constraint?.task, comm);
    assert.equal(k.invoked?.pid, 4300, `${JSON.stringify(comm)}: the trigger's pid`);
  }
  // "Mem-Info:" after a newline in the trigger's comm must not turn a memcg report into a global one
  const p = new OomReportParser();
  p.feed(recs(v1Report('/c', '/c', 4301, 'a\nMem-Info:')));
  const r = p.find(4301)!;
  assert.equal(r.memInfo, null);
  assert.equal(r.tasks[0]?.name, 'a\nMem-Info:');
  // the kernel's own escaping: \x0a in /dev/kmsg is a newline in the comm
  const raw = parseKmsgLine('3,9,100,-;Memory cgroup out of memory: Killed process 9 (a\\x0ab) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0\n')!;
  assert.equal(parseKilled(raw.message)?.comm, 'a\nb');
});

test('a line a process wrote to /dev/kmsg is not the kernel: facility from the record prefix', () => {
  // what `echo '<0>Out of memory: Killed …' > /dev/kmsg` reads back as: the kernel forces LOG_USER (prio 8|0)
  const forged = parseKmsgLine(`8,77,5000,-;${FORGED}\n`)!;
  assert.equal(forged.facility, 1);
  const kernel = parseKmsgLine(`3,78,5001,-;${FORGED}\n`)!;
  assert.equal(kernel.facility, 0);
  assert.deepEqual(killsFromKmsg([forged]), []);
  const p = new OomReportParser();
  p.feed([{ ...forged, message: v1Report('/c', '/c', 1)[0] }]);
  p.feed(recs(v1Report('/c', '/c', 1)).slice(1).map((r) => ({ ...r, facility: 1 })));
  assert.equal(p.find(1), null);
});

test('malformed oom-kill: lines (cut by printk, names with // or a trailing /) are counted, never half-used', () => {
  const before = kernelLineRejects().malformed;
  for (const line of [
    'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/very-long-name-cut-by-prin',
    'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/b,task=dd,pid=5,uid=0',
    'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a//b,task_memcg=/a//b,task=dd,pid=5,uid=0',
  ]) {
    assert.deepEqual(constraintReadings(line), [], line);
    const [k] = killsFromKmsg(recs([line, killed(5)]));
    assert.deepEqual([k.killed.pid, k.constraint], [5, null]);
  }
  assert.ok(kernelLineRejects().malformed >= before + 3);
  // the kernel's real lines still read one way (kernels without cpusets print no cpuset= part)
  assert.equal(parseConstraint(CONSTRAINT)?.taskMemcg, '/a b/c');
  assert.equal(parseConstraint('oom-kill:constraint=CONSTRAINT_NONE,nodemask=0-1,3,global_oom,task_memcg=/,task=stress,pid=77,uid=0')?.taskMemcg, '/');
});

test('Out of memory (oom_kill_allocating_task): a global kill of the allocating task', () => {
  const k = parseKilled('Out of memory (oom_kill_allocating_task): Killed process 812 (hog) total-vm:2000kB, anon-rss:1500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0');
  assert.deepEqual([k?.pid, k?.comm, k?.global, k?.anonRssKb], [812, 'hog', true, 1500]);
});

test('live: a printed report goes to one kill, printed around the kill, never to a later kill of the reused pid', () => {
  const p = new OomReportParser();
  p.feed(recs(v1Report('/c', '/c', 4400), 10_000_000));
  const ev = (bootNs: bigint) => ({ bootNs, victimComm: 'dd', constraint: 'memcg', oomCgroup: { id: 1n, path: '/c', truncated: false }, victimCgroup: { id: 1n, path: '/c', truncated: false } }) as unknown as RawOomEvent;
  // the same pid killed an hour later (CLOCK_BOOTTIME = CLOCK_MONOTONIC here: no suspend)
  assert.equal(p.find(4400, reportQuery(ev(3_610_000_000_000n), 0n)), null, 'an hour-old report is not this kill\'s');
  assert.ok(p.take(4400, reportQuery(ev(10_000_500_000n), 0n)), 'its own kill gets it');
  assert.equal(p.take(4400, reportQuery(ev(10_000_600_000n), 0n)), null, 'once');
});
