import { BpfObject } from '../../bpf/object';
import { bpfObjectPath } from '../../bpf/objects';
import { installLibbpfLogger, withLibbpfLog } from '../../bpf/log';
import type { Logger } from '../../observe/logger';
import type { CollectorDescription } from '../collector';
import { MEMCG_USAGE_PROGRAM, MemcgUsagePass } from './usage';
import { loadLibBpf } from '../../bpf/libbpf';

export const RECLAIM_OBJECT_PATH = bpfObjectPath('reclaim');

/**
 * Program name → the raw tracepoint it attaches to; each is optional (attached if this kernel has it). Raw
 * tracepoints attach through bpf() alone: no perf_event_open (Debian's perf_event_paranoid=3 refuses that to the
 * packaged unit: EACCES) and no tracepoint id from tracefs.
 */
export const RECLAIM_PROGRAMS: Record<string, string> = {
  direct_reclaim_begin: 'mm_vmscan_direct_reclaim_begin',
  direct_reclaim_end: 'mm_vmscan_direct_reclaim_end',
  memcg_reclaim_begin: 'mm_vmscan_memcg_reclaim_begin',
  memcg_reclaim_end: 'mm_vmscan_memcg_reclaim_end',
  victim_marked: 'mark_victim',
  task_exit: 'sched_process_exit',
  task_reaped: 'finish_task_reaping',
};
const DEATH_PROGRAMS = ['victim_marked', 'task_exit'];
/** Every program in the object: the tracepoints, and the memory-usage iterator the trail sampler may use. */
const RECLAIM_OBJECT_PROGRAMS = [...Object.keys(RECLAIM_PROGRAMS), MEMCG_USAGE_PROGRAM];

/** struct oomtrail_reclaim_stat (bpf/reclaim.h): six u64. */
export const RECLAIM_STAT_SIZE = 48;
/** struct oomtrail_victim_state (bpf/reclaim.h). */
export const VICTIM_STATE_SIZE = 32;

export interface ReclaimStat {
  directStallNs: bigint;
  memcgStallNs: bigint;
  directReclaimed: bigint;
  memcgReclaimed: bigint;
  directCount: bigint;
  memcgCount: bigint;
}

export function decodeReclaimStat(b: Buffer): ReclaimStat {
  return {
    directStallNs: b.readBigUInt64LE(0),
    memcgStallNs: b.readBigUInt64LE(8),
    directReclaimed: b.readBigUInt64LE(16),
    memcgReclaimed: b.readBigUInt64LE(24),
    directCount: b.readBigUInt64LE(32),
    memcgCount: b.readBigUInt64LE(40),
  };
}

export interface VictimDeath {
  markNs: bigint;
  /** null: not seen to exit (yet) */
  exitNs: bigint | null;
  reapedNs: bigint | null;
}

export function decodeVictim(b: Buffer): VictimDeath {
  const exit = b.readBigUInt64LE(8);
  const reaped = b.readBigUInt64LE(16);
  return { markNs: b.readBigUInt64LE(0), exitNs: exit ? exit : null, reapedNs: reaped ? reaped : null };
}

export interface ReclaimOptions {
  logger: Logger;
  objectPath?: string;
}

/**
 * The reclaim collector: reclaim stalls and pages reclaimed aggregated per memory cgroup in the
 * kernel (read with `read()` once per interval, on the main thread), and OOM victims' deaths.
 * Unlike oomkill it emits nothing by itself: the trail sampler and the agent pull from it.
 */
export class ReclaimCollector {
  readonly name = 'reclaim';
  private obj: BpfObject | null = null;
  private attached: string[] = [];
  private unavailable: Array<{ hook: string; reason: string }> = [];
  /** map passes made by user space (one get_next_key walk each), for the aggregation proof */
  mapReads = 0;

  constructor(private readonly opts: ReclaimOptions) {}

  private loaded: BpfObject | null = null;
  private loadError: Error | null = null;
  /** why the object was loaded without its memory-usage iterator (kernel without cgroup iterators, < 6.1) */
  private usageRefused: string | null = null;
  private usagePass: MemcgUsagePass | null = null;

  /**
   * Opens and loads the BPF object without attaching anything. `run` calls it first, before the JS
   * side grows: libbpf's parse of the kernel's BTF (~12 MB, freed right after) then peaks on a small
   * heap instead of on the running agent's. Failures are kept for `start()` to report.
   */
  load(): void {
    if (this.loaded || this.loadError || this.obj) return;
    const { logger } = this.opts;
    installLibbpfLogger(logger);
    try {
      const all = Object.keys(RECLAIM_PROGRAMS);
      let libbpfSaid: string[] = [];
      const open = (programs: string[]) =>
        withLibbpfLog((log) => {
          libbpfSaid = log;
          const o = BpfObject.open(this.opts.objectPath ?? RECLAIM_OBJECT_PATH, programs, RECLAIM_OBJECT_PROGRAMS);
          try {
            o.load();
          } catch (err) {
            o.close();
            throw err;
          }
          return o;
        });
      try {
        this.loaded = open([...all, MEMCG_USAGE_PROGRAM]);
      } catch (err) {
        // the iterator needs cgroup iterators (a feature, not a version: the load is the check); the
        // tracepoints do not. libbpf's first complaint says why (e.g. no kernel BTF type 'bpf_iter_cgroup').
        const why = libbpfSaid.find((l) => /fail|error|invalid|unknown|not /i.test(l));
        this.usageRefused = (err as Error).message + (why ? ` (${why.replace(/^libbpf: /, '')})` : '');
        this.loaded = open(all);
      }
    } catch (err) {
      this.loadError = err as Error;
    }
  }

  start(): void {
    const { logger } = this.opts;
    this.load();
    if (this.loadError) {
      const err = this.loadError;
      this.loadError = null; // a later start() tries again
      throw err;
    }
    const obj = this.loaded!;
    this.loaded = null;
    const all = Object.keys(RECLAIM_PROGRAMS);
    for (const prog of all) {
      try {
        obj.attach(prog);
        this.attached.push(prog);
      } catch (err) {
        this.unavailable.push({ hook: `raw_tp/${RECLAIM_PROGRAMS[prog]}`, reason: (err as Error).message });
      }
    }
    this.obj = obj;
    if (!this.attached.length) {
      obj.close();
      this.obj = null;
      throw new Error(`reclaim: no raw tracepoint attached: ${this.unavailable.map((u) => `${u.hook}: ${u.reason}`).join(' | ')}`);
    }
    logger.info(`reclaim: attached ${this.attached.map((p) => RECLAIM_PROGRAMS[p]).join(', ')}`);
    for (const u of this.unavailable) logger.warn(`reclaim: ${u.hook} unavailable: ${u.reason}`);
  }

  /**
   * The memory-usage iterator attached below the memory hierarchy `root`, attached at the first call
   * (the trail sampler's start); throws with the reason when this kernel or object has none.
   */
  memcgUsage(root: string): MemcgUsagePass {
    if (this.usagePass) return this.usagePass;
    if (!this.obj) throw new Error('reclaim collector not running');
    if (this.usageRefused !== null) throw new Error(`its load was refused: ${this.usageRefused}`);
    const pageSize = loadLibBpf().pageSize?.() ?? -1;
    if (pageSize <= 0) throw new Error('page size unknown');
    this.usagePass = withLibbpfLog(() => MemcgUsagePass.attach(this.obj!, root, pageSize));
    return this.usagePass;
  }

  get running(): boolean {
    return this.obj !== null;
  }

  get confirmsDeaths(): boolean {
    return DEATH_PROGRAMS.every((p) => this.attached.includes(p));
  }

  /** Cumulative counters per memory-cgroup id (kernfs id == the directory's inode number). */
  read(): Map<bigint, ReclaimStat> {
    const out = new Map<bigint, ReclaimStat>();
    if (!this.obj) return out;
    this.mapReads++;
    for (const { key, value } of this.obj.readMap('reclaim_by_cg', 8, RECLAIM_STAT_SIZE)) out.set(key.readBigUInt64LE(0), decodeReclaimStat(value));
    return out;
  }

  /** Reclaim passes the kernel side aggregated since load. */
  kernelEvents(): bigint {
    return this.obj ? this.obj.readCounter('reclaim_events') : 0n;
  }

  victim(tid: number): VictimDeath | null {
    if (!this.obj) return null;
    const key = Buffer.alloc(4);
    key.writeUInt32LE(tid >>> 0);
    const value = Buffer.alloc(VICTIM_STATE_SIZE);
    try {
      return this.obj.lookup('victims', key, value) ? decodeVictim(value) : null;
    } catch {
      return null;
    }
  }

  /**
   * Waits (polling the map from the main thread every 5 ms) until the victim has exited, at most
   * until `markBootNs + maxWaitMs` on the boot clock: a burst of kills waits about once, not per kill.
   */
  async confirmDeath(tid: number, markBootNs: bigint, maxWaitMs: number, nowBootNs: () => bigint): Promise<VictimDeath | null> {
    if (!this.obj || !this.confirmsDeaths) return null;
    const deadline = markBootNs + BigInt(maxWaitMs) * 1_000_000n;
    for (;;) {
      const v = this.victim(tid);
      if (v?.exitNs) {
        // reaping (oom_reaper) usually finishes within a few ms of the kill; give it a moment
        if (v.reapedNs === null && nowBootNs() < v.exitNs + 20_000_000n && nowBootNs() < deadline) {
          await new Promise((r) => setTimeout(r, 5));
          continue;
        }
        const key = Buffer.alloc(4);
        key.writeUInt32LE(tid >>> 0);
        this.obj?.deleteKey('victims', key);
        return v;
      }
      if (nowBootNs() >= deadline) return v;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  stop(): void {
    this.usagePass?.close();
    this.usagePass = null;
    this.obj?.close();
    this.obj = null;
    this.loaded?.close(); // loaded but never started (the agent failed to start)
    this.loaded = null;
  }

  describe(): CollectorDescription {
    return { name: this.name, hook: this.obj ? 'raw_tp' : null, programs: [...this.attached], unavailable: [...this.unavailable] };
  }
}
