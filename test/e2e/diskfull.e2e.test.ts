/*
 * A full disk, end to end: the real agent process, real OOM kills in a 64 MiB memory cgroup, the spool (with the
 * journal and kill ledger) and the JSONL file sink on a 1 MiB tmpfs filled to ENOSPC after the start, the console
 * sink (JSON) on stdout. A full disk is a fault, not a loss: the console prints every kill at once; once space
 * returns, every sink has every record, once; if it never returns, the stop line counts what was not delivered.
 * Needs root, a memory cgroup controller, BTF and mount(8).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readJsonl, sleep, startAgent, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { scrape } from '../helpers/metrics';
import { SmallTmpfs } from '../helpers/tmpfs';
import type { OomRecord } from '../../src/record/record';

const KILLS = 20;
/** Retry fast so a freed disk is noticed within a fraction of a second. */
const FAST_RETRY: NodeJS.ProcessEnv = { OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '50', OOMTRAIL_PIPELINE_RETRY_MAX_MS: '200' };
const METRICS = ['metrics:', '  listen: 127.0.0.1:0'].join('\n');

/** Kill records of these victims in JSON lines text (the console sink's JSON output). */
function consoleRecords(stdout: string, pids: number[]): OomRecord[] {
  const want = new Set(pids);
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as OomRecord)
    .filter((r) => (r.kind ?? 'oom_kill') === 'oom_kill' && want.has(r.victim_pid));
}

const ours = (rs: OomRecord[], pids: number[]): OomRecord[] => rs.filter((r) => (r.kind ?? 'oom_kill') === 'oom_kill' && pids.includes(r.victim_pid));

function assertOnceEach(rs: OomRecord[], pids: number[], what: string): void {
  assert.equal(rs.length, pids.length, `${what}: ${rs.length} records for ${pids.length} kills`);
  assert.equal(new Set(rs.map((r) => r.event_id)).size, rs.length, `${what}: each event_id once`);
  assert.deepEqual([...rs.map((r) => r.victim_pid)].sort((a, b) => a - b), [...pids].sort((a, b) => a - b), `${what}: the victims`);
}

describe('full disk e2e: the spool on a full tmpfs', () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-diskfull-'));
  const mounts: SmallTmpfs[] = [];
  const agents: RunningAgent[] = [];
  const cgroups: TestCgroup[] = [];

  after(async () => {
    const problems: string[] = [];
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.stop('SIGKILL').catch(() => undefined);
    for (const cg of cgroups) await removeCgroup(cg.dir).catch((err: Error) => problems.push(`${cg.dir}: ${err.message}`));
    for (const m of mounts) m.unmount();
    fs.rmSync(base, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'cleanup');
  });

  /** An agent with its spool and file sink on a fresh 1 MiB tmpfs, the console printing JSON. */
  async function launch(name: string, env: NodeJS.ProcessEnv = {}): Promise<{ agent: RunningAgent; disk: SmallTmpfs }> {
    const dir = path.join(base, name);
    fs.mkdirSync(dir);
    const disk = new SmallTmpfs(path.join(dir, 'disk'), 1024);
    disk.mount();
    mounts.push(disk);
    const agent = await startAgent(
      METRICS,
      {
        ...FAST_RETRY,
        OOMTRAIL_SINKS_CONSOLE_ENABLED: 'true',
        OOMTRAIL_SINKS_CONSOLE_FORMAT: 'json',
        OOMTRAIL_PIPELINE_SPOOL_DIR: path.join(disk.dir, 'spool'),
        ...env,
      },
      { dir, eventsPath: path.join(disk.dir, 'events.jsonl') },
    );
    agents.push(agent);
    return { agent, disk };
  }

  function cgroup(name: string): TestCgroup {
    const cg = makeTestCgroup(`oomtrail-diskfull-${name}-${process.pid}`);
    cgroups.push(cg);
    return cg;
  }

  test(`${KILLS} kills on a full disk: the console prints them at once; freed, every sink has each once`, async (t) => {
    const { agent, disk } = await launch('freed');
    const cg = cgroup('freed');
    const filled = disk.fill();
    const pids = await causeKills(cg, KILLS);
    const killed = Date.now();
    // the console lane never waits for the disk
    for (;;) {
      if (consoleRecords(agent.stdout(), pids).length >= KILLS) break;
      assert.ok(Date.now() - killed < 5000, `console printed ${consoleRecords(agent.stdout(), pids).length} of ${KILLS} within 5 s; log:\n${agent.stderr().slice(-3000)}`);
      await sleep(50);
    }
    const consoleMs = Date.now() - killed;
    assertOnceEach(consoleRecords(agent.stdout(), pids), pids, 'console while the disk is full');
    assert.equal(ours(readJsonl(agent.eventsPath), pids).length, 0, 'the file sink cannot write on the full disk');
    const full = await scrape(agent);
    assert.ok((full.get('oomtrail_sink_held_records', { sink: 'file' }) ?? 0) >= KILLS, 'the file lane holds the records in memory');
    assert.ok((full.get('oomtrail_sink_held_total', { sink: 'console' }) ?? 0) >= KILLS, 'the console lane held them too, and delivered them from memory');
    assert.equal(full.get('oomtrail_sink_held_records', { sink: 'console' }) ?? 0, 0);
    assert.equal(full.get('oomtrail_dropped_total', { stage: 'spool', reason: 'spool_error' }) ?? 0, 0, 'nothing dropped');
    assert.equal(full.get('oomtrail_dropped_total', { stage: 'spool', reason: 'hold_full' }) ?? 0, 0, 'nothing dropped');

    disk.free();
    const freed = Date.now();
    await agent.waitFor((rs) => ours(rs, pids).length >= KILLS, 15_000, `the file sink's ${KILLS} records after the space returned`);
    const fileMs = Date.now() - freed;
    await sleep(1000); // a duplicate would follow within the retry interval
    const after = await scrape(agent);
    assert.equal(after.get('oomtrail_sink_held_records', { sink: 'file' }) ?? 0, 0, 'nothing held any more');
    assert.equal(after.get('oomtrail_spool_records', { sink: 'file' }) ?? 0, 0, 'the spool is drained');
    const stopped = await agent.stop('SIGTERM');
    assert.equal(stopped.code, 0, agent.stderr().slice(-3000));
    assertOnceEach(consoleRecords(agent.stdout(), pids), pids, 'console');
    assertOnceEach(ours(readJsonl(agent.eventsPath), pids), pids, 'file');
    assert.match(agent.stderr(), /stopped; every record delivered\n/);
    t.diagnostic(
      `tmpfs 1 MiB filled with ${filled} bytes; ${KILLS} kills: console had all ${consoleMs} ms after the last kill; ` +
        `file had all ${fileMs} ms after the space returned; stop ${stopped.ms} ms`,
    );
  });

  test('the space never returns: the stop ends within its deadline and counts what was not delivered', async (t) => {
    const DEADLINE = 3000;
    const { agent, disk } = await launch('never', { OOMTRAIL_SHUTDOWN_DEADLINE_MS: String(DEADLINE) });
    const cg = cgroup('never');
    disk.fill();
    const pids = await causeKills(cg, KILLS);
    const killed = Date.now();
    while (consoleRecords(agent.stdout(), pids).length < KILLS) {
      assert.ok(Date.now() - killed < 5000, `console printed ${consoleRecords(agent.stdout(), pids).length} of ${KILLS} within 5 s`);
      await sleep(50);
    }
    const stopped = await agent.stop('SIGTERM');
    assert.equal(stopped.code, 0, agent.stderr().slice(-3000));
    assert.ok(stopped.ms < DEADLINE + 1000, `the stop took ${stopped.ms} ms for a ${DEADLINE} ms deadline`);
    assert.doesNotMatch(agent.stderr(), /every record delivered/);
    // every kill this agent printed (ours, and any other on the host) is held by the file lane, in memory only
    const printed = agent
      .stdout()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as OomRecord);
    const m = /stopped; (\d+) records undelivered \(held in memory only, lost at exit: file (\d+)\)\n/.exec(agent.stderr());
    assert.ok(m, `the stop line; the stop's log:\n${agent.stderr().slice(agent.stderr().indexOf('SIGTERM'))}`);
    assert.equal(Number(m[1]), printed.length, 'undelivered = every record the file lane was given');
    assert.equal(Number(m[2]), printed.length);
    assert.ok(printed.length >= KILLS);
    assert.equal(ours(readJsonl(agent.eventsPath), pids).length, 0);
    assertOnceEach(consoleRecords(agent.stdout(), pids), pids, 'console');
    t.diagnostic(`stop ${stopped.ms} ms (deadline ${DEADLINE}); ${m[0].trim()}`);
  });
});
