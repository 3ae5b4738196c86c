import type { OomRecord } from '../../record/record';

const mib = (kb: number | null) => (kb === null ? '?' : `${(kb / 1024).toFixed(1)} MiB`);
const bytesMib = (b: number | null) => (b === null ? '?' : `${(b / 1048576).toFixed(1)} MiB`);

/** One human-readable block per kill, in the spirit of the classic oom monitors. */
export function formatKillBlock(r: OomRecord): string {
  const container = r.container_id
    ? `${r.container_runtime} ${r.container_id.slice(0, 12)}${r.pod_uid ? ` pod ${r.pod_uid} (${r.k8s_qos || 'unknown qos'})` : ''}`
    : '-';
  const lines = [
    `OOM kill  ${r.time}  host ${r.host}  [${r.constraint}${r.constraint_inferred ? ', inferred' : ''}, hook ${r.hook}]`,
    `  victim   pid ${r.victim_pid} (${r.victim_comm}) uid ${r.victim_uid ?? '?'} oom_score_adj ${r.victim_oom_score_adj ?? '?'}`,
    `  memory   anon ${mib(r.victim_anon_rss_kb)}  file ${mib(r.victim_file_rss_kb)}  shmem ${mib(r.victim_shmem_rss_kb)}  total-vm ${mib(r.victim_total_vm_kb)}  pgtables ${r.victim_pgtables_kb ?? '?'} kB`,
    `  cgroup   victim ${r.victim_cgroup || '?'}  oom ${r.oom_cgroup || '?'}  limit ${bytesMib(r.memcg_limit_bytes)} usage ${bytesMib(r.memcg_usage_bytes)}`,
    `  trigger  pid ${r.trigger_pid} (${r.trigger_comm})${r.gfp_mask ? ` gfp_mask=${r.gfp_mask} order=${r.order}` : ''}`,
    `  container ${container}`,
    `  event_id ${r.event_id}`,
  ];
  return lines.join('\n') + '\n';
}
