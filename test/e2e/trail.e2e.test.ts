/*
 * The memory trail: a real OOM kill in a memory cgroup whose usage grows for ~10 s before the kill.
 * The record must carry the growth (trail), the reclaim stall before the kill, the victim's
 * kill→exit latency, and a memory_pressure record must precede it. Needs root, a memory cgroup
 * controller, BTF.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { removeCgroup } from '../helpers/cgroup';
import { detectCgroupVersion, memoryRoot } from '../../src/host/facts';
import { ReclaimCollector } from '../../src/collectors/reclaim/collector';
import { TrailSampler } from '../../src/collectors/trail/sampler';
import { readNumber } from '../../src/collectors/trail/cgroupfs';
import { parsePsi } from '../../src/collectors/psi/psi';
import type { Logger } from '../../src/observe/logger';
import type { OomRecord } from '../../src/record/record';

const LIMIT = 128 * 1024 * 1024;

function makeCgroup(name: string): { dir: string; procs: string; rel: string } {
  const v = detectCgroupVersion();
  const root = v === 1 ? '/sys/fs/cgroup/memory' : '/sys/fs/cgroup';
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  if (v === 1) {
    fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(LIMIT));
    try {
      fs.writeFileSync(path.join(dir, 'memory.swappiness'), '0');
    } catch {
      /* not on every kernel */
    }
  } else {
    fs.writeFileSync(path.join(dir, 'memory.max'), String(LIMIT));
    if (fs.existsSync(path.join(dir, 'memory.swap.max'))) fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0');
  }
  return { dir, procs: path.join(dir, 'cgroup.procs'), rel: '/' + name };
}

/** A node process that joins the cgroup and then grows by `mibPerStep` MiB every `stepMs` until killed. */
function spawnGrowingHog(procs: string, mibPerStep: number, stepMs: number): { pid: number; exited: Promise<NodeJS.Signals | null> } {
  const script = `
    require('fs').writeFileSync(${JSON.stringify(procs)}, String(process.pid));
    const keep = [];
    setInterval(() => { keep.push(Buffer.alloc(${mibPerStep} * 1048576, 1)); }, ${stepMs});`;
  const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  return { pid: child.pid ?? -1, exited: new Promise((r) => child.on('exit', (_c, sig) => r(sig))) };
}

describe('trail e2e: what led up to the kill', () => {
  let agent: RunningAgent;
  let cg: { dir: string; procs: string; rel: string };

  before(async () => {
    agent = await startAgent(['trail:', '  step_ms: 1000', 'pressure:', '  enabled: true', '  min_interval_ms: 60000'].join('\n'));
  });

  after(async () => {
    const stopped = await agent?.stop('SIGTERM');
    if (cg) await removeCgroup(cg.dir);
    assert.equal(stopped?.code, 0, `agent exit on SIGTERM; log:\n${agent?.stderr().slice(-3000)}`);
  });

  test('reclaim collector attached', () => {
    assert.match(agent.stderr(), /reclaim: attached .*mm_vmscan_memcg_reclaim_begin/);
  });

  test('a kill after ~10 s of growth carries its trail, a pressure warning before it, and its death', async () => {
    cg = makeCgroup(`oomtrail-trail-${process.pid}`);
    await sleep(1500); // the sampler discovers the cgroup before the growth starts
    const t0 = Date.now();
    const hog = spawnGrowingHog(cg.procs, 4, 400); // ~10 MiB/s from a ~45 MiB node: the limit in ~8-10 s
    const sig = await hog.exited;
    const grewMs = Date.now() - t0;
    assert.equal(sig, 'SIGKILL', 'the hog must be OOM-killed');
    assert.ok(grewMs >= 5000, `usage grew for ${grewMs} ms before the kill`);

    const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 10_000, `record of pid ${hog.pid}`);
    const kill = rs.find((x) => x.victim_pid === hog.pid)!;
    assert.equal(kill.kind ?? 'oom_kill', 'oom_kill');
    assert.equal(kill.oom_cgroup, cg.rel);

    // death confirmed
    assert.equal(typeof kill.victim_exit_latency_ms, 'number', JSON.stringify(kill));
    assert.ok(kill.victim_exit_latency_ms! >= 0 && kill.victim_exit_latency_ms! < 1000, `exit latency ${kill.victim_exit_latency_ms}`);

    // the trail: growth to the limit
    const trail = kill.trail;
    assert.ok(trail, 'record has a trail');
    assert.equal(trail.step_ms, 1000);
    const n = trail.usage_bytes.length;
    for (const col of [trail.limit_bytes, trail.reclaim_stall_ms, trail.psi_some_avg10]) assert.equal(col.length, n);
    assert.ok(n >= 5, `trail has ${n} samples: ${JSON.stringify(trail)}`);
    const usage = trail.usage_bytes.map((u) => u ?? 0);
    // the growth: from the first sample with the hog in it to the last, usage never falls by more than 2 MiB
    const firstGrowing = usage.findIndex((u) => u > 8 * 1048576);
    assert.ok(firstGrowing >= 0 && n - firstGrowing >= 5, `growth seen in ${n - firstGrowing} samples: ${usage}`);
    for (let i = firstGrowing + 1; i < n; i++) assert.ok(usage[i] >= usage[i - 1] - 2 * 1048576, `usage fell at sample ${i}: ${usage}`);
    assert.ok(usage[n - 1] > usage[firstGrowing], `usage rose: ${usage}`);
    assert.ok(usage[n - 1] >= 0.75 * LIMIT, `last sample ${usage[n - 1]} near the limit ${LIMIT}`);
    assert.ok(trail.limit_bytes.every((l) => l === null || l === LIMIT), `limit column ${trail.limit_bytes}`);
    // reclaim ran as the limit came near; the kill's own reclaim may fall after the last sample, so the
    // final seconds are checked on the pressure record's view too
    const stall = trail.reclaim_stall_ms.reduce<number>((a, b) => a + (b ?? 0), 0);

    const pressure = agent
      .records()
      .filter((r) => r.kind === 'memory_pressure' && r.oom_cgroup === cg.rel);
    assert.ok(pressure.length >= 1, `a memory_pressure record for ${cg.rel}; records: ${JSON.stringify(agent.records().map((r) => [r.kind, r.oom_cgroup]))}`);
    const p = pressure[0];
    assert.ok(Date.parse(p.time) < Date.parse(kill.time), `pressure ${p.time} before kill ${kill.time}`);
    assert.ok(p.pressure?.reasons.includes('usage'));
    assert.ok(p.pressure!.usage_ratio! >= 0.9);
    assert.equal(p.victim_pid, 0);
    assert.notEqual(p.event_id, kill.event_id);

    // the stall: reclaim runs at the limit, in the last moments before the kill, which the at_record
    // sample (taken when the record was built) covers
    assert.ok(trail.at_record, 'trail.at_record');
    const total = stall + (trail.at_record.reclaim_stall_ms ?? 0);
    assert.ok(total > 0, `non-zero reclaim stall in the trail: ${JSON.stringify(trail)}`);
    assert.ok(trail.at_record.reclaimed_pages !== null);
    process.stderr.write(
      `# trail: ${n} samples, usage ${usage.map((u) => (u / 1048576).toFixed(0)).join(',')} MiB; stall ms ${trail.reclaim_stall_ms.join(',')} + at_record ${trail.at_record.reclaim_stall_ms} (${trail.at_record.reclaimed_pages} pages); ` +
        `exit latency ${kill.victim_exit_latency_ms} ms, reaped ${kill.victim_reaped_latency_ms} ms; pressure at ${p.time} (${p.pressure?.reasons}), kill at ${kill.time}\n`,
    );
  });
});

/** A node process that joins the cgroup, touches `mib` MiB and stops itself (SIGSTOP): its usage then holds still. */
async function spawnHeldMemory(procs: string, mib: number): Promise<{ pid: number; kill(): Promise<void> }> {
  const script = `
    require('fs').writeFileSync(${JSON.stringify(procs)}, String(process.pid));
    globalThis.keep = Buffer.alloc(${mib} * 1048576, 1);
    process.kill(process.pid, 'SIGSTOP');`;
  const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  for (let i = 0; i < 200; i++) {
    const state = fs.existsSync(`/proc/${child.pid}/stat`) ? /\) (\S)/.exec(fs.readFileSync(`/proc/${child.pid}/stat`, 'utf8'))?.[1] : undefined;
    if (state === 'T') break;
    await sleep(50);
  }
  return {
    pid: child.pid ?? -1,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('trail e2e: each sampled usage equals the cgroup\'s own usage file', () => {
  test('3 cgroups holding 8, 16 and 24 MiB: 3 steps, each sample = memory.current / memory.usage_in_bytes (and on v2 memory.pressure avg10) read around it; a removed cgroup is dropped', async () => {
    const version = detectCgroupVersion();
    const root = memoryRoot(version)!;
    const usageFile = version === 1 ? 'memory.usage_in_bytes' : 'memory.current';
    const logs: string[] = [];
    const problems: string[] = [];
    const logger = { info: (m: string) => logs.push(m), warn: (m: string) => problems.push(m), error: (m: string) => problems.push(m), debug: () => undefined, isLevelEnabled: () => false } as unknown as Logger;
    const cgs = [8, 16, 24].map((mib) => ({ mib, ...makeCgroup(`oomtrail-usage-${mib}-${process.pid}`) }));
    const held = await Promise.all(cgs.map((c) => spawnHeldMemory(c.procs, c.mib)));
    const reclaim = new ReclaimCollector({ logger });
    // a step far longer than the test: only the ticks below sample
    const psi = { enabled: true, stallUs: 150_000, windowUs: 1_000_000, maxCgroupTriggers: 0 };
    const sampler = new TrailSampler({ logger, cgroupVersion: version, root, stepMs: 3_600_000, samples: 10, maxCgroups: 10_000, reclaim, psi, pressure: null, nowBootNs: () => process.hrtime.bigint(), onPressure: () => undefined });
    // v2: each cgroup's own memory.pressure, read each step like the usage (v1 has none: the system's)
    const ownPsi = version === 2 && fs.existsSync(path.join(cgs[0].dir, 'memory.pressure'));
    const readAvg10 = (dir: string) => {
      const p = parsePsi(fs.readFileSync(path.join(dir, 'memory.pressure'), 'utf8'));
      return `${p.some?.avg10 ?? null}/${p.full?.avg10 ?? null}`;
    };
    try {
      reclaim.start();
      sampler.start();
      // the kernel has cgroup iterators (a feature, read from its BTF, not its version): the one-pass read must be the one in use
      const kernelHasCgroupIter = fs.readFileSync('/sys/kernel/btf/vmlinux').includes('bpf_iter__cgroup');
      const viaIterator = logs.some((l) => /one cgroup-iterator pass per step/.test(l));
      assert.equal(viaIterator, kernelHasCgroupIter, logs.join('\n'));
      for (let step = 0; step < 3; step++) {
        const before = cgs.map((c) => readNumber(path.join(c.dir, usageFile)));
        const psiBefore = ownPsi ? cgs.map((c) => readAvg10(c.dir)) : [];
        sampler.tick();
        const after = cgs.map((c) => readNumber(path.join(c.dir, usageFile)));
        const psiAfter = ownPsi ? cgs.map((c) => readAvg10(c.dir)) : [];
        cgs.forEach((c, i) => {
          const sampled = sampler.store.latest(c.rel)?.usageBytes;
          assert.ok(sampled === before[i] || sampled === after[i], `${c.rel} step ${step}: sampled ${sampled}, file ${before[i]} before and ${after[i]} after`);
          assert.ok(sampled! >= c.mib * 1048576, `${c.rel}: ${sampled} holds the ${c.mib} MiB touched`);
          if (ownPsi) {
            const s = sampler.store.latest(c.rel)!;
            // the ring keeps PSI as float32; the trail rounds it to the file's 2 decimals
            const r2 = (x: number | null) => (x === null ? null : Number(x.toFixed(2)));
            const got = `${r2(s.psiSome)}/${r2(s.psiFull)}`;
            assert.ok(got === psiBefore[i] || got === psiAfter[i], `${c.rel} step ${step}: PSI avg10 sampled ${got}, file ${psiBefore[i]} before and ${psiAfter[i]} after`);
          }
        });
      }
      process.stderr.write(`# usage via ${viaIterator ? 'cgroup iterator' : `usage files (${logs.find((l) => /no cgroup iterator/.test(l))})`}: ${cgs.map((c) => `${c.rel} ${sampler.store.latest(c.rel)?.usageBytes}`).join(', ')}\n`);
      await held[2].kill();
      await removeCgroup(cgs[2].dir);
      await sleep(300); // the rmdir's inotify event reaches the sampler's watch
      sampler.tick();
      const followed = [...sampler.cgroups()].map((c) => c.rel);
      assert.ok(!followed.includes(cgs[2].rel) && followed.includes(cgs[0].rel), `followed after the removal: ${followed}`);
      assert.deepEqual(problems, [], 'no warning or error logged');
    } finally {
      await sampler.stop();
      reclaim.stop();
      for (const h of held) await h.kill();
      for (const c of cgs) await removeCgroup(c.dir);
    }
  });
});
