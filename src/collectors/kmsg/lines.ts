/* The kernel's OOM report lines, one parser each (shared by the kill finder and the report parser). */

/** One /dev/kmsg record, its message unescaped (the kernel writes non-printable bytes as \xNN). */
export interface KmsgRecord {
  seq: number;
  /** printk time: local_clock() in µs since boot (CLOCK_MONOTONIC-like, suspend not counted) */
  usec: number;
  message: string;
}

export interface KernelKillReport {
  pid: number;
  comm: string;
  totalVmKb: number;
  anonRssKb: number;
  fileRssKb: number;
  shmemRssKb: number;
  uid: number;
  pgtablesKb: number;
  oomScoreAdj: number;
  global: boolean;
}

export interface KernelConstraintReport {
  constraint: string;
  oomMemcg: string | null;
  taskMemcg: string;
  task: string;
  pid: number;
  uid: number;
}

export interface KernelInvokedReport {
  comm: string;
  gfpMask: string;
  order: number;
  oomScoreAdj: number;
  /** the triggering task's pid, from dump_stack's "CPU: n [UID: u ]PID: p Comm: c" line right after; null before it */
  pid?: number | null;
}

const KILLED = /(Memory cgroup out of memory|Out of memory): Killed process (\d+) \((.*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB, UID:(\d+) pgtables:(\d+)kB oom_score_adj:(-?\d+)/;
const CONSTRAINT = /^oom-kill:constraint=(\w+),.*?(?:,oom_memcg=(.*)|,global_oom),task_memcg=(.*),task=(.*),pid=(\d+),uid=(\d+)$/;
const INVOKED = /^(.*) invoked oom-killer: gfp_mask=(0x[0-9a-f]+)\(.*\), order=(-?\d+), oom_score_adj=(-?\d+)/;

export function parseKilled(message: string): KernelKillReport | null {
  const m = KILLED.exec(message);
  if (!m) return null;
  return {
    global: m[1] === 'Out of memory',
    pid: Number(m[2]),
    comm: m[3],
    totalVmKb: Number(m[4]),
    anonRssKb: Number(m[5]),
    fileRssKb: Number(m[6]),
    shmemRssKb: Number(m[7]),
    uid: Number(m[8]),
    pgtablesKb: Number(m[9]),
    oomScoreAdj: Number(m[10]),
  };
}

export function parseConstraint(message: string): KernelConstraintReport | null {
  const m = CONSTRAINT.exec(message);
  if (!m) return null;
  return { constraint: m[1], oomMemcg: m[2] ?? null, taskMemcg: m[3], task: m[4], pid: Number(m[5]), uid: Number(m[6]) };
}

const DUMP_STACK_HEAD = /^CPU: \d+ (?:UID: \d+ )?PID: (\d+) Comm: (.*?) (?:Not tainted|Tainted:)/;

/** dump_stack()'s first line: the task that invoked the OOM killer (its pid and comm). */
export function parseDumpStackHead(message: string): { pid: number; comm: string } | null {
  const m = DUMP_STACK_HEAD.exec(message);
  return m ? { pid: Number(m[1]), comm: m[2] } : null;
}

export function parseInvoked(message: string): KernelInvokedReport | null {
  const m = INVOKED.exec(message);
  if (!m) return null;
  return { comm: m[1], gfpMask: m[2], order: Number(m[3]), oomScoreAdj: Number(m[4]) };
}

