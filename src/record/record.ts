import { createHash } from 'node:crypto';

/** Which kernel hook produced the record. `fentry`/`kprobe` read `oom_control`; the `mark_victim` hooks infer. */
export type Hook = 'fentry' | 'kprobe' | 'tp_btf' | 'tracepoint';
export const HOOK_ORDER: readonly Hook[] = ['fentry', 'kprobe', 'tp_btf', 'tracepoint'];
/** A record's source: a kernel hook, or `kmsg` for a kill recovered from the kernel log at start (backfill). */
export type RecordHook = Hook | 'kmsg';

export type Constraint = 'memcg' | 'global' | 'cpuset' | 'mempolicy' | 'unknown';

/**
 * One OOM victim, as every sink sees it. Field names are the contract shared by all sinks;
 * the record only ever grows by optional fields.
 */
export interface OomRecord {
  schema_version: number;
  event_id: string;
  /** RFC 3339, UTC, nanosecond precision. */
  time: string;
  host: string;
  boot_id: string;
  kernel_release: string;
  hook: RecordHook;
  victim_pid: number;
  victim_tid: number;
  victim_comm: string;
  victim_uid: number | null;
  victim_total_vm_kb: number | null;
  victim_anon_rss_kb: number | null;
  victim_file_rss_kb: number | null;
  victim_shmem_rss_kb: number | null;
  victim_pgtables_kb: number | null;
  victim_oom_score_adj: number | null;
  /** 0 when unknown: a kill recovered from the kernel log whose report (dump_stack) was rate limited. */
  trigger_pid: number;
  trigger_comm: string;
  constraint: Constraint;
  /** True when constraint/oom_cgroup were inferred (mark_victim hooks) rather than read from oom_control. */
  constraint_inferred: boolean;
  /** The cgroup whose limit was hit, relative to the memory hierarchy root; `/` for a global OOM. */
  oom_cgroup: string;
  victim_cgroup: string;
  cgroup_version: 1 | 2 | null;
  memcg_limit_bytes: number | null;
  memcg_usage_bytes: number | null;
  /** The OOM domain size in pages (oom_control.totalpages) — never the victim's size. */
  domain_pages: number | null;
  gfp_mask: string | null;
  order: number | null;
  container_id: string;
  container_runtime: string;
  pod_uid: string;
  k8s_qos: string;
  agent_version: string;
  /** Absent means 'oom_kill' (records from before the field existed). A 'memory_pressure' record is an
   *  early warning, not a kill: its victim_* and trigger_* fields are zero/empty/null and `pressure` is set. */
  kind?: RecordKind;
  /** The OOM (or pressured) cgroup's last seconds, oldest first; present when the trail is enabled. */
  trail?: Trail;
  /** Kill (mark_victim) → the victim's exit, from the reclaim collector; null when no exit was seen in time. */
  victim_exit_latency_ms?: number | null;
  /** Kill → oom_reaper finished reaping its memory; null when the reaper did not run (the exit freed it first). */
  victim_reaped_latency_ms?: number | null;
  /** Present (true) only when oom_cgroup or victim_cgroup could not be carried whole: deeper than the
   *  kernel side's 16 levels and gone from cgroupfs before it could be completed. Such a path starts
   *  with `/…/` and keeps its 16 leaf-most names. */
  cgroup_truncated?: boolean;
  /** The victim's pid inside its own pid namespace (what `ps` in its container shows); absent or null when
   *  the kernel side read no task. Equal to victim_pid for a process in the host's namespace. */
  victim_ns_pid?: number | null;
  /** True when the victim was PID 1 of a container's pid namespace: the container exits (and restarts, under
   *  Kubernetes `OOMKilled`). False: a child was killed and the container keeps running. Null when unknown. */
  victim_is_container_init?: boolean | null;
  /** True when this kill was one of a `memory.oom.group` sweep (cgroup v2: every process of that memcg is
   *  killed together, the default for Kubernetes containers since 1.28); absent when the kernel side read no task. */
  oom_group_kill?: boolean;
  /** With `oom_group_kill: true`: how many processes that sweep killed (its records, counted by the agent:
   *  one trigger, one OOM cgroup, marked in one kernel call). */
  oom_group_kill_size?: number;
  /** From the container runtime's own metadata (docker, containerd, CRI-O), looked up by container_id in a
   *  cache the agent fills before kills happen; absent when the runtime did not know the container in time. */
  container_name?: string;
  container_image?: string;
  /** `io.kubernetes.pod.name` / `.pod.namespace` / `.container.name` labels, as kubelet (CRI) sets them. */
  pod_name?: string;
  pod_namespace?: string;
  k8s_container?: string;
  /** Which limit was hit: the OOM cgroup's place in the kubepods hierarchy (README "Which limit was hit").
   *  `system`: no memcg limit (global OOM, cpuset, mempolicy); `other`: a cgroup outside Kubernetes pods.
   *  Absent when the OOM cgroup is unknown (a backfilled kill whose `oom-kill:` line was rate limited). */
  oom_scope?: 'container' | 'pod' | 'qos' | 'node' | 'system' | 'other';
  /** The pod's top owner (README "Workload: `workload_kind`, `workload_name`"): from the Kubernetes API's owner
   *  references when enrich.kubernetes.owner_lookup is on (`Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`,
   *  `ReplicaSet` or `Job` without a parent, `Pod` without a controller, or another controller's own kind, e.g. a
   *  CRD's), else guessed from the pod name (one of the first five, or `Pod`); absent without a pod name. */
  workload_kind?: 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'Job' | 'CronJob' | 'Pod' | (string & {});
  workload_name?: string;
  /** Where workload_kind/workload_name came from: `api` (the owner references) or `name` (the pod-name heuristic). */
  workload_source?: 'api' | 'name';
  /** The container's labels named by `enrich.runtime.labels` (an allow-list); absent when none matched. */
  labels?: Record<string, string>;
  /** Set on memory_pressure records: why it fired. */
  pressure?: PressureInfo;
  /** The OOM domain's memory at kill time (before the victim's memory was freed); null when unknown. */
  memory_at_kill?: MemoryAtKill | null;
  /** The OOM domain's top tasks by the kernel's badness at kill time (victim's row marked); null when unknown. */
  candidates?: Candidate[] | null;
  /** Where `candidates` came from: `kmsg`, the kernel's printed table of that kill (at kill time); `procfs`,
   *  the OOM cgroup's processes read from /proc right after the kill (memcg kills whose table the kernel
   *  rate-limited), with the victim's row from the kernel event. null when candidates is null. */
  candidates_source?: 'kmsg' | 'procfs' | null;
  /** The dominant consumer in memory_at_kill (rule: README "Why this kill"); `unknown` when the breakdown does not
   *  account for usage (not flushed by the kernel); null without a breakdown. */
  cause?: Cause | null;
  /** The victim's RSS (anon + file + shmem) / memory_at_kill.usage_bytes; > 1 when part of it is charged elsewhere. */
  victim_share?: number | null;
}

/** `unknown`: the breakdown does not account for usage (the kernel had not flushed its memcg stats, see
 *  breakdownUnflushed); its values are then the last flushed ones, not the kill's. */
export type Cause = 'anon' | 'page_cache' | 'shmem' | 'kernel' | 'swap' | 'mixed' | 'unknown';

/** Bytes; null where the kernel did not give the value. */
export interface MemoryAtKill {
  /** `bpf`: read by the kernel side at the hook; `kmsg`: the kernel's printed report of that kill;
   *  `procfs`: reserved for reads right after the kill (never presented as at-kill values otherwise) */
  source: 'bpf' | 'kmsg' | 'procfs';
  /** `memcg`: the OOM cgroup's counters; `host`: the host's (global OOM, Mem-Info) */
  scope: 'memcg' | 'host';
  usage_bytes: number | null;
  limit_bytes: number | null;
  failcnt: number | null;
  anon_bytes: number | null;
  /** all page cache, shmem included (the kernel's `cache` / `file`) */
  file_bytes: number | null;
  shmem_bytes: number | null;
  file_mapped_bytes: number | null;
  file_dirty_bytes: number | null;
  file_writeback_bytes: number | null;
  /** v1: the kmem counter; v2: `kernel` */
  kernel_bytes: number | null;
  slab_bytes: number | null;
  sock_bytes: number | null;
  pagetables_bytes: number | null;
  swap_bytes: number | null;
}

export interface Candidate {
  pid: number;
  tgid: number;
  comm: string;
  uid: number;
  /** total RSS as printed (anon + file + shmem); the split is null before 6.8 */
  rss_kb: number;
  rss_anon_kb: number | null;
  rss_file_kb: number | null;
  rss_shmem_kb: number | null;
  /** null only for the victim's row of a `procfs` list: the kernel event carries no swap entry count */
  swapents: number | null;
  pgtables_kb: number;
  oom_score_adj: number;
  /** the kernel's oom_badness; null for oom_score_adj -1000 (never chosen) or an unknown domain */
  points: number | null;
  victim: boolean;
}

export type RecordKind = 'oom_kill' | 'memory_pressure';

/**
 * Column-wise samples, one per `step_ms`, the first taken at `start` (RFC 3339). Every array has
 * the same length; a value unknown at a sample is null.
 */
export interface Trail {
  start: string;
  step_ms: number;
  usage_bytes: Array<number | null>;
  limit_bytes: Array<number | null>;
  /** time tasks of this cgroup (and its descendants) spent in reclaim during the step, summed over tasks */
  reclaim_stall_ms: Array<number | null>;
  reclaimed_pages: Array<number | null>;
  /** the cgroup's memory.pressure on cgroup v2; the system's /proc/pressure/memory otherwise (see psi_scope) */
  psi_some_avg10: Array<number | null>;
  psi_full_avg10: Array<number | null>;
  psi_scope: 'cgroup' | 'system' | 'none';
  /** pages allocated by tasks of this cgroup (and descendants) during the step; only with the alloc collector */
  alloc_pages?: Array<number | null>;
  /** Taken when the record was built (right after the kill), off the step schedule: reclaim_* count what
   *  happened since the last regular sample — the stall at the limit that ends in the kill lands here. */
  at_record?: {
    time: string;
    usage_bytes: number | null;
    limit_bytes: number | null;
    reclaim_stall_ms: number | null;
    reclaimed_pages: number | null;
    psi_some_avg10: number | null;
    psi_full_avg10: number | null;
  };
}

export interface PressureInfo {
  reasons: Array<'usage' | 'psi_full' | 'psi_trigger'>;
  usage_ratio: number | null;
  psi_some_avg10: number | null;
  psi_full_avg10: number | null;
  reclaim_stall_ms: number | null;
}

export const SCHEMA_VERSION = 1;

/** Deterministic id: the same kill always maps to the same id, so a retried delivery can be deduplicated. */
export function deriveEventId(bootId: string, kernelBootNs: bigint, victimPid: number): string {
  return createHash('sha256').update(`${bootId}\n${kernelBootNs}\n${victimPid}`).digest('hex').slice(0, 32);
}
