import type { Constraint, Hook } from '../../record/record';

/*
 * Decoder for `struct oomtrail_event` (bpf/oomkill.h). The layout table below is the single
 * description of the C struct on this side; test/unit/event-layout.test.ts compares it with the
 * header (compiled by the host C compiler) and with the BTF of the committed object.
 */
export const COMM_LEN = 16;
export const CG_NAME_LEN = 256;
export const CG_DEPTH = 16;

type FieldType = 'u64' | 'u32' | 's32' | 'comm' | 'cgroup_path';

export const EVENT_FIELDS: ReadonlyArray<readonly [string, FieldType]> = [
  ['boot_ns', 'u64'],
  ['total_vm_pages', 'u64'],
  ['anon_rss_pages', 'u64'],
  ['file_rss_pages', 'u64'],
  ['shmem_rss_pages', 'u64'],
  ['pgtables_bytes', 'u64'],
  ['gfp_mask', 'u64'],
  ['domain_pages', 'u64'],
  ['memcg_limit_pages', 'u64'],
  ['memcg_usage_pages', 'u64'],
  ['victim_pid', 'u32'],
  ['victim_tid', 'u32'],
  ['victim_uid', 'u32'],
  ['trigger_pid', 'u32'],
  ['trigger_tid', 'u32'],
  ['oom_score_adj', 's32'],
  ['order', 's32'],
  ['hook', 'u32'],
  ['constraint', 'u32'],
  ['flags', 'u32'],
  ['victim_comm', 'comm'],
  ['trigger_comm', 'comm'],
  ['victim_ns_pid', 'u32'],
  ['victim_ns_level', 'u32'],
  ['oom_group_kill', 'u32'],
  ['ns_pad', 'u32'],
  ['mak_usage_pages', 'u64'],
  ['mak_limit_pages', 'u64'],
  ['mak_failcnt', 'u64'],
  ['mak_swap_usage_pages', 'u64'],
  ['mak_swap_limit_pages', 'u64'],
  ['mak_kmem_usage_pages', 'u64'],
  ['mak_anon_pages', 'u64'],
  ['mak_file_pages', 'u64'],
  ['mak_shmem_pages', 'u64'],
  ['mak_file_mapped_pages', 'u64'],
  ['mak_file_dirty_pages', 'u64'],
  ['mak_file_writeback_pages', 'u64'],
  ['mak_slab_reclaimable_bytes', 'u64'],
  ['mak_slab_unreclaimable_bytes', 'u64'],
  ['mak_sock_pages', 'u64'],
  ['mak_kmem_pages', 'u64'],
  ['mak_pagetables_pages', 'u64'],
  ['mak_swap_pages', 'u64'],
  ['mak_stat_slots', 'u32'],
  ['mak_flags', 'u32'],
  ['victim_cg_id', 'u64'],
  ['oom_cg_id', 'u64'],
  // last: an event flagged CG_AS_BEFORE ends before them
  ['victim_cg', 'cgroup_path'],
  ['oom_cg', 'cgroup_path'],
];

/** The memory_at_kill fields, in the order of the struct (bpf/oomkill.h, `mak_*`). */
export const MAK_FIELDS = ['mak_usage_pages', 'mak_limit_pages', 'mak_failcnt', 'mak_swap_usage_pages', 'mak_swap_limit_pages', 'mak_kmem_usage_pages', 'mak_anon_pages', 'mak_file_pages', 'mak_shmem_pages', 'mak_file_mapped_pages', 'mak_file_dirty_pages', 'mak_file_writeback_pages', 'mak_slab_reclaimable_bytes', 'mak_slab_unreclaimable_bytes', 'mak_sock_pages', 'mak_kmem_pages', 'mak_pagetables_pages', 'mak_swap_pages'] as const;
export type MakField = (typeof MAK_FIELDS)[number];

export const MAK_FLAG = {
  COUNTERS: 1 << 0,
  SWAP: 1 << 1,
  KMEM: 1 << 2,
  STATS: 1 << 3,
  COMPACTED: 1 << 4,
  UNMAPPED: 1 << 5,
} as const;

/** What the kernel side read from the OOM memcg at the hook (kernel units: pages unless `_bytes`). */
export interface RawMemAtKill {
  flags: number;
  statSlots: number;
  values: Record<MakField, number>;
}

/** struct oomtrail_cgroup_path: u64 kn_id, u32 depth, u32 truncated, char names[DEPTH][NAME_LEN]. */
export const CGROUP_PATH_SIZE = 8 + 4 + 4 + CG_DEPTH * CG_NAME_LEN;
const SIZES: Record<FieldType, number> = { u64: 8, u32: 4, s32: 4, comm: COMM_LEN, cgroup_path: CGROUP_PATH_SIZE };
const ALIGN: Record<FieldType, number> = { u64: 8, u32: 4, s32: 4, comm: 1, cgroup_path: 8 };

function computeLayout(): { offsets: Record<string, number>; size: number } {
  const offsets: Record<string, number> = {};
  let off = 0;
  let maxAlign = 1;
  for (const [name, type] of EVENT_FIELDS) {
    const a = ALIGN[type];
    maxAlign = Math.max(maxAlign, a);
    off = Math.ceil(off / a) * a;
    offsets[name] = off;
    off += SIZES[type];
  }
  return { offsets, size: Math.ceil(off / maxAlign) * maxAlign };
}

export const EVENT_LAYOUT = computeLayout();
export const EVENT_SIZE = EVENT_LAYOUT.size;
/** OOMTRAIL_EVENT_HEADER_SIZE: an event flagged CG_AS_BEFORE carries everything but the two paths. */
export const EVENT_HEADER_SIZE = EVENT_LAYOUT.offsets.victim_cg;

export const FLAG = {
  HAS_OOM_CONTROL: 1 << 0,
  HAS_TASK: 1 << 1,
  HAS_TP_FIELDS: 1 << 2,
  HAS_MEMCG: 1 << 3,
  CONSTRAINT_INFERRED: 1 << 4,
  VICTIM_CG_VALID: 1 << 5,
  OOM_CG_VALID: 1 << 6,
  TASK_FROM_SIGNAL: 1 << 7,
  /** the kernel prints per-CPU sums of the RSS counters (7.0+) and the kernel side could not read them all */
  RSS_INEXACT: 1 << 8,
  /** header only: both cgroups are those of the last full event the kernel side submitted (ids in the header) */
  CG_AS_BEFORE: 1 << 9,
} as const;

const HOOKS: Record<number, Hook> = { 1: 'fentry', 2: 'kprobe', 3: 'tp_btf', 4: 'tracepoint' };
export const HOOK_IDS: Record<Hook, number> = { fentry: 1, kprobe: 2, tp_btf: 3, tracepoint: 4 };
const CONSTRAINTS: Record<number, Constraint> = { 0: 'unknown', 1: 'global', 2: 'cpuset', 3: 'mempolicy', 4: 'memcg' };

export interface CgroupPath {
  /** kernfs node id (the cgroup id) */
  id: bigint;
  /** relative to the hierarchy root, as the kernel prints it; `/` is the root */
  path: string;
  truncated: boolean;
}

/**
 * One victim as the kernel reported it, before enrichment. Sizes are still in kernel units. The
 * kernel side's flag bits are read here once: a field the hook could not read is null.
 */
export interface RawOomEvent {
  bootNs: bigint;
  /** the victim's mm counters: null without HAS_TASK / HAS_TP_FIELDS */
  totalVmPages: number | null;
  anonRssPages: number | null;
  fileRssPages: number | null;
  shmemRssPages: number | null;
  pgtablesBytes: number | null;
  gfpMask: number | null;
  order: number | null;
  domainPages: number | null;
  memcgLimitPages: number | null;
  memcgUsagePages: number | null;
  victimPid: number;
  victimTid: number;
  victimUid: number | null;
  triggerPid: number;
  triggerTid: number;
  oomScoreAdj: number | null;
  hook: Hook;
  constraint: Constraint;
  constraintInferred: boolean;
  victimComm: string;
  triggerComm: string;
  victimCgroup: CgroupPath | null;
  oomCgroup: CgroupPath | null;
  /** A header-only event (a sweep member after the first): its cgroups are those of the last full event, which
   *  had these kernfs ids (0n: the root / none). victimCgroup and oomCgroup stay null until `CgroupPathMemo`
   *  fills them. */
  cgAsBefore?: { victimId: bigint; oomId: bigint } | null;
  /** The victim process's pid in its own pid namespace and that namespace's level (0 = the host's);
   *  null when the kernel side read no task (pre-6.8 tracepoint without a task). */
  victimNsPid?: number | null;
  victimNsLevel?: number | null;
  /** The kill was one of a memory.oom.group sweep (cgroup v2); null when no task was read. */
  oomGroupKill?: boolean | null;
  /** The RSS fields are the global counts where this kernel prints their exact per-CPU sums (7.0+):
   *  the per-CPU parts could not be read (no this_cpu_off, more CPUs than summed). */
  rssInexact?: boolean;
  /** Null when the kernel side found no OOM memcg (global OOM) or read nothing. */
  memAtKill?: RawMemAtKill | null;
  /** The kernel's printed report for this kill, when it was printed (attached by the collector). */
  kernelReport?: import('../kmsg/report').OomReport | null;
  /** Memcg kill without a printed table: the OOM cgroup's other processes, read from /proc right after
   *  the event was decoded (attached by the collector); the victim is not among them. */
  procfsTasks?: import('./procfs').ProcTaskRead | null;
}

function cstring(buf: Buffer, off: number, len: number): string {
  const end = buf.indexOf(0, off);
  return buf.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

export function decodeCgroupPath(buf: Buffer, off: number): CgroupPath {
  const id = buf.readBigUInt64LE(off);
  const depth = Math.min(buf.readUInt32LE(off + 8), CG_DEPTH);
  const truncated = buf.readUInt32LE(off + 12) !== 0;
  const names: string[] = [];
  for (let i = depth - 1; i >= 0; i--) names.push(cstring(buf, off + 16 + i * CG_NAME_LEN, CG_NAME_LEN));
  // a path cut at the root side keeps its leaf; the marker makes the cut visible
  const path = (truncated ? '/…/' : '/') + names.join('/');
  return { id, path, truncated };
}

export function decodeEvent(buf: Buffer): RawOomEvent {
  // any other size means bpf/oomkill.bpf.o and this decoder were built from different headers
  if (buf.length !== EVENT_SIZE && buf.length !== EVENT_HEADER_SIZE) {
    throw new Error(`oomkill event has ${buf.length} bytes, the decoder expects ${EVENT_SIZE} or ${EVENT_HEADER_SIZE}: object and decoder drifted`);
  }
  const o = EVENT_LAYOUT.offsets;
  const u64 = (name: string) => Number(buf.readBigUInt64LE(o[name]));
  const flags = buf.readUInt32LE(o.flags);
  const has = (f: number) => (flags & f) !== 0;
  const asBefore = has(FLAG.CG_AS_BEFORE);
  if (asBefore !== (buf.length === EVENT_HEADER_SIZE)) {
    throw new Error(`oomkill event has ${buf.length} bytes but its as-before flag is ${asBefore ? 'set' : 'clear'}: object and decoder drifted`);
  }
  const victimFields = has(FLAG.HAS_TASK) || has(FLAG.HAS_TP_FIELDS);
  const hasCtl = has(FLAG.HAS_OOM_CONTROL);
  return {
    bootNs: buf.readBigUInt64LE(o.boot_ns),
    totalVmPages: victimFields ? u64('total_vm_pages') : null,
    anonRssPages: victimFields ? u64('anon_rss_pages') : null,
    fileRssPages: victimFields ? u64('file_rss_pages') : null,
    shmemRssPages: victimFields ? u64('shmem_rss_pages') : null,
    pgtablesBytes: victimFields ? u64('pgtables_bytes') : null,
    gfpMask: hasCtl ? u64('gfp_mask') : null,
    order: hasCtl ? buf.readInt32LE(o.order) : null,
    domainPages: hasCtl ? u64('domain_pages') : null,
    memcgLimitPages: has(FLAG.HAS_MEMCG) ? u64('memcg_limit_pages') : null,
    memcgUsagePages: has(FLAG.HAS_MEMCG) ? u64('memcg_usage_pages') : null,
    victimPid: buf.readUInt32LE(o.victim_pid),
    victimTid: buf.readUInt32LE(o.victim_tid),
    victimUid: victimFields ? buf.readUInt32LE(o.victim_uid) : null,
    triggerPid: buf.readUInt32LE(o.trigger_pid),
    triggerTid: buf.readUInt32LE(o.trigger_tid),
    oomScoreAdj: victimFields ? buf.readInt32LE(o.oom_score_adj) : null,
    hook: HOOKS[buf.readUInt32LE(o.hook)] ?? 'tracepoint',
    constraint: CONSTRAINTS[buf.readUInt32LE(o.constraint)] ?? 'unknown',
    constraintInferred: has(FLAG.CONSTRAINT_INFERRED),
    victimComm: cstring(buf, o.victim_comm, COMM_LEN),
    triggerComm: cstring(buf, o.trigger_comm, COMM_LEN),
    victimCgroup: has(FLAG.VICTIM_CG_VALID) && !asBefore ? decodeCgroupPath(buf, o.victim_cg) : null,
    oomCgroup: has(FLAG.OOM_CG_VALID) ? (asBefore ? asBeforeRoot(buf) : decodeCgroupPath(buf, o.oom_cg)) : null,
    ...(asBefore ? { cgAsBefore: { victimId: buf.readBigUInt64LE(o.victim_cg_id), oomId: buf.readBigUInt64LE(o.oom_cg_id) } } : {}),
    // 0 is no pid in any namespace: the task was not read
    victimNsPid: has(FLAG.HAS_TASK) && buf.readUInt32LE(o.victim_ns_pid) !== 0 ? buf.readUInt32LE(o.victim_ns_pid) : null,
    victimNsLevel: has(FLAG.HAS_TASK) && buf.readUInt32LE(o.victim_ns_pid) !== 0 ? buf.readUInt32LE(o.victim_ns_level) : null,
    oomGroupKill: has(FLAG.HAS_TASK) ? buf.readUInt32LE(o.oom_group_kill) !== 0 : null,
    ...(has(FLAG.RSS_INEXACT) ? { rssInexact: true } : {}),
    memAtKill: decodeMemAtKill(buf),
  };
}

/**
 * Gap between two marks of one memory.oom.group sweep. One kernel call marks them all, but the kernel
 * prints a "Killed process" line between two, and a synchronous serial console (cloud VMs, the test
 * VM) takes tens of ms per line.
 */
export const SWEEP_GAP_NS = 1_000_000_000n;

/** One memory.oom.group sweep's events share this: the thread whose allocation triggered it, and the OOM cgroup. */
export function sweepKey(ev: RawOomEvent): string {
  return `${ev.triggerTid}\u0000${ev.oomCgroup?.path ?? ''}`;
}

/** A header-only event's OOM cgroup when it is the root (id 0: global OOM), which has no path to reuse. */
function asBeforeRoot(buf: Buffer): CgroupPath | null {
  return buf.readBigUInt64LE(EVENT_LAYOUT.offsets.oom_cg_id) === 0n ? { id: 0n, path: '/', truncated: false } : null;
}

function decodeMemAtKill(buf: Buffer): RawMemAtKill | null {
  const o = EVENT_LAYOUT.offsets;
  const flags = buf.readUInt32LE(o.mak_flags);
  if (!(flags & MAK_FLAG.COUNTERS)) return null;
  const values = {} as Record<MakField, number>;
  for (const n of MAK_FIELDS) values[n] = Number(buf.readBigUInt64LE(o[n]));
  return { flags, statSlots: buf.readUInt32LE(o.mak_stat_slots), values };
}

interface MemoEntry {
  victimId: bigint;
  oomId: bigint;
  victim: CgroupPath | null;
  oom: CgroupPath | null;
}

/**
 * Gives a header-only (CG_AS_BEFORE) event its two cgroup paths. The kernel side sends them once per run of
 * kills with the same pair of cgroups (a memory.oom.group sweep: the first member in full, the rest as headers)
 * and remembers the pair only once the full event was in the ring; here the pair is the last full event
 * decoded. When the ids differ (that full event was not decoded: lost to a full ring, undecodable, or an agent
 * that started mid-sweep) each id is looked up by `resolveById` (the cgroup directory whose inode is that id);
 * one not found stays null, never a guess. The answer is kept for the following members either way.
 */
export class CgroupPathMemo {
  private last: MemoEntry | null = null;
  /** header-only events whose paths came from a lookup by id, and those left without a path */
  resolvedById = 0;
  unresolved = 0;

  constructor(private readonly resolveById: (id: bigint) => CgroupPath | null) {}

  /** `event` as decoded (a full event's paths already completed, e.g. a cut path resolved). Says where its
   *  paths came from: its own bytes, the last full event, or a lookup by id (the full event was not seen). */
  settle(event: RawOomEvent): 'full' | 'as-before' | 'looked-up' {
    const ab = event.cgAsBefore;
    if (!ab) {
      // full event: the kernel side remembered the ids it carried, whatever paths it read
      this.last = {
        victimId: event.victimCgroup?.id ?? 0n,
        oomId: event.oomCgroup?.id ?? 0n,
        victim: event.victimCgroup,
        oom: event.oomCgroup,
      };
      return 'full';
    }
    let how: 'as-before' | 'looked-up' = 'as-before';
    if (!this.last || this.last.victimId !== ab.victimId || this.last.oomId !== ab.oomId) {
      how = 'looked-up';
      const lookup = (id: bigint): CgroupPath | null => (id === 0n ? null : this.resolveById(id));
      this.last = { victimId: ab.victimId, oomId: ab.oomId, victim: lookup(ab.victimId), oom: lookup(ab.oomId) };
      this.resolvedById++;
    }
    const entry = this.last;
    // each valid flag as the kernel side set it for this event; an id 0 OOM cgroup is the root ("/")
    event.victimCgroup = entry.victim ? { ...entry.victim } : null;
    event.oomCgroup = ab.oomId === 0n ? (event.oomCgroup ?? null) : entry.oom ? { ...entry.oom } : null;
    if ((ab.victimId !== 0n && !entry.victim) || (ab.oomId !== 0n && !entry.oom)) this.unresolved++;
    return how;
  }
}
