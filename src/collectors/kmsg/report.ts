import { pumpKernelLog } from './pump';
import { constraintReadings, parseInvoked, pickReading, rejectKernelLine, type ConstraintHint, type KernelConstraintReport, type KernelInvokedReport, type KmsgRecord } from './lines';

/*
 * The kernel's whole printed OOM report (dump_header): the memcg counters and stats, or the
 * host's Mem-Info, and the "Tasks state" candidate table. Printed before the kill, rate limited
 * (10 per 5 s): a kill without its report simply has none here.
 */

/** One `[pid] uid tgid …` row of the Tasks state table; memory values in pages as printed. */
export interface TaskRow {
  pid: number;
  uid: number;
  tgid: number;
  total_vm: number;
  rss: number;
  /** null on kernels before 6.8, which print rss only */
  rss_anon: number | null;
  rss_file: number | null;
  rss_shmem: number | null;
  pgtables_bytes: number;
  swapents: number;
  oom_score_adj: number;
  name: string;
}

export interface PrintedCounter {
  usage_kb: number;
  limit_kb: number;
  failcnt: number;
}

export interface OomReport {
  invoked: KernelInvokedReport | null;
  /** the `oom-kill:` line naming the victim; a report without it is never completed */
  constraint: KernelConstraintReport;
  /** memcg OOM: `memory:`, `swap:` (v2), `memory+swap:` (v1), `kmem:` (v1) */
  counters: Record<string, PrintedCounter>;
  /** `Memory cgroup stats for <path>:` lines, as printed (v1 in bytes/counts, v2 in bytes) */
  stats: Record<string, number>;
  statsCgroup: string | null;
  /** global OOM: the Mem-Info `key:value` pairs (pages), plus `total_pagecache` */
  memInfo: Record<string, number> | null;
  tasks: TaskRow[];
  /** kmsg sequence number of the oom-kill line */
  seq: number;
  /** printk time of the oom-kill line, µs */
  usec: number;
}

/** Which report: the victim's pid, what else is known of the kill, and when it happened (printk µs). */
export interface ReportQuery extends ConstraintHint {
  /** the report's oom-kill line was printed no earlier than this… */
  notBeforeUs?: number;
  /** …and no later than this */
  notAfterUs?: number;
}

/** A completed report whose `oom-kill:` line may read more than one way (tenant-built names). */
interface DoneReport extends Omit<OomReport, 'constraint'> {
  readings: KernelConstraintReport[];
}

const COUNTER = /^(memory|memory\+swap|swap|kmem): usage (\d+)kB, limit (\d+)kB, failcnt (\d+)$/;
const STATS_FOR = /^Memory cgroup stats for (.*):$/;
const TASK_ROW = /^\[\s*(\d+)\]\s+([\s\S]*)$/;

/** Assembles reports from kmsg records fed in order; keeps the last `keep` completed ones. */
export class OomReportParser {
  private cur: Omit<OomReport, 'constraint' | 'seq' | 'usec'> | null = null;
  private columns: string[] | null = null;
  private rowPattern: RegExp | null = null;
  private inStats = false;
  private inMemInfo = false;
  private readonly done: DoneReport[] = [];

  // reports are looked up right after they complete; a global OOM on a big host prints thousands of rows each
  /** `countRejects`: false where another parser of the same lines counts the refusals already */
  constructor(
    private readonly keep = 16,
    private readonly countRejects = true,
  ) {}

  feed(records: readonly KmsgRecord[]): void {
    for (const r of records) {
      pumpKernelLog();
      // a line a process wrote to /dev/kmsg is not the kernel's (readers drop them; this is the backstop)
      if (r.facility !== undefined && r.facility !== 0) continue;
      // One record is one line: a comm may hold a newline and must not start a line of its own. Only a
      // v2 stats block (6.1 prints it as one record) is split, and only into `key value` lines.
      const lines = this.inStats && /^(?:\w+ -?\d+\n?)+$/.test(r.message) ? r.message.split('\n') : [r.message];
      for (const line of lines) this.line(line.trimEnd(), r.seq, r.usec);
    }
  }

  private line(line: string, seq: number, usec: number): void {
    const inv = parseInvoked(line);
    if (inv) {
      this.cur = { invoked: inv, counters: {}, stats: {}, statsCgroup: null, memInfo: null, tasks: [] };
      this.columns = null;
      this.inStats = this.inMemInfo = false;
      return;
    }
    const cur = this.cur;
    if (!cur) return;
    if (line.startsWith('oom-kill:')) {
      const readings = constraintReadings(line);
      if (readings.length === 0 && this.countRejects) rejectKernelLine('malformed', line);
      else {
        this.done.push({ ...cur, readings, seq, usec });
        if (this.done.length > this.keep) this.done.shift();
      }
      this.cur = null;
      return;
    }
    const t = line.trim();
    let m = COUNTER.exec(t);
    if (m) {
      cur.counters[m[1]] = { usage_kb: Number(m[2]), limit_kb: Number(m[3]), failcnt: Number(m[4]) };
      return;
    }
    if ((m = STATS_FOR.exec(t))) {
      cur.statsCgroup = m[1];
      this.inStats = true;
      return;
    }
    if (t === 'Mem-Info:') {
      cur.memInfo = {};
      this.inMemInfo = true;
      return;
    }
    if (t.startsWith('Tasks state')) {
      this.inStats = this.inMemInfo = false;
      return;
    }
    if (t.startsWith('[  pid  ]')) {
      this.columns = t.replace('[  pid  ]', 'pid').split(/\s+/);
      this.rowPattern = null;
      return;
    }
    if (this.columns && (m = TASK_ROW.exec(t))) {
      const cols = this.columns.slice(1, -1); // without pid and name
      // the numbers, then the name as printed: a comm may hold spaces, even a newline
      const row = (this.rowPattern ??= new RegExp(`^((?:-?\\d+[ \\t]+){${cols.length}})([\\s\\S]+)$`)).exec(m[2]);
      if (!row) return;
      const rest = row[1].trim().split(/\s+/);
      const v: Record<string, number> = { pid: Number(m[1]) };
      cols.forEach((k, i) => (v[k] = Number(rest[i])));
      cur.tasks.push({
        pid: v.pid,
        uid: v.uid,
        tgid: v.tgid,
        total_vm: v.total_vm,
        rss: v.rss,
        rss_anon: v.rss_anon ?? null,
        rss_file: v.rss_file ?? null,
        rss_shmem: v.rss_shmem ?? null,
        pgtables_bytes: v.pgtables_bytes,
        swapents: v.swapents,
        oom_score_adj: v.oom_score_adj,
        name: row[2],
      });
      return;
    }
    if (this.inStats && (m = /^(\w+) (-?\d+)$/.exec(t))) {
      cur.stats[m[1]] = Number(m[2]);
      return;
    }
    if (this.inMemInfo) {
      if (/^Node \d/.test(t)) this.inMemInfo = false;
      else for (const kv of t.matchAll(/(\w+):(\d+)/g)) cur.memInfo![kv[1]] = Number(kv[2]);
    }
    if (cur.memInfo && (m = /^(\d+) total pagecache pages$/.exec(t))) cur.memInfo.total_pagecache = Number(m[1]);
  }

  /**
   * The newest report whose `oom-kill:` line names `pid` (the victim's pid as the kernel printed it),
   * printed within the query's time bounds, and whose line reads exactly one way given what else is
   * known of the kill; null otherwise (an ambiguous line is counted and never guessed at).
   */
  find(pid: number, q: ReportQuery = {}): OomReport | null {
    const i = this.indexOf(pid, q);
    return i < 0 ? null : this.resolve(this.done[i], q);
  }

  /** `find`, and the report is used up: a later kill of the same (reused) pid never gets it. */
  take(pid: number, q: ReportQuery = {}): OomReport | null {
    const i = this.indexOf(pid, q);
    if (i < 0) return null;
    const [d] = this.done.splice(i, 1);
    return this.resolve(d, q);
  }

  private indexOf(pid: number, q: ReportQuery): number {
    for (let i = this.done.length - 1; i >= 0; i--) {
      const d = this.done[i];
      if (d.readings[0].pid !== pid) continue; // the pid is read from the fixed end: the same in every reading
      if ((q.notBeforeUs !== undefined && d.usec < q.notBeforeUs) || (q.notAfterUs !== undefined && d.usec > q.notAfterUs)) continue;
      return i;
    }
    return -1;
  }

  private resolve(d: DoneReport, q: ConstraintHint): OomReport | null {
    const { readings, ...rest } = d;
    const c = pickReading(readings, q);
    if (c) return { ...rest, constraint: c };
    if (this.countRejects) rejectKernelLine('ambiguous', `oom-kill: line of pid ${readings[0].pid} reads ${readings.length} ways`);
    return null;
  }
}
