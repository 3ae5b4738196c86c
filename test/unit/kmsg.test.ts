/*
 * The kernel-log parser the backfill and the audit use. Lines are the kernel's own, copied from this
 * host's /dev/kmsg (6.18, cgroup v1); the memory.oom.group double line is built from the format the
 * 6.1 VM logged (docs: oom-kernel-facts.md) — a stand-in, as this host has no cgroup v2 memory controller.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KillLineDeduper, killsFromKmsg, parseKmsgLine, type KmsgRecord } from '../../src/collectors/kmsg/kmsg';

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
  assert.deepEqual(r, { seq: 1234, usec: 2380783740, message: 'Memory cgroup out of memory: Killed process 5 (sn☃w) total-vm:1kB' });
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
