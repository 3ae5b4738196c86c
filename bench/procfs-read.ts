/*
 * What the procfs candidate fallback costs the collector's decode path: readCgroupTasks() on a
 * memory cgroup holding N sleeping processes (cgroup.procs of the subtree + status, oom_score_adj
 * and comm of each), median of 7 reads per N. No OOM kill: the read is the same with or without one.
 *
 *   npx tsc -p . && node dist/bench/procfs-read.js [N...=10 100 1000]
 * Needs root and a memory cgroup controller (v1 or v2).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { detectCgroupVersion, memoryRoot } from '../src/host/facts';
import { readCgroupTasks } from '../src/collectors/oomkill/procfs';

const SIZES = process.argv.slice(2).map(Number);

async function main(): Promise<void> {
  const root = memoryRoot(detectCgroupVersion());
  if (!root) throw new Error('no memory cgroup controller');
  for (const n of SIZES.length ? SIZES : [10, 100, 1000]) {
    const dir = path.join(root, `oomtrail-bench-procfs-${process.pid}-${n}`);
    fs.mkdirSync(dir);
    // one shell joins the cgroup and forks n sleepers (they inherit it), then waits
    const sh = spawn('/bin/sh', ['-c', `echo $$ > "$1"; i=0; while [ $i -lt ${n} ]; do sleep 600 & i=$((i+1)); done; wait`, 'sh', path.join(dir, 'cgroup.procs')], { stdio: 'ignore' });
    const count = () => fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).length;
    while (count() < n + 1) await new Promise((r) => setTimeout(r, 50));
    const ms: number[] = [];
    let tasks = 0;
    for (let i = 0; i < 7; i++) {
      const r = readCgroupTasks(dir, new Set());
      ms.push(r.ms);
      tasks = r.tasks.length;
    }
    ms.sort((a, b) => a - b);
    console.log(`N=${n}: ${tasks} tasks read, median ${ms[3].toFixed(2)} ms (min ${ms[0].toFixed(2)}, max ${ms[6].toFixed(2)})`);
    for (const pid of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    sh.kill('SIGKILL');
    while (count() > 0) await new Promise((r) => setTimeout(r, 50));
    fs.rmdirSync(dir);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
