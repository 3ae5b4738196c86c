import type { Trail } from '../../record/record';

export interface TrailSample {
  usageBytes: number | null;
  limitBytes: number | null;
  reclaimStallMs: number | null;
  reclaimedPages: number | null;
  psiSome: number | null;
  psiFull: number | null;
  /** pages allocated during the step (alloc collector), null when it is off */
  allocPages?: number | null;
}

/**
 * Fixed-size rings for one cgroup in two typed arrays (few objects: 10,000 rings must stay small):
 * `wide` holds usage and limit as float64 (exact to 2^53 bytes), `narrow` the five float32 columns
 * (stall, reclaimed, psi some, psi full, alloc). Per sample 2 × 8 + 5 × 4 = 36 B; NaN is "unknown".
 */
const W = 2;
const N = 5;
const COL = { usage: 0, limit: 1, stall: 0, reclaimed: 1, psiSome: 2, psiFull: 3, alloc: 4 } as const;

const v = (x: number | null | undefined): number => (x === null || x === undefined ? NaN : x);

class Ring {
  readonly wide: Float64Array;
  readonly narrow: Float32Array;
  /** index of the next write */
  head = 0;
  count = 0;
  /** tick index of the last sample: a gap in ticks is filled with unknowns */
  lastTick = -1;

  constructor(readonly size: number) {
    this.wide = new Float64Array(size * W);
    this.narrow = new Float32Array(size * N);
  }

  push(s: TrailSample | null): void {
    const i = this.head;
    this.wide[i * W + COL.usage] = v(s?.usageBytes);
    this.wide[i * W + COL.limit] = v(s?.limitBytes);
    this.narrow[i * N + COL.stall] = v(s?.reclaimStallMs);
    this.narrow[i * N + COL.reclaimed] = v(s?.reclaimedPages);
    this.narrow[i * N + COL.psiSome] = v(s?.psiSome);
    this.narrow[i * N + COL.psiFull] = v(s?.psiFull);
    this.narrow[i * N + COL.alloc] = v(s?.allocPages);
    this.head = (i + 1) % this.size;
    this.count = Math.min(this.count + 1, this.size);
  }

  at(a: Float64Array | Float32Array, stride: number, col: number, slot: number): number {
    return a[slot * stride + col];
  }

  column(a: Float64Array | Float32Array, stride: number, col: number, digits: number | null): Array<number | null> {
    const out: Array<number | null> = [];
    const start = (this.head - this.count + this.size) % this.size;
    for (let k = 0; k < this.count; k++) {
      const x = a[((start + k) % this.size) * stride + col];
      out.push(Number.isNaN(x) ? null : digits === null ? x : Number(x.toFixed(digits)));
    }
    return out;
  }
}

/** Bytes one cgroup's ring takes (typed-array payload), for the stated bound. */
export function ringBytes(samples: number): number {
  return samples * (2 * 8 + 5 * 4);
}

/**
 * A bounded ring per active cgroup, keyed by its path relative to the memory hierarchy root.
 * At most `maxCgroups` rings: the least recently sampled one is dropped for a new one.
 * Bound: maxCgroups × (ringBytes(samples) + ~800 B of objects, key and sampler state); 10,000
 * cgroups × 60 samples ≈ 10,000 × (2,160 + 800) B ≈ 30 MB (bench/overhead-trail.ts measured 29.5 MB).
 */
export class TrailStore {
  private readonly rings = new Map<string, Ring>();
  private tick = -1;
  private tickStartMs = 0;
  psiScope: Trail['psi_scope'] = 'none';
  /** the alloc collector runs: trails carry alloc_pages */
  withAlloc = false;

  constructor(
    readonly samples: number,
    readonly stepMs: number,
    readonly maxCgroups: number,
  ) {}

  get size(): number {
    return this.rings.size;
  }

  /** Starts a sampling round at wall-clock `nowMs`; the samples recorded until the next call belong to it. */
  beginTick(nowMs: number): void {
    this.tick++;
    this.tickStartMs = nowMs;
  }

  record(cgroup: string, s: TrailSample): void {
    let ring = this.rings.get(cgroup);
    if (!ring) {
      // full: the least recently sampled ring goes. Found by a scan, only when a new cgroup comes to
      // a full store: keeping Map order as recency order cost a delete + set per cgroup and step
      if (this.rings.size >= this.maxCgroups) {
        let oldest: string | undefined;
        let oldestTick = Infinity;
        for (const [k, r] of this.rings) {
          if (r.lastTick < oldestTick) {
            oldest = k;
            oldestTick = r.lastTick;
          }
        }
        if (oldest !== undefined) this.rings.delete(oldest);
      }
      ring = new Ring(this.samples);
      this.rings.set(cgroup, ring);
    }
    if (ring.lastTick >= 0) for (let t = ring.lastTick + 1; t < this.tick && t - ring.lastTick <= this.samples; t++) ring.push(null);
    ring.lastTick = this.tick;
    ring.push(s);
  }

  /** Forgets cgroups not sampled for a full window (deleted or no longer limited). */
  prune(): void {
    for (const [k, r] of this.rings) if (this.tick - r.lastTick > this.samples) this.rings.delete(k);
  }

  latest(cgroup: string, back = 0): TrailSample | null {
    const r = this.rings.get(cgroup);
    if (!r || back >= r.count) return null;
    const i = (r.head - 1 - back + 2 * r.size) % r.size;
    const n = (x: number) => (Number.isNaN(x) ? null : x);
    return {
      usageBytes: n(r.at(r.wide, W, COL.usage, i)),
      limitBytes: n(r.at(r.wide, W, COL.limit, i)),
      reclaimStallMs: n(r.at(r.narrow, N, COL.stall, i)),
      reclaimedPages: n(r.at(r.narrow, N, COL.reclaimed, i)),
      psiSome: n(r.at(r.narrow, N, COL.psiSome, i)),
      psiFull: n(r.at(r.narrow, N, COL.psiFull, i)),
      allocPages: n(r.at(r.narrow, N, COL.alloc, i)),
    };
  }

  /** The cgroup's trail, oldest sample first; undefined when it was never sampled. */
  /** Samples run to the cgroup's last tick, step_ms apart; `late` of them were taken after `untilMs`. */
  private lateSamples(r: Ring, untilMs?: number): { lastMs: number; late: number } {
    const lastMs = this.tickStartMs - (this.tick - r.lastTick) * this.stepMs;
    const late = untilMs === undefined ? 0 : Math.min(r.count, Math.max(0, Math.ceil((lastMs - untilMs) / this.stepMs)));
    return { lastMs, late };
  }

  /**
   * Reclaim counted by the samples after `untilMs`. Each sample counts the stall of the step that
   * ends with it, so the stall at the limit just before a kill lands in the first sample after it:
   * it belongs in the record's `at_record`, not lost with the samples the trail leaves out.
   */
  lateReclaim(cgroup: string, untilMs: number): { stallMs: number; reclaimedPages: number } {
    const r = this.rings.get(cgroup);
    if (!r || r.count === 0) return { stallMs: 0, reclaimedPages: 0 };
    const { late } = this.lateSamples(r, untilMs);
    // same rounding as the trail's own columns (the ring holds float32)
    const sum = (c: number, digits: number) =>
      Number(r.column(r.narrow, N, c, digits).slice(r.count - late).reduce<number>((a, b) => a + (b ?? 0), 0).toFixed(digits));
    return { stallMs: sum(COL.stall, 3), reclaimedPages: sum(COL.reclaimed, 0) };
  }

  /**
   * The cgroup's trail, oldest first. With `untilMs` (the kill's time) samples taken after it are
   * left out: a record is built after the victim's exit, when its memory is already going.
   */
  snapshot(cgroup: string, formatTime: (ms: number) => string, untilMs?: number): Trail | undefined {
    const r = this.rings.get(cgroup);
    if (!r || r.count === 0) return undefined;
    const { lastMs, late } = this.lateSamples(r, untilMs);
    const keep = r.count - late;
    if (keep === 0) return undefined;
    const col = (a: Float64Array | Float32Array, stride: number, c: number, digits: number | null) => r.column(a, stride, c, digits).slice(0, keep);
    return {
      start: formatTime(lastMs - (r.count - 1) * this.stepMs),
      step_ms: this.stepMs,
      usage_bytes: col(r.wide, W, COL.usage, null),
      limit_bytes: col(r.wide, W, COL.limit, null),
      reclaim_stall_ms: col(r.narrow, N, COL.stall, 3),
      reclaimed_pages: col(r.narrow, N, COL.reclaimed, 0),
      psi_some_avg10: col(r.narrow, N, COL.psiSome, 2),
      psi_full_avg10: col(r.narrow, N, COL.psiFull, 2),
      psi_scope: this.psiScope,
      ...(this.withAlloc ? { alloc_pages: col(r.narrow, N, COL.alloc, 0) } : {}),
    };
  }
}
