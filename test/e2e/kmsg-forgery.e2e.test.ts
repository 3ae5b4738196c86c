/*
 * A tenant forging kills through the kernel log, end to end on this host (cgroup v1 memory controller):
 * real cgroups with hostile names, real OOM kills while the agent is stopped, the real agent restarted
 * with the ring backfill; and lines written to /dev/kmsg by a root process. The kernel prints cgroup
 * names verbatim in "Memory cgroup stats for …:" and "oom-kill:…" lines; a process's write to
 * /dev/kmsg gets a non-kernel facility (LOG_USER even for a "<0>" prefix; checked here too).
 *
 * Runs under the host lock: other agents' kills would otherwise land in the audit's counts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { missedKillsLogged, sleep, startAgent, type RunningAgent, type StartOptions } from '../helpers/agent';
import { makeNestedTestCgroup, makeTestCgroup, removeCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { KmsgReader, waitForOomLogWindow } from '../helpers/kmsg';
import { parseKmsgLine } from '../../src/collectors/kmsg/kmsg';
import { readVmstatOomKills } from '../../src/pipeline/ledger';
import type { OomRecord } from '../../src/record/record';

const FORGED = 'Out of memory: Killed process 1 (systemd) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0';
const BACKFILL = ['collectors:', '  oomkill:', '    backfill: true', '    backfill_journald: false'].join('\n');
const isKill = (r: OomRecord) => (r.kind ?? 'oom_kill') === 'oom_kill';
const ofPid = (rs: OomRecord[], pid: number) => rs.filter((r) => isKill(r) && r.victim_pid === pid);

describe('kernel-log forgery e2e: only the kernel is believed', () => {
  const agents: RunningAgent[] = [];
  const dirs: string[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-forgery-'));
  async function launch(extra: string, opts: StartOptions = {}): Promise<RunningAgent> {
    const a = await startAgent(extra, {}, { dir, ...opts });
    agents.push(a);
    return a;
  }
  after(async () => {
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
    for (const d of dirs) await removeCgroup(d).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('hostile cgroup names killed while the agent is stopped: the restarted agent records each real kill once, with its real cgroup, and no kill of pid 1', async () => {
    const first = await launch(BACKFILL);
    await sleep(2500); // its ring backfill (and settle pass) saves where the ring was read to
    await first.stop();

    const kmsg = new KmsgReader();
    const tag = `oomtrail-forge-${process.pid}`;
    // one name that is a whole kill line (143 bytes), and a chain of names spelling ",task_memcg=/kubepods…"
    const named = makeTestCgroup(FORGED);
    dirs.push(named.dir);
    const nested = makeNestedTestCgroup([`${tag},task_memcg=`, 'kubepods', 'podX']);
    dirs.push(...nested.dirs);
    await waitForOomLogWindow(kmsg);
    const [namedPid] = await causeKills(named, 1);
    await waitForOomLogWindow(kmsg);
    const [nestedPid] = await causeKills(nested, 1);
    kmsg.drain();
    // the oracle: the kernel printed both names verbatim
    assert.ok(kmsg.records.some((r) => r.message === `Memory cgroup stats for ${named.kernelPath}:`), 'the kernel printed the forged name');
    assert.ok(
      kmsg.records.some((r) => r.message.endsWith(`oom_memcg=${nested.kernelPath},task_memcg=${nested.kernelPath},task=dd,pid=${nestedPid},uid=0`)),
      'the kernel printed the nested names',
    );
    const oomKillLines = kmsg.records.map((r) => r.message).filter((m) => m.startsWith('oom-kill:'));
    kmsg.close();

    const second = await launch(BACKFILL);
    await second.waitFor((rs) => ofPid(rs, namedPid).length > 0 && ofPid(rs, nestedPid).length > 0, 20_000, 'both kills backfilled');
    await sleep(3000); // the backfill's settle pass: anything else it would record is in by now
    await second.stop();
    const rs = second.records();
    assert.deepEqual(
      rs.filter((r) => isKill(r) && (r.victim_pid === 1 || r.victim_comm === 'systemd')).map((r) => `${r.hook} ${r.victim_pid} ${r.victim_comm}`),
      [],
      'no kill of pid 1',
    );
    for (const [pid, cg] of [
      [namedPid, named.kernelPath],
      [nestedPid, nested.kernelPath],
    ] as const) {
      const mine = ofPid(rs, pid);
      assert.equal(mine.length, 1, `pid ${pid}: one record`);
      assert.equal(mine[0].hook, 'kmsg');
      assert.equal(mine[0].victim_cgroup, cg, `pid ${pid}: the real cgroup (the kernel printed: ${oomKillLines.find((l) => l.endsWith(`,pid=${pid},uid=0`))})`);
      assert.equal(mine[0].oom_cgroup, cg);
    }
  });

  test('lines a root process writes to /dev/kmsg: not the kernel (facility), no record, no move of the audit', async () => {
    const tag = `oomtrail-forge-b-${process.pid}`;
    const cg = makeTestCgroup(tag);
    dirs.push(cg.dir);
    // agent stopped: a real kill, then the forged pair (a repeat of one pid: what a memory.oom.group
    // sweep logs, and what the audit takes off the kernel's count)
    const vmBefore = readVmstatOomKills()!;
    const [pid] = await causeKills(cg, 1);
    fs.writeFileSync('/dev/kmsg', `<0>${FORGED}\n`);
    fs.writeFileSync('/dev/kmsg', `<0>${FORGED}\n`);
    const killed = readVmstatOomKills()! - vmBefore;
    assert.equal(killed, 1, 'only the one real kill on this host meanwhile');

    // backfill off: the real kill is missed, and the audit must say so (the forged repeat must not explain it)
    const blind = await launch('', { allowMissedKills: 'restarted with the backfill off after a kill' });
    const until = Date.now() + 20_000;
    while (missedKillsLogged(blind.stderr()) < killed && Date.now() < until) await sleep(250);
    fs.writeFileSync('/dev/kmsg', `<0>${FORGED}\n`); // and one while it runs
    await sleep(1500);
    await blind.stop();
    assert.equal(missedKillsLogged(blind.stderr()), killed, `the audit counts the real kill missed:\n${blind.stderr().slice(-2000)}`);
    assert.match(blind.stderr(), /kernel log: refused a line \(an OOM line a process wrote/);

    // backfill on: the real kill is recovered; the written lines are not a kill
    const seeing = await launch(BACKFILL);
    await seeing.waitFor((rs) => ofPid(rs, pid).length > 0, 20_000, 'the real kill backfilled');
    await sleep(3000);
    await seeing.stop();
    const rs = seeing.records();
    assert.equal(ofPid(rs, pid).length, 1);
    assert.equal(ofPid(rs, pid)[0].victim_cgroup, cg.kernelPath);
    assert.deepEqual(ofPid(rs, 1).map((r) => `${r.hook} ${r.victim_comm}`), [], 'no kill of pid 1');
  });
});

test('the kernel gives a process\'s "<0>" line facility LOG_USER (record prefix 8)', async () => {
  const r = new KmsgReader();
  const mark = `oomtrail-facility-probe-${process.pid}`;
  fs.writeFileSync('/dev/kmsg', `<0>${mark}\n`);
  await sleep(100);
  r.drain();
  r.close();
  // KmsgReader sees only the kernel's records now: read the raw record directly
  const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const buf = Buffer.alloc(16384);
  let found: ReturnType<typeof parseKmsgLine> = null;
  try {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EPIPE') continue;
        break;
      }
      const rec = parseKmsgLine(buf.toString('latin1', 0, n));
      if (rec?.message === mark) found = rec;
    }
  } finally {
    fs.closeSync(fd);
  }
  assert.ok(found, 'the line is in the ring');
  assert.equal(found.facility, 1);
  assert.ok(r.records.every((x) => x.message !== mark), 'and the reader left it out');
});
