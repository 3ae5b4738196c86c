/*
 * cgroup v2 layouts as real hosts nest them: a systemd docker scope and a kubepods pod scope with
 * memory.oom.group=1, where one OOM kills every process of the container. Runs where the memory
 * controller is on cgroup v2 (the VM matrix); on a v1 host it is skipped with the reason.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { detectCgroupVersion } from '../../src/host/facts';
import { kernelReportFor, KmsgReader, parseKilled } from '../helpers/kmsg';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { removeCgroup, spawnDdHog, spawnSleeper } from '../helpers/cgroup';
import type { OomRecord } from '../../src/record/record';

const ROOT = '/sys/fs/cgroup';
const v2 = detectCgroupVersion() === 2;
const hex = (seed: string) => seed.repeat(64).slice(0, 64);

/** mkdir -p with +memory delegated at every level on the way down. */
function makeNested(rel: string): string {
  let dir = ROOT;
  for (const part of rel.split('/').filter(Boolean)) {
    const sc = path.join(dir, 'cgroup.subtree_control');
    if (!fs.readFileSync(sc, 'utf8').includes('memory')) fs.writeFileSync(sc, '+memory');
    dir = path.join(dir, part);
    if (!fs.existsSync(dir)) fs.mkdirSync(dir);
  }
  return dir;
}

interface Rss {
  anon: number;
  file: number;
  shmem: number;
}

const sameRss = (a: Rss, b: Rss) => a.anon === b.anon && a.file === b.file && a.shmem === b.shmem;

/**
 * What the kernel counts for a sleeping process (its mm's RSS counters, as /proc/<pid>/status shows
 * them) and what its page tables map (smaps_rollup). Before 6.2 a task keeps up to 64 faults' worth
 * of RSS in its own cache (SPLIT_RSS_COUNTING) and folds it into the mm only on the next fault or
 * in do_exit(), so the two differ until then.
 */
function countedRss(pid: number): { counted: Rss; mappedKb: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (re: RegExp, text: string) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    counted: { anon: kb(/^RssAnon:\s+(\d+) kB/m, status), file: kb(/^RssFile:\s+(\d+) kB/m, status), shmem: kb(/^RssShmem:\s+(\d+) kB/m, status) },
    mappedKb: kb(/^Rss:\s+(\d+) kB/m, fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')),
  };
}

/**
 * A group kill sends SIGKILL to a bystander before the kernel prints its "Killed process" line.
 * On a kernel with split RSS counting the woken bystander can reach do_exit() and fold its cached
 * RSS into the mm before that print: the kernel then prints more than its counters held a moment
 * earlier, when our program read them. Only that explains a difference: our record holds exactly
 * the counters from before the kill, and the kernel's line lies between them and the mapped pages.
 */
function raceExplains(ours: Rss, theirs: Rss, before: { counted: Rss; mappedKb: number }): boolean {
  const grew = theirs.anon >= before.counted.anon && theirs.file >= before.counted.file && theirs.shmem >= before.counted.shmem;
  return sameRss(ours, before.counted) && grew && theirs.anon + theirs.file + theirs.shmem <= before.mappedKb;
}

function oomKills(dir: string): number {
  return Number(/^oom_kill (\d+)$/m.exec(fs.readFileSync(path.join(dir, 'memory.events'), 'utf8'))?.[1]);
}

describe('cgroup v2 nested layouts', { skip: v2 ? false : 'memory controller is not on cgroup v2 here (the VM matrix runs this)' }, () => {
  let agent: RunningAgent;
  let kmsg: KmsgReader;
  const made: string[] = [];

  before(async () => {
    kmsg = new KmsgReader();
    agent = await startAgent();
  });

  after(async () => {
    const stopped = await agent?.stop();
    kmsg?.close();
    // leaf first
    for (const dir of made.reverse()) await removeCgroup(dir);
    assert.equal(stopped?.code, 0);
  });

  test('systemd docker scope: container id from docker-<id>.scope', async () => {
    const id = hex('d0c');
    const rel = `/system.slice/docker-${id}.scope`;
    const dir = makeNested(rel);
    made.push(path.join(ROOT, 'system.slice'), dir);
    fs.writeFileSync(path.join(dir, 'memory.max'), String(64 << 20));
    fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0');
    const hog = await spawnDdHog(path.join(dir, 'cgroup.procs'));
    assert.equal(hog.signal, 'SIGKILL');
    const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 15_000, 'docker scope record');
    const rec = rs.find((x) => x.victim_pid === hog.pid)!;
    assert.equal(rec.victim_cgroup, rel);
    assert.equal(rec.oom_cgroup, rel);
    assert.equal(rec.cgroup_version, 2);
    assert.equal(rec.container_runtime, 'docker');
    assert.equal(rec.container_id, id);
    assert.equal(rec.pod_uid, '');
    assert.equal(rec.oom_group_kill, false, 'no memory.oom.group: a single kill');
    assert.equal(rec.oom_group_kill_size, undefined);
  });

  test('kubepods pod with memory.oom.group=1: one OOM, every process a record', async (t) => {
    const raced: number[] = [];
    const uid = '5f3a9c1e-7b2d-4e8f-9a61-0c4d2b7e8f10';
    const cid = hex('c0e');
    const pod = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replace(/-/g, '_')}.slice`;
    const rel = `${pod}/cri-containerd-${cid}.scope`;
    const dir = makeNested(rel);
    made.push(path.join(ROOT, 'kubepods.slice'), path.join(ROOT, 'kubepods.slice/kubepods-burstable.slice'), path.join(ROOT, pod), dir);
    fs.writeFileSync(path.join(dir, 'memory.max'), String(64 << 20));
    fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0');
    fs.writeFileSync(path.join(dir, 'memory.oom.group'), '1');
    const procs = path.join(dir, 'cgroup.procs');
    const sleepers = [spawnSleeper(procs), spawnSleeper(procs), spawnSleeper(procs)];
    // the bystanders must sit still in sleep (exec done, blocked) before the OOM, or their memory
    // would change between the kernel's report and ours
    const settled = (pid: number) => {
      try {
        return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep' && / S /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 100 && !sleepers.every((s) => settled(s.pid)); i++) await sleep(100);
    assert.ok(sleepers.every((s) => settled(s.pid)), 'bystanders asleep in the container');
    const counted = new Map(sleepers.map((s) => [s.pid, countedRss(s.pid)]));
    const before = oomKills(dir);
    const hog = await spawnDdHog(procs);
    const ended = await Promise.all(sleepers.map((s) => s.exited));
    assert.equal(hog.signal, 'SIGKILL');
    for (const s of ended) assert.equal(s.signal, 'SIGKILL', 'a group kill takes the bystanders too');
    const victims = [hog.pid, ...ended.map((s) => s.pid)];
    const delta = oomKills(dir) - before;

    const mine = (rs: OomRecord[]) => rs.filter((r) => r.victim_cgroup === rel);
    await agent.waitFor((r) => mine(r).length >= victims.length, 20_000, `${victims.length} group-kill records`);
    await sleep(300);
    const recs = mine(agent.records());
    assert.equal(recs.length, victims.length, 'N records for N victim processes');
    assert.deepEqual(new Set(recs.map((r) => r.victim_pid)), new Set(victims));
    // The kernel's counter: one per "Killed process" line. In a group kill the chosen victim passes
    // __oom_kill_process() twice (as the chosen one, then as a member of the group) while its mm is
    // still there, so it is counted and logged twice; it is still one victim and one record.
    kmsg.drain();
    const killLines = kmsg.records.map((r) => parseKilled(r.message)).filter((k) => k !== null && victims.includes(k.pid));
    assert.equal(delta, killLines.length, 'memory.events oom_kill delta == the kernel\'s "Killed process" lines');
    assert.equal(new Set(killLines.map((k) => k!.pid)).size, victims.length, 'every process of the group was killed');
    assert.ok(delta >= victims.length);
    for (const r of recs) {
      assert.equal(r.container_runtime, 'containerd');
      assert.equal(r.container_id, cid);
      assert.equal(r.pod_uid, uid);
      assert.equal(r.k8s_qos, 'burstable');
      assert.equal(r.constraint, 'memcg');
      assert.equal(r.oom_cgroup, rel);
      assert.equal(r.oom_group_kill, true, 'every process of a memory.oom.group sweep is marked as such');
      assert.equal(r.oom_group_kill_size, victims.length, 'the sweep size: every process of the group');
      const k = kernelReportFor(kmsg.records, r.victim_pid).killed;
      assert.ok(k, `kernel reported the kill of ${r.victim_pid}`);
      assert.equal(r.victim_comm, k.comm);
      assert.equal(r.victim_total_vm_kb, k.totalVmKb);
      assert.equal(r.victim_pgtables_kb, k.pgtablesKb);
      const ours = { anon: r.victim_anon_rss_kb ?? NaN, file: r.victim_file_rss_kb ?? NaN, shmem: r.victim_shmem_rss_kb ?? NaN };
      const theirs = { anon: k.anonRssKb, file: k.fileRssKb, shmem: k.shmemRssKb };
      const before = counted.get(r.victim_pid);
      if (before !== undefined && !sameRss(ours, theirs) && raceExplains(ours, theirs, before)) raced.push(r.victim_pid);
      else assert.deepEqual(ours, theirs, `RSS of ${r.victim_pid} (${r.victim_comm}) as the kernel printed it`);
    }
    t.diagnostic(`bystanders whose kernel line raced their own exit (split RSS counting): ${raced.length ? raced.join(', ') : 'none'}`);
  });
});
