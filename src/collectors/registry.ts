import fs from 'node:fs';
import type { AppConfig } from '../config/schema';
import { silentLogger, type Logger } from '../observe/logger';
import { systemClock } from '../host/clock';
import { openFilesLimit, trailFdBudget } from '../host/limits';
import { detectCgroupVersion, memoryRoot } from '../host/facts';
import { TrailSampler, type PressureEvent } from './trail/sampler';
import { ringBytes } from './trail/store';
import { ReclaimCollector, RECLAIM_PROGRAMS } from './reclaim/collector';
import { MEMCG_USAGE_PROGRAM } from './reclaim/usage';
import { SYSTEM_PSI } from './psi/psi';
import { AllocCollector, ALLOC_HOOK, ALLOC_OBJECT_PATH, ALLOC_PROGRAM } from './alloc/collector';
import { BpfObject } from '../bpf/object';
import { withLibbpfLog } from '../bpf/log';
import { BpfError } from '../bpf/errors';
import { attachCause, readAttachFacts } from '../bpf/attach-cause';

/** Every collector oomtrail knows, its config block (`collectors.<name>`) and the kernel hooks it uses. */
export interface CollectorInfo {
  name: string;
  enabled: boolean;
  hooks: string[];
  /** can it run on this host (checked without keeping anything attached) */
  available: boolean;
  detail: string;
}

/** Builds the trail sampler around the receiver of its memory_pressure events. */
export type TrailFactory = (onPressure: (ev: PressureEvent) => void) => TrailSampler;

/**
 * The collectors beside `oomkill` that `run` starts. The trail comes as a factory: its pressure
 * events go to whoever builds it (the agent, into its queue).
 */
export function buildOptionalCollectors(config: AppConfig, logger: Logger): { reclaim: ReclaimCollector | null; trail: TrailFactory | null } {
  const reclaim = config.collectors.reclaim.enabled ? new ReclaimCollector({ logger }) : null;
  const version = detectCgroupVersion();
  // alloc or pressure without trail is refused by the loader (config/schema.ts crossCheck)
  if (!config.trail.enabled) return { reclaim, trail: null };
  const bound = ((config.trail.max_cgroups + 1) * (ringBytes(config.trail.samples) + 800)) / 1e6;
  logger.info(`trail: ${config.trail.samples} samples x ${config.trail.step_ms} ms per cgroup, at most ${config.trail.max_cgroups} cgroups (~${bound.toFixed(1)} MB)`);
  // read once at start (after Node raised the soft limit to the hard one): the rest of the agent keeps its reserve
  const nofile = openFilesLimit();
  const fds = trailFdBudget(config.trail.max_open_files, nofile?.soft ?? null);
  logger.info(
    `trail: descriptor budget ${fds.budget} (trail.max_open_files ${config.trail.max_open_files}, RLIMIT_NOFILE ${nofile ? nofile.soft : 'unknown, taken as 1024'}, ` +
      `${fds.reserve} kept for the rest of the agent); past it cgroup files are read by path`,
  );
  const trail: TrailFactory = (onPressure) =>
    new TrailSampler({
      logger,
      cgroupVersion: version,
      root: memoryRoot(version),
      stepMs: config.trail.step_ms,
      samples: config.trail.samples,
      maxCgroups: config.trail.max_cgroups,
      maxOpenFiles: fds.budget,
      reclaim,
      alloc: config.collectors.alloc.enabled ? new AllocCollector({ logger }) : null,
      psi: {
        enabled: config.collectors.psi.enabled,
        stallUs: config.collectors.psi.trigger_stall_us,
        windowUs: config.collectors.psi.trigger_window_us,
        maxCgroupTriggers: config.collectors.psi.max_cgroup_triggers,
      },
      pressure: {
        enabled: config.pressure.enabled,
        usageRatio: config.pressure.usage_ratio,
        psiFullAvg10: config.pressure.psi_full_avg10,
        minIntervalMs: config.pressure.min_interval_ms,
      },
      nowBootNs: systemClock.bootNowNs,
      onPressure,
    });
  return { reclaim, trail };
}

/** For `oomtrail check`: each collector, its hooks, and whether it can run here. */
export function describeCollectors(config: AppConfig, oomkill: { ok: boolean; hooks: string[]; detail: string }): CollectorInfo[] {
  const out: CollectorInfo[] = [
    { name: 'oomkill', enabled: config.collectors.oomkill.enabled, hooks: oomkill.hooks, available: oomkill.ok, detail: oomkill.detail },
  ];
  // reclaim: started once as `run` would (each raw tracepoint attached, the trail's usage iterator tried), then stopped
  let rAvail = false;
  let rDetail = '';
  const reclaim = new ReclaimCollector({ logger: silentLogger() });
  try {
    reclaim.start();
    const failed = reclaim.describe().unavailable.map((u) => `${u.hook.replace(/^raw_tp\//, '')}: ${u.reason}`);
    rAvail = true;
    rDetail = failed.length ? `unavailable: ${failed.join('; ')}` : 'all raw tracepoints attach';
    const root = memoryRoot(detectCgroupVersion());
    try {
      if (!root) throw new Error('no memory hierarchy');
      reclaim.memcgUsage(root);
      rDetail += '; trail usage: one cgroup-iterator pass per step';
    } catch (err) {
      rDetail += `; trail usage: each cgroup's file (no cgroup iterator: ${(err as Error).message})`;
    }
  } catch (err) {
    rDetail = (err as Error).message;
  } finally {
    reclaim.stop();
  }
  out.push({
    name: 'reclaim',
    enabled: config.collectors.reclaim.enabled,
    hooks: [...Object.values(RECLAIM_PROGRAMS).map((t) => `raw_tp/${t}`), `iter/cgroup (${MEMCG_USAGE_PROGRAM})`],
    available: rAvail,
    detail: rDetail,
  });
  let aDetail = 'attaches';
  let aOk = false;
  let attachLog: string[] = [];
  try {
    const obj = withLibbpfLog(() => BpfObject.open(ALLOC_OBJECT_PATH, [ALLOC_PROGRAM], [ALLOC_PROGRAM]));
    try {
      withLibbpfLog(() => obj.load());
      withLibbpfLog((log) => {
        attachLog = log;
        obj.attach(ALLOC_PROGRAM);
      });
      aOk = true;
    } finally {
      obj.close();
    }
  } catch (err) {
    const cause = err instanceof BpfError && err.op === 'bpf_program__attach' ? attachCause('raw_tp', err.code, readAttachFacts(), attachLog) : null;
    aDetail = (err as Error).message + (cause ? `; ${cause}` : '');
  }
  out.push({ name: 'alloc', enabled: config.collectors.alloc.enabled, hooks: [ALLOC_HOOK], available: aOk, detail: aDetail });
  const version = detectCgroupVersion();
  const psiOk = fs.existsSync(SYSTEM_PSI);
  out.push({
    name: 'psi',
    enabled: config.collectors.psi.enabled,
    hooks: [`${SYSTEM_PSI} (trigger)`, ...(version === 2 ? ['<cgroup>/memory.pressure (trigger)'] : [])],
    available: psiOk,
    detail: psiOk ? (version === 2 ? 'system and per-cgroup' : 'system only (no cgroup v2 memory controller)') : `${SYSTEM_PSI} missing (CONFIG_PSI off or psi=0)`,
  });
  return out;
}
