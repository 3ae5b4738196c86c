import { spawnDdHog, type TestCgroup } from './cgroup';

/** Causes `n` real OOM kills in `cg` (`dd` hogs, `concurrency` at a time); resolves with the victims' pids. */
export async function causeKills(cg: TestCgroup, n: number, concurrency = 5): Promise<number[]> {
  const before = cg.oomKills();
  const pids: number[] = [];
  while (pids.length < n) {
    const wave = Math.min(concurrency, n - pids.length);
    const hogs = await Promise.all(Array.from({ length: wave }, () => spawnDdHog(cg.procs)));
    for (const h of hogs) {
      if (h.signal !== 'SIGKILL') throw new Error(`memory hog ${h.pid} ended by ${h.signal ?? 'exit'}, not an OOM kill`);
      pids.push(h.pid);
    }
  }
  const delta = cg.oomKills() - before;
  if (delta !== n) throw new Error(`kernel oom_kill counter moved by ${delta}, expected ${n}`);
  return pids;
}
