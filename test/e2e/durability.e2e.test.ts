/*
 * Durability, end to end: the real agent process, real OOM kills in a 64 MiB memory cgroup, the JSONL
 * file sink, the real kernel log (/dev/kmsg) and /proc/vmstat. Needs root, a memory cgroup
 * controller and BTF.
 *
 * Other agents kill on this host at the same time: records are picked by this test's victim pids,
 * and host-wide counters are only asserted as lower bounds.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAIN, missedKillsLogged, readJsonl, sleep, startAgent, type RunningAgent, type StartOptions } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { KmsgReader, parseKilled } from '../helpers/kmsg';
import { scrape, waitForMetrics } from '../helpers/metrics';
import { readSpoolDir } from '../helpers/spool';
import type { OomRecord } from '../../src/record/record';

const METRICS = ['metrics:', '  listen: 127.0.0.1:0'].join('\n');
const BACKFILL_ON: NodeJS.ProcessEnv = { OOMTRAIL_COLLECTORS_OOMKILL_BACKFILL: 'true' };

/** Records of these victims, grouped by pid. */
function byPid(records: OomRecord[], pids: number[]): Map<number, OomRecord[]> {
  const want = new Set(pids);
  const out = new Map<number, OomRecord[]>(pids.map((p) => [p, []]));
  for (const r of records) if ((r.kind ?? 'oom_kill') === 'oom_kill' && want.has(r.victim_pid)) out.get(r.victim_pid)!.push(r);
  return out;
}

function assertOncePerKill(records: OomRecord[], pids: number[], what: string): void {
  for (const [pid, rs] of byPid(records, pids)) {
    assert.equal(rs.length, 1, `${what}: pid ${pid} has ${rs.length} records: ${JSON.stringify(rs.map((r) => [r.event_id, r.hook]))}`);
  }
  const ids = records.map((r) => r.event_id);
  assert.equal(new Set(ids).size, ids.length, `${what}: an event_id appears twice in the sink`);
}

describe('durability e2e: spool lock, journal, kernel-log backfill, audit', () => {
  const agents: RunningAgent[] = [];
  const cgroups: TestCgroup[] = [];
  const dirs: string[] = [];

  function tmpdir(name: string): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), `oomtrail-dur-${name}-`));
    dirs.push(d);
    return d;
  }

  async function launch(extra: string, env: NodeJS.ProcessEnv, opts: StartOptions): Promise<RunningAgent> {
    const a = await startAgent(extra, env, opts);
    agents.push(a);
    return a;
  }

  function cgroup(name: string): TestCgroup {
    const cg = makeTestCgroup(`oomtrail-dur-${name}-${process.pid}`);
    cgroups.push(cg);
    return cg;
  }

  after(async () => {
    const problems: string[] = [];
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.stop('SIGKILL');
    for (const cg of [...cgroups].reverse()) await removeCgroup(cg.dir).catch((err: Error) => problems.push(`${cg.dir}: ${err.message}`));
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'cleanup');
  });

  test('a second agent on the same spool directory exits 78 naming the holder; the lock dies with the holder', async () => {
    const dir = tmpdir('lock');
    const first = await launch('', {}, { dir });
    // the same config: same spool directory
    const second = spawn(process.execPath, [MAIN, 'run', '--config', path.join(dir, 'config.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    second.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => second.on('exit', (c) => resolve(c)));
    const code = await Promise.race([exited, sleep(15_000).then(() => 'running' as const)]);
    if (code === 'running') {
      second.kill('SIGKILL');
      await exited;
    }
    assert.equal(code, 78, `second agent exit code (running = it shares the spool); stderr:\n${err}`);
    // every message carries both agents' logs: this case failed once in CI (stop 34) and passed in every run here
    const logs = () => `\nsecond agent's stderr:\n${err}\nfirst agent's stderr:\n${first.stderr().slice(-4000)}`;
    assert.match(err, new RegExp(`in use by another oomtrail agent \\(pid ${first.child.pid}\\)`), logs());
    assert.equal(first.child.exitCode, null, `the first agent keeps running${logs()}`);
    assert.equal(fs.existsSync(path.join(dir, 'spool', 'file')), true, `the first agent still owns its spool${logs()}`);

    // SIGKILL leaves no stale lock: the kernel drops the flock with the process
    assert.equal((await first.stop('SIGKILL')).signal, 'SIGKILL');
    // a restart with the backfill off: a kill anywhere on the host since the SIGKILL is missed by design
    const third = await launch('', {}, { dir, allowMissedKills: 'restart with backfill off' });
    const stopped = await third.stop('SIGTERM');
    assert.equal(stopped.code, 0, `third agent's stderr:\n${third.stderr()}${logs()}`);
  });

  test('agent SIGKILLed 0-300 ms after a kill: after restart every kill is recorded exactly once', async (t) => {
    const TRIALS = 10;
    const dir = tmpdir('crash');
    const cg = cgroup('crash');
    const pids: number[] = [];
    const delays: number[] = [];
    let onlyInJournal = 0;
    // The journal covers a kill from its decode on; one still in the kernel ring buffer when the agent
    // dies (a busy host delays the read by tens of ms) is recovered from the kernel log at the restart.
    for (let i = 0; i < TRIALS; i++) {
      const agent = await launch('', BACKFILL_ON, { dir });
      const hog = await spawnDdHog(cg.procs);
      assert.equal(hog.signal, 'SIGKILL', `hog ${hog.pid} was not OOM-killed`);
      pids.push(hog.pid);
      const delay = Math.floor(Math.random() * 300);
      delays.push(delay);
      await sleep(delay);
      assert.equal((await agent.stop('SIGKILL')).signal, 'SIGKILL');
      const inSink = readJsonl(agent.eventsPath).some((r) => r.victim_pid === hog.pid);
      const inSpool = readSpoolDir(path.join(dir, 'spool', 'file')).pending.some((p) => p.record.victim_pid === hog.pid);
      // before the journal, such a kill was lost: its record was only in the agent's memory
      if (!inSink && !inSpool) onlyInJournal++;
    }
    const agent = await launch('', BACKFILL_ON, { dir });
    const rs = await agent.waitFor((all) => [...byPid(all, pids).values()].every((x) => x.length >= 1), 20_000, `records of all ${TRIALS} kills (${pids.join(',')}; delays ${delays.join(',')})`);
    await sleep(3000); // a duplicate would arrive in the same replay, or the backfill's settle pass
    assert.equal((await agent.stop('SIGTERM')).code, 0);
    const final = byPid(readJsonl(agent.eventsPath), pids);
    let repeatedLines = 0;
    for (const [pid, recs] of final) {
      // one kill, one event_id: the journal never makes a second record of it
      assert.deepEqual([...new Set(recs.map((r) => r.event_id))].length, 1, `pid ${pid}: ${JSON.stringify(recs.map((r) => [r.event_id, r.hook]))}`);
      repeatedLines += recs.length - 1;
    }
    for (const [pid, r] of byPid(rs, pids)) assert.equal(r[0].victim_comm, 'dd', `pid ${pid}`);
    const logs = agents.slice(-TRIALS - 1).map((a) => a.stderr()).join('\n');
    const reEmitted = [...logs.matchAll(/journal: re-emitted (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
    const fromKmsg = [...final.values()].filter((recs) => recs[0].hook === 'kmsg').length;
    // a repeated line whose event_id the journal re-emitted: the lane had delivered it before the journal ack
    const byJournal = [...final.values()].filter((recs) => recs.length > 1 && logs.includes(`journal: re-emitting the record of pid ${recs[0].victim_pid} `)).length;
    t.diagnostic(
      `${TRIALS} trials, SIGKILL delays ${delays.join(',')} ms; ${onlyInJournal} kills were neither in the sink nor its spool at SIGKILL ` +
        `(journal only), ${reEmitted} re-emitted from the journal (any kill on the host), ${fromKmsg} of ours from the kernel log; all ${TRIALS} recorded under one event_id each; ` +
        `${repeatedLines} repeated line(s) of the same event_id (${byJournal} after a journal re-emit, the rest the lane's at-least-once: SIGKILL between the sink write and the spool ack)`,
    );
  });

  test('backfill: 20 kills while the agent is stopped are recorded from the kernel log, once, across restarts', async (t) => {
    const dir = tmpdir('backfill');
    const cg = cgroup('backfill');
    // first run: takes in whatever the kernel log already holds, so the next run starts from there
    const first = await launch('', BACKFILL_ON, { dir });
    await sleep(2500);
    assert.equal((await first.stop('SIGTERM')).code, 0, first.stderr());
    const kmsg = new KmsgReader();
    let pids: number[];
    try {
      pids = await causeKills(cg, 20);
      kmsg.drain();
    } finally {
      kmsg.close();
    }
    const second = await launch('', BACKFILL_ON, { dir });
    const rs = await second.waitFor((all) => [...byPid(all, pids).values()].every((x) => x.length >= 1), 20_000, 'records of the 20 kills');
    await sleep(3000); // past the backfill's settle pass
    assert.equal((await second.stop('SIGTERM')).code, 0, second.stderr());
    assertOncePerKill(readJsonl(second.eventsPath), pids, 'after the backfill');
    let withCgroup = 0;
    for (const [pid, [r]] of byPid(rs, pids)) {
      assert.equal(r.hook, 'kmsg', `pid ${pid}`);
      const line = kmsg.records.map((x) => parseKilled(x.message)).find((k) => k?.pid === pid);
      assert.ok(line, `the kernel logged the kill of ${pid}`);
      assert.deepEqual(
        [r.victim_comm, r.victim_uid, r.victim_total_vm_kb, r.victim_anon_rss_kb, r.victim_file_rss_kb, r.victim_shmem_rss_kb, r.victim_pgtables_kb, r.victim_oom_score_adj],
        [line.comm, line.uid, line.totalVmKb, line.anonRssKb, line.fileRssKb, line.shmemRssKb, line.pgtablesKb, line.oomScoreAdj],
        `pid ${pid}: record equals the kernel's line`,
      );
      assert.equal(r.constraint, 'memcg');
      // the oom-kill: line is rate limited: where it survived, the cgroups are the kernel's
      if (r.victim_cgroup) {
        withCgroup++;
        assert.equal(r.victim_cgroup, cg.kernelPath);
        assert.equal(r.oom_cgroup, cg.kernelPath);
      } else assert.equal(r.oom_cgroup, '');
    }

    const third = await launch('', BACKFILL_ON, { dir });
    await sleep(3500);
    assert.equal((await third.stop('SIGTERM')).code, 0, third.stderr());
    const all = readJsonl(third.eventsPath);
    assertOncePerKill(all, pids, 'after another restart');
    assert.equal([...byPid(all, pids).values()].flat().length, 20);

    // `oomtrail check`: what the state dir says this host recorded this boot = what the sink holds
    const check = JSON.parse(execFileSync(process.execPath, [MAIN, 'check', '--json', '--config', path.join(dir, 'config.yaml')], { encoding: 'utf8' })) as {
      kills: { kernel: number; recorded: number };
    };
    assert.equal(check.kills.recorded, all.filter((r) => (r.kind ?? 'oom_kill') === 'oom_kill').length);
    assert.ok(check.kills.kernel >= 20);
    t.diagnostic(`20 kills while stopped -> 20 kmsg records (${withCgroup} with cgroups from the oom-kill: line), 20 after another restart; check: kernel ${check.kills.kernel}, recorded ${check.kills.recorded}`);
  });

  test('audit: kills missed while the agent was stopped (backfill off) count in oomtrail_missed_kills_total; captured ones never do', async (t) => {
    const dir = tmpdir('audit');
    const cg = cgroup('audit');
    const extra = METRICS;
    const env = { OOMTRAIL_COLLECTORS_OOMKILL_AUDIT_GRACE_MS: '1500' };
    const first = await launch(extra, env, { dir });
    const live = await causeKills(cg, 3);
    await first.waitFor((rs) => [...byPid(rs, live).values()].every((x) => x.length === 1), 10_000, 'the live kills');
    await sleep(2500); // past the grace
    const s1 = await scrape(first);
    assert.equal(s1.get('oomtrail_missed_kills_total'), 0, 'kills the agent captured are not missed');
    assert.ok((s1.get('oomtrail_kernel_oom_kills_total') ?? 0) >= 3);
    assert.equal((await first.stop('SIGTERM')).code, 0);

    const missed = await causeKills(cg, 3);
    // started without allowMissedKills: the e2e helper's standing check must fail this agent's stop
    const second = await launch(extra, env, { dir });
    const s2 = await waitForMetrics(second, (s) => (s.get('oomtrail_missed_kills_total') ?? 0) >= 3, 10_000, 'missed kills counted');
    assert.match(second.stderr(), /audit: the kernel counted \d+ OOM kill\(s\) since the first agent start of this boot, this state dir recorded \d+: \d+ missed/);
    // the cgroup's own counter (memory.oom_control / memory.events.local) names where: exactly this test's 3
    const esc = cg.kernelPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    assert.match(second.stderr(), new RegExp(`by the cgroups' own counters: (.*, )?${esc} 3(,|$)`, 'm'));
    await assert.rejects(second.stop('SIGTERM'), /reported \d+ missed OOM kill\(s\) \(oomtrail_missed_kills_total\), and the test allows none/);
    assert.equal(second.child.exitCode, 0);
    assert.ok(missedKillsLogged(second.stderr()) >= 3);
    assert.equal([...byPid(readJsonl(second.eventsPath), missed).values()].flat().length, 0, 'with backfill off, the missed kills have no record');
    t.diagnostic(`missed ${s2.get('oomtrail_missed_kills_total')} (>= the 3 kills while stopped; other agents' kills on this host count too), kernel ${s2.get('oomtrail_kernel_oom_kills_total')}`);
  });
});
