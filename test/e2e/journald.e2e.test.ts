/*
 * Backfill from systemd-journald, end to end: a real systemd-journald (standalone in its own mount and
 * PID namespaces, test/helpers/journald.ts) reads the real /dev/kmsg and writes a real journal; real
 * OOM kills in 64 MiB memory cgroups; the real agent with the JSONL sink. Needs root, a memory cgroup
 * controller, BTF, unshare(1) and systemd-journald/journalctl installed (not running).
 *
 * Stand-in, named: a "previous boot" is journald (and an agent) given another boot id through a bind
 * mount over /proc/sys/kernel/random/boot_id — the test host cannot be rebooted. Because that boot
 * shares this kernel's printk ring, the agent of the "next" boot also finds the same kills in the ring
 * and records them under the real boot id: assertions are per boot id.
 *
 * Other agents kill on this host at the same time: records are picked by this test's victim pids.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readJsonl, sleep, startAgent, type RunningAgent, type StartOptions } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { KmsgReader, parseKilled, type KmsgRecord } from '../helpers/kmsg';
import { fakeBootWrap, journaldUnavailable, randomBootId, startJournald, type TestJournald } from '../helpers/journald';
import { readKmsgRing } from '../../src/collectors/kmsg/kmsg';
import { kmsgEventId } from '../../src/pipeline/assemble/enrich';
import type { OomRecord } from '../../src/record/record';

const BOOT = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const skip = journaldUnavailable();

/** `journalDir` '' = the default location (the system journal). */
function config(journalDir: string, previousBoots = 1): string {
  return [
    'collectors:',
    '  oomkill:',
    '    backfill: true',
    '    backfill_journald: true',
    `    backfill_journald_dir: ${JSON.stringify(journalDir)}`,
    `    backfill_previous_boots: ${previousBoots}`,
  ].join('\n');
}

const isKill = (r: OomRecord) => (r.kind ?? 'oom_kill') === 'oom_kill';

/** Records of these pids in boot `boot`, by pid. */
function byPid(records: OomRecord[], pids: number[], boot: string): Map<number, OomRecord[]> {
  const out = new Map<number, OomRecord[]>(pids.map((p) => [p, []]));
  for (const r of records) if (isKill(r) && r.boot_id === boot && out.has(r.victim_pid)) out.get(r.victim_pid)!.push(r);
  return out;
}

function killLine(records: KmsgRecord[], pid: number): { usec: number; line: NonNullable<ReturnType<typeof parseKilled>> } {
  for (const r of records) {
    const k = parseKilled(r.message);
    if (k?.pid === pid) return { usec: r.usec, line: k };
  }
  throw new Error(`the kernel log has no kill line of pid ${pid}`);
}

function assertEqualsKernel(r: OomRecord, k: ReturnType<typeof killLine>, boot: string): void {
  assert.equal(r.hook, 'kmsg');
  assert.equal(r.boot_id, boot);
  assert.equal(r.event_id, kmsgEventId(boot, k.usec, r.victim_pid), `pid ${r.victim_pid}: event_id from boot id, kernel time, pid`);
  assert.deepEqual(
    [r.victim_comm, r.victim_uid, r.victim_total_vm_kb, r.victim_anon_rss_kb, r.victim_file_rss_kb, r.victim_shmem_rss_kb, r.victim_pgtables_kb, r.victim_oom_score_adj],
    [k.line.comm, k.line.uid, k.line.totalVmKb, k.line.anonRssKb, k.line.fileRssKb, k.line.shmemRssKb, k.line.pgtablesKb, k.line.oomScoreAdj],
    `pid ${r.victim_pid}: record equals the kernel's line`,
  );
}

describe('journald backfill e2e: a real systemd-journald, real kills', { skip: skip ?? false }, () => {
  const agents: RunningAgent[] = [];
  const journals: TestJournald[] = [];
  const cgroups: TestCgroup[] = [];
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-journald-'));

  async function launch(extra: string, opts: StartOptions): Promise<RunningAgent> {
    const a = await startAgent(extra, {}, opts);
    agents.push(a);
    return a;
  }

  async function journald(name: string, bootId?: string): Promise<TestJournald> {
    const j = await startJournald({ dir: path.join(base, name), bootId });
    journals.push(j);
    return j;
  }

  function cgroup(name: string): TestCgroup {
    const cg = makeTestCgroup(`oomtrail-jd-${name}-${process.pid}`);
    cgroups.push(cg);
    return cg;
  }

  after(async () => {
    const problems: string[] = [];
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.stop('SIGKILL').catch((e: Error) => problems.push(e.message));
    for (const j of journals) await j.stop();
    for (const cg of [...cgroups].reverse()) await removeCgroup(cg.dir).catch((err: Error) => problems.push(`${cg.dir}: ${err.message}`));
    fs.rmSync(base, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'cleanup');
  });

  test('kills the printk ring lost while the agent was stopped come back from the journal, once, across restarts', async (t) => {
    const j = await journald('ring-lost');
    const dir = path.join(base, 'ring-lost-agent');
    const cg = cgroup('lost');
    const flood = cgroup('flood');
    // first run: takes in what the ring and the journal hold, so the next run starts from there
    const first = await launch(config(j.dir), { dir });
    await sleep(2500);
    assert.equal((await first.stop('SIGTERM')).code, 0, first.stderr());

    const kmsg = new KmsgReader();
    let pids: number[];
    const floodPids: number[] = [];
    let stillInRing: number[];
    try {
      pids = await causeKills(cg, 5);
      kmsg.drain(); // the oracle reads the lines before the storm overwrites them
      // a real OOM storm overwrites the printk ring (~128 KiB): more kills until the ring no longer
      // holds any of the five (other agents' kills on this host help)
      const until = Date.now() + 90_000;
      for (;;) {
        const ring = new Set(readKmsgRing().map((r) => parseKilled(r.message)?.pid));
        stillInRing = pids.filter((p) => ring.has(p));
        if (stillInRing.length === 0 || Date.now() > until) break;
        floodPids.push(...(await causeKills(flood, 5)));
        kmsg.drain();
      }
      kmsg.drain();
    } finally {
      kmsg.close();
    }
    assert.deepEqual(stillInRing, [], `the ring still holds kills ${stillInRing.join(',')} after ${floodPids.length} more`);
    await j.waitForKills([...pids, ...floodPids], 20_000);

    // this agent in journald's mount namespace, the journal at its default place: journalctl's default
    // location (backfill_journald_dir '') is read for real
    const second = await launch(config(''), { dir, wrap: j.mountNsWrap() });
    const all = [...pids, ...floodPids];
    await second.waitFor((rs) => [...byPid(rs, all, BOOT).values()].every((x) => x.length >= 1), 30_000, `records of all ${all.length} kills`);
    await sleep(3000); // past the ring backfill's settle pass
    assert.equal((await second.stop('SIGTERM')).code, 0, second.stderr());
    const rs = readJsonl(second.eventsPath);
    for (const [pid, recs] of byPid(rs, all, BOOT)) assert.equal(recs.length, 1, `pid ${pid}: ${JSON.stringify(recs.map((r) => [r.event_id, r.hook]))}`);
    for (const pid of pids) {
      const [r] = byPid(rs, [pid], BOOT).get(pid)!;
      assertEqualsKernel(r, killLine(kmsg.records, pid), BOOT);
      assert.match(second.stderr(), new RegExp(`backfilled OOM kill of pid ${pid} \\(dd\\) from the systemd journal`), `pid ${pid} came from the journal`);
    }
    const fromJournal = (second.stderr().match(/from the systemd journal/g) ?? []).length;

    const third = await launch(config(j.dir), { dir });
    await sleep(3500);
    assert.equal((await third.stop('SIGTERM')).code, 0, third.stderr());
    const again = readJsonl(third.eventsPath);
    for (const [pid, recs] of byPid(again, all, BOOT)) assert.equal(recs.length, 1, `after another restart, pid ${pid}: ${recs.length} records`);
    assert.doesNotMatch(third.stderr(), /from the systemd journal/);
    t.diagnostic(
      `5 kills, then ${floodPids.length} more until the ring had lost the 5; all ${all.length} recorded once (${fromJournal} from the journal, any pid); ` +
        `after a restart still ${[...byPid(again, all, BOOT).values()].flat().length}`,
    );
  });

  test("a previous boot's kills the agent missed come from its journal with that boot's id; its live captures are not recorded again (stand-in boot id)", async (t) => {
    const prevBoot = randomBootId();
    const j0 = await journald('prev', prevBoot);
    const dir = path.join(base, 'prev-agent');
    const cg = cgroup('prev');
    const wrap = fakeBootWrap(prevBoot, base);

    // "boot 0": an agent captures 3 kills live, then is stopped; 3 more kills while it is down
    const a0 = await launch(config(j0.dir), { dir, wrap });
    const live = await causeKills(cg, 3);
    await a0.waitFor((rs) => [...byPid(rs, live, prevBoot).values()].every((x) => x.length === 1), 15_000, 'the live kills');
    assert.equal((await a0.stop('SIGTERM')).code, 0, a0.stderr());
    const kmsg = new KmsgReader();
    let missed: number[];
    try {
      missed = await causeKills(cg, 3);
      kmsg.drain();
    } finally {
      kmsg.close();
    }
    await j0.waitForKills([...live, ...missed], 20_000);
    await j0.stop(); // the "reboot"
    const liveIds = new Set(readJsonl(a0.eventsPath).filter((r) => live.includes(r.victim_pid)).map((r) => r.event_id));

    // "boot 1" (this host's real boot id): same state directory, the journal of boot 0
    const a1 = await launch(config(j0.dir, 1), { dir });
    await a1.waitFor((rs) => [...byPid(rs, missed, prevBoot).values()].every((x) => x.length >= 1), 30_000, "the previous boot's missed kills");
    await sleep(3000);
    assert.equal((await a1.stop('SIGTERM')).code, 0, a1.stderr());
    const rs = readJsonl(a1.eventsPath);
    const prev = byPid(rs, [...live, ...missed], prevBoot);
    for (const pid of live) assert.equal(prev.get(pid)!.length, 1, `live kill ${pid} of boot 0: recorded once (live), not again from the journal`);
    for (const pid of live) assert.ok(liveIds.has(prev.get(pid)![0].event_id) && prev.get(pid)![0].hook !== 'kmsg');
    for (const pid of missed) {
      assert.equal(prev.get(pid)!.length, 1, `missed kill ${pid} of boot 0: ${prev.get(pid)!.length} records`);
      const r = prev.get(pid)![0];
      const k = killLine(kmsg.records, pid);
      assertEqualsKernel(r, k, prevBoot);
      // a previous boot's kernel release comes from its first line ("Linux version …"); this stand-in
      // journald started long after boot, when the ring no longer held that line: unknown, not guessed
      assert.equal(r.kernel_release, '');
      assert.equal(r.cgroup_version, null, "a previous boot's cgroup version is not known");
      // time: journald's receive time less its lag behind the kernel; the same kill read from the ring
      // (the stand-in's shared ring) gets its time from this boot's clocks: both agree
      const twin = byPid(rs, [pid], BOOT).get(pid)![0];
      if (twin) assert.ok(Math.abs(Date.parse(r.time) - Date.parse(twin.time)) < 50, `journal time ${r.time}, ring time ${twin.time}`);
      assert.ok(Math.abs(Date.parse(r.time) - Date.now()) < 120_000, `record time ${r.time}`);
      assert.match(a1.stderr(), new RegExp(`backfilled OOM kill of pid ${pid} \\(dd\\) from the systemd journal \\(previous boot ${prevBoot}\\)`));
    }
    // the shared ring (stand-in artefact): the same kills under this boot's id, each once
    for (const [pid, recs] of byPid(rs, [...live, ...missed], BOOT)) assert.ok(recs.length <= 1, `pid ${pid} under the real boot id: ${recs.length}`);

    const a2 = await launch(config(j0.dir, 1), { dir });
    await sleep(3500);
    assert.equal((await a2.stop('SIGTERM')).code, 0, a2.stderr());
    const again = readJsonl(a2.eventsPath);
    const prevAgain = byPid(again, [...live, ...missed], prevBoot);
    assert.equal([...prevAgain.values()].flat().length, 6, 'after a restart: still 6 records of boot 0, not 9 or 12');
    assert.doesNotMatch(a2.stderr(), /from the systemd journal/);

    // "boot 2" (another stand-in id): its state starts afresh (no journal cursor), so boot 0 is read from
    // its first line again: the ledger's lines of boot 0 (live and backfilled) keep every kill from coming back
    const nextBoot = randomBootId();
    const a2b = await launch(config(j0.dir, 1), { dir, wrap: fakeBootWrap(nextBoot, base) });
    await sleep(3500);
    assert.equal((await a2b.stop('SIGTERM')).code, 0, a2b.stderr());
    assert.equal([...byPid(readJsonl(a2b.eventsPath), [...live, ...missed], prevBoot).values()].flat().length, 6, 'boot 2: still 6 records of boot 0');
    assert.doesNotMatch(a2b.stderr(), /from the systemd journal/);

    // previous_boots: 0 reads the current boot only: nothing of boot 0 comes back, and its ledger lines go
    const a3 = await launch(config(j0.dir, 0), { dir });
    await sleep(2500);
    assert.equal((await a3.stop('SIGTERM')).code, 0, a3.stderr());
    assert.equal([...byPid(readJsonl(a3.eventsPath), [...live, ...missed], prevBoot).values()].flat().length, 6);
    const ledger = fs.readFileSync(path.join(dir, 'spool', 'kills.jsonl'), 'utf8');
    assert.ok(!ledger.includes(prevBoot), 'with previous_boots 0 the ledger keeps this boot only');
    t.diagnostic(`boot 0 (stand-in id ${prevBoot}): 3 live + 3 missed kills; boot 1 recorded the 3 missed from the journal, once; restart and boot 2: still 6`);
  });
});
