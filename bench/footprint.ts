/*
 * The agent's own footprint at fleet density (issue #19): the built agent, default configuration
 * (only the JSONL file and spool moved to a temp dir, console output discarded), on 0, 1,000 and
 * 10,000 memory-limited cgroups that the bench creates and removes. For each size, side by side:
 * agent CPU % and RSS/HWM, the agent's marginal cost per cgroup and trail step, and the floor for
 * the same cgroups measured by a C helper in the same minute (open/read/close and pread of each
 * usage file). Then OOM kill -> JSONL line latency, p50/p99 over FP_KILLS kills.
 *
 *   npm run bench:footprint        (root; cgroup v1 or v2; FP_SIZES=0,1000,10000 FP_WINDOW_S=30 FP_KILLS=50)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detectCgroupVersion } from '../src/host/facts';
import { makeDemoCgroup, removeCgroup } from '../src/cli/demo';

const SIZES = (process.env.FP_SIZES ?? '0,1000,10000').split(',').map(Number);
const WINDOW_S = Number(process.env.FP_WINDOW_S ?? 30);
const WARMUP_S = Number(process.env.FP_WARMUP_S ?? 15);
const KILLS = Number(process.env.FP_KILLS ?? 50);
const STEP_MS = 1000; // trail.step_ms default
/** as systemd/oomtrail.service, the Dockerfile and scripts/run.sh start it */
const NODE_FLAGS = ['--max-semi-space-size=1'];
const MAIN = path.resolve(__dirname, '../src/cli/main.js');
const FLOOR_C = path.resolve(__dirname, '../../bench/footprint-floor.c');

const version = detectCgroupVersion();
const ROOT = version === 1 ? '/sys/fs/cgroup/memory' : '/sys/fs/cgroup';
const PARENT = path.join(ROOT, `oomtrail-fp-${process.pid}`);
const USAGE = version === 1 ? 'memory.usage_in_bytes' : 'memory.current';
const LIMIT = version === 1 ? 'memory.limit_in_bytes' : 'memory.max';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-fp-'));

/** CPU time of the process, ns: utime+stime (/proc/<pid>/stat, 10 ms ticks) and summed schedstat of its threads (ns). */
function cpuNs(pid: number): { stat: number; sched: number } {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const hz = 100;
  const stat = ((Number(f[11]) + Number(f[12])) * 1e9) / hz;
  let sched = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      sched += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      /* thread gone */
    }
  }
  return { stat, sched };
}

function memMB(pid: number): { rss: number; hwm: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

function makeCgroups(n: number): string[] {
  if (!fs.existsSync(PARENT)) fs.mkdirSync(PARENT);
  if (version === 2) fs.writeFileSync(path.join(PARENT, 'cgroup.subtree_control'), '+memory');
  const dirs: string[] = [];
  for (let i = 0; i < n; i++) {
    // 100 per parent, like pods x containers
    const pod = path.join(PARENT, `pod${Math.floor(i / 100)}`);
    if (i % 100 === 0) {
      fs.mkdirSync(pod);
      if (version === 2) fs.writeFileSync(path.join(pod, 'cgroup.subtree_control'), '+memory');
    }
    const d = path.join(pod, `c${i}`);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, LIMIT), String(256 << 20));
    dirs.push(d);
  }
  return dirs;
}

function removeCgroups(): void {
  if (!fs.existsSync(PARENT)) return;
  for (const pod of fs.readdirSync(PARENT, { withFileTypes: true })) {
    if (!pod.isDirectory()) continue;
    const p = path.join(PARENT, pod.name);
    for (const c of fs.readdirSync(p, { withFileTypes: true })) if (c.isDirectory()) fs.rmdirSync(path.join(p, c.name));
    fs.rmdirSync(p);
  }
  fs.rmdirSync(PARENT);
}

function floors(dirs: string[], helper: string): { orc: number; pread: number } | null {
  if (!dirs.length) return null;
  const list = path.join(work, 'usage-files');
  fs.writeFileSync(list, dirs.map((d) => path.join(d, USAGE)).join('\n') + '\n');
  const [orc, pread] = execFileSync(helper, [list, '7'], { encoding: 'utf8' }).trim().split(' ').map(Number);
  return { orc, pread };
}

interface Agent {
  child: ChildProcess;
  events: string;
  stop(): Promise<void>;
}

async function startAgent(tag: string): Promise<Agent> {
  const dir = path.join(work, tag);
  fs.mkdirSync(dir);
  const events = path.join(dir, 'events.jsonl');
  const config = path.join(dir, 'config.yaml');
  fs.writeFileSync(config, `sinks:\n  file:\n    path: ${JSON.stringify(events)}\npipeline:\n  spool:\n    dir: ${JSON.stringify(path.join(dir, 'spool'))}\n`);
  const child = spawn(process.execPath, [...NODE_FLAGS, MAIN, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const until = Date.now() + 120_000;
  while (!/oomtrail \S+ started:/.test(err)) {
    if (child.exitCode !== null || Date.now() > until) throw new Error(`agent did not start:\n${err}`);
    await sleep(50);
  }
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    child,
    events,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

interface Row {
  n: number;
  cpuPct: number;
  statPct: number;
  rss: number;
  hwm: number;
  floor: { orc: number; pread: number } | null;
  cpuNs: number;
}

async function measure(n: number, helper: string): Promise<Row> {
  const dirs = makeCgroups(n);
  try {
    const agent = await startAgent(`n${n}`);
    try {
      const pid = agent.child.pid!;
      await sleep(WARMUP_S * 1000);
      const c0 = cpuNs(pid);
      const t0 = process.hrtime.bigint();
      await sleep(WINDOW_S * 1000);
      const c1 = cpuNs(pid);
      const wall = Number(process.hrtime.bigint() - t0);
      const m = memMB(pid);
      const floor = floors(dirs, helper);
      return { n, cpuPct: ((c1.sched - c0.sched) / wall) * 100, statPct: ((c1.stat - c0.stat) / wall) * 100, rss: m.rss, hwm: m.hwm, floor, cpuNs: ((c1.sched - c0.sched) / wall) * 1e9 };
    } finally {
      await agent.stop();
    }
  } finally {
    removeCgroups();
  }
}

/** OOM kill -> JSONL line: the record's `time` (the kernel's kill, CLOCK_REALTIME) to when the line was seen. */
async function killLatency(kills: number): Promise<number[]> {
  const agent = await startAgent('kills');
  const cg = makeDemoCgroup(`oomtrail-fp-kill-${process.pid}`);
  const lat: number[] = [];
  const mine = '/' + path.relative(ROOT, cg.dir);
  try {
    fs.writeFileSync(agent.events, '', { flag: 'a' });
    let seen = 0;
    let waiter: (() => void) | null = null;
    const watcher = fs.watch(agent.events, () => {
      const at = Date.now() * 1e6;
      const lines = fs.readFileSync(agent.events, 'utf8').split('\n').filter(Boolean);
      for (const l of lines.slice(seen)) {
        const r = JSON.parse(l) as { time: string; kind?: string; oom_cgroup?: string };
        // other processes on the host cause kills too: only this bench's cgroup counts
        if ((r.kind && r.kind !== 'oom_kill') || r.oom_cgroup !== mine) continue;
        const [sec, frac = ''] = r.time.replace(/Z$/, '').split('.');
        const killNs = Date.parse(sec + 'Z') * 1e6 + Number(frac.padEnd(9, '0').slice(0, 9));
        lat.push((at - killNs) / 1e6);
      }
      seen = lines.length;
      waiter?.();
    });
    for (let i = 0; i < kills; i++) {
      const want = lat.length + 1;
      const done = new Promise<void>((r) => (waiter = () => lat.length >= want && r()));
      spawn('/bin/sh', ['-c', 'echo $$ > "$1" && exec dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null', 'sh', cg.procs], { stdio: 'ignore' });
      await Promise.race([done, sleep(15_000)]);
    }
    watcher.close();
  } finally {
    await agent.stop();
    removeCgroup(cg.dir);
  }
  return lat;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

async function main(): Promise<void> {
  const helper = path.join(work, 'footprint-floor');
  execFileSync('cc', ['-O2', '-o', helper, FLOOR_C]);
  const rows: Row[] = [];
  try {
    for (const n of SIZES) {
      process.stderr.write(`footprint: ${n} cgroups ...\n`);
      rows.push(await measure(n, helper));
    }
  } finally {
    removeCgroups();
  }
  const idle = rows.find((r) => r.n === 0);
  console.log(`agent footprint, default config, cgroup v${version}, window ${WINDOW_S} s after ${WARMUP_S} s warm-up, ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}`);
  console.log('cgroups  cpu%(sched)  cpu%(stat)  rss MB  hwm MB  us/cgroup/step  C open/read/close us  C pread us  ratio vs orc  ratio vs pread');
  for (const r of rows) {
    const steps = (WINDOW_S * 1000) / STEP_MS;
    const per = idle && r.n > 0 ? ((r.cpuNs - idle.cpuNs) * WINDOW_S) / 1e3 / (r.n * steps) : NaN;
    const f = r.floor;
    console.log(
      [
        String(r.n).padStart(7),
        r.cpuPct.toFixed(3).padStart(12),
        r.statPct.toFixed(2).padStart(11),
        r.rss.toFixed(1).padStart(7),
        r.hwm.toFixed(1).padStart(7),
        (Number.isNaN(per) ? '-' : per.toFixed(2)).padStart(15),
        (f ? f.orc.toFixed(2) : '-').padStart(21),
        (f ? f.pread.toFixed(2) : '-').padStart(11),
        (f && !Number.isNaN(per) ? (per / f.orc).toFixed(2) : '-').padStart(13),
        (f && !Number.isNaN(per) ? (per / f.pread).toFixed(2) : '-').padStart(15),
      ].join(' '),
    );
  }
  if (KILLS > 0) {
    const lat = await killLatency(KILLS);
    console.log(`OOM kill -> JSONL line (default batching): ${lat.length}/${KILLS} kills, p50 ${pct(lat, 50)?.toFixed(1)} ms, p99 ${pct(lat, 99)?.toFixed(1)} ms, max ${Math.max(...lat).toFixed(1)} ms`);
  }
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => fs.rmSync(work, { recursive: true, force: true }));
