import { parseConstraint, parseInvoked, type KernelConstraintReport, type KernelInvokedReport, type KmsgRecord } from './lines';

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
}

const COUNTER = /^(memory|memory\+swap|swap|kmem): usage (\d+)kB, limit (\d+)kB, failcnt (\d+)$/;
const STATS_FOR = /^Memory cgroup stats for (.*):$/;
const TASK_ROW = /^\[\s*(\d+)\]\s+(.*)$/;

/** Assembles reports from kmsg records fed in order; keeps the last `keep` completed ones. */
export class OomReportParser {
  private cur: Omit<OomReport, 'constraint' | 'seq'> | null = null;
  private columns: string[] | null = null;
  private inStats = false;
  private inMemInfo = false;
  private readonly done: OomReport[] = [];

  // reports are looked up right after they complete; a global OOM on a big host prints thousands of rows each
  constructor(private readonly keep = 16) {}

  feed(records: readonly KmsgRecord[]): void {
    for (const r of records) for (const line of r.message.split('\n')) this.line(line.trimEnd(), r.seq);
  }

  private line(line: string, seq: number): void {
    const inv = parseInvoked(line);
    if (inv) {
      this.cur = { invoked: inv, counters: {}, stats: {}, statsCgroup: null, memInfo: null, tasks: [] };
      this.columns = null;
      this.inStats = this.inMemInfo = false;
      return;
    }
    const cur = this.cur;
    if (!cur) return;
    const c = parseConstraint(line);
    if (c) {
      this.done.push({ ...cur, constraint: c, seq });
      if (this.done.length > this.keep) this.done.shift();
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
      return;
    }
    if (this.columns && (m = TASK_ROW.exec(t))) {
      const rest = m[2].split(/\s+/);
      const cols = this.columns.slice(1, -1); // without pid and name
      if (rest.length < cols.length + 1) return;
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
        // the name is the rest of the line: a comm may contain spaces
        name: rest.slice(cols.length).join(' '),
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

  /** The report whose `oom-kill:` line names `pid` (the victim's pid as the kernel printed it). */
  find(pid: number): OomReport | null {
    for (let i = this.done.length - 1; i >= 0; i--) if (this.done[i].constraint.pid === pid) return this.done[i];
    return null;
  }
}
