import { SCHEMA_VERSION, type OomRecord } from '../../src/record/record';

/**
 * A complete, plausible memcg kill record with fixed values; tests override what they care about.
 * The one shared fixture, so a field added to OomRecord is added here once.
 */
export function baseRecord(over: Partial<OomRecord> = {}): OomRecord {
  return {
    schema_version: SCHEMA_VERSION,
    event_id: '0123456789abcdef0123456789abcdef',
    time: '2026-11-23T06:41:00.123456789Z',
    host: 'node-1',
    boot_id: '7b7c1f5e-0a8e-4a4e-9f57-1d2f1d3f9c11',
    kernel_release: '6.18.0',
    hook: 'tp_btf',
    victim_pid: 4242,
    victim_tid: 4242,
    victim_comm: 'dd',
    victim_uid: 0,
    victim_total_vm_kb: 137512,
    victim_anon_rss_kb: 65828,
    victim_file_rss_kb: 1024,
    victim_shmem_rss_kb: 0,
    victim_pgtables_kb: 172,
    victim_oom_score_adj: 0,
    trigger_pid: 4242,
    trigger_comm: 'dd',
    constraint: 'memcg',
    constraint_inferred: true,
    oom_cgroup: '/oomtrail-test',
    victim_cgroup: '/oomtrail-test',
    cgroup_version: 1,
    memcg_limit_bytes: 67108864,
    memcg_usage_bytes: 67108864,
    domain_pages: null,
    gfp_mask: null,
    order: null,
    container_id: '',
    container_runtime: '',
    pod_uid: '',
    k8s_qos: '',
    agent_version: '0.1.0',
    ...over,
  };
}
