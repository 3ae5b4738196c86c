/*
 * Collector overhead. A memory-heavy workload (dd writes GIB GiB into tmpfs and the file is removed:
 * ~262k page allocations and frees per GiB, in the kernel's page cache) is timed
 *   - with no agent,
 *   - with the agent running `oomkill` only,
 *   - with every collector (oomkill, reclaim, psi, trail, alloc, pressure),
 * interleaved round by round so drift hits every mode alike; medians are reported. Then the
 * page-allocation program's own cost with kernel.bpf_stats_enabled=1 (ns per call), and the idle
 * agent's CPU and RSS with every collector on.
 *
 *   npx tsc -p . && node dist/bench/overhead.js [rounds=7] [gib=2] [idle_s=20]
 * Needs root, BTF, bpftool (for bpf_stats).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgent, sleep, type RunningAgent } from '../test/helpers/agent';

const ROUNDS = Number(process.argv[2] ?? 7);
const GIB = Number(process.argv[3] ?? 2);
const IDLE_S = Number(process.argv[4] ?? 20);
const SHM = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();

const ONLY_OOMKILL = ['collectors:', '  reclaim:', '    enabled: false', '  psi:', '    enabled: false', 'trail:', '  enabled: false'].join('\n');
/** the defaults: everything but alloc */
const DEFAULTS = ['pressure:', '  enabled: true'].join('\n');
const ALL = ['collectors:', '  alloc:', '    enabled: true', 'pressure:', '  enabled: true'].join('\n');

/** CPU time (user + system, ms) of this process's waited-for children: cutime + cstime. */
function childCpuMs(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / 100;
}

const cpu: Record<string, number[]> = { none: [], oomkill: [], defaults: [], all: [] };

/** Wall ms; the dd's CPU ms goes to cpu[mode] (steadier than wall time on a shared host). */
function workload(mode?: string): number {
  const file = path.join(SHM, `oomtrail-bench-${process.pid}`);
  const c0 = childCpuMs();
  const t0 = process.hrtime.bigint();
  const r = spawnSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=16M', `count=${GIB * 64}`], { stdio: 'ignore' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (mode) cpu[mode].push(childCpuMs() - c0);
  fs.rmSync(file, { force: true });
  if (r.status !== 0) throw new Error('dd failed');
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function procStat(pid: number): { cpuTicks: number; rssKb: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuTicks = Number(fields[11]) + Number(fields[12]);
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  return { cpuTicks, rssKb };
}

function bpfProgStats(name: string): { runNs: number; runCnt: number } | null {
  try {
    const progs = JSON.parse(execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' })) as Array<{ name: string; run_time_ns?: number; run_cnt?: number }>;
    const p = progs.filter((x) => x.name === name);
    if (!p.length) return null;
    return { runNs: p.reduce((a, x) => a + (x.run_time_ns ?? 0), 0), runCnt: p.reduce((a, x) => a + (x.run_cnt ?? 0), 0) };
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const times: Record<string, number[]> = { none: [], oomkill: [], defaults: [], all: [] };
  workload(); // warm the page cache paths
  const agents: Record<string, RunningAgent> = {};
  const start = async (mode: string) => (agents[mode] = await startAgent(mode === 'all' ? ALL : mode === 'defaults' ? DEFAULTS : ONLY_OOMKILL));
  const stop = async (mode: string) => {
    await agents[mode]?.stop('SIGTERM');
    delete agents[mode];
  };
  for (let r = 0; r < ROUNDS; r++) {
    times.none.push(workload('none'));
    for (const mode of ['oomkill', 'defaults', 'all']) {
      await start(mode);
      await sleep(1500);
      times[mode].push(workload(mode));
      await stop(mode);
    }
  }
  const base = median(times.none);
  const cbase = median(cpu.none);
  const line = (m: string) =>
    `${m.padEnd(8)} wall median ${median(times[m]).toFixed(0)} ms (${((median(times[m]) / base - 1) * 100).toFixed(1)} %)  ` +
    `dd CPU median ${median(cpu[m]).toFixed(0)} ms (${((median(cpu[m]) / cbase - 1) * 100).toFixed(1)} % vs none)  cpu runs ${cpu[m].map((x) => x.toFixed(0)).join(' ')}`;
  console.log(`workload: dd ${GIB} GiB into ${SHM} + rm, ${ROUNDS} interleaved rounds, ${os.cpus().length} CPUs, kernel ${os.release()}`);
  console.log('modes: none; oomkill = oomkill only; defaults = oomkill+reclaim+psi+trail+pressure; all = defaults + alloc');
  for (const m of ['none', 'oomkill', 'defaults', 'all']) console.log(line(m));

  // bpf_stats: the programs' own run time per invocation
  let statsWas: string | null = null;
  try {
    statsWas = fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  } catch {
    console.log('bpf_stats: cannot enable kernel.bpf_stats_enabled');
  }
  const a = await startAgent(ALL);
  await sleep(1500);
  const before = { alloc: bpfProgStats('page_alloc'), mre: bpfProgStats('memcg_reclaim_e'), exit: bpfProgStats('task_exit') };
  const t = workload();
  const after = { alloc: bpfProgStats('page_alloc'), mre: bpfProgStats('memcg_reclaim_e'), exit: bpfProgStats('task_exit') };
  for (const k of ['alloc', 'mre', 'exit'] as const) {
    const b = before[k];
    const e = after[k];
    if (b && e && e.runCnt > b.runCnt)
      console.log(`bpf_stats ${k.padEnd(5)}: ${e.runCnt - b.runCnt} runs, ${((e.runNs - b.runNs) / (e.runCnt - b.runCnt)).toFixed(0)} ns/run, ${((e.runNs - b.runNs) / 1e6).toFixed(1)} ms total in a ${t.toFixed(0)} ms workload`);
    else console.log(`bpf_stats ${k}: no runs seen`);
  }
  if (statsWas !== null) fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsWas);

  // idle agent with every collector: CPU and RSS
  const pid = a.child.pid!;
  await sleep(2000);
  const s0 = procStat(pid);
  const t0 = Date.now();
  await sleep(IDLE_S * 1000);
  const s1 = procStat(pid);
  const hz = 100;
  const cpuPct = (((s1.cpuTicks - s0.cpuTicks) / hz) * 1000 * 100) / (Date.now() - t0);
  let cgroups = 0;
  const m = /trail: .*/.exec(a.stderr());
  console.log(`idle agent, all collectors, ${IDLE_S} s: CPU ${cpuPct.toFixed(2)} % of one core, RSS ${(s1.rssKb / 1024).toFixed(1)} MiB${m ? `; ${m[0]}` : ''}${cgroups ? '' : ''}`);
  await a.stop('SIGTERM');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
