import { createHash } from 'node:crypto';

/** Which kernel hook produced the record. `fentry`/`kprobe` read `oom_control`; the `mark_victim` hooks infer. */
export type Hook = 'fentry' | 'kprobe' | 'tp_btf' | 'tracepoint';
export const HOOK_ORDER: readonly Hook[] = ['fentry', 'kprobe', 'tp_btf', 'tracepoint'];

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
  hook: Hook;
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
}

export const SCHEMA_VERSION = 1;

/** Deterministic id: the same kill always maps to the same id, so a retried delivery can be deduplicated. */
export function deriveEventId(bootId: string, kernelBootNs: bigint, victimPid: number): string {
  return createHash('sha256').update(`${bootId}\n${kernelBootNs}\n${victimPid}`).digest('hex').slice(0, 32);
}
