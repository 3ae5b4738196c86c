import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { pumpKernelLog } from '../kmsg/pump';

/*
 * The last fallback for a memcg kill's candidate list: when the kernel printed no "Tasks state"
 * table for it (rate limited), the OOM cgroup's processes are read from cgroupfs and /proc right
 * after the event is decoded. These rows are read after the kill, not at it, and are marked so
 * (`candidates_source: 'procfs'`); the victim's own row comes from the kernel event instead.
 */

/** One process as /proc showed it, in the units /proc prints (kB). */
export interface ProcTask {
  pid: number;
  tgid: number;
  comm: string;
  /** real uid, as the kernel's table prints it (task_uid) */
  uid: number;
  rss_anon_kb: number;
  rss_file_kb: number;
  rss_shmem_kb: number;
  swap_kb: number;
  pgtables_kb: number;
  oom_score_adj: number;
}

/** What one read found, and what it cost. */
export interface ProcTaskRead {
  tasks: ProcTask[];
  /** wall time of the read (cgroup.procs of the subtree + three /proc files per process) */
  ms: number;
  /** processes listed but gone (or without an mm, or another process under the same pid by then) when their files were read */
  skipped: number;
}

/** More processes than this in one OOM cgroup's subtree: the rest are not read (the decode path must stay short: ~45 µs per process measured, ~90 ms at this cap). */
export const MAX_PROCFS_TASKS = 2048;

/**
 * Parses /proc/<pid>/status. null for a task without an mm (a kernel thread, or a process whose
 * threads all dropped theirs): the kernel's dump_task() lists no such task either.
 */
export function parseProcStatus(text: string): Omit<ProcTask, 'pid' | 'comm' | 'oom_score_adj'> | null {
  const field = (k: string): string | null => {
    const at = text.indexOf(`\n${k}:`);
    if (at < 0) return null;
    const end = text.indexOf('\n', at + 1);
    return text.slice(at + k.length + 2, end < 0 ? undefined : end).trim();
  };
  const kb = (k: string): number | null => {
    const v = field(k);
    const m = v === null ? null : /^(\d+) kB$/.exec(v);
    return m ? Number(m[1]) : null;
  };
  const anon = kb('RssAnon');
  const file = kb('RssFile');
  const shmem = kb('RssShmem');
  const pte = kb('VmPTE');
  if (anon === null || file === null || shmem === null || pte === null) return null;
  const uid = Number((field('Uid') ?? '').split(/\s+/)[0]);
  const tgid = Number(field('Tgid'));
  if (!Number.isInteger(uid) || !Number.isInteger(tgid)) return null;
  return { tgid, uid, rss_anon_kb: anon, rss_file_kb: file, rss_shmem_kb: shmem, swap_kb: kb('VmSwap') ?? 0, pgtables_kb: pte };
}

/** The tgids of `dir` and every cgroup below it (the kernel scans the memcg's whole hierarchy), each once. */
export function subtreeTgids(dir: string, max = MAX_PROCFS_TASKS): number[] {
  const out = new Set<number>();
  const stack = [dir];
  while (stack.length && out.size < max) {
    const d = stack.pop()!;
    let text: string;
    try {
      text = readFileSync(path.join(d, 'cgroup.procs'), 'utf8');
    } catch {
      continue; // removed meanwhile
    }
    for (const l of text.split('\n')) if (l) out.add(Number(l));
    try {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) stack.push(path.join(d, e.name));
    } catch {
      /* removed meanwhile */
    }
  }
  return [...out].slice(0, max);
}

/**
 * The start time in /proc/<pid>/stat (field 22, clock ticks after boot): with the pid, which process
 * this is. Fields are counted after the comm's closing parenthesis (a comm may hold ") ").
 */
export function parseStartTime(stat: string): number | null {
  const close = stat.lastIndexOf(')');
  if (close < 0) return null;
  const v = Number(stat.slice(close + 2).split(' ')[19]);
  return Number.isSafeInteger(v) ? v : null;
}

const buf = Buffer.allocUnsafe(16384);

/** A small /proc file in one read into a shared buffer: no fstat, no allocation per file (readFileSync cost ~1.6× more here, bench/procfs-read.ts). */
function readSmall(file: string): string {
  const fd = openSync(file, 'r');
  try {
    let n = 0;
    for (let got; n < buf.length && (got = readSync(fd, buf, n, buf.length - n, null)) > 0; ) n += got;
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads every process of the cgroup directory `dir` (subtree included) from /proc, except `skip`
 * (the victim, whose row comes from the kernel event) and pid 1 (the kernel never lists init).
 */
export function readCgroupTasks(dir: string, skip: ReadonlySet<number>, proc = '/proc', read: (file: string) => string = readSmall): ProcTaskRead {
  const t0 = process.hrtime.bigint();
  const tasks: ProcTask[] = [];
  let skipped = 0;
  for (const pid of subtreeTgids(dir)) {
    pumpKernelLog();
    if (skip.has(pid) || pid === 1) continue;
    try {
      // the three files are three opens: the process may exit and its pid go to another in between.
      // Its start time before and after says the row is one process's; a row that changed is dropped.
      const born = parseStartTime(read(`${proc}/${pid}/stat`));
      const st = parseProcStatus(read(`${proc}/${pid}/status`));
      if (!st || born === null || st.tgid !== pid) {
        skipped++;
        continue;
      }
      const adj = Number(read(`${proc}/${pid}/oom_score_adj`).trim());
      // comm raw (status' Name: escapes some characters); the trailing newline is /proc's
      const comm = read(`${proc}/${pid}/comm`).replace(/\n$/, '');
      if (parseStartTime(read(`${proc}/${pid}/stat`)) !== born) {
        skipped++;
        continue;
      }
      tasks.push({ pid, comm, oom_score_adj: adj, ...st });
    } catch {
      skipped++; // exited between cgroup.procs and its /proc files
    }
  }
  return { tasks, ms: Number(process.hrtime.bigint() - t0) / 1e6, skipped };
}
