import type { OomRecord } from '../../record/record';
import { escapeControl } from '../../observe/escape';
import { describeScope } from '../../record/describe';

const mib = (kb: number | null) => (kb === null ? '?' : `${(kb / 1024).toFixed(1)} MiB`);
const bytesMib = (b: number | null) => (b === null ? '?' : `${(b / 1048576).toFixed(1)} MiB`);

/** One line per early warning: a cgroup close to its limit or stalling, before any kill. */
function formatPressureLine(r: OomRecord): string {
  const p = r.pressure;
  const pct = p?.usage_ratio === null || p?.usage_ratio === undefined ? '?' : `${(p.usage_ratio * 100).toFixed(0)}%`;
  return escapeControl(
    `memory pressure  ${r.time}  host ${r.host}  cgroup ${r.oom_cgroup || r.victim_cgroup || '/'}  ` +
    `[${p?.reasons.join(',') ?? '?'}] usage ${pct} of ${bytesMib(r.memcg_limit_bytes)}` +
    `${p?.psi_full_avg10 !== null && p?.psi_full_avg10 !== undefined ? `  psi full avg10 ${p.psi_full_avg10}` : ''}`,
  ) + '\n';
}

/** One human-readable block per kill, in the spirit of the classic oom monitors. */
export function formatKillBlock(r: OomRecord): string {
  if (r.kind === 'memory_pressure') return formatPressureLine(r);
  const container = r.container_id
    ? `${r.container_runtime} ${r.container_id.slice(0, 12)}${r.pod_uid ? ` pod ${r.pod_uid} (${r.k8s_qos || 'unknown qos'})` : ''}`
    : '-';
  const lines = [
    `OOM kill  ${r.time}  host ${r.host}  [${r.constraint}${r.constraint_inferred ? ', inferred' : ''}, hook ${r.hook}]`,
    `  victim   pid ${r.victim_pid} (${r.victim_comm}) uid ${r.victim_uid ?? '?'} oom_score_adj ${r.victim_oom_score_adj ?? '?'}`,
    `  memory   anon ${mib(r.victim_anon_rss_kb)}  file ${mib(r.victim_file_rss_kb)}  shmem ${mib(r.victim_shmem_rss_kb)}  total-vm ${mib(r.victim_total_vm_kb)}  pgtables ${r.victim_pgtables_kb ?? '?'} kB`,
    `  cgroup   victim ${r.victim_cgroup || '?'}  oom ${r.oom_cgroup || '?'}  limit ${bytesMib(r.memcg_limit_bytes)} usage ${bytesMib(r.memcg_usage_bytes)}`,
    ...(r.oom_scope ? [`  limit    ${describeScope(r)} [oom_scope ${r.oom_scope}]`] : []),
    `  trigger  pid ${r.trigger_pid || '?'} (${r.trigger_comm || '?'})${r.gfp_mask ? ` gfp_mask=${r.gfp_mask} order=${r.order}` : ''}`,
    `  container ${container}`,
    ...workloadLines(r),
    ...formatMemoryAtKill(r),
    ...(r.trail ? [`  trail    ${formatTrail(r)}`] : []),
    ...(r.trail ? [`  picture  ${sparkline(r.trail)}`] : []),
    ...(r.victim_exit_latency_ms !== undefined && r.victim_exit_latency_ms !== null ? [`  exited   ${r.victim_exit_latency_ms.toFixed(1)} ms after the kill`] : []),
    `  event_id ${r.event_id}`,
  ];
  // comm, cgroup and container names come from other tenants: one escaped line each, whatever they hold
  return lines.map(escapeControl).join('\n') + '\n';
}

/** Which workload, and what the kill did to it: "pod shop/web-7d9f container app image nginx:1.27 — container init, …". */
function workloadLines(r: OomRecord): string[] {
  const named = r.pod_name || r.container_name || r.container_image;
  const who = [
    r.pod_name ? `pod ${r.pod_namespace ? `${r.pod_namespace}/` : ''}${r.pod_name}` : '',
    // the name heuristic's guess; a bare Pod says nothing the pod name did not
    r.workload_kind && r.workload_kind !== 'Pod' ? `(${r.workload_kind} ${r.workload_name ?? '?'})` : '',
    r.k8s_container ? `container ${r.k8s_container}` : r.container_name ? `container ${r.container_name}` : '',
    r.container_image ? `image ${r.container_image}` : '',
  ].filter(Boolean);
  const what = r.oom_group_kill
    ? `group kill (memory.oom.group)${r.oom_group_kill_size ? ` of ${r.oom_group_kill_size} processes` : ''}: every process of the group is killed${r.container_id ? ', the container exits' : ''}`
    : r.victim_is_container_init === true
      ? `container init (pid 1 in its namespace): the container exits${r.pod_name ? ' and restarts' : ''}`
      : r.victim_is_container_init === false && r.container_id
        ? `child process (pid ${r.victim_ns_pid ?? '?'} in its namespace); the container keeps running`
        : '';
  if (!named && !what) return [];
  return [`  workload ${[who.join(' '), what].filter(Boolean).join(' — ')}`];
}

/** First → last usage over the trail and the reclaim stall in it: was it coming? */
function formatTrail(r: OomRecord): string {
  const t = r.trail!;
  const usage = t.usage_bytes.filter((u): u is number => u !== null);
  const stall = [...t.reclaim_stall_ms, t.at_record?.reclaim_stall_ms ?? 0].reduce<number>((a, b) => a + (b ?? 0), 0);
  const span = ((t.usage_bytes.length * t.step_ms) / 1000).toFixed(0);
  return usage.length
    ? `usage ${bytesMib(usage[0])} -> ${bytesMib(usage[usage.length - 1])} over ${span} s, reclaim stall ${stall.toFixed(1)} ms`
    : `no samples, reclaim stall ${stall.toFixed(1)} ms`;
}

const SPARK = '▁▂▃▄▅▆▇█';

/**
 * Usage against the limit over the trail's last 60 s, one character per sample: ▁ empty … █ at
 * the limit, `·` unknown. Plain characters, no colour: it reads the same in a pipe or a journal.
 */
export function sparkline(t: NonNullable<OomRecord['trail']>, windowMs = 60_000): string {
  const n = Math.max(1, Math.ceil(windowMs / t.step_ms));
  const usage = t.usage_bytes.slice(-n);
  const limit = t.limit_bytes.slice(-n);
  const chars = usage.map((u, i) => {
    const l = limit[i];
    if (u === null || l === null || l <= 0) return '·';
    const level = Math.min(SPARK.length - 1, Math.max(0, Math.round((u / l) * (SPARK.length - 1))));
    return SPARK[level];
  });
  const last = limit.filter((l): l is number => l !== null).pop() ?? null;
  return `${chars.join('')}  usage of ${bytesMib(last)} limit, last ${((usage.length * t.step_ms) / 1000).toFixed(0)} s`;
}

/** "memory at kill" line, cause, and the top candidates with the victim marked. */
function formatMemoryAtKill(r: OomRecord): string[] {
  const m = r.memory_at_kill;
  const out: string[] = [];
  if (m) {
    const share = r.victim_share === null || r.victim_share === undefined ? '' : `  victim ${(r.victim_share * 100).toFixed(0)}% of usage`;
    out.push(
      `  at kill  [${m.source}${m.scope === 'host' ? ', host' : ''}] usage ${bytesMib(m.usage_bytes)}: anon ${bytesMib(m.anon_bytes)}  file ${bytesMib(m.file_bytes)}` +
        `  shmem ${bytesMib(m.shmem_bytes)}  kernel ${bytesMib(m.kernel_bytes)}  cause ${r.cause ?? '?'}${r.cause === 'unknown' ? ' (breakdown not flushed by the kernel)' : ''}${share}`,
    );
  }
  if (r.candidates?.length && r.candidates_source === 'procfs') {
    out.push(`  candidates [procfs] read from /proc right after the kill (the kernel's table was rate-limited); the victim's row from the kernel event`);
  }
  for (const [i, c] of (r.candidates ?? []).entries()) {
    out.push(
      `  ${i === 0 ? 'top      ' : '         '}pid ${c.pid} (${c.comm}) points ${c.points ?? '-'}  rss ${mib(c.rss_kb)}` +
        `  adj ${c.oom_score_adj}${c.victim ? '  <- victim' : ''}`,
    );
  }
  return out;
}
