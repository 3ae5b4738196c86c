/*
 * oom_scope with real OOM kills: a kubepods-style hierarchy (cgroupfs and systemd drivers' names) with the only
 * memory limit at the container, the pod, the QoS level or kubepods itself; a hog in the container cgroup is
 * OOM-killed, and the record's oom_scope must name the level where the limit was set. The oracle is the kernel's own
 * `oom-kill:…,oom_memcg=<path>,…` line for that kill (the memcg whose limit was hit) — it must be the directory the
 * test limited — and the record's oom_cgroup must equal it. Root, a memory cgroup controller, BTF and /dev/kmsg.
 * The hierarchy lives under a private prefix (`--cgroup-root` style), never at the real /kubepods of a node.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { detectCgroupVersion } from '../../src/host/facts';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { removeCgroup, spawnDdHog, spawnSleeper } from '../helpers/cgroup';
import { describeScope } from '../../src/record/describe';
import { kernelReportFor, KmsgReader, waitForOomLogWindow } from '../helpers/kmsg';
import { waitForMetrics } from '../helpers/metrics';
import type { OomRecord } from '../../src/record/record';

const VERSION = detectCgroupVersion();
const ROOT = VERSION === 1 ? '/sys/fs/cgroup/memory' : '/sys/fs/cgroup';
const LIMIT = String(64 << 20);

type Level = 'node' | 'qos' | 'pod' | 'container';

/** The path segments of one container's cgroup, top first, each tagged with its level. */
function layout(driver: 'cgroupfs' | 'systemd', qos: 'burstable' | 'guaranteed'): Array<[string, Level]> {
  const uid = randomUUID();
  const id = randomUUID().replace(/-/g, '') + randomUUID().replace(/-/g, '');
  if (driver === 'cgroupfs') {
    return [['kubepods', 'node'], ...(qos === 'burstable' ? [['burstable', 'qos'] as [string, Level]] : []), [`pod${uid}`, 'pod'], [id, 'container']];
  }
  const us = uid.replace(/-/g, '_');
  return qos === 'burstable'
    ? [['kubepods.slice', 'node'], ['kubepods-burstable.slice', 'qos'], [`kubepods-burstable-pod${us}.slice`, 'pod'], [`cri-containerd-${id}.scope`, 'container']]
    : [['kubepods.slice', 'node'], [`kubepods-pod${us}.slice`, 'pod'], [`cri-containerd-${id}.scope`, 'container']];
}

/** Makes the hierarchy under `prefix` with a 64 MiB limit (no swap) at `limitAt` only; returns dirs leaf first. */
function makeHierarchy(prefix: string, segs: Array<[string, Level]>, limitAt: Level): { dirs: string[]; limited: string; leaf: string } {
  let dir = path.join(ROOT, prefix);
  fs.mkdirSync(dir);
  const dirs = [dir];
  let limited = '';
  for (const [name, level] of segs) {
    if (VERSION === 2) fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), '+memory');
    dir = path.join(dir, name);
    fs.mkdirSync(dir);
    dirs.unshift(dir);
    if (VERSION === 1) {
      // reclaim at the limited level must not swap instead of killing (swappiness of the memcg under reclaim)
      try {
        fs.writeFileSync(path.join(dir, 'memory.swappiness'), '0');
      } catch {
        /* not on every kernel */
      }
    }
    if (level !== limitAt) continue;
    limited = dir;
    if (VERSION === 1) {
      fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), LIMIT);
      const memsw = path.join(dir, 'memory.memsw.limit_in_bytes');
      if (fs.existsSync(memsw)) fs.writeFileSync(memsw, LIMIT);
    } else {
      fs.writeFileSync(path.join(dir, 'memory.max'), LIMIT);
      if (fs.existsSync(path.join(dir, 'memory.swap.max'))) fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0');
    }
  }
  return { dirs, limited, leaf: dir };
}

const CASES: Array<{ name: string; driver: 'cgroupfs' | 'systemd'; qos: 'burstable' | 'guaranteed'; limitAt: Level }> = [
  { name: 'cgroupfs, container limit', driver: 'cgroupfs', qos: 'burstable', limitAt: 'container' },
  { name: 'cgroupfs, pod-level limit (burstable)', driver: 'cgroupfs', qos: 'burstable', limitAt: 'pod' },
  { name: 'cgroupfs, pod-level limit (guaranteed: pod under kubepods)', driver: 'cgroupfs', qos: 'guaranteed', limitAt: 'pod' },
  { name: 'cgroupfs, QoS-level limit', driver: 'cgroupfs', qos: 'burstable', limitAt: 'qos' },
  { name: 'cgroupfs, node allocatable (kubepods) limit', driver: 'cgroupfs', qos: 'burstable', limitAt: 'node' },
  { name: 'systemd, container limit', driver: 'systemd', qos: 'burstable', limitAt: 'container' },
  { name: 'systemd, pod-level limit', driver: 'systemd', qos: 'burstable', limitAt: 'pod' },
  { name: 'systemd, QoS-level limit', driver: 'systemd', qos: 'burstable', limitAt: 'qos' },
];

describe(`oom_scope e2e (cgroup v${VERSION}): the level whose limit the kernel says was hit`, () => {
  let agent: RunningAgent;
  let kmsg: KmsgReader;
  const made: string[][] = [];

  before(async () => {
    kmsg = new KmsgReader();
    agent = await startAgent('metrics:\n  listen: 127.0.0.1:0');
  });

  after(async () => {
    const stopped = await agent?.stop('SIGTERM');
    kmsg?.close();
    for (const dirs of made) for (const d of dirs) await removeCgroup(d);
    assert.equal(stopped?.code, 0, `agent exit on SIGTERM; log:\n${agent?.stderr().slice(-3000)}`);
  });

  for (const [i, c] of CASES.entries()) {
    test(c.name, async () => {
      const h = makeHierarchy(`oomtrail-e2e-scope-${process.pid}-${i}`, layout(c.driver, c.qos), c.limitAt);
      made.push(h.dirs);
      // the kernel's oom-kill line is the oracle: it must be printed (rate limit: 10 per 5 s)
      await waitForOomLogWindow(kmsg, 1);
      const hog = await spawnDdHog(path.join(h.leaf, 'cgroup.procs'));
      assert.equal(hog.signal, 'SIGKILL', 'the hog was OOM-killed');
      const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 10_000, `record of pid ${hog.pid}`);
      const rec: OomRecord = rs.find((x) => x.victim_pid === hog.pid)!;
      let oomMemcg: string | null | undefined;
      for (let k = 0; k < 20 && !oomMemcg; k++, await sleep(100)) {
        kmsg.drain();
        oomMemcg = kernelReportFor(kmsg.records, hog.pid).constraint?.oomMemcg;
      }
      const limited = '/' + path.relative(ROOT, h.limited);
      assert.equal(oomMemcg, limited, "the kernel's oom_memcg is the cgroup the test limited");
      assert.equal(rec.oom_cgroup, oomMemcg, "the record's oom_cgroup is the kernel's oom_memcg");
      assert.equal(rec.victim_cgroup, '/' + path.relative(ROOT, h.leaf), 'the victim sat in the container cgroup');
      assert.equal(rec.oom_scope, c.limitAt, `oom_scope of ${rec.oom_cgroup}`);
    });
  }

  // cgroup v2 only (memory.oom.group): kubelet sets it on every container; with the limit on the pod, the kernel kills
  // the whole container (the highest memory.oom.group cgroup between the victim and the OOM cgroup)
  if (VERSION === 2) {
    test('pod-level limit, memory.oom.group on the container: oom_scope pod, "container killed whole"', async () => {
      const h = makeHierarchy(`oomtrail-e2e-scope-${process.pid}-group`, layout('systemd', 'burstable'), 'pod');
      made.push(h.dirs);
      fs.writeFileSync(path.join(h.leaf, 'memory.oom.group'), '1');
      const procs = path.join(h.leaf, 'cgroup.procs');
      const sleeper = spawnSleeper(procs);
      await sleep(200);
      await waitForOomLogWindow(kmsg, 1);
      const hog = await spawnDdHog(procs);
      assert.equal(hog.signal, 'SIGKILL', 'the hog was OOM-killed');
      assert.equal((await sleeper.exited).signal, 'SIGKILL', 'the bystander too: the group kill');
      const rs = await agent.waitFor((r) => [hog.pid, sleeper.pid].every((p) => r.some((x) => x.victim_pid === p)), 10_000, 'both records');
      for (const pid of [hog.pid, sleeper.pid]) {
        const rec = rs.find((x) => x.victim_pid === pid)!;
        assert.equal(rec.oom_cgroup, '/' + path.relative(ROOT, h.limited));
        assert.equal(rec.oom_scope, 'pod');
        assert.equal(rec.oom_group_kill, true);
        assert.match(describeScope(rec), /^pod limit 64Mi hit \(pod-level resources\); container killed whole \(memory\.oom\.group\)$/);
      }
    });
  }

  test('oomtrail_oom_kills_total counts them by scope (no pod names here: one series per scope)', async () => {
    const want = new Map<string, number>();
    for (const c of CASES) want.set(c.limitAt, (want.get(c.limitAt) ?? 0) + 1);
    if (VERSION === 2) want.set('pod', want.get('pod')! + 2);
    // exact: kills outside this test (none under the host lock) would be host processes with scope other/system
    const series = (m: Awaited<ReturnType<typeof waitForMetrics>>, scope: string) =>
      m.get('oomtrail_oom_kills_total', { namespace: '', workload: '', container: '', victim: 'child', scope }) ?? 0;
    const m = await waitForMetrics(agent, (x) => [...want].every(([scope, n]) => series(x, scope) >= n), 5_000, 'kills by scope');
    for (const [scope, n] of want) assert.equal(series(m, scope), n, `scope ${scope}`);
  });
});
