import { readFileSync } from 'node:fs';
import type { RawOomEvent } from '../../collectors/oomkill/event';
import { deriveEventId, SCHEMA_VERSION, type OomRecord } from '../../record/record';
import type { KmsgKill } from '../../collectors/kmsg/kmsg';
import { parseContainer } from './container';
import { oomScope } from './scope';
import { formatRfc3339Nanos } from '../../host/clock';
import type { HostFacts } from '../../host/facts';
import { candidatesFromProcfs, candidatesFromReport, causeOf, domainPages, memoryAtKill, memoryFromReport, victimShare } from './explain';

/** Options of the "why this kill" fields. */
export interface ExplainOptions {
  /** top N candidates (collectors.oomkill.candidates) */
  candidates: number;
  /** RAM + swap in pages: the domain of a global OOM */
  hostTotalPages: number | null;
}

/** RAM + swap in pages (the kernel's totalram_pages() + total_swap_pages), read once; null when unreadable. */
export function readHostTotalPages(pageSize: number, meminfo = '/proc/meminfo'): number | null {
  try {
    const text = readFileSync(meminfo, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1] ?? NaN);
    const total = Math.floor(((kb('MemTotal') + kb('SwapTotal')) * 1024) / pageSize);
    return Number.isFinite(total) ? total : null;
  } catch {
    return null;
  }
}

/** Defaults where no configuration is passed (tests, tools); the agent passes collectors.oomkill.candidates. */
export const DEFAULT_EXPLAIN: ExplainOptions = { candidates: 5, hostTotalPages: null };

/** page_counter's "no limit" is LONG_MAX / PAGE_SIZE pages; anything this large is no limit. */
const UNLIMITED_PAGES = 2 ** 50;

/** Raw kernel event + host facts → the record every sink sees. Pure apart from `toRealtimeNs`. */
export function enrich(ev: RawOomEvent, facts: HostFacts, toRealtimeNs: (bootNs: bigint) => bigint, explain: ExplainOptions = DEFAULT_EXPLAIN): OomRecord {
  const kb = (pages: number | null) => (pages === null ? null : (pages * facts.pageSize) / 1024);
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
    victim_total_vm_kb: kb(ev.totalVmPages),
    victim_anon_rss_kb: kb(ev.anonRssPages),
    victim_file_rss_kb: kb(ev.fileRssPages),
    victim_shmem_rss_kb: kb(ev.shmemRssPages),
    victim_pgtables_kb: ev.pgtablesBytes === null ? null : Math.floor(ev.pgtablesBytes / 1024),
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
    ...scopeField(ev.constraint, ev.oomCgroup?.path ?? ''),
    ...nsFields(ev, victimCgroup),
    ...(ev.oomGroupKill != null ? { oom_group_kill: ev.oomGroupKill } : {}),
    agent_version: facts.agentVersion,
    kind: 'oom_kill',
    ...(ev.victimCgroup?.truncated || ev.oomCgroup?.truncated ? { cgroup_truncated: true } : {}),
    ...explainFields(ev, facts, explain),
  };
}

function explainFields(ev: RawOomEvent, facts: HostFacts, opts: ExplainOptions): Pick<OomRecord, 'memory_at_kill' | 'candidates' | 'candidates_source' | 'cause' | 'victim_share'> {
  const mak = memoryAtKill(ev, facts.pageSize, facts.cgroupVersion);
  const total = domainPages(ev, mak, facts.pageSize, opts.hostTotalPages);
  const { anonRssPages: a, fileRssPages: f, shmemRssPages: sh } = ev;
  const rss = a !== null && f !== null && sh !== null ? (a + f + sh) * facts.pageSize : null;
  // the kernel's printed table first; else the OOM cgroup read from /proc right after the kill
  let candidates = ev.kernelReport ? candidatesFromReport(ev.kernelReport, ev.victimPid, total, facts.pageSize, opts.candidates) : null;
  let source: OomRecord['candidates_source'] = candidates ? 'kmsg' : null;
  if (!candidates && ev.procfsTasks) {
    candidates = candidatesFromProcfs(ev, ev.procfsTasks.tasks, total, facts.pageSize, opts.candidates);
    source = candidates ? 'procfs' : null;
  }
  return {
    memory_at_kill: mak,
    candidates,
    candidates_source: source,
    cause: causeOf(mak),
    victim_share: victimShare(rss, mak),
  };
}

/** `oom_scope`, absent (not null) when unknown: the record only grows by optional fields. */
function scopeField(constraint: OomRecord['constraint'], oomCgroup: string): Pick<OomRecord, 'oom_scope'> {
  const scope = oomScope({ constraint, oom_cgroup: oomCgroup });
  return scope ? { oom_scope: scope } : {};
}

/**
 * Init or child: PID 1 of a pid namespace below the host's, in a container cgroup. A container whose init
 * is not PID 1 (a pod sharing its pause container's namespace) reports its processes as children.
 */
function nsFields(ev: RawOomEvent, victimCgroup: string): Pick<OomRecord, 'victim_ns_pid' | 'victim_is_container_init'> {
  if (ev.victimNsPid == null) return {};
  const inContainer = (ev.victimNsLevel ?? 0) > 0 && parseContainer(victimCgroup).container_id !== '';
  return { victim_ns_pid: ev.victimNsPid, victim_is_container_init: inContainer && ev.victimNsPid === 1 };
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
    ...scopeField(ev.cgroup === '/' ? 'global' : 'memcg', ev.cgroup),
    agent_version: facts.agentVersion,
    kind: 'memory_pressure',
    pressure: ev.info,
  };
}

const KMSG_CONSTRAINTS: Record<string, OomRecord['constraint']> = {
  CONSTRAINT_NONE: 'global',
  CONSTRAINT_CPUSET: 'cpuset',
  CONSTRAINT_MEMORY_POLICY: 'mempolicy',
  CONSTRAINT_MEMCG: 'memcg',
};

/**
 * A kill recovered from the kernel log (`hook: "kmsg"`): every field the kernel's lines give. The
 * `oom-kill:` and `invoked oom-killer` lines are rate limited; without them constraint details,
 * cgroups, gfp_mask and order stay unknown ('' / null) rather than guessed. `toRealtimeNs` maps the
 * printk clock (ns since boot) to wall-clock ns.
 */
export function enrichKmsg(kill: KmsgKill, facts: HostFacts, toRealtimeNs: (printkNs: bigint) => bigint, explain: ExplainOptions = DEFAULT_EXPLAIN): OomRecord {
  const k = kill.killed;
  const c = kill.constraint;
  const printkNs = BigInt(kill.usec) * 1000n;
  const constraint: OomRecord['constraint'] = c ? (KMSG_CONSTRAINTS[c.constraint] ?? 'unknown') : k.global ? 'unknown' : 'memcg';
  const victimCgroup = c?.taskMemcg ?? '';
  return {
    schema_version: SCHEMA_VERSION,
    event_id: kmsgEventId(facts.bootId, kill.usec, k.pid),
    time: formatRfc3339Nanos(toRealtimeNs(printkNs)),
    host: facts.host,
    boot_id: facts.bootId,
    kernel_release: facts.kernelRelease,
    hook: 'kmsg',
    victim_pid: k.pid,
    victim_tid: k.pid,
    victim_comm: k.comm,
    victim_uid: k.uid,
    victim_total_vm_kb: k.totalVmKb,
    victim_anon_rss_kb: k.anonRssKb,
    victim_file_rss_kb: k.fileRssKb,
    victim_shmem_rss_kb: k.shmemRssKb,
    victim_pgtables_kb: k.pgtablesKb,
    victim_oom_score_adj: k.oomScoreAdj,
    trigger_pid: kill.invoked?.pid ?? 0,
    trigger_comm: kill.invoked?.comm ?? '',
    constraint,
    constraint_inferred: c === null,
    oom_cgroup: c ? (c.oomMemcg ?? '/') : '',
    victim_cgroup: victimCgroup,
    cgroup_version: facts.cgroupVersion,
    memcg_limit_bytes: null,
    memcg_usage_bytes: null,
    domain_pages: null,
    gfp_mask: kill.invoked?.gfpMask ?? null,
    order: kill.invoked?.order ?? null,
    ...parseContainer(victimCgroup),
    ...scopeField(constraint, c ? (c.oomMemcg ?? '/') : ''),
    agent_version: facts.agentVersion,
    kind: 'oom_kill',
    ...(kill.report ? explainFromReport(kill, facts, explain) : {}),
  };
}

/** A backfilled kill with its printed report: the same "why" fields, all from the report (source kmsg). */
function explainFromReport(kill: KmsgKill, facts: HostFacts, opts: ExplainOptions): Pick<OomRecord, 'memory_at_kill' | 'candidates' | 'candidates_source' | 'cause' | 'victim_share'> {
  const report = kill.report!;
  const mak = memoryFromReport(report, facts.pageSize);
  const total = mak?.scope === 'memcg' ? (mak.limit_bytes === null ? opts.hostTotalPages : Math.floor(mak.limit_bytes / facts.pageSize)) : opts.hostTotalPages;
  const k = kill.killed;
  const candidates = candidatesFromReport(report, k.pid, total, facts.pageSize, opts.candidates);
  return {
    memory_at_kill: mak,
    candidates,
    candidates_source: candidates ? 'kmsg' : null,
    cause: causeOf(mak),
    victim_share: victimShare((k.anonRssKb + k.fileRssKb + k.shmemRssKb) * 1024, mak),
  };
}

/** The id of a kill read from the kernel log: the same log line always gives the same id. */
export function kmsgEventId(bootId: string, usec: number, pid: number): string {
  return deriveEventId(bootId, BigInt(usec) * 1000n, pid);
}
