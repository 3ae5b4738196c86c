/*
 * Pipeline core, end to end: the real agent process, real OOM kills in a 64 MiB memory cgroup, the
 * JSONL file sink. A sink outage is a real full disk: the sink file lives on a small tmpfs filled up
 * with a filler file (appends fail with ENOSPC); the spool lives on the normal disk.
 * Needs root, a memory cgroup controller, BTF and mount(8).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readJsonl, sleep, startAgent, type RunningAgent, type StartOptions } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { httpGet, memoryKiB, metricsBase, scrape, waitForMetrics, type Scrape } from '../helpers/metrics';
import { readSpoolDir } from '../helpers/spool';
import { SmallTmpfs } from '../helpers/tmpfs';
import type { OomRecord } from '../../src/record/record';

const FILE = { sink: 'file' };
/** Retry fast so a freed disk is noticed within a fraction of a second. */
const FAST_RETRY: NodeJS.ProcessEnv = { OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '50', OOMTRAIL_PIPELINE_RETRY_MAX_MS: '200' };
const MiB = 1024;
/**
 * A restart on the same state directory with the backfill off (these tests' default): the audit counts
 * every kill on the host between the stop and the next attach as missed, other tests' kills included.
 */
const RESTART_WITHOUT_BACKFILL = 'restart with backfill off: kills on the host during the restart gap are missed by design';

function config(opts: { deadlineMs?: number; failingAfterMs?: number } = {}): string {
  return [
    'shutdown:',
    `  deadline_ms: ${opts.deadlineMs ?? 10_000}`,
    'metrics:',
    '  listen: 127.0.0.1:0',
    `  sink_failing_after_ms: ${opts.failingAfterMs ?? 300_000}`,
  ].join('\n');
}

const sortedNums = (xs: number[]) => [...xs].sort((a, b) => a - b);
const ids = (rs: OomRecord[]) => rs.map((r) => r.event_id).sort();
const spooled = (s: Scrape) => s.get('oomtrail_spool_records', FILE);
const delivered = (s: Scrape) => s.get('oomtrail_sink_delivered_total', FILE) ?? 0;
const retried = (s: Scrape) => s.get('oomtrail_sink_retried_total', FILE) ?? 0;

/** Every record exactly once: as many lines as distinct event_ids, and the victims are exactly `pids`. */
function assertExactlyOnce(rs: OomRecord[], pids: number[], what: string): void {
  assert.equal(rs.length, pids.length, `${what}: record count`);
  assert.equal(new Set(rs.map((r) => r.event_id)).size, rs.length, `${what}: each event_id once`);
  assert.deepEqual(sortedNums(rs.map((r) => r.victim_pid)), sortedNums(pids), `${what}: the victims`);
}

/** Sends `signal` and waits for the exit, at most `limitMs` (so a hung agent fails the test instead of hanging it). */
async function stopWithin(a: RunningAgent, signal: NodeJS.Signals, limitMs: number) {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), limitMs)));
  const r = await Promise.race([a.stop(signal), limit]);
  clearTimeout(timer);
  if (!r) throw new Error(`agent still running ${limitMs} ms after ${signal}; log:\n${a.stderr().slice(-3000)}`);
  return r;
}

describe('pipeline e2e: spool, shutdown, metrics, memory bound', () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-pipe-'));
  const disk = new SmallTmpfs(path.join(base, 'small-disk'), 4096);
  const agents: RunningAgent[] = [];
  const cgroups: TestCgroup[] = [];

  async function launch(extra: string, env: NodeJS.ProcessEnv, opts: StartOptions): Promise<RunningAgent> {
    const a = await startAgent(extra, env, opts);
    agents.push(a);
    return a;
  }

  function cgroup(name: string): TestCgroup {
    const cg = makeTestCgroup(`oomtrail-pipe-${name}-${process.pid}`);
    cgroups.push(cg);
    return cg;
  }

  /** A fresh sink file on the small disk, which is full: appends to it fail with ENOSPC. */
  function sinkOnFullDisk(name: string): string {
    disk.fill();
    const p = path.join(disk.dir, `${name}.jsonl`);
    assert.ok(!fs.existsSync(p));
    return p;
  }

  before(() => {
    disk.mount();
  });

  after(async () => {
    const problems: string[] = [];
    for (const a of agents) {
      if (a.child.exitCode === null && a.child.signalCode === null) await a.stop('SIGKILL');
      fs.rmSync(a.dir, { recursive: true, force: true });
    }
    for (const cg of [...cgroups].reverse()) await removeCgroup(cg.dir).catch((err: Error) => problems.push(`${cg.dir}: ${err.message}`));
    try {
      disk.unmount();
    } catch (err) {
      problems.push(`umount ${disk.dir}: ${(err as Error).message}`);
    }
    fs.rmSync(base, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'cleanup');
  });

  test('sink down: records wait in the spool, survive SIGKILL, arrive exactly once after restart', async () => {
    const cg = cgroup('spool');
    const dir = path.join(base, 'spool-test');
    const eventsPath = sinkOnFullDisk('spool-test');
    const spoolDir = path.join(dir, 'spool', 'file');

    const first = await launch(config(), FAST_RETRY, { dir, eventsPath });
    const pids = await causeKills(cg, 5);
    const s = await waitForMetrics(first, (m) => spooled(m) === 5 && retried(m) >= 1, 10_000, '5 spooled records and a failed write');
    assert.equal(delivered(s), 0, 'nothing delivered to a full disk');
    assert.deepEqual(readJsonl(eventsPath), [], 'nothing in the sink file');
    assert.match(first.stderr(), /warn lane: sink write failed, will retry .*ENOSPC/);

    const killed = await first.stop('SIGKILL');
    assert.equal(killed.signal, 'SIGKILL');
    const onDisk = readSpoolDir(spoolDir);
    assert.ok(onDisk.segmentBytes > 0, 'spool segments hold data');
    const spooledRecords = onDisk.pending.map((p) => p.record);
    assertExactlyOnce(spooledRecords, pids, 'spool after SIGKILL');
    assert.deepEqual(readJsonl(eventsPath), [], 'still nothing in the sink file');

    disk.free();
    const second = await launch(config(), FAST_RETRY, { dir, eventsPath, allowMissedKills: RESTART_WITHOUT_BACKFILL });
    assert.match(second.stderr(), /lane: replaying spooled records \{"sink":"file","records":5,/);
    await second.waitFor((rs) => rs.length >= 5, 10_000, '5 replayed records');
    const m = await waitForMetrics(second, (x) => spooled(x) === 0, 5_000, 'an empty spool');
    assert.equal(delivered(m), 5);
    await sleep(500); // a duplicate would show up here
    const rs = readJsonl(eventsPath);
    assertExactlyOnce(rs, pids, 'sink file after restart');
    assert.deepEqual(ids(rs), ids(spooledRecords), 'the spooled records, not others');

    const stopped = await stopWithin(second, 'SIGTERM', 15_000);
    assert.equal(stopped.code, 0, second.stderr().slice(-2000));
    assert.match(second.stderr(), /stopped; every record delivered/);
    const left = readSpoolDir(spoolDir);
    assert.equal(left.pending.length, 0, 'spool acked');
    assert.deepEqual(left.segments, [], 'acked segments deleted');
    assertExactlyOnce(readJsonl(eventsPath), pids, 'sink file after stop');
  });

  test('SIGTERM with records in flight: flushed, exit 0 well within the deadline', async () => {
    const cg = cgroup('flush');
    const deadlineMs = 5_000;
    // records wait in the open batch (age 60 s): only the shutdown flush can deliver them
    const agent = await launch(config({ deadlineMs }), { OOMTRAIL_SINKS_FILE_BATCH_MAX_AGE_MS: '60000' }, {});
    const pids = await causeKills(cg, 3);
    const s = await waitForMetrics(agent, (m) => spooled(m) === 3, 10_000, '3 spooled records');
    assert.equal(delivered(s), 0);
    assert.deepEqual(agent.records(), [], 'records still in the open batch');

    // One more kill while the agent is frozen, so its event is still in the kernel ring buffer when
    // SIGTERM arrives: the stop must drain the ring buffer, then the queue, then the open batch.
    const pid = agent.child.pid!;
    process.kill(pid, 'SIGSTOP');
    let last;
    try {
      last = await spawnDdHog(cg.procs);
    } finally {
      process.kill(pid, 'SIGTERM');
      process.kill(pid, 'SIGCONT');
    }
    const t0 = Date.now();
    const exit = await Promise.race([agent.exited, sleep(deadlineMs + 5_000).then(() => null)]);
    assert.ok(exit, `agent still running ${deadlineMs + 5_000} ms after SIGTERM`);
    const stopped = { ...exit, ms: Date.now() - t0 };
    assert.equal(last.signal, 'SIGKILL');
    pids.push(last.pid);
    console.log(`# flush on SIGTERM: exit ${stopped.code} after ${stopped.ms} ms (deadline ${deadlineMs} ms)`);
    assert.equal(stopped.code, 0, agent.stderr().slice(-2000));
    assert.ok(stopped.ms < deadlineMs, `exit took ${stopped.ms} ms`);
    assert.match(agent.stderr(), /stopped; every record delivered/);
    assertExactlyOnce(agent.records(), pids, 'flushed on SIGTERM');
    assert.equal(readSpoolDir(path.join(agent.dir, 'spool', 'file')).pending.length, 0);
  });

  test('SIGTERM with the sink down: keeps trying until the deadline, exits 0, records stay spooled', async () => {
    const cg = cgroup('deadline');
    const deadlineMs = 3_000;
    const dir = path.join(base, 'deadline-test');
    const eventsPath = sinkOnFullDisk('deadline-test');
    const agent = await launch(config({ deadlineMs }), FAST_RETRY, { dir, eventsPath });
    const pids = await causeKills(cg, 2);
    await waitForMetrics(agent, (m) => spooled(m) === 2 && retried(m) >= 1, 10_000, '2 spooled records and a failed write');

    const stopped = await stopWithin(agent, 'SIGTERM', deadlineMs + 5_000);
    console.log(`# deadline: exit ${stopped.code} after ${stopped.ms} ms (deadline ${deadlineMs} ms)`);
    assert.equal(stopped.code, 0, agent.stderr().slice(-2000));
    assert.ok(stopped.ms >= deadlineMs - 50, `gave up after ${stopped.ms} ms, before the ${deadlineMs} ms deadline`);
    assert.ok(stopped.ms <= deadlineMs + 1_000, `exit took ${stopped.ms} ms, deadline ${deadlineMs} ms`);
    assert.match(agent.stderr(), new RegExp(`warn stopped; 2 records undelivered \\(held in the spool ${path.join(dir, 'spool')}, sent at the next start: file 2\\)\n`));
    assertExactlyOnce(readSpoolDir(path.join(dir, 'spool', 'file')).pending.map((p) => p.record), pids, 'spool after deadline');
    assert.deepEqual(readJsonl(eventsPath), []);
  });

  test('a second SIGTERM during a long drain exits at once; a restart delivers what was spooled', async () => {
    const cg = cgroup('second');
    const dir = path.join(base, 'second-test');
    const eventsPath = sinkOnFullDisk('second-test');
    const agent = await launch(config({ deadlineMs: 20_000 }), FAST_RETRY, { dir, eventsPath });
    const pids = await causeKills(cg, 2);
    await waitForMetrics(agent, (m) => spooled(m) === 2 && retried(m) >= 1, 10_000, '2 spooled records and a failed write');

    agent.child.kill('SIGTERM');
    const until = Date.now() + 5_000;
    while (!/SIGTERM: stopping/.test(agent.stderr())) {
      assert.ok(Date.now() < until, 'no "SIGTERM: stopping" log line');
      await sleep(20);
    }
    await sleep(500); // well into the drain, which would last 20 s
    assert.equal(agent.child.exitCode, null, 'still draining');
    const stopped = await stopWithin(agent, 'SIGTERM', 5_000);
    console.log(`# second SIGTERM: ended by ${stopped.signal ?? `exit ${stopped.code}`} after ${stopped.ms} ms`);
    assert.ok(stopped.ms < 1_000, `second SIGTERM took ${stopped.ms} ms`);
    assert.equal(stopped.signal, 'SIGTERM', 'dies of the signal (status 143 to a shell)');
    assert.match(agent.stderr(), /SIGTERM again: exiting now; undelivered records stay in the spool/);
    const spooledRecords = readSpoolDir(path.join(dir, 'spool', 'file')).pending.map((p) => p.record);
    assertExactlyOnce(spooledRecords, pids, 'spool after the second SIGTERM');
    assert.deepEqual(readJsonl(eventsPath), []);

    disk.free();
    const again = await launch(config(), FAST_RETRY, { dir, eventsPath, allowMissedKills: RESTART_WITHOUT_BACKFILL });
    await again.waitFor((rs) => rs.length >= 2, 10_000, '2 replayed records');
    await waitForMetrics(again, (m) => spooled(m) === 0, 5_000, 'an empty spool');
    const stoppedAgain = await stopWithin(again, 'SIGTERM', 15_000);
    assert.equal(stoppedAgain.code, 0);
    assertExactlyOnce(readJsonl(eventsPath), pids, 'after restart');
    assert.deepEqual(ids(readJsonl(eventsPath)), ids(spooledRecords));
  });

  test('a sink write that never returns: SIGTERM ends the agent at its deadline, exit 0, records stay spooled', async () => {
    const cg = cgroup('hung');
    const deadlineMs = 2_000;
    const dir = path.join(base, 'hung-test');
    fs.mkdirSync(dir, { recursive: true });
    // opening a FIFO for writing blocks until a reader comes (never): the sink's open hangs in a
    // libuv worker thread, as a write to a hung mount would. (Never read this path from the test.)
    const eventsPath = path.join(dir, 'events.fifo');
    execFileSync('mkfifo', [eventsPath]);
    const agent = await launch(config({ deadlineMs }), FAST_RETRY, { dir, eventsPath });
    const pids = await causeKills(cg, 2);
    const s = await waitForMetrics(agent, (m) => spooled(m) === 2 && (m.get('oomtrail_sink_buffered_records', FILE) ?? 0) >= 1, 10_000, '2 spooled records, one write in flight');
    assert.equal(delivered(s), 0);
    assert.equal(retried(s), 0, 'the write never answered');

    const stopped = await stopWithin(agent, 'SIGTERM', deadlineMs + 5_000);
    console.log(`# hung sink: ended by ${stopped.signal ?? `exit ${stopped.code}`} after ${stopped.ms} ms (deadline ${deadlineMs} ms)`);
    assert.ok(stopped.ms >= deadlineMs, `gave up after ${stopped.ms} ms`);
    // the stop ends at the deadline, and the worker thread stuck in the FIFO's open does not hold the exit
    assert.ok(stopped.ms <= deadlineMs + 500, `took ${stopped.ms} ms, deadline ${deadlineMs} ms`);
    assert.equal(stopped.code, 0);
    assert.match(
      agent.stderr(),
      new RegExp(`warn stopped; 2 records undelivered \\(held in the spool ${path.join(dir, 'spool')}, sent at the next start: file 2\\) \\(file did not finish within the 2000 ms stop deadline\\)\n`),
    );
    assert.doesNotMatch(agent.stderr(), /past the .* shutdown deadline/);
    const spooledRecords = readSpoolDir(path.join(dir, 'spool', 'file')).pending.map((p) => p.record);
    assertExactlyOnce(spooledRecords, pids, 'spool after the hung stop');

    // the restart replays into the same hung sink; a second SIGTERM ends it at once all the same
    const hung = await launch(config({ deadlineMs: 20_000 }), FAST_RETRY, { dir, eventsPath, allowMissedKills: RESTART_WITHOUT_BACKFILL });
    await waitForMetrics(hung, (m) => (m.get('oomtrail_sink_buffered_records', FILE) ?? 0) >= 1, 10_000, 'the replay write in flight');
    hung.child.kill('SIGTERM');
    const until = Date.now() + 5_000;
    while (!/SIGTERM: stopping/.test(hung.stderr())) {
      assert.ok(Date.now() < until, 'no "SIGTERM: stopping" log line');
      await sleep(20);
    }
    await sleep(300);
    const second = await stopWithin(hung, 'SIGTERM', 5_000);
    console.log(`# hung sink, second SIGTERM: ended by ${second.signal ?? `exit ${second.code}`} after ${second.ms} ms`);
    assert.ok(second.ms < 1_000, `second SIGTERM took ${second.ms} ms`);
    assert.equal(second.signal, 'SIGTERM');
    assert.equal(readSpoolDir(path.join(dir, 'spool', 'file')).pending.length, 2);

    // the FIFO replaced by a plain file: both records arrive, once
    fs.rmSync(eventsPath);
    const fixed = await launch(config(), FAST_RETRY, { dir, eventsPath, allowMissedKills: RESTART_WITHOUT_BACKFILL });
    await fixed.waitFor((rs) => rs.length >= 2, 10_000, '2 replayed records');
    await waitForMetrics(fixed, (m) => spooled(m) === 0, 5_000, 'an empty spool');
    assert.equal((await stopWithin(fixed, 'SIGTERM', 15_000)).code, 0);
    assertExactlyOnce(readJsonl(eventsPath), pids, 'after the sink came back');
    assert.deepEqual(ids(readJsonl(eventsPath)), ids(spooledRecords));
  });

  test('metrics: N kills are counted by hook, sink and victim cgroup; queue and spool empty; /healthz 200', async () => {
    const cg = cgroup('metrics');
    // a child without a limit of its own: its kills hit the parent's limit (oom_cgroup) but the victim is in the child
    const childDir = path.join(cg.dir, 'child');
    fs.mkdirSync(childDir);
    const counter = ['memory.oom_control', 'memory.events'].map((f) => path.join(childDir, f)).find((f) => fs.existsSync(f))!;
    const child: TestCgroup = {
      dir: childDir,
      procs: path.join(childDir, 'cgroup.procs'),
      kernelPath: `${cg.kernelPath}/child`,
      oomKills: () => Number(/^oom_kill (\d+)$/m.exec(fs.readFileSync(counter, 'utf8'))?.[1] ?? NaN),
    };
    cgroups.push(child);
    const agent = await launch(config(), {}, {});
    const hook = /oomkill: attached hook (\w+)/.exec(agent.stderr())?.[1];
    assert.ok(hook, 'hook named in the log');
    assert.match(agent.stderr(), new RegExp(`info oomtrail \\S+ started: config defaults <- \\S+/config\\.yaml; collector oomkill hook ${hook}; sinks file; spool \\S+; metrics 127\\.0\\.0\\.1:\\d+$`, 'm'));
    const pids = await causeKills(cg, 3);
    pids.push(...(await causeKills(child, 2)));
    const n = pids.length;
    await agent.waitFor((rs) => rs.length >= n, 10_000, `${n} records`);
    const m = await waitForMetrics(agent, (x) => delivered(x) === n, 5_000, `delivered == ${n}`);
    assert.equal(m.get('oomtrail_events_captured_total', { hook }), n, 'events captured by hook');
    assert.equal(m.all('oomtrail_events_captured_total').length, 1, 'one hook');
    assert.equal(m.get('oomtrail_sink_delivered_total', FILE), n);
    assert.deepEqual(
      m.all('oomtrail_oom_kills_by_cgroup_total'),
      [
        [`oomtrail_oom_kills_by_cgroup_total{cgroup="${cg.kernelPath}"}`, 3],
        [`oomtrail_oom_kills_by_cgroup_total{cgroup="${child.kernelPath}"}`, 2],
      ],
      'kills by victim cgroup',
    );
    assert.deepEqual(
      m.all('oomtrail_oom_kills_total'),
      [['oomtrail_oom_kills_total{namespace="",workload="",container="",victim="",scope="other"}', n]],
      'no Kubernetes here: one series, the limits of cgroups outside kubepods',
    );
    assert.equal(m.get('oomtrail_queue_depth'), 0);
    assert.equal(m.get('oomtrail_spool_records', FILE), 0);
    assert.equal(m.get('oomtrail_sink_buffered_records', FILE), 0);
    assert.deepEqual(m.all('oomtrail_dropped_total'), [], 'nothing dropped');
    assert.equal(retried(m), 0);
    const last = m.get('oomtrail_sink_last_success_timestamp_seconds', FILE)!;
    assert.ok(Math.abs(last - Date.now() / 1000) < 30, 'last success is recent');
    const h = await httpGet(`${metricsBase(agent)}/healthz`);
    assert.equal(h.status, 200);
    assert.equal(h.body, 'ok\n');
    const rs = agent.records();
    assertExactlyOnce(rs, pids, 'sink file');
    assert.ok(rs.filter((r) => r.victim_cgroup === child.kernelPath).every((r) => r.oom_cgroup === cg.kernelPath), 'child kills hit the parent limit');
    assert.equal((await stopWithin(agent, 'SIGTERM', 15_000)).code, 0);
  });

  test('/healthz: 503 naming the sink once it has failed longer than sink_failing_after_ms, 200 after recovery', async () => {
    const cg = cgroup('health');
    const failingAfterMs = 1_000;
    const eventsPath = sinkOnFullDisk('health-test');
    const agent = await launch(config({ failingAfterMs }), FAST_RETRY, { eventsPath });
    const healthz = () => httpGet(`${metricsBase(agent)}/healthz`);
    assert.equal((await healthz()).status, 200, 'healthy before any write');

    const pids = await causeKills(cg, 1);
    await waitForMetrics(agent, (m) => retried(m) >= 1, 10_000, 'a failed write');
    const failSeen = Date.now();
    const early = await healthz();
    if (Date.now() - failSeen < failingAfterMs / 2) assert.equal(early.status, 200, `503 before the threshold: ${early.body}`);

    let h = early;
    while (h.status !== 503) {
      assert.ok(Date.now() - failSeen < failingAfterMs + 4_000, `/healthz still ${h.status} long after the threshold`);
      await sleep(50);
      h = await healthz();
    }
    const after503 = Date.now() - failSeen;
    console.log(`# healthz: 503 ${after503} ms after the first failed write was seen (threshold ${failingAfterMs} ms)`);
    assert.ok(after503 >= failingAfterMs - 200, `503 after only ${after503} ms`);
    assert.match(h.body, /^sink file failing for \d+s: .*ENOSPC/);

    disk.free();
    await agent.waitFor((rs) => rs.length >= 1, 5_000, 'the record after recovery');
    // the line is in the file a moment before the write returns to the lane, which then marks the sink healthy
    // (CI once asked in between, on a loaded machine): 200 within 2 s of the record
    const recovered = Date.now();
    let healthy = await healthz();
    while (healthy.status !== 200 && Date.now() - recovered < 2_000) {
      await sleep(50);
      healthy = await healthz();
    }
    assert.equal(healthy.status, 200, `healthy again once delivered (still ${healthy.status} 2 s after the record: ${healthy.body})`);
    assert.match(agent.stderr(), /info lane: sink recovered \{"sink":"file","failed_for_ms":\d+\}/);
    assertExactlyOnce(agent.records(), pids, 'after recovery');
    assert.equal((await stopWithin(agent, 'SIGTERM', 15_000)).code, 0);
  });

  test('memory stays bounded while the sink is down: a burst of 200 kills, then a restart with them spooled', async () => {
    const cg = cgroup('memory');
    const maxEvents = 10;
    const bound = 2 * maxEvents; // one open batch + one in flight
    const dir = path.join(base, 'memory-test');
    const eventsPath = sinkOnFullDisk('memory-test');
    const env = { ...FAST_RETRY, OOMTRAIL_PIPELINE_BATCH_MAX_EVENTS: String(maxEvents) };
    const agent = await launch(config(), env, { dir, eventsPath });
    const pid = agent.child.pid!;

    // warm up (code paths, JIT, first failed writes), then take the baseline
    const pids = await causeKills(cg, 5);
    await waitForMetrics(agent, (m) => spooled(m) === 5 && retried(m) >= 1, 10_000, '5 spooled records');
    await sleep(300);
    const before = memoryKiB(pid);

    let maxBuffered = 0;
    let maxQueue = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const m = await scrape(agent);
        maxBuffered = Math.max(maxBuffered, m.get('oomtrail_sink_buffered_records', FILE) ?? 0);
        maxQueue = Math.max(maxQueue, m.get('oomtrail_queue_depth') ?? 0);
        await sleep(100);
      }
    })();
    const t0 = Date.now();
    try {
      pids.push(...(await causeKills(cg, 200)));
    } finally {
      sampling = false;
      await sampler;
    }
    const burstMs = Date.now() - t0;
    const m = await waitForMetrics(agent, (x) => spooled(x) === pids.length, 15_000, `${pids.length} spooled records`);
    const afterBurst = memoryKiB(pid);
    const rssGrowth = afterBurst.rss - before.rss;
    const peakGrowth = afterBurst.hwm - before.rss;
    console.log(
      `# memory: 200 kills in ${burstMs} ms; VmRSS ${before.rss} -> ${afterBurst.rss} KiB (${rssGrowth >= 0 ? '+' : ''}${rssGrowth}), ` +
        `VmHWM ${before.hwm} -> ${afterBurst.hwm} KiB; max buffered ${maxBuffered}, max queue depth ${maxQueue}; ` +
        `spool ${m.get('oomtrail_spool_bytes', FILE)} bytes`,
    );
    assert.equal(delivered(m), 0);
    assert.deepEqual(m.all('oomtrail_dropped_total'), [], 'nothing dropped');
    assert.ok(maxBuffered <= bound, `lane held ${maxBuffered} records in memory (bound ${bound})`);
    assert.ok((m.get('oomtrail_sink_buffered_records', FILE) ?? 0) <= bound);
    assert.ok(rssGrowth < 30 * MiB, `VmRSS grew by ${rssGrowth} KiB`);
    assert.ok(peakGrowth < 30 * MiB, `VmHWM is ${peakGrowth} KiB above the baseline VmRSS`);
    const retryWarnings = agent.stderr().match(/warn lane: sink write failed, will retry/g) ?? [];
    assert.equal(retryWarnings.length, 1, 'one warning per outage; the retries log at debug');

    // a crash during the outage; the restart replays 205 records into a sink that is still down
    await agent.stop('SIGKILL');
    const again = await launch(config(), env, { dir, eventsPath, allowMissedKills: RESTART_WITHOUT_BACKFILL });
    assert.match(again.stderr(), new RegExp(`lane: replaying spooled records \\{"sink":"file","records":${pids.length},`));
    const r = await waitForMetrics(again, (x) => retried(x) >= 2, 10_000, 'failed writes after the restart');
    const replay = memoryKiB(again.child.pid!);
    const buffered = r.get('oomtrail_sink_buffered_records', FILE) ?? 0;
    console.log(`# memory: restart with ${pids.length} spooled, sink down: buffered ${buffered}, VmRSS ${replay.rss} KiB, VmHWM ${replay.hwm} KiB`);
    assert.equal(spooled(r), pids.length);
    assert.ok(buffered >= 1 && buffered <= bound, `replaying lane holds ${buffered} records in memory (bound ${bound})`);

    disk.free();
    await again.waitFor((rs) => rs.length >= pids.length, 15_000, `${pids.length} records after recovery`);
    await waitForMetrics(again, (x) => spooled(x) === 0, 5_000, 'an empty spool');
    const recovered = memoryKiB(again.child.pid!);
    console.log(`# memory: after delivering all ${pids.length}: VmRSS ${recovered.rss} KiB, VmHWM ${recovered.hwm} KiB`);
    await sleep(300);
    assertExactlyOnce(readJsonl(eventsPath), pids, 'after recovery');
    assert.equal((await stopWithin(again, 'SIGTERM', 15_000)).code, 0);
  });
});
