import type { RawOomEvent, MakField } from '../../collectors/oomkill/event';
import { MAK_FLAG } from '../../collectors/oomkill/event';
import type { OomReport, TaskRow } from '../../collectors/kmsg/report';
import type { ProcTask } from '../../collectors/oomkill/procfs';
import type { Candidate, Cause, MemoryAtKill } from '../../record/record';

/*
 * "Why this kill": the OOM domain's memory at kill time, the kernel's candidate list, and a
 * one-word cause. Pure functions of the kernel event and the kernel's printed report.
 */

const UNLIMITED_PAGES = 2 ** 50;
/** The kernel prints "no limit" as PAGE_COUNTER_MAX in kB: 9007199254740988kB with 4 kB pages. */
const UNLIMITED_KB = 2 ** 50;

const EMPTY: Omit<MemoryAtKill, 'source' | 'scope'> = {
  usage_bytes: null,
  limit_bytes: null,
  failcnt: null,
  anon_bytes: null,
  file_bytes: null,
  shmem_bytes: null,
  file_mapped_bytes: null,
  file_dirty_bytes: null,
  file_writeback_bytes: null,
  kernel_bytes: null,
  slab_bytes: null,
  sock_bytes: null,
  pagetables_bytes: null,
  swap_bytes: null,
};

/** The memcg breakdown from the kernel side's reads at the hook (source `bpf`). */
function fromBpf(ev: RawOomEvent, pageSize: number, cgroupVersion: 1 | 2 | null): MemoryAtKill | null {
  const m = ev.memAtKill;
  if (!m) return null;
  const v = (f: MakField) => m.values[f];
  const pages = (f: MakField) => v(f) * pageSize;
  const out: MemoryAtKill = { ...EMPTY, source: 'bpf', scope: 'memcg' };
  out.usage_bytes = pages('mak_usage_pages');
  out.limit_bytes = v('mak_limit_pages') >= UNLIMITED_PAGES ? null : pages('mak_limit_pages');
  out.failcnt = v('mak_failcnt');
  if (m.flags & MAK_FLAG.STATS) {
    out.anon_bytes = pages('mak_anon_pages');
    out.file_bytes = pages('mak_file_pages');
    out.shmem_bytes = pages('mak_shmem_pages');
    out.file_mapped_bytes = pages('mak_file_mapped_pages');
    out.file_dirty_bytes = pages('mak_file_dirty_pages');
    out.file_writeback_bytes = pages('mak_file_writeback_pages');
    out.slab_bytes = v('mak_slab_reclaimable_bytes') + v('mak_slab_unreclaimable_bytes');
    out.sock_bytes = pages('mak_sock_pages');
    out.pagetables_bytes = pages('mak_pagetables_pages');
  }
  if (cgroupVersion === 1) {
    // v1 prints kmem from its own counter and swap as a stat (memory+swap is a sum, not swap)
    if (m.flags & MAK_FLAG.KMEM) out.kernel_bytes = pages('mak_kmem_usage_pages');
    if (m.flags & MAK_FLAG.STATS) out.swap_bytes = pages('mak_swap_pages');
  } else if (cgroupVersion === 2) {
    if (m.flags & MAK_FLAG.STATS) out.kernel_bytes = pages('mak_kmem_pages');
    if (m.flags & MAK_FLAG.SWAP) out.swap_bytes = pages('mak_swap_usage_pages');
  }
  return out;
}

/** The same from the kernel's printed report (source `kmsg`). */
export function memoryFromReport(r: OomReport, pageSize: number): MemoryAtKill | null {
  const mem = r.counters.memory;
  if (mem) {
    const out: MemoryAtKill = { ...EMPTY, source: 'kmsg', scope: 'memcg' };
    const s = r.stats;
    // v1 prints local values and total_* (hierarchical, what the counters include); v2 only the latter
    const stat = (v1: string, v2: string): number | null => s[`total_${v1}`] ?? s[v2] ?? s[v1] ?? null;
    out.usage_bytes = mem.usage_kb * 1024;
    out.limit_bytes = mem.limit_kb >= UNLIMITED_KB * (pageSize / 1024) - 4 ? null : mem.limit_kb * 1024;
    out.failcnt = mem.failcnt;
    out.anon_bytes = stat('rss', 'anon');
    out.file_bytes = stat('cache', 'file');
    out.shmem_bytes = stat('shmem', 'shmem');
    out.file_mapped_bytes = stat('mapped_file', 'file_mapped');
    out.file_dirty_bytes = stat('dirty', 'file_dirty');
    out.file_writeback_bytes = stat('writeback', 'file_writeback');
    out.kernel_bytes = r.counters.kmem ? r.counters.kmem.usage_kb * 1024 : (s.kernel ?? null);
    out.slab_bytes = s.slab ?? null;
    out.sock_bytes = s.sock ?? null;
    out.pagetables_bytes = s.pagetables ?? null;
    out.swap_bytes = r.counters.swap ? r.counters.swap.usage_kb * 1024 : (s.total_swap ?? s.swap ?? null);
    return out;
  }
  const mi = r.memInfo;
  if (!mi) return null;
  const p = (k: string): number | null => (mi[k] === undefined ? null : mi[k] * pageSize);
  const sum = (...ks: string[]): number | null => (ks.every((k) => mi[k] !== undefined) ? ks.reduce((a, k) => a + mi[k] * pageSize, 0) : null);
  const anonLru = sum('active_anon', 'inactive_anon');
  const shmem = p('shmem');
  return {
    ...EMPTY,
    source: 'kmsg',
    scope: 'host',
    // shmem sits on the anon LRU: taken out so anon means private anonymous memory, as for a memcg
    anon_bytes: anonLru !== null && shmem !== null ? Math.max(0, anonLru - shmem) : anonLru,
    file_bytes: p('total_pagecache'),
    shmem_bytes: shmem,
    file_mapped_bytes: p('mapped'),
    file_dirty_bytes: p('dirty'),
    file_writeback_bytes: p('writeback'),
    slab_bytes: sum('slab_reclaimable', 'slab_unreclaimable'),
    pagetables_bytes: p('pagetables'),
  };
}

/**
 * memory_at_kill: the breakdown from the kernel side's reads where it had them, else from the
 * printed report (then `source` is `kmsg`); null when neither exists. Never a read made after
 * the kill.
 * The page counters (usage, limit, failcnt; v1's kmem counter, v2's swap counter) are taken from
 * the report when the kernel printed one for this kill: they are live atomics that another CPU
 * moves between any two reads (its charge stock, up to a batch of pages, is drained
 * asynchronously during the OOM: seen 43 and 61 pages between dump_header and the hook on 6.1,
 * either way), so only the print is what the kernel saw. The breakdown is a snapshot that
 * dump_header itself flushed, and the hook reads that same snapshot; without a printed report nothing
 * flushed it (causeOf then says `unknown` where it does not account for usage: breakdownUnflushed).
 */
export function memoryAtKill(ev: RawOomEvent, pageSize: number, cgroupVersion: 1 | 2 | null): MemoryAtKill | null {
  const bpf = fromBpf(ev, pageSize, cgroupVersion);
  const printed = ev.kernelReport ? memoryFromReport(ev.kernelReport, pageSize) : null;
  if (!bpf) return printed;
  if (!printed || printed.scope !== 'memcg') return bpf;
  const counters = { usage_bytes: printed.usage_bytes, limit_bytes: printed.limit_bytes, failcnt: printed.failcnt };
  if (bpf.anon_bytes === null) return { ...printed, ...counters };
  const printedCounters = ev.kernelReport!.counters;
  return {
    ...bpf,
    ...counters,
    kernel_bytes: cgroupVersion === 1 && printedCounters.kmem ? printed.kernel_bytes : bpf.kernel_bytes,
    swap_bytes: cgroupVersion === 2 && printedCounters.swap ? printed.swap_bytes : bpf.swap_bytes,
  };
}

/**
 * The kernel's oom_badness(): rss + swap entries + page tables (pages), plus oom_score_adj in
 * thousandths of the OOM domain (`adj *= totalpages / 1000`, integer division first, as in
 * mm/oom_kill.c). null for -1000: the kernel never picks such a task. Unknown swap entries
 * (null: the victim's row of a procfs list) count as none.
 */
export function badness(
  row: Pick<TaskRow, 'rss' | 'pgtables_bytes' | 'oom_score_adj'> & { swapents: number | null },
  totalPages: number,
  pageSize: number,
): number | null {
  if (row.oom_score_adj === -1000) return null;
  return row.rss + (row.swapents ?? 0) + Math.floor(row.pgtables_bytes / pageSize) + row.oom_score_adj * Math.floor(totalPages / 1000);
}

/** A candidate row in the kernel's units (pages; page tables in bytes), whichever source it came from. */
type Row = Omit<TaskRow, 'total_vm' | 'swapents'> & { swapents: number | null };

/** Rows → the top `n` candidates by badness; the victim's row is always kept. */
function rank(rows: Row[], victimTgid: number, totalPages: number | null, pageSize: number, n: number): Candidate[] | null {
  if (!rows.length || n <= 0) return null;
  const kb = (pages: number | null) => (pages === null ? null : (pages * pageSize) / 1024);
  const cands = rows.map((t) => ({
    pid: t.pid,
    tgid: t.tgid,
    comm: t.name,
    uid: t.uid,
    rss_kb: (t.rss * pageSize) / 1024,
    rss_anon_kb: kb(t.rss_anon),
    rss_file_kb: kb(t.rss_file),
    rss_shmem_kb: kb(t.rss_shmem),
    swapents: t.swapents,
    pgtables_kb: Math.floor(t.pgtables_bytes / 1024),
    oom_score_adj: t.oom_score_adj,
    points: totalPages === null ? null : badness(t, totalPages, pageSize),
    victim: t.tgid === victimTgid,
  }));
  const pts = (c: Candidate) => c.points ?? -Infinity;
  cands.sort((a, b) => pts(b) - pts(a) || a.pid - b.pid);
  const top = cands.slice(0, n);
  const v = cands.find((c) => c.victim);
  if (v && !top.includes(v)) top.push(v);
  return top;
}

/** Top `n` rows of the printed Tasks state table by badness; the victim's row is always kept. */
export function candidatesFromReport(r: OomReport, victimTgid: number, totalPages: number | null, pageSize: number, n: number): Candidate[] | null {
  return rank(r.tasks, victimTgid, totalPages, pageSize, n);
}

/**
 * The same from the OOM cgroup's processes read from /proc right after the kill (`ProcTask`, kB),
 * plus the victim's row from the kernel event (its memory is being freed by then). The event
 * carries no swap entry count: the victim's `swapents` is null and its points leave swap out.
 * null when the event lacks the victim's mm counters.
 */
export function candidatesFromProcfs(ev: RawOomEvent, tasks: readonly ProcTask[], totalPages: number | null, pageSize: number, n: number): Candidate[] | null {
  const { anonRssPages: a, fileRssPages: f, shmemRssPages: sh, pgtablesBytes: pt, oomScoreAdj: adj, victimUid: uid } = ev;
  if (a === null || f === null || sh === null || pt === null || adj === null || uid === null) return null;
  const pages = (kb: number) => Math.round((kb * 1024) / pageSize);
  const victim: Row = { pid: ev.victimPid, tgid: ev.victimPid, uid, name: ev.victimComm, rss: a + f + sh, rss_anon: a, rss_file: f, rss_shmem: sh, pgtables_bytes: pt, swapents: null, oom_score_adj: adj };
  const rows: Row[] = tasks
    .filter((t) => t.tgid !== ev.victimPid)
    .map((t) => ({
      pid: t.pid,
      tgid: t.tgid,
      uid: t.uid,
      name: t.comm,
      rss: pages(t.rss_anon_kb + t.rss_file_kb + t.rss_shmem_kb),
      rss_anon: pages(t.rss_anon_kb),
      rss_file: pages(t.rss_file_kb),
      rss_shmem: pages(t.rss_shmem_kb),
      pgtables_bytes: t.pgtables_kb * 1024,
      swapents: pages(t.swap_kb),
      oom_score_adj: t.oom_score_adj,
    }));
  return rank([victim, ...rows], ev.victimPid, totalPages, pageSize, n);
}

/**
 * Whether a memcg breakdown fails to account for the usage counter: its charged parts (anon + file +
 * kernel + sock; swap is outside usage) differ from usage by more than half of usage. The breakdown
 * is the memcg's flushed stats; usage is a live page counter. A flushed breakdown is off by at most
 * the kernel's own flush threshold (MEMCG_CHARGE_BATCH, 64 pages, per CPU of pending deltas) plus the
 * per-CPU charge stock (as much again): ~0.5 MiB per CPU. Unflushed (dump_header's flush skipped by
 * its rate limit, the periodic flusher 2 s away) it misses every charge since the last flush: a hog
 * in a cgroup made moments before read anon 0 of 64 MiB. With more than half of usage unaccounted
 * (or phantom), any part, the missing one included, may be the one holding half: no cause can be named.
 */
export function breakdownUnflushed(m: MemoryAtKill | null): boolean {
  if (!m || m.scope !== 'memcg' || !m.usage_bytes || m.anon_bytes === null || m.file_bytes === null) return false;
  const parts = m.anon_bytes + m.file_bytes + (m.kernel_bytes ?? 0) + (m.sock_bytes ?? 0);
  return Math.abs(parts - m.usage_bytes) * 2 > m.usage_bytes;
}

/**
 * cause: the component holding at least half of the breakdown (anon, page_cache = file − shmem,
 * shmem, kernel, swap), else `mixed`; `unknown` when the breakdown does not account for usage
 * (breakdownUnflushed); null without a breakdown.
 */
export function causeOf(m: MemoryAtKill | null): Cause | null {
  if (!m || m.anon_bytes === null || m.file_bytes === null) return null;
  if (breakdownUnflushed(m)) return 'unknown';
  const shmem = m.shmem_bytes ?? 0;
  const parts: Array<[Cause, number]> = [
    ['anon', m.anon_bytes],
    ['page_cache', Math.max(0, m.file_bytes - shmem)],
    ['shmem', shmem],
    ['kernel', m.kernel_bytes ?? 0],
    ['swap', m.swap_bytes ?? 0],
  ];
  const total = parts.reduce((a, [, v]) => a + v, 0);
  if (total <= 0) return null;
  const [name, top] = parts.reduce((a, b) => (b[1] > a[1] ? b : a));
  return top * 2 >= total ? name : 'mixed';
}

/** The victim's RSS (anon + file + shmem) as a fraction of the OOM domain's usage, 3 decimals. */
export function victimShare(rssBytes: number | null, m: MemoryAtKill | null): number | null {
  if (rssBytes === null || !m || !m.usage_bytes) return null;
  return Math.round((rssBytes / m.usage_bytes) * 1000) / 1000;
}

/** The OOM domain size the kernel scored against (oom_control.totalpages), where known. */
export function domainPages(ev: RawOomEvent, m: MemoryAtKill | null, pageSize: number, hostTotalPages: number | null): number | null {
  if (ev.domainPages !== null) return ev.domainPages;
  // mark_victim hooks: a memcg's max (no swap headroom on hosts without swap), or RAM + swap
  if (m?.scope === 'memcg') return m.limit_bytes === null ? hostTotalPages : Math.floor(m.limit_bytes / pageSize);
  return hostTotalPages;
}
