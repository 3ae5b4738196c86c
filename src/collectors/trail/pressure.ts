import type { PressureInfo, Trail } from '../../record/record';
import type { TrailSample } from './store';

export interface PressureEvent {
  /** cgroup path relative to the memory hierarchy root ('/' for the host) */
  cgroup: string;
  /** CLOCK_BOOTTIME of the decision */
  bootNs: bigint;
  usageBytes: number | null;
  limitBytes: number | null;
  info: PressureInfo;
  /** the cgroup's trail up to the decision (set by the sampler when it has one) */
  trail?: Trail;
}

export interface PressureThresholds {
  enabled: boolean;
  usageRatio: number;
  psiFullAvg10: number;
  minIntervalMs: number;
}

export interface PressureDetectorOptions {
  thresholds: PressureThresholds | null;
  /** bounds the rate-limit memory: at most 2 × this many cgroups are remembered */
  maxCgroups: number;
  nowMs: () => number;
  nowBootNs: () => bigint;
}

/**
 * Decides, per sample, whether a cgroup is under memory pressure: usage rising near its limit,
 * PSI full avg10 over the threshold, or a PSI trigger that fired during the step. At most one
 * event per cgroup per `minIntervalMs`.
 */
export class PressureDetector {
  private readonly lastFired = new Map<string, number>();
  /** cgroups whose PSI trigger fired since the step began */
  private readonly triggered = new Set<string>();

  constructor(private readonly opts: PressureDetectorOptions) {}

  get enabled(): boolean {
    return this.opts.thresholds?.enabled ?? false;
  }

  /** A PSI trigger fired for `rel`: counts at its next check, within this step. */
  noteTrigger(rel: string): void {
    this.triggered.add(rel);
  }

  /** The step is over: triggers noted during it are spent. */
  endStep(): void {
    this.triggered.clear();
  }

  /**
   * Checks the sample `s` of `rel` (with the one before it, `prev`). `ownPsi`: the PSI figures are
   * this cgroup's own (v2 per-cgroup files, or the host's for '/'); the system PSI is not a cgroup's.
   * Returns the event it fired, if any, without its trail.
   */
  check(rel: string, s: TrailSample, prev: TrailSample | null, ownPsi: boolean): PressureEvent | null {
    const p = this.opts.thresholds;
    if (!p?.enabled) return null;
    const reasons: PressureInfo['reasons'] = [];
    const ratio = s.usageBytes !== null && s.limitBytes ? s.usageBytes / s.limitBytes : null;
    // the host's own usage includes page cache reclaim will free: only PSI speaks for '/'
    if (rel !== '/' && ratio !== null && ratio >= p.usageRatio && prev?.usageBytes != null && s.usageBytes! > prev.usageBytes) reasons.push('usage');
    if (ownPsi && s.psiFull !== null && s.psiFull >= p.psiFullAvg10) reasons.push('psi_full');
    if (ownPsi && this.triggered.has(rel)) reasons.push('psi_trigger');
    if (!reasons.length) return null;
    const nowMs = this.opts.nowMs();
    const last = this.lastFired.get(rel);
    if (last !== undefined && nowMs - last < p.minIntervalMs) return null;
    this.lastFired.set(rel, nowMs);
    if (this.lastFired.size > 2 * this.opts.maxCgroups) {
      for (const [k, t] of this.lastFired) if (nowMs - t >= p.minIntervalMs) this.lastFired.delete(k);
    }
    return {
      cgroup: rel,
      bootNs: this.opts.nowBootNs(),
      usageBytes: s.usageBytes,
      limitBytes: s.limitBytes,
      info: {
        reasons,
        usage_ratio: ratio === null ? null : Number(ratio.toFixed(4)),
        psi_some_avg10: s.psiSome,
        psi_full_avg10: s.psiFull,
        reclaim_stall_ms: s.reclaimStallMs === null ? null : Number(s.reclaimStallMs.toFixed(3)),
      },
    };
  }
}
