/*
 * memory_at_kill's breakdown when the kernel printed no report for the kill. The memcg stats the kernel
 * side reads are flushed (per-CPU deltas folded in) by dump_header's "Memory cgroup stats" print, by the
 * periodic flusher (every 2 s) and by readers of memory.stat; oom_kill_process() calls dump_header only
 * while its rate limit allows (10 per 5 s, host-wide). A kill past that limit in a cgroup created
 * moments before reads stats nobody has flushed: anon 0 for a pure anon hog. Such a record must not
 * claim a cause (it said `kernel`: v1's kmem counter, a live page counter, was the only non-zero part).
 * The oracle for staleness is the kernel's own "Killed process" line (printed for every kill): the victim,
 * alone in its fresh cgroup, held anon-rss the breakdown must include. Host only (cgroup v1 here); root,
 * a memory cgroup controller, /dev/kmsg.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernelKills, KmsgReader, kernelReportFor, waitForOomLogWindow } from '../helpers/kmsg';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import type { MemoryAtKill, OomRecord } from '../../src/record/record';

/** Kills that use up the window's 10 reports; then FRESH kills, each in a cgroup of its own made just before. */
const FILL = 10;
const FRESH = 3;
const mib = (b: number | null | undefined) => (b === null || b === undefined ? '-' : (b / 1048576).toFixed(1));

function describeMak(m: MemoryAtKill | null | undefined): string {
  if (!m) return 'no memory_at_kill';
  const parts = (m.anon_bytes ?? 0) + (m.file_bytes ?? 0) + (m.kernel_bytes ?? 0) + (m.sock_bytes ?? 0);
  return `usage ${mib(m.usage_bytes)} MiB, anon ${mib(m.anon_bytes)} file ${mib(m.file_bytes)} kernel ${mib(m.kernel_bytes)} (parts ${mib(parts)})`;
}

describe('stale breakdown e2e: a kill past the report rate limit in a fresh cgroup claims no cause', () => {
  let agent: RunningAgent;
  let kmsg: KmsgReader;
  const cgroups: TestCgroup[] = [];

  before(async () => {
    kmsg = new KmsgReader();
    agent = await startAgent();
  });

  after(async () => {
    const stopped = await agent?.stop('SIGTERM');
    kmsg?.close();
    for (const cg of cgroups) await removeCgroup(cg.dir);
    assert.equal(stopped?.code, 0, `agent exit on SIGTERM; log:\n${agent?.stderr().slice(-3000)}`);
  });

  test(`${FILL} kills fill the report window, then ${FRESH} kills in fresh cgroups: unflushed breakdowns give cause unknown`, async (t) => {
    const filler = makeTestCgroup(`oomtrail-e2e-stale-fill-${process.pid}`);
    cgroups.push(filler);
    // made before the window opens: only the hog's own charges happen after
    const fresh = Array.from({ length: FRESH }, (_, i) => makeTestCgroup(`oomtrail-e2e-stale-${i}-${process.pid}`));
    cgroups.push(...fresh);
    await waitForOomLogWindow(kmsg, 10);
    const t0 = Date.now();
    const fillVictims: number[] = [];
    for (let i = 0; i < FILL; i++) {
      const hog = await spawnDdHog(filler.procs, 128);
      assert.equal(hog.signal, 'SIGKILL', `filler hog ${i} was OOM-killed`);
      fillVictims.push(hog.pid);
    }
    const freshVictims: number[] = [];
    for (const cg of fresh) {
      const hog = await spawnDdHog(cg.procs, 128);
      assert.equal(hog.signal, 'SIGKILL', 'fresh hog was OOM-killed');
      freshVictims.push(hog.pid);
    }
    // and one more past the limit in the filler, whose stats the printed kills flushed moments before: the last
    // flush holds the previous hog's anon, which the new hog's pending charges about replace
    const late = await spawnDdHog(filler.procs, 128);
    assert.equal(late.signal, 'SIGKILL', 'late filler hog was OOM-killed');
    t.diagnostic(`${FILL + FRESH + 1} kills in ${Date.now() - t0} ms`);

    const all = [...fillVictims, ...freshVictims, late.pid];
    const recs = await agent.waitFor((rs) => all.every((p) => rs.some((r) => r.victim_pid === p)), 20_000, `records of ${all.length} victims`);
    await sleep(300);
    kmsg.drain();
    const { reports, killed } = kernelKills(kmsg.records);
    const rec = (pid: number): OomRecord => recs.find((r) => r.victim_pid === pid)!;

    for (const pid of fillVictims) {
      const r = rec(pid);
      t.diagnostic(`filler ${pid}: printed ${!!reports.find(pid)}; ${describeMak(r.memory_at_kill)}; cause ${r.cause}`);
    }
    let stale = 0;
    for (const pid of freshVictims) {
      const r = rec(pid);
      const k = killed.get(pid);
      assert.ok(k, `the kernel's Killed process line for ${pid} (printed for every kill)`);
      const printed = !!reports.find(pid);
      const m = r.memory_at_kill;
      assert.ok(m && m.source === 'bpf' && m.anon_bytes !== null, `kill of ${pid}: a breakdown read by the kernel side`);
      const victimAnon = k.anonRssKb * 1024;
      assert.ok(victimAnon > 32 << 20, `the victim was a pure anon hog (anon-rss ${k.anonRssKb} kB)`);
      // the victim was alone in its cgroup: its anon memory is in the cgroup's anon unless the stats were stale
      const isStale = m.anon_bytes! < victimAnon / 2;
      t.diagnostic(`fresh ${pid}: printed ${printed}; victim anon-rss ${mib(victimAnon)} MiB; ${describeMak(m)}; cause ${r.cause}`);
      if (isStale) {
        stale++;
        assert.equal(printed, false, `kill of ${pid}: a printed report flushed the stats`);
        // past the limit the kernel prints only "Killed process": no header, no stats, no oom-kill: line
        assert.equal(kernelReportFor(kmsg.records, pid).constraint, null, `kill of ${pid}: no oom-kill: line`);
        assert.equal(r.cause, 'unknown', `kill of ${pid}: a breakdown missing the victim's own anon memory names no cause`);
      } else {
        assert.equal(r.cause, 'anon', `kill of ${pid}: a flushed breakdown of an anon hog`);
      }
    }
    const l = rec(late.pid);
    t.diagnostic(`late filler ${late.pid}: printed ${!!reports.find(late.pid)}; ${describeMak(l.memory_at_kill)}; cause ${l.cause}`);
    assert.ok(l.cause === 'anon' || l.cause === 'unknown', `an anon hog past the limit in a flushed cgroup: cause ${l.cause}`);
    // the case this test is about must have happened: a fresh kill past the limit with unflushed stats
    assert.ok(stale >= 1, `at least one fresh kill read unflushed stats (stale ${stale} of ${FRESH})`);
  });
});
