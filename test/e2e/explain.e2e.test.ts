/*
 * "Why this kill" with real OOM kills: memory_at_kill and candidates against the kernel's own
 * printed report of the same kill (memory:/kmem:/swap: lines, "Memory cgroup stats", "Tasks
 * state" rows). Root, a memory cgroup controller, BTF and /dev/kmsg. Runs on the host (v1) and
 * in the VM guest suite (v2). A kill whose report the kernel rate-limited is skipped, not faked.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { KmsgReader, waitForOomLogWindow } from '../helpers/kmsg';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import { spawnHolder } from '../helpers/kills';
import { OomReportParser, type OomReport } from '../../src/collectors/kmsg/report';
import { memoryFromReport } from '../../src/pipeline/assemble/explain';
import type { OomRecord } from '../../src/record/record';

// A fresh rate-limit window (no kill in the last 5.5 s), not just room in it: with the previous test's kill ~1 s
// before, the 6.1 kprobe VM recorded slab_bytes 1136 where the kernel printed 0 (memcg stats not yet flushed?
// not explained yet). Until it is, these tests keep the pause they always had.
const FRESH_WINDOW = 10;
const PAGE = 4096;
const KERNEL_HAS_MEMCG_VMSTATS = fs.readFileSync('/sys/kernel/btf/vmlinux').includes(Buffer.from('\0memcg_vmstats\0'));


/** The kernel's printed report for the kill of `pid`, or null (rate limited / overwritten). */
async function printedReport(kmsg: KmsgReader, pid: number): Promise<OomReport | null> {
  for (let i = 0; i < 20; i++) {
    kmsg.drain();
    const p = new OomReportParser(1024);
    p.feed(kmsg.records);
    const r = p.find(pid);
    if (r) return r;
    await sleep(100);
  }
  return null;
}

/** memory_at_kill equals every value the kernel printed for this kill. */
function assertMemoryMatches(rec: OomRecord, report: OomReport): void {
  const m = rec.memory_at_kill;
  assert.ok(m, 'memory_at_kill present');
  // the kernel side reads the breakdown where the kernel keeps it in a struct memcg_vmstats (a feature of the
  // kernel's BTF, not a version); before that (5.10) it comes from this kill's printed report
  assert.equal(m.source, KERNEL_HAS_MEMCG_VMSTATS ? 'bpf' : 'kmsg', 'breakdown read by the kernel side where it can be');
  assert.equal(m.scope, 'memcg');
  const printed = memoryFromReport(report, PAGE)!;
  let compared = 0;
  for (const [k, v] of Object.entries(printed)) {
    if (k === 'source' || k === 'scope' || v === null) continue;
    assert.equal((m as unknown as Record<string, unknown>)[k], v, `memory_at_kill.${k} == the kernel's printed value`);
    compared++;
  }
  // v1 prints usage/limit/failcnt, kmem and 7 stats; v2 more
  assert.ok(compared >= 10, `compared ${compared} fields`);
}

/** candidates equal the printed Tasks state rows (top N by badness, every column). */
function assertCandidatesMatch(rec: OomRecord, report: OomReport, n = 5): void {
  const c = rec.candidates;
  assert.ok(c && c.length > 0, 'candidates present');
  assert.equal(rec.candidates_source, 'kmsg', 'from the printed table');
  const limitPages = rec.memory_at_kill!.limit_bytes! / PAGE;
  const pts = (r: OomReport['tasks'][number]) => r.rss + r.swapents + Math.floor(r.pgtables_bytes / PAGE) + r.oom_score_adj * Math.floor(limitPages / 1000);
  const rows = [...report.tasks].sort((a, b) => pts(b) - pts(a) || a.pid - b.pid);
  const top = rows.slice(0, n);
  assert.deepEqual(new Set(c.filter((x) => !x.victim || top.some((t) => t.tgid === x.tgid)).map((x) => x.pid)), new Set(top.map((t) => t.pid)), 'pid set of the top N');
  for (const cand of c) {
    const row = report.tasks.find((t) => t.pid === cand.pid)!;
    assert.ok(row, `row of ${cand.pid} printed`);
    assert.equal(cand.tgid, row.tgid);
    assert.equal(cand.uid, row.uid);
    assert.equal(cand.comm, row.name);
    assert.equal(cand.rss_kb, row.rss * 4);
    assert.equal(cand.rss_anon_kb, row.rss_anon === null ? null : row.rss_anon * 4);
    assert.equal(cand.rss_file_kb, row.rss_file === null ? null : row.rss_file * 4);
    assert.equal(cand.rss_shmem_kb, row.rss_shmem === null ? null : row.rss_shmem * 4);
    assert.equal(cand.swapents, row.swapents);
    assert.equal(cand.pgtables_kb, Math.floor(row.pgtables_bytes / 1024));
    assert.equal(cand.oom_score_adj, row.oom_score_adj);
    assert.equal(cand.points, row.oom_score_adj === -1000 ? null : pts(row));
    assert.equal(cand.victim, row.tgid === rec.victim_pid);
  }
  assert.equal(c.filter((x) => x.victim).length, 1, 'the victim row is marked');
  // the kernel killed the task with the highest badness: our ranking must agree
  assert.equal(c[0].victim, true, 'the top candidate is the victim');
}

describe('explain e2e: memory_at_kill and candidates equal the kernel report', () => {
  let agent: RunningAgent;
  let kmsg: KmsgReader;
  const cgroups: TestCgroup[] = [];
  const mounts: string[] = [];

  before(async () => {
    kmsg = new KmsgReader();
    agent = await startAgent();
  });

  after(async () => {
    const stopped = await agent?.stop('SIGTERM');
    kmsg?.close();
    for (const m of mounts) {
      try {
        execFileSync('umount', [m]);
        fs.rmdirSync(m);
      } catch {
        /* best effort */
      }
    }
    for (const cg of cgroups) await removeCgroup(cg.dir);
    assert.equal(stopped?.code, 0, `agent exit on SIGTERM; log:\n${agent?.stderr().slice(-3000)}`);
  });

  async function recordOf(pid: number): Promise<OomRecord> {
    const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === pid), 10_000, `record of pid ${pid}`);
    return rs.find((x) => x.victim_pid === pid)!;
  }

  test('anon hog: breakdown and candidates as printed, cause anon', async (t) => {
    const cg = makeTestCgroup(`oomtrail-e2e-explain-anon-${process.pid}`);
    cgroups.push(cg);
    await waitForOomLogWindow(kmsg, FRESH_WINDOW);
    const hog = await spawnDdHog(cg.procs);
    assert.equal(hog.signal, 'SIGKILL');
    const rec = await recordOf(hog.pid);
    const report = await printedReport(kmsg, hog.pid);
    if (!report) return t.skip('the kernel rate-limited this report');
    assertMemoryMatches(rec, report);
    assertCandidatesMatch(rec, report);
    assert.equal(rec.cause, 'anon');
    assert.ok(rec.victim_share !== null && rec.victim_share! > 0.9 && rec.victim_share! <= 1.05, `victim_share ${rec.victim_share}`);
  });

  test('tmpfs filler: shmem counted as shmem and page cache, cause shmem, victim a small share', async (t) => {
    const cg = makeTestCgroup(`oomtrail-e2e-explain-shmem-${process.pid}`);
    cgroups.push(cg);
    const mnt = fs.mkdtempSync('/tmp/oomtrail-e2e-shm-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256m', 'oomtrail-e2e-shm', mnt]);
    mounts.push(mnt);
    await waitForOomLogWindow(kmsg, FRESH_WINDOW);
    // write(2) into a tmpfs file: the pages are charged to the writer's cgroup and stay after it dies
    const file = path.join(mnt, 'fill');
    const child = spawn('/bin/sh', ['-c', `echo $$ > "$1" && exec dd if=/dev/zero of="$2" bs=1M count=200 2>/dev/null`, 'sh', cg.procs, file], { stdio: 'ignore' });
    const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, s) => resolve(s)));
    assert.equal(signal, 'SIGKILL', 'the tmpfs writer must be OOM-killed');
    const rec = await recordOf(child.pid!);
    fs.rmSync(file, { force: true });
    const report = await printedReport(kmsg, child.pid!);
    if (!report) return t.skip('the kernel rate-limited this report');
    assertMemoryMatches(rec, report);
    assertCandidatesMatch(rec, report);
    const m = rec.memory_at_kill!;
    assert.ok(m.shmem_bytes! > 48 << 20, `shmem ${m.shmem_bytes}`);
    assert.ok(m.file_bytes! >= m.shmem_bytes!, 'file includes shmem');
    assert.equal(rec.cause, 'shmem');
    assert.ok(rec.victim_share !== null && rec.victim_share! < 0.2, `victim_share ${rec.victim_share}`);
  });

  test('oom_score_adj: the victim is not the largest consumer, and the candidates show why', async (t) => {
    // lowering oom_score_adj fails with EIO in this sandbox, so the smaller task is made the likelier victim
    const cg = makeTestCgroup(`oomtrail-e2e-explain-adj-${process.pid}`);
    cgroups.push(cg);
    const holder = spawnHolder(cg.procs, 36);
    try {
      await holder.ready;
      await waitForOomLogWindow(kmsg, FRESH_WINDOW);
      const child = spawn('/bin/sh', ['-c', 'echo $$ > "$1" && echo 800 > /proc/self/oom_score_adj && exec dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null', 'sh', cg.procs], { stdio: 'ignore' });
      const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, s) => resolve(s)));
      assert.equal(signal, 'SIGKILL', 'the adj 800 hog is the victim');
      const rec = await recordOf(child.pid!);
      const report = await printedReport(kmsg, child.pid!);
      if (!report) return t.skip('the kernel rate-limited this report');
      assertMemoryMatches(rec, report);
      assertCandidatesMatch(rec, report);
      const c = rec.candidates!;
      const victim = c.find((x) => x.victim)!;
      assert.equal(victim.oom_score_adj, 800);
      const biggest = c.reduce((a, b) => (b.rss_kb > a.rss_kb ? b : a));
      assert.equal(biggest.pid, holder.pid, 'the holder is the largest consumer');
      assert.ok(victim.points! > biggest.points!, 'the victim won on badness, not size');
      assert.ok(rec.victim_share! < 0.5, `victim_share ${rec.victim_share}`);
    } finally {
      holder.kill();
    }
  });
  // A global OOM takes the whole machine: only inside the VM guest, where the matrix sets the variable.
  const globalOk = process.env.OOMTRAIL_E2E_GLOBAL_OOM === '1';
  test('global OOM: memory_at_kill from the host counters, equal to the printed Mem-Info', { skip: globalOk ? false : 'a global OOM only inside the VM guest (the matrix sets OOMTRAIL_E2E_GLOBAL_OOM=1)' }, async () => {
    // the hog's +1000 makes it the kernel's choice over every other task (its points exceed the machine's
    // pages); nothing else is touched: a -1000 runner would hand its -1000 to the next test's hogs
    await waitForOomLogWindow(kmsg, FRESH_WINDOW);
    const hog = spawn(process.execPath, ['-e', "require('fs').writeFileSync('/proc/self/oom_score_adj', '1000'); const a = []; for (;;) a.push(Buffer.alloc(16 << 20, 1));"], { stdio: 'ignore' });
    const signal = await new Promise<NodeJS.Signals | null>((resolve) => hog.once('exit', (_c, sig) => resolve(sig)));
    assert.equal(signal, 'SIGKILL', 'the hog was OOM-killed');
    const rec = await recordOf(hog.pid!);
    assert.equal(rec.constraint, 'global');
    assert.equal(rec.oom_cgroup, '/');
    const m = rec.memory_at_kill;
    assert.ok(m, 'memory_at_kill present for a global OOM');
    assert.equal(m.scope, 'host');
    assert.equal(m.source, 'kmsg', 'the host counters come from the printed Mem-Info, marked as such');
    // the Mem-Info block of this kill, read here independently of the agent's parser
    kmsg.drain();
    const killedAt = kmsg.records.findIndex((r) => new RegExp(`Killed process ${hog.pid} `).test(r.message));
    assert.ok(killedAt > 0, 'the kill line is in the log');
    const start = kmsg.records.slice(0, killedAt).map((r) => r.message).lastIndexOf('Mem-Info:');
    assert.ok(start >= 0, 'the kernel printed Mem-Info for this kill');
    const text = kmsg.records.slice(start + 1, killedAt).map((r) => r.message).join('\n');
    const mi: Record<string, number> = {};
    for (const kv of text.split('\n').slice(0, 12).join(' ').matchAll(/\b(\w+):(\d+)\b/g)) mi[kv[1]] ??= Number(kv[2]);
    const pagecache = /^(\d+) total pagecache pages$/m.exec(text);
    assert.ok(pagecache && mi.active_anon !== undefined && mi.shmem !== undefined, `Mem-Info parsed:\n${text.slice(0, 2000)}`);
    assert.equal(m.anon_bytes, Math.max(0, mi.active_anon + mi.inactive_anon - mi.shmem) * PAGE, 'anon = anon LRU less shmem');
    assert.equal(m.shmem_bytes, mi.shmem * PAGE);
    assert.equal(m.file_bytes, Number(pagecache[1]) * PAGE, 'file = total pagecache pages');
    assert.equal(m.file_mapped_bytes, mi.mapped * PAGE);
    assert.equal(m.file_dirty_bytes, mi.dirty * PAGE);
    assert.equal(m.pagetables_bytes, mi.pagetables * PAGE);
    assert.equal(m.slab_bytes, (mi.slab_reclaimable + mi.slab_unreclaimable) * PAGE);
    assert.equal(rec.cause, 'anon', 'the hog filled the machine with anonymous memory');
    assert.ok(rec.candidates?.some((c) => c.victim && c.pid === hog.pid), 'the victim is among the candidates');
  });
});
