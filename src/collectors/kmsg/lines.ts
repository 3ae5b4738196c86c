/* The kernel's OOM report lines, one parser each (shared by the kill finder and the report parser). */

/** One /dev/kmsg record, its message unescaped (the kernel writes non-printable bytes as \xNN). */
export interface KmsgRecord {
  seq: number;
  /** syslog facility from the record's prefix (0 = the kernel); absent where the reader checked it already */
  facility?: number;
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

/*
 * Every pattern is anchored on the whole message: the kernel prints cgroup names and comms verbatim
 * inside its lines, so only a line that *is* the kernel's, start to end, is believed. A comm is at
 * most TASK_COMM_LEN-1 (15) bytes on every kernel we run; lines naming a longer one are not the
 * kernel's (64 leaves room should that ever grow).
 */
const MAX_COMM_LEN = 64;
/** printk cuts a record at ~1 KiB; anything much longer is not one of the kernel's lines */
const MAX_LINE = 4096;

const KILLED =
  /^(Memory cgroup out of memory|Out of memory|Out of memory \(oom_kill_allocating_task\)): Killed process (\d+) \(([\s\S]*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB, UID:(\d+) pgtables:(\d+)kB oom_score_adj:(-?\d+)$/;
const INVOKED = /^([\s\S]*) invoked oom-killer: gfp_mask=(0x[0-9a-f]+)\([^()]*\), order=(-?\d+), oom_score_adj=(-?\d+)$/;
const CONSTRAINT_HEAD = /^oom-kill:constraint=(CONSTRAINT_[A-Z_]+),nodemask=(?:\(null\)|\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)/;
const CONSTRAINT_TAIL = /,pid=(\d+),uid=(\d+)$/;
const NODE_LIST = /^\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*/;

export type KernelLineRejectReason = 'not_kernel' | 'malformed' | 'ambiguous';

/*
 * Lines refused by a check: counted here (the parsers are pure and used by several readers), handed to
 * whoever listens (the agent: a metric and one warning per reason). Each reader counts what it refuses.
 */
const rejectCounts = new Map<KernelLineRejectReason, number>();
const rejectListeners = new Set<(reason: KernelLineRejectReason, message: string) => void>();

export function rejectKernelLine(reason: KernelLineRejectReason, message: string): void {
  rejectCounts.set(reason, (rejectCounts.get(reason) ?? 0) + 1);
  for (const l of rejectListeners) l(reason, message);
}

/** Listens for refused lines; returns the unsubscribe. */
export function onKernelLineRejected(fn: (reason: KernelLineRejectReason, message: string) => void): () => void {
  rejectListeners.add(fn);
  return () => rejectListeners.delete(fn);
}

/** Lines refused so far in this process, by reason. */
export function kernelLineRejects(): Record<KernelLineRejectReason, number> {
  return { not_kernel: rejectCounts.get('not_kernel') ?? 0, malformed: rejectCounts.get('malformed') ?? 0, ambiguous: rejectCounts.get('ambiguous') ?? 0 };
}

/** A line that speaks of an OOM kill: what a refusal is counted for (other lines are simply not ours). */
export function looksLikeOomLine(message: string): boolean {
  return /Killed process|invoked oom-killer|oom-kill:|Memory cgroup stats for/.test(message);
}

// UTF-16 units: never more than the bytes the kernel printed, even where bad UTF-8 became U+FFFD
const commOk = (comm: string) => comm.length <= MAX_COMM_LEN;

/** A "Killed process" line, the whole message; null for anything else. */
export function parseKilled(message: string): KernelKillReport | null {
  if (message.length > MAX_LINE) return null;
  const m = KILLED.exec(message);
  if (!m || !commOk(m[3])) return null;
  return {
    global: m[1] !== 'Memory cgroup out of memory',
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

/** A path as cgroup_path() prints it: '/', or '/'-separated non-empty names. */
function cgroupPathOk(p: string): boolean {
  return p === '/' || (p.startsWith('/') && !p.endsWith('/') && !p.includes('//'));
}

function indexesOf(s: string, needle: string, from = 0): number[] {
  const out: number[] = [];
  for (let i = s.indexOf(needle, from); i >= 0; i = s.indexOf(needle, i + 1)) out.push(i);
  return out;
}

/** Splits `<P3>,task=<comm>` every way that leaves a valid path and comm. */
function taskSplits(rest: string): Array<{ taskMemcg: string; task: string }> {
  return indexesOf(rest, ',task=')
    .map((j) => ({ taskMemcg: rest.slice(0, j), task: rest.slice(j + 6) }))
    .filter((s) => cgroupPathOk(s.taskMemcg) && commOk(s.task));
}

/** Splits `<P2>,task_memcg=<P3>,task=<comm>` every way where P3 is P2 or below it (the victim is chosen inside the OOM memcg). */
function memcgSplits(rest: string): Array<{ oomMemcg: string; taskMemcg: string; task: string }> {
  const out: Array<{ oomMemcg: string; taskMemcg: string; task: string }> = [];
  for (const k of indexesOf(rest, ',task_memcg=')) {
    const oomMemcg = rest.slice(0, k);
    if (!cgroupPathOk(oomMemcg)) continue;
    for (const t of taskSplits(rest.slice(k + 12))) {
      if (oomMemcg === '/' || t.taskMemcg === oomMemcg || t.taskMemcg.startsWith(oomMemcg + '/')) out.push({ oomMemcg, ...t });
    }
  }
  return out;
}

/** The memcg part after `,mems_allowed=…` (or right after the nodemask on kernels without cpusets). */
function contextSplits(rest: string): Array<{ oomMemcg: string | null; taskMemcg: string; task: string }> {
  if (rest.startsWith(',global_oom,task_memcg=')) return taskSplits(rest.slice(23)).map((t) => ({ oomMemcg: null, ...t }));
  if (rest.startsWith(',oom_memcg=')) return memcgSplits(rest.slice(11));
  return [];
}

/**
 * Every reading of an `oom-kill:` line consistent with the kernel's format:
 * `oom-kill:constraint=C,nodemask=N[,cpuset=NAME,mems_allowed=M](,oom_memcg=P2|,global_oom),task_memcg=P3,task=COMM,pid=D,uid=D`.
 * The names, paths and the comm are the tenant's and may hold `,task_memcg=`, `,task=`, `,mems_allowed=`:
 * the line is read from its fixed ends inwards, trying each place a name could end. One reading is
 * the usual case; several mean the names were built to mislead (see `parseConstraint`).
 */
export function constraintReadings(message: string): KernelConstraintReport[] {
  if (message.length > MAX_LINE) return [];
  const head = CONSTRAINT_HEAD.exec(message);
  const tail = CONSTRAINT_TAIL.exec(message);
  if (!head || !tail || tail.index < head[0].length) return [];
  const body = message.slice(head[0].length, tail.index);
  const contexts: Array<{ oomMemcg: string | null; taskMemcg: string; task: string }> = [];
  if (body.startsWith(',cpuset=')) {
    for (const i of indexesOf(body, ',mems_allowed=', 8)) {
      // cpuset_print_current_mems_allowed() prints the current task's cpuset cgroup by *name*
      // (pr_cont_cgroup_name: "/" for the root), which cannot hold a '/'
      const cpuset = body.slice(8, i);
      if (cpuset !== '/' && (cpuset === '' || cpuset.includes('/'))) continue;
      const after = body.slice(i + 14);
      const nodes = NODE_LIST.exec(after)?.[0] ?? '';
      contexts.push(...contextSplits(after.slice(nodes.length)));
      if (contexts.length > 64) break;
    }
  } else contexts.push(...contextSplits(body));
  const seen = new Set<string>();
  const out: KernelConstraintReport[] = [];
  for (const c of contexts) {
    const key = JSON.stringify([c.oomMemcg, c.taskMemcg, c.task]);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ constraint: head[1], oomMemcg: c.oomMemcg, taskMemcg: c.taskMemcg, task: c.task, pid: Number(tail[1]), uid: Number(tail[2]) });
  }
  return out;
}

/** What else is known of the kill: its comm (the kill line), its cgroups (BPF). Narrows several readings to one. */
export interface ConstraintHint {
  comm?: string;
  oomMemcg?: string | null;
  taskMemcg?: string;
}

/** The readings that agree with every given hint. */
export function narrowReadings(readings: readonly KernelConstraintReport[], hint: ConstraintHint = {}): KernelConstraintReport[] {
  return readings.filter(
    (r) =>
      (hint.comm === undefined || r.task === hint.comm) &&
      (hint.oomMemcg === undefined || r.oomMemcg === hint.oomMemcg) &&
      (hint.taskMemcg === undefined || r.taskMemcg === hint.taskMemcg),
  );
}

/**
 * The one reading that agrees with `hint`; or, when none does, the line's only reading (a hint can
 * differ for a plain reason: BPF's path cut short, the kernel printing another thread's comm). Null
 * when several remain: ambiguous, never a guess.
 */
export function pickReading(readings: readonly KernelConstraintReport[], hint: ConstraintHint = {}): KernelConstraintReport | null {
  const narrowed = narrowReadings(readings, hint);
  if (narrowed.length === 1) return narrowed[0];
  return narrowed.length === 0 && readings.length === 1 ? readings[0] : null;
}

/** The `oom-kill:` line, when it reads one way given `hint`; null otherwise (not such a line, or ambiguous). */
export function parseConstraint(message: string, hint: ConstraintHint = {}): KernelConstraintReport | null {
  return pickReading(constraintReadings(message), hint);
}

const DUMP_STACK_HEAD = /^CPU: \d+ (?:UID: \d+ )?PID: (\d+) Comm: /;

/**
 * dump_stack()'s first line for the task that invoked the OOM killer, whose comm is known from the
 * `invoked oom-killer` line: its pid, or null when the line is not that.
 */
export function parseDumpStackHead(message: string, comm: string): number | null {
  const m = DUMP_STACK_HEAD.exec(message);
  if (!m) return null;
  const rest = message.slice(m[0].length);
  // the kernel prints the comm with %.20s, then taint flags (or "Kdump: loaded")
  return rest.startsWith(comm + ' ') ? Number(m[1]) : null;
}

export function parseInvoked(message: string): KernelInvokedReport | null {
  if (message.length > MAX_LINE) return null;
  const m = INVOKED.exec(message);
  if (!m || !commOk(m[1])) return null;
  return { comm: m[1], gfpMask: m[2], order: Number(m[3]), oomScoreAdj: Number(m[4]) };
}
