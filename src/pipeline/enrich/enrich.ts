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
  };
}
