import { existsSync, readFileSync } from 'node:fs';
import { installLibbpfLogger, withLibbpfLog } from '../bpf/log';
import { loadLibBpf, loadedLibbpfPath } from '../bpf/libbpf';
import { companionNeeded, degradations, ensureTracefs, planFor, probeCompanions, probeHooks, victimHookOf, type CompanionProbe } from '../collectors/oomkill/hooks';
import { detectCgroupVersion, readBootId } from '../host/facts';
import { HOOK_ORDER, type Hook } from '../record/record';
import type { Logger } from '../observe/logger';
import type { AppConfig } from '../config/schema';
import { describeCollectors, type CollectorInfo } from '../collectors/registry';
import { PROGRAMS } from '../collectors/oomkill/hooks';
import type { OwnerLookupStatus } from '../pipeline/assemble/owner';
import type { RuntimeStatus } from '../pipeline/assemble/runtime/types';
import { accountKills, describeKillAccount, killKeyOfLine, readVmstatOomKills, type KillAccount } from '../pipeline/ledger';
import { killsFromKmsg, readKmsgRing } from '../collectors/kmsg/kmsg';
import { kprobesPresent, readAttachFacts } from '../bpf/attach-cause';

export const EXIT_UNAVAILABLE = 69;

export interface CheckReport {
  kernel_release: string;
  btf: boolean;
  libbpf: string | null;
  /** the runtime this agent runs on: node's version and binary, the file libbpf was mapped from */
  runtime: { node: string; node_path: string; libbpf_path: string | null };
  tracefs: string | null;
  /** tracefs is mounted but this process cannot look into it (root-only; CAP_DAC_READ_SEARCH lets it) */
  tracefs_unreadable: boolean;
  /** a kprobe PMU in sysfs or kprobe_events in tracefs */
  kprobes: boolean;
  /** kernel.perf_event_paranoid: 3 and above (a Debian/Ubuntu patch) refuses perf_event_open without CAP_SYS_ADMIN */
  perf_event_paranoid: number | null;
  lockdown: string | null;
  cgroup: { version: 1 | 2 | null; memory_controller: string | null; layout: string };
  hooks: Array<{ hook: Hook; ok: boolean; reason?: string }>;
  /** the signal companions of a pid-only mark_victim */
  companions: CompanionProbe[];
  selected: Hook | null;
  /** the programs `run` would load */
  programs: string[];
  /** what this kernel lacks and what it costs the records */
  degraded: string[];
  ok: boolean;
  /** every collector, its hooks and whether it can run here (when a config was given) */
  collectors?: CollectorInfo[];
  /** kills since boot: the kernel's count (/proc/vmstat oom_kill), the records this state dir holds, and the split between */
  kills?: { kernel: number | null; recorded: number; account: KillAccount; explained: string[] };
  /** where the configuration came from, the sinks it enables, where records and state are kept */
  config?: { sources: string[]; sinks: string[]; spool_dir: string; state: string[]; spool_in_use_by: number | null };
  /** the kernel programs `run` would have attached with this configuration (not all that can load) */
  in_use?: string[];
  /** container runtimes that name victims (enrich.runtime): socket found, API answering */
  runtimes?: RuntimeStatus[];
  /** workload owners from the Kubernetes API (enrich.kubernetes): on or off, and whether `get` is allowed */
  owner_lookup?: OwnerLookupStatus;
}

function killsSinceBoot(spoolDir: string): CheckReport['kills'] {
  const kernel = readVmstatOomKills();
  let logKills: Array<{ pid: number; usec: number; key: number }> | null = null;
  try {
    logKills = killsFromKmsg(readKmsgRing()).map((k) => ({ pid: k.killed.pid, usec: k.usec, key: killKeyOfLine(k.killed) }));
  } catch {
    /* not readable (no CAP_SYSLOG): said so in the report */
  }
  const account = accountKills(spoolDir, readBootId(), kernel, logKills);
  return { kernel, recorded: account.recorded_here, account, explained: describeKillAccount(account, spoolDir).slice(1) };
}

function cgroupLayout(): CheckReport['cgroup'] {
  const version = detectCgroupVersion();
  const hasV2Root = existsSync('/sys/fs/cgroup/cgroup.controllers');
  const hasUnified = existsSync('/sys/fs/cgroup/unified/cgroup.controllers');
  const layout = hasV2Root ? 'unified (cgroup v2)' : hasUnified || existsSync('/sys/fs/cgroup/memory') ? 'hybrid/legacy (cgroup v1 controllers)' : 'none found';
  const memory = version === 2 ? '/sys/fs/cgroup' : version === 1 ? '/sys/fs/cgroup/memory' : null;
  return { version, memory_controller: memory, layout };
}

/** What this kernel offers and which hook `run` will use; `hook` is the configured choice. */
export interface CheckContext {
  sources: string[];
  spool: { dir: string; state: string[]; heldBy: number | null };
}

export function runCheck(logger: Logger, hook: 'auto' | Hook = 'auto', config?: AppConfig, context?: CheckContext): CheckReport {
  let libbpf: string | null = null;
  try {
    libbpf = loadLibBpf().versionString();
    installLibbpfLogger(logger);
  } catch (err) {
    logger.error(`cannot load libbpf.so.1: ${(err as Error).message}`);
  }
  const tracefs = ensureTracefs();
  const facts = readAttachFacts();
  const hooks = libbpf ? probeHooks(withLibbpfLog) : HOOK_ORDER.map((h) => ({ hook: h, ok: false, reason: 'libbpf.so.1 not loadable' }));
  const companions = libbpf ? probeCompanions(withLibbpfLog) : [];
  const candidates = hook === 'auto' ? HOOK_ORDER : [hook];
  const selected = candidates.find((h) => planFor(h, hooks) !== null) ?? null;
  // as `run` does: a signal companion only where mark_victim does not hand over the task
  const base = selected ? planFor(selected, hooks) : null;
  const programs = base ? (companionNeeded(victimHookOf(base), tracefs) ? planFor(selected!, hooks, companions)! : base) : [];
  let lockdown: string | null = null;
  try {
    lockdown = readFileSync('/sys/kernel/security/lockdown', 'utf8').match(/\[(\w+)\]/)?.[1] ?? null;
  } catch {
    /* no lockdown LSM */
  }
  const collectors =
    config && libbpf
      ? describeCollectors(config, {
          ok: selected !== null,
          hooks: HOOK_ORDER.map((h) => `${h}:${PROGRAMS[h]}`),
          detail: selected ? `hook ${selected}` : 'no hook',
        })
      : undefined;
  return {
    ...(config && context
      ? {
          config: {
            sources: context.sources,
            sinks: enabledSinkNames(config),
            spool_dir: context.spool.dir,
            state: context.spool.state,
            spool_in_use_by: context.spool.heldBy,
          },
          in_use: programsInUse(config, programs, collectors),
        }
      : {}),
    collectors,
    kills: config ? killsSinceBoot(config.pipeline.spool.dir) : undefined,
    kernel_release: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    btf: existsSync('/sys/kernel/btf/vmlinux'),
    libbpf,
    runtime: { node: process.version, node_path: process.execPath, libbpf_path: libbpf ? loadedLibbpfPath() : null },
    tracefs,
    tracefs_unreadable: !tracefs && facts.tracefs === 'unreadable',
    kprobes: kprobesPresent(facts) === true,
    perf_event_paranoid: facts.paranoid,
    lockdown,
    cgroup: cgroupLayout(),
    hooks,
    companions,
    selected,
    programs,
    degraded: degradations(selected, programs, hooks, companions, tracefs),
    ok: selected !== null,
  };
}

function enabledSinkNames(config: AppConfig): string[] {
  return Object.entries(config.sinks)
    .filter(([, c]) => (c as { enabled: boolean }).enabled)
    .map(([name]) => name);
}

/**
 * What `run` would attach with this configuration: the selected hook's programs, then each enabled collector's
 * hooks where they can run here (reclaim without those its probe found unavailable; alloc only with the trail).
 */
function programsInUse(config: AppConfig, oomkill: string[], collectors: CollectorInfo[] | undefined): string[] {
  const out = config.collectors.oomkill.enabled ? oomkill.map((p) => `oomkill: ${p}`) : [];
  for (const c of collectors ?? []) {
    if (c.name === 'oomkill' || !c.enabled || !c.available) continue;
    if (c.name === 'alloc' && !config.trail.enabled) continue;
    if (c.name === 'psi' && !config.trail.enabled) continue;
    const unavailable = c.detail.startsWith('unavailable: ') ? c.detail : '';
    for (const h of c.hooks) {
      const tp = h.replace(/^tracepoint\//, '');
      if (unavailable && unavailable.includes(`${tp}:`)) continue;
      if (c.name === 'reclaim' && h.startsWith('iter/') && (!config.trail.enabled || !c.detail.includes('cgroup-iterator pass'))) continue;
      out.push(`${c.name}: ${h}`);
    }
  }
  return out;
}

export function formatCheck(r: CheckReport): string {
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const lines = [
    `kernel          ${r.kernel_release}`,
    `BTF             ${yes(r.btf)}${r.btf ? '' : '  (CONFIG_DEBUG_INFO_BTF=y is required)'}`,
    `libbpf          ${r.libbpf ? `${r.libbpf} (${r.runtime.libbpf_path ?? 'path unknown'})` : 'NOT LOADABLE (install libbpf1)'}`,
    `node            ${r.runtime.node} (${r.runtime.node_path})`,
    `ring buffer     ${r.hooks.some((h) => h.ok) ? 'yes' : 'unknown (no program loaded)'}`,
    `tracefs         ${r.tracefs ?? (r.tracefs_unreadable ? 'mounted, not readable by this process (root-only: needs CAP_DAC_READ_SEARCH)' : 'not mounted')}`,
    `kprobes         ${yes(r.kprobes)}`,
    `perf_event_paranoid ${r.perf_event_paranoid ?? 'unknown'}${r.perf_event_paranoid !== null && r.perf_event_paranoid >= 3 ? ' (Debian/Ubuntu kernels then refuse perf_event_open, i.e. kprobes and classic tracepoints, without CAP_SYS_ADMIN)' : ''}`,
    `lockdown        ${r.lockdown ?? 'none'}`,
    `cgroups         ${r.cgroup.layout}; memory controller ${r.cgroup.memory_controller ?? 'not found'} (v${r.cgroup.version ?? '?'})`,
    'hooks (tried in this order):',
    ...r.hooks.map((h) => `  ${h.hook.padEnd(11)} ${h.ok ? 'available' : `unavailable: ${h.reason}`}`),
    'signal companions (find a pid-only mark_victim\'s task):',
    ...r.companions.map((c) => `  ${c.program.padEnd(24)} ${c.ok ? 'available' : `unavailable: ${c.reason}`}`),
    ...(r.config
      ? [
          `config          ${r.config.sources.join(' <- ')}`,
          `sinks enabled   ${r.config.sinks.join(', ') || 'NONE'}`,
          `spool dir       ${r.config.spool_dir}${r.config.spool_in_use_by !== null ? ` (in use by the agent with pid ${r.config.spool_in_use_by || 'unknown'})` : ''}`,
          `state           ${r.config.state.join(', ')}`,
        ]
      : []),
    ...(r.kills ? [`kills since boot: kernel ${r.kills.kernel ?? 'unknown'}, recorded ${r.kills.recorded}`, ...r.kills.explained.map((l) => `  ${l}`)] : []),
    r.selected ? `selected hook   ${r.selected} (programs: ${r.programs.join(', ')})` : 'selected hook   NONE: no hook can capture OOM kills on this host',
    ...(r.selected ? (r.degraded.length ? ['degraded on this kernel:', ...r.degraded.map((d) => `  - ${d}`)] : ['degraded on this kernel: nothing']) : []),
    ...(r.collectors
      ? [
          'collectors:',
          ...r.collectors.map(
            (c) => `  ${c.name.padEnd(8)} ${c.enabled ? 'enabled ' : 'disabled'} ${c.available ? 'can run' : 'CANNOT run'}: ${c.detail}\n` + c.hooks.map((h) => `           ${h}`).join('\n'),
          ),
        ]
      : []),
    ...(r.in_use ? ['programs in use by run (this configuration):', ...(r.in_use.length ? r.in_use.map((p) => `  ${p}`) : ['  none'])] : []),
    ...(r.runtimes
      ? [
          'container runtimes (names for records):',
          ...(r.runtimes.length ? [] : ['  none configured']),
          ...r.runtimes.map(
            (x) =>
              `  ${x.runtime.padEnd(11)} ${x.socket}: ` +
              (!x.found ? 'not found' : x.reachable ? `reachable, ${x.containers ?? '?'} containers` : `found, NOT reachable: ${x.error ?? 'no answer'}`),
          ),
        ]
      : []),
    ...(r.owner_lookup
      ? [`workload owners: ${r.owner_lookup.detail}`, ...(r.owner_lookup.permissions ?? []).map((p) => `  ${p.kind.padEnd(10)} ${p.detail}`)]
      : []),
  ];
  return lines.join('\n') + '\n';
}
