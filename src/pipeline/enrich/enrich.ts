import type { RawOomEvent } from '../../collectors/oomkill/event';
import { FLAG } from '../../collectors/oomkill/event';
import { deriveEventId, SCHEMA_VERSION, type OomRecord } from '../../record/record';
import { parseContainer } from './container';
import { formatRfc3339Nanos, type HostFacts } from './host';

/** page_counter's "no limit" is LONG_MAX / PAGE_SIZE pages; anything this large is no limit. */
const UNLIMITED_PAGES = 2 ** 50;

/** Raw kernel event + host facts → the record every sink sees. Pure apart from `toRealtimeNs`. */
export function enrich(ev: RawOomEvent, facts: HostFacts, toRealtimeNs: (bootNs: bigint) => bigint): OomRecord {
  const kb = (pages: number) => (pages * facts.pageSize) / 1024;
  const hasVictim = (ev.flags & (FLAG.HAS_TASK | FLAG.HAS_TP_FIELDS)) !== 0;
  const bytes = (pages: number | null) => (pages === null || pages >= UNLIMITED_PAGES ? null : pages * facts.pageSize);
  const victimCgroup = ev.victimCgroup?.path ?? '';
  return {
    schema_version: SCHEMA_VERSION,
    event_id: deriveEventId(facts.bootId, ev.bootNs, ev.victimPid),
    time: formatRfc3339Nanos(toRealtimeNs(ev.bootNs)),
    host: facts.host,
    boot_id: facts.bootId,
    kernel_release: facts.kernelRelease,
    hook: ev.hook,
    victim_pid: ev.victimPid,
    victim_tid: ev.victimTid,
    victim_comm: ev.victimComm,
    victim_uid: ev.victimUid,
    victim_total_vm_kb: hasVictim ? kb(ev.totalVmPages) : null,
    victim_anon_rss_kb: hasVictim ? kb(ev.anonRssPages) : null,
    victim_file_rss_kb: hasVictim ? kb(ev.fileRssPages) : null,
    victim_shmem_rss_kb: hasVictim ? kb(ev.shmemRssPages) : null,
    victim_pgtables_kb: hasVictim ? Math.floor(ev.pgtablesBytes / 1024) : null,
    victim_oom_score_adj: ev.oomScoreAdj,
    trigger_pid: ev.triggerPid,
    trigger_comm: ev.triggerComm,
    constraint: ev.constraint,
    constraint_inferred: ev.constraintInferred,
    oom_cgroup: ev.oomCgroup?.path ?? '',
    victim_cgroup: victimCgroup,
    cgroup_version: facts.cgroupVersion,
    memcg_limit_bytes: bytes(ev.memcgLimitPages),
    memcg_usage_bytes: bytes(ev.memcgUsagePages),
    domain_pages: ev.domainPages,
    gfp_mask: ev.gfpMask === null ? null : `0x${ev.gfpMask.toString(16)}`,
    order: ev.order,
    ...parseContainer(victimCgroup),
    agent_version: facts.agentVersion,
    kind: 'oom_kill',
    ...(ev.victimCgroup?.truncated || ev.oomCgroup?.truncated ? { cgroup_truncated: true } : {}),
  };
}

/** An early-warning record for a cgroup under memory pressure (no kill): same contract, `kind` tells them apart. */
export function enrichPressure(
  ev: {
    cgroup: string;
    bootNs: bigint;
    usageBytes: number | null;
    limitBytes: number | null;
    info: NonNullable<OomRecord['pressure']>;
  },
  facts: HostFacts,
  toRealtimeNs: (bootNs: bigint) => bigint,
): OomRecord {
  return {
    schema_version: SCHEMA_VERSION,
    // pid 0 never names a victim: the id cannot collide with a kill's
    event_id: deriveEventId(facts.bootId, ev.bootNs, 0),
    time: formatRfc3339Nanos(toRealtimeNs(ev.bootNs)),
    host: facts.host,
    boot_id: facts.bootId,
    kernel_release: facts.kernelRelease,
    hook: 'tracepoint',
    victim_pid: 0,
    victim_tid: 0,
    victim_comm: '',
    victim_uid: null,
    victim_total_vm_kb: null,
    victim_anon_rss_kb: null,
    victim_file_rss_kb: null,
    victim_shmem_rss_kb: null,
    victim_pgtables_kb: null,
    victim_oom_score_adj: null,
    trigger_pid: 0,
    trigger_comm: '',
    constraint: ev.cgroup === '/' ? 'global' : 'memcg',
    constraint_inferred: true,
    oom_cgroup: ev.cgroup,
    victim_cgroup: '',
    cgroup_version: facts.cgroupVersion,
    memcg_limit_bytes: ev.limitBytes,
    memcg_usage_bytes: ev.usageBytes,
    domain_pages: null,
    gfp_mask: null,
    order: null,
    ...parseContainer(ev.cgroup),
    agent_version: facts.agentVersion,
    kind: 'memory_pressure',
    pressure: ev.info,
  };
}
