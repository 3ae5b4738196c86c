/*
 * Real OOM kills, the real agent, and the kernel's own log as the oracle.
 * Needs root, a memory cgroup controller, BTF and /dev/kmsg. Set OOMTRAIL_COLLECTORS_OOMKILL_HOOK
 * to force a hook (the VM matrix does).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { kernelReportFor, KmsgReader, waitForOomLogWindow } from '../helpers/kmsg';
import { REPO, startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { makeNestedTestCgroup, makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import type { OomRecord } from '../../src/record/record';

const CONSTRAINTS: Record<string, OomRecord['constraint']> = {
  CONSTRAINT_MEMCG: 'memcg',
  CONSTRAINT_NONE: 'global',
  CONSTRAINT_CPUSET: 'cpuset',
  CONSTRAINT_MEMORY_POLICY: 'mempolicy',
};

const forcedHook = process.env.OOMTRAIL_COLLECTORS_OOMKILL_HOOK;
// the VM matrix runs a shorter burst: under software emulation each kill costs ~10x more
const BURST = Number(process.env.OOMTRAIL_E2E_BURST ?? 50);
// Set by the VM matrix on kernels that print the RSS counters' exact per-CPU sums (Linux 7.0+): there the
// per-CPU test must see pending deltas (the print differing from mark_victim's global counts) at least once.
const EXPECT_RSS_DELTAS = process.env.OOMTRAIL_E2E_RSS_DELTAS === '1';

/** mark_victim's own RSS fields (6.8+), which the kernel fills from the counters' global part (get_mm_counter). */
interface TraceRss {
  anonKb: number;
  fileKb: number;
  shmemKb: number;
}

/** A tracefs instance of its own with oom:mark_victim on: the kernel's record of each victim, beside /dev/kmsg. */
function markVictimTrace(): { read: (pid: number) => TraceRss | null; close: () => void } | null {
  const root = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'].find((d) => fs.existsSync(path.join(d, 'instances')));
  if (!root) return null;
  const dir = path.join(root, 'instances', `oomtrail-e2e-${process.pid}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'events/oom/mark_victim/enable'), '1');
  return {
    read(pid) {
      const text = fs.readFileSync(path.join(dir, 'trace'), 'utf8');
      // "mark_victim: pid=N comm=… total-vm=NkB anon-rss=NkB file-rss:NkB shmem-rss:NkB uid=…" (6.8+)
      const re = new RegExp(`mark_victim: pid=${pid} .* anon-rss[=:](\\d+)kB file-rss[=:](\\d+)kB shmem-rss[=:](\\d+)kB`);
      const m = text.split('\n').map((l) => re.exec(l)).find((x) => x);
      return m ? { anonKb: Number(m[1]), fileKb: Number(m[2]), shmemKb: Number(m[3]) } : null;
    },
    close() {
      fs.writeFileSync(path.join(dir, 'events/oom/mark_victim/enable'), '0');
      fs.rmdirSync(dir);
    },
  };
}

/**
 * The dd hog, moved between the first two CPUs every 10 ms while it faults its buffer in: each CPU keeps
 * its own share of the RSS counters' changes below the batch (percpu_counter), so at the kill the global
 * counts lag the exact sums by the per-CPU deltas of both.
 */
function spawnFlippingHog(procs: string): Promise<{ pid: number; signal: NodeJS.Signals | null }> {
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$1" && exec dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null', 'sh', procs], { stdio: 'ignore' });
  let cpu = 0;
  const flip = setInterval(() => {
    cpu ^= 1;
    spawnSync('taskset', ['-p', '-c', String(cpu), String(child.pid)], { stdio: 'ignore' });
  }, 10);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (_code, signal) => {
      clearInterval(flip);
      resolve({ pid: child.pid ?? -1, signal });
    });
  });
}


describe('oomkill e2e: records equal the kernel report', () => {
  let agent: RunningAgent;
  let kmsg: KmsgReader;
  const cgroups: TestCgroup[] = [];

  before(async () => {
    kmsg = new KmsgReader();
    // records from before this run are not ours; the reader keeps the rest for the rate-limit check
    agent = await startAgent();
  });

  after(async () => {
    const stopped = await agent?.stop('SIGTERM');
    kmsg?.close();
    for (const cg of cgroups) for (const dir of (cg as TestCgroup & { dirs?: string[] }).dirs ?? [cg.dir]) await removeCgroup(dir);
    assert.equal(stopped?.code, 0, `agent exit on SIGTERM; log:\n${agent?.stderr().slice(-3000)}`);
  });

  test('agent attached the expected hook', () => {
    const m = /oomkill: attached hook (\w+)/.exec(agent.stderr());
    assert.ok(m, agent.stderr());
    if (forcedHook) assert.equal(m[1], forcedHook);
  });

  // the runtime the agent ships with (runtime/node.version): the suite (npm test, scripts/node.sh) and the VM
  // guest run it, and the agent reports the node it really runs on in its start log
  test('the agent runs on the pinned Node.js LTS (runtime/node.version)', () => {
    const pinned = fs.readFileSync(path.join(REPO, 'runtime/node.version'), 'utf8').trim();
    const m = /runtime: node (v\S+) \(([^)]*)\)/.exec(agent.stderr());
    assert.ok(m, `no runtime line in the start log:\n${agent.stderr()}`);
    assert.equal(m[1], `v${pinned}`, `the agent runs node ${m[1]} (${m[2]}), not the pinned v${pinned}: run the suite with scripts/node.sh (npm test)`);
  });

  /** A name of exactly `bytes` UTF-8 bytes (NAME_MAX is 255), unique to this run. */
  const nameOfBytes = (prefix: string, bytes: number) => {
    const head = `${prefix}-${process.pid}-ü☃-`;
    return head + 'x'.repeat(bytes - Buffer.byteLength(head));
  };
  /** `depth` names from the top: the first unique to this run, the others `bytes` long. */
  const chain = (depth: number, bytes: number) =>
    Array.from({ length: depth }, (_, i) => (i === 0 ? nameOfBytes(`e2e-deep${depth}`, 32) : `d${i + 1}-`.padEnd(bytes, 'x')));
  const layouts: Array<[string, () => TestCgroup]> = [
    ['"oomtrail-e2e-plain"', () => makeTestCgroup(`oomtrail-e2e-plain-${process.pid}`)],
    ['"oomtrail e2e ünïcødé ☃ name"', () => makeTestCgroup(`oomtrail e2e ünïcødé ☃ name-${process.pid}`)],
    // the longest legal name: the record must carry it whole, as the kernel prints it
    ['with a 255-byte name', () => makeTestCgroup(nameOfBytes('oomtrail-e2e-255', 255))],
    // 16 levels from the hierarchy root (all the kernel side carries): the whole path, root to leaf.
    // Names stay short enough for the kernel's own "oom-kill:" line, which printk cuts at ~1 kB.
    ['nested 16 levels deep', () => makeNestedTestCgroup(chain(16, 20))],
    // deeper than the kernel side carries: completed in user space from the cgroup id (its inode)
    ['nested 20 levels deep', () => makeNestedTestCgroup(chain(20, 10))],
  ];
  for (const [label, make] of layouts) {
    test(`one kill in memory cgroup ${label}`, async () => {
      const cg = make();
      cgroups.push(cg);
      if (label.startsWith('with a 255')) assert.equal(Buffer.byteLength(cg.kernelPath.slice(1)), 255);
      const depth = /nested (\d+) levels/.exec(label)?.[1];
      if (depth) assert.equal(cg.kernelPath.split('/').length - 1, Number(depth));
      await waitForOomLogWindow(kmsg);
      const before = cg.oomKills();
      const hog = await spawnDdHog(cg.procs);
      assert.equal(hog.signal, 'SIGKILL', 'the hog must be OOM-killed');
      const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 10_000, `record of pid ${hog.pid}`);
      const rec = rs.find((x) => x.victim_pid === hog.pid)!;
      assert.equal(cg.oomKills() - before, 1);

      // the kernel prints "Killed process" ~2 ms after the hook; give kmsg a moment
      let report = kernelReportFor(kmsg.records, hog.pid);
      for (let i = 0; i < 20 && (!report.killed || !report.constraint); i++) {
        await sleep(100);
        kmsg.drain();
        report = kernelReportFor(kmsg.records, hog.pid);
      }
      const { killed, constraint } = report;
      assert.ok(killed, `kernel "Killed process ${hog.pid}" line not found`);
      assert.ok(constraint, `kernel "oom-kill:constraint=…pid=${hog.pid}" line not found`);

      assert.equal(rec.victim_tid, killed.pid, 'pid (the kernel prints the chosen thread)');
      assert.equal(rec.victim_pid, killed.pid, 'single-threaded victim: tgid == tid');
      assert.equal(rec.victim_comm, killed.comm);
      assert.equal(rec.victim_total_vm_kb, killed.totalVmKb, 'total-vm');
      assert.equal(rec.victim_anon_rss_kb, killed.anonRssKb, 'anon-rss');
      assert.equal(rec.victim_file_rss_kb, killed.fileRssKb, 'file-rss');
      assert.equal(rec.victim_shmem_rss_kb, killed.shmemRssKb, 'shmem-rss');
      assert.equal(rec.victim_uid, killed.uid, 'UID');
      assert.equal(rec.victim_pgtables_kb, killed.pgtablesKb, 'pgtables');
      assert.equal(rec.victim_oom_score_adj, killed.oomScoreAdj, 'oom_score_adj');

      assert.equal(rec.constraint, CONSTRAINTS[constraint.constraint], 'constraint');
      assert.equal(rec.oom_cgroup, constraint.oomMemcg ?? '/', 'oom_memcg');
      assert.equal(rec.victim_cgroup, constraint.taskMemcg, 'task_memcg');
      assert.equal(rec.victim_cgroup, cg.kernelPath, 'the cgroup we made, name intact');
      assert.equal(rec.cgroup_truncated, undefined, 'a whole path is not flagged as cut');

      assert.equal(rec.memcg_limit_bytes, 64 * 1024 * 1024);
      assert.ok(rec.memcg_usage_bytes !== null && rec.memcg_usage_bytes > 60 * 1024 * 1024, 'usage at the limit');
      assert.match(rec.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
      assert.ok(Math.abs(Date.parse(rec.time) - Date.now()) < 60_000, 'time is now-ish');
      assert.match(rec.event_id, /^[0-9a-f]{32}$/);
      if (rec.hook === 'fentry' || rec.hook === 'kprobe') {
        // read from oom_control, and equal to the kernel's "invoked oom-killer" line
        assert.equal(rec.constraint_inferred, false);
        assert.ok(report.invoked, 'kernel "invoked oom-killer" line for this kill');
        assert.equal(rec.gfp_mask, report.invoked.gfpMask, 'gfp_mask');
        assert.equal(rec.order, report.invoked.order, 'order');
        // totalpages of a memcg OOM = the memcg's max (+ swap, none here): the domain, not the victim
        const noSwap = fs.readFileSync('/proc/swaps', 'utf8').trim().split('\n').length === 1;
        if (noSwap) assert.equal(rec.domain_pages, (64 * 1024 * 1024) / 4096, 'domain_pages');
        else assert.ok(rec.domain_pages !== null && rec.domain_pages >= 16384);
      } else {
        assert.equal(rec.constraint_inferred, true);
        assert.equal(rec.domain_pages, null, 'mark_victim hooks cannot see the OOM domain');
        assert.equal(rec.gfp_mask, null);
      }
      assert.equal(rec.hook, forcedHook ?? rec.hook);
    });
  }

  // Linux 7.0 prints "Killed process" with get_mm_counter_sum() (global count + every CPU's delta); 6.2 to 6.19
  // print the global count, which mark_victim's own fields (6.8+) carry on every kernel. Where the two differ,
  // the kernel's per-CPU deltas were non-zero at this kill; the record must equal the print either way.
  test('RSS with per-CPU deltas pending (hog moved between CPUs): the record equals the print', async (t) => {
    const trace = markVictimTrace();
    const cg = makeTestCgroup(`oomtrail-e2e-pcpu-${process.pid}`);
    cgroups.push(cg);
    let pending = 0;
    try {
      for (let kill = 1; kill <= 3; kill++) {
        await waitForOomLogWindow(kmsg);
        const hog = await spawnFlippingHog(cg.procs);
        assert.equal(hog.signal, 'SIGKILL', 'the hog must be OOM-killed');
        const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 10_000, `record of pid ${hog.pid}`);
        const rec = rs.find((x) => x.victim_pid === hog.pid)!;
        let report = kernelReportFor(kmsg.records, hog.pid);
        for (let i = 0; i < 20 && !report.killed; i++) {
          await sleep(100);
          kmsg.drain();
          report = kernelReportFor(kmsg.records, hog.pid);
        }
        const killed = report.killed;
        assert.ok(killed, `kernel "Killed process ${hog.pid}" line not found`);
        assert.equal(rec.victim_anon_rss_kb, killed.anonRssKb, 'anon-rss');
        assert.equal(rec.victim_file_rss_kb, killed.fileRssKb, 'file-rss');
        assert.equal(rec.victim_shmem_rss_kb, killed.shmemRssKb, 'shmem-rss');
        const tp = trace?.read(hog.pid) ?? null;
        const differs = tp !== null && (tp.anonKb !== killed.anonRssKb || tp.fileKb !== killed.fileRssKb || tp.shmemKb !== killed.shmemRssKb);
        t.diagnostic(`kill ${kill}: printed anon ${killed.anonRssKb} file ${killed.fileRssKb} shmem ${killed.shmemRssKb} kB; mark_victim ${tp ? `anon ${tp.anonKb} file ${tp.fileKb} shmem ${tp.shmemKb} kB` : 'carries no RSS (before 6.8)'}; recorded anon ${rec.victim_anon_rss_kb} kB`);
        if (differs) pending++;
        // one kill with deltas pending pins the case; without the expectation one kill is enough
        if (pending > 0 || !EXPECT_RSS_DELTAS) break;
      }
      if (EXPECT_RSS_DELTAS) assert.ok(pending > 0, 'this kernel prints the per-CPU sums: some kill must have had deltas pending (print != mark_victim)');
    } finally {
      trace?.close();
    }
  });

  test(`burst: ${BURST} kills back to back, none lost, ids unique`, async () => {
    const cg = makeTestCgroup(`oomtrail-e2e-burst-${process.pid}`);
    cgroups.push(cg);
    const before = cg.oomKills();
    const pids: number[] = [];
    const concurrency = 5;
    while (pids.length < BURST) {
      const hogs = await Promise.all(Array.from({ length: Math.min(concurrency, BURST - pids.length) }, () => spawnDdHog(cg.procs)));
      for (const h of hogs) {
        assert.equal(h.signal, 'SIGKILL');
        pids.push(h.pid);
      }
    }
    const delta = cg.oomKills() - before;
    assert.equal(delta, BURST, 'kernel oom_kill counter delta');
    const mine = (rs: OomRecord[]) => rs.filter((r) => r.victim_cgroup === cg.kernelPath);
    await agent.waitFor((r) => mine(r).length >= delta, 20_000, `${delta} burst records`);
    await sleep(500); // a late duplicate would show up here
    const final = mine(agent.records());
    assert.equal(final.length, delta, 'records captured == kernel oom_kill delta');
    assert.equal(new Set(final.map((r) => r.event_id)).size, final.length, 'event_id unique');
    assert.deepEqual(new Set(final.map((r) => r.victim_pid)), new Set(pids), 'every hog is a victim exactly once');
    const wrong = final.filter((r) => r.constraint !== 'memcg' || r.oom_cgroup !== cg.kernelPath);
    assert.deepEqual(wrong, [], 'every burst record names the memcg OOM in the burst cgroup');
  });
});
