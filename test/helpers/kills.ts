import { spawn } from 'node:child_process';
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

/**
 * A process in `procs` holding `mib` MiB of anonymous memory: `dd` fills its buffer from /dev/zero,
 * then blocks writing it into a pipe nobody drains (busybox has no perl; the VM guest has busybox).
 */
export function spawnHolder(procs: string, mib: number): { pid: number; ready: Promise<void>; kill: () => void } {
  const child = spawn('/bin/sh', ['-c', `echo $$ > "$1" && exec dd if=/dev/zero bs=${mib}M count=1 2>/dev/null`, 'sh', procs], { stdio: ['ignore', 'pipe', 'ignore'] });
  const ready = new Promise<void>((resolve, reject) => {
    // the first bytes come after the whole buffer was read in; not reading keeps dd blocked
    child.stdout!.once('readable', () => resolve());
    child.once('exit', (code, signal) => reject(new Error(`holder exited (${code ?? signal}) before holding its memory`)));
  });
  return { pid: child.pid ?? -1, ready, kill: () => child.kill('SIGKILL') };
}
