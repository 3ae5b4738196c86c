/*
 * The candidate list's last fallback with real OOM kills: a burst in one memory cgroup, past the
 * kernel's report rate limit (dump_header: 10 per 5 s, host-wide — other agents' kills use it up
 * too, so which kills were printed is read from the kernel log per victim, not assumed). Kills with a
 * printed Tasks table carry `candidates_source: 'kmsg'`; the others `'procfs'`, with the sleeping
 * bystanders' rows equal to their /proc values (read here before the burst) and the victim's row
 * equal to the kernel's own "Killed process" line (printed for every kill, not rate limited).
 * Root, a memory cgroup controller, /dev/kmsg.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { kernelKills, KmsgReader, waitForOomLogWindow } from '../helpers/kmsg';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import { spawnHolder } from '../helpers/kills';
import type { Candidate, OomRecord } from '../../src/record/record';

const PAGE = 4096;
const KILLS = 14;

/** What /proc says of a process, in the candidate's units (read independently of the agent's parser). */
function procRow(pid: number): Omit<Candidate, 'points' | 'victim'> {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(st)![1]);
  return {
    pid,
    tgid: pid,
    comm: fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(),
    uid: Number(/^Uid:\s+(\d+)/m.exec(st)![1]),
    rss_kb: kb('RssAnon') + kb('RssFile') + kb('RssShmem'),
    rss_anon_kb: kb('RssAnon'),
    rss_file_kb: kb('RssFile'),
    rss_shmem_kb: kb('RssShmem'),
    swapents: kb('VmSwap') / (PAGE / 1024),
    pgtables_kb: kb('VmPTE'),
    oom_score_adj: Number(fs.readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim()),
  };
}

describe('procfs candidates e2e: kills past the report rate limit still list the OOM cgroup', () => {
  let agent: RunningAgent;
  let kmsg: KmsgReader;
  let cg: TestCgroup;
  const holders: Array<ReturnType<typeof spawnHolder>> = [];

  before(async () => {
    kmsg = new KmsgReader();
    // candidates 10: every row of this cgroup (victim, 3 bystanders, an earlier victim still exiting) is listed
    agent = await startAgent(['collectors:', '  oomkill:', '    backfill: false', '    candidates: 10'].join('\n'), { OOMTRAIL_LOG_LEVEL: 'debug' });
  });

  after(async () => {
    for (const h of holders) h.kill();
    const stopped = await agent?.stop('SIGTERM');
    kmsg?.close();
    if (cg) await removeCgroup(cg.dir);
    assert.equal(stopped?.code, 0, `agent exit on SIGTERM; log:\n${agent?.stderr().slice(-3000)}`);
  });

  test(`a burst of ${KILLS} kills: printed ones from kmsg, the rest from /proc with exact bystander and victim rows`, async (t) => {
    cg = makeTestCgroup(`oomtrail-e2e-pcands-${process.pid}`);
    for (const mib of [3, 5, 7]) holders.push(spawnHolder(cg.procs, mib));
    await Promise.all(holders.map((h) => h.ready));
    // a warm-up kill first: the memcg's reclaim before an OOM unmaps the bystanders' file pages charged to it
    // (dd's and libc's text, ~5 pages each); afterwards what they map is charged elsewhere and stays put
    for (let i = 0; i < 2; i++) assert.equal((await spawnDdHog(cg.procs, 128)).signal, 'SIGKILL', 'warm-up hog OOM-killed');
    await sleep(200);
    const bystanders = holders.map((h) => procRow(h.pid));
    await waitForOomLogWindow(kmsg, 10); // a whole fresh window: the burst passes the limit
    const t0 = Date.now();
    const victims: number[] = [];
    for (let i = 0; i < KILLS; i++) {
      const hog = await spawnDdHog(cg.procs, 128);
      assert.equal(hog.signal, 'SIGKILL', `hog ${i} was OOM-killed`);
      victims.push(hog.pid);
    }
    const burstMs = Date.now() - t0;
    t.diagnostic(`${KILLS} kills in ${burstMs} ms`);
    // the bystanders slept through it: their /proc values are what the agent's reads must show
    assert.deepEqual(holders.map((h) => procRow(h.pid)), bystanders, 'bystanders unchanged by the burst');

    const recs = await agent.waitFor((rs) => victims.every((p) => rs.some((r) => r.victim_pid === p)), 20_000, `records of ${KILLS} victims`);
    await sleep(300);
    kmsg.drain();
    const { reports, killed } = kernelKills(kmsg.records);

    let printed = 0;
    let unprinted = 0;
    for (const pid of victims) {
      const rec: OomRecord = recs.find((r) => r.victim_pid === pid)!;
      const report = reports.find(pid);
      const c: Candidate[] = rec.candidates ?? [];
      assert.ok(c.length > 0, `kill of ${pid}: candidates present (printed report: ${!!report})`);
      if (report && report.tasks.length) {
        printed++;
        assert.equal(rec.candidates_source, 'kmsg', `kill of ${pid}: its table was printed`);
        continue;
      }
      unprinted++;
      assert.equal(rec.candidates_source, 'procfs', `kill of ${pid}: no printed table, read from /proc`);
      for (const b of bystanders) {
        const row: Candidate | undefined = c.find((x) => x.pid === b.pid);
        assert.ok(row, `kill of ${pid}: bystander ${b.pid} listed`);
        const { points, victim, ...values } = row;
        assert.deepEqual(values, b, `kill of ${pid}: bystander ${b.pid} as /proc showed it`);
        assert.equal(victim, false);
        assert.equal(points, b.rss_kb / 4 + b.swapents! + Math.floor(b.pgtables_kb / 4) + b.oom_score_adj * Math.floor(16384 / 1000));
      }
      const v = c.filter((x) => x.victim);
      assert.equal(v.length, 1, 'one victim row');
      const k = killed.get(pid);
      assert.ok(k, `the kernel's Killed process line for ${pid}`);
      assert.deepEqual(
        { pid: v[0].pid, comm: v[0].comm, uid: v[0].uid, anon: v[0].rss_anon_kb, file: v[0].rss_file_kb, shmem: v[0].rss_shmem_kb, pgtables: v[0].pgtables_kb, adj: v[0].oom_score_adj },
        { pid: k.pid, comm: k.comm, uid: k.uid, anon: k.anonRssKb, file: k.fileRssKb, shmem: k.shmemRssKb, pgtables: k.pgtablesKb, adj: k.oomScoreAdj },
        `kill of ${pid}: the victim's row equals the kernel's Killed process line`,
      );
      assert.equal(v[0].swapents, null, 'the event carries no swap count');
      assert.equal(c[0].victim, true, 'the victim ranks first');
    }
    const reads = [...agent.stderr().matchAll(/task\(s\) of \S+ read from \/proc in ([\d.]+) ms/g)].map((m) => Number(m[1]));
    t.diagnostic(`printed ${printed}, unprinted ${unprinted}; /proc reads (ms): ${reads.join(' ')}`);
    assert.ok(unprinted >= KILLS - 10, `at least ${KILLS - 10} kills past the rate limit (printed ${printed})`);
  });
});
