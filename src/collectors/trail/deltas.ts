import path from 'node:path';
import type { ReclaimCollector, ReclaimStat } from '../reclaim/collector';
import type { AllocCollector, AllocStat } from '../alloc/collector';

export interface ReclaimDelta {
  stallMs: number;
  pages: number;
}

/** Where a cgroup id's counts go: its path, and which paths are followed (each followed ancestor is credited too). */
export interface CgroupIndex {
  idToPath: ReadonlyMap<bigint, string>;
  isTracked(rel: string): boolean;
}

/**
 * The BPF collectors' counters are cumulative per cgroup id; a trail sample holds what happened
 * during its step. This keeps the previous read of each and turns a new read into per-step deltas,
 * credited to the cgroup and every followed ancestor, plus the host total.
 */
export class CounterDeltas {
  private prevReclaim = new Map<bigint, ReclaimStat>();
  private prevAlloc = new Map<bigint, AllocStat>();

  constructor(
    private readonly reclaimSource: ReclaimCollector | null,
    private readonly allocSource: AllocCollector | null,
  ) {}

  get reclaimRunning(): boolean {
    return this.reclaimSource?.running ?? false;
  }

  /**
   * Reclaim since the previous committed read. `commit: false` (a look at a kill, off the step
   * schedule) leaves the baseline where it was, so the next step still counts it.
   */
  reclaim(index: CgroupIndex, commit = true): { perPath: Map<string, ReclaimDelta>; host: ReclaimDelta } {
    const perPath = new Map<string, ReclaimDelta>();
    const host = { stallMs: 0, pages: 0 };
    const reclaim = this.reclaimSource;
    if (!reclaim?.running) return { perPath, host };
    const now = reclaim.read();
    // ids unknown to the walk (unlimited cgroups) are resolved lazily only for the host total
    for (const [id, st] of now) {
      const prev = this.prevReclaim.get(id);
      const dStall = Number(st.directStallNs + st.memcgStallNs - (prev ? prev.directStallNs + prev.memcgStallNs : 0n)) / 1e6;
      const dPages = Number(st.directReclaimed + st.memcgReclaimed - (prev ? prev.directReclaimed + prev.memcgReclaimed : 0n));
      if (dStall <= 0 && dPages <= 0) continue;
      host.stallMs += dStall;
      host.pages += dPages;
      const p = index.idToPath.get(id);
      if (!p) continue;
      // the cgroup and each followed ancestor (the host '/' has its own total)
      for (let q = p; q !== '/' && q !== '.'; q = path.posix.dirname(q)) {
        if (!index.isTracked(q)) continue;
        const acc = perPath.get(q) ?? { stallMs: 0, pages: 0 };
        acc.stallMs += dStall;
        acc.pages += dPages;
        perPath.set(q, acc);
      }
    }
    if (commit) this.prevReclaim = now;
    return { perPath, host };
  }

  /** Pages allocated since the previous read per followed path, and in total; null when the alloc collector is off. */
  alloc(index: CgroupIndex): { perPath: Map<string, number>; host: number } | null {
    const alloc = this.allocSource;
    if (!alloc?.running) return null;
    const now = alloc.read();
    const perPath = new Map<string, number>();
    let host = 0;
    for (const [id, st] of now) {
      const d = Number(st.pages - (this.prevAlloc.get(id)?.pages ?? 0n));
      if (d <= 0) continue;
      host += d;
      const p = index.idToPath.get(id);
      if (!p) continue;
      for (let q = p; q !== '/' && q !== '.'; q = path.posix.dirname(q)) if (index.isTracked(q)) perPath.set(q, (perPath.get(q) ?? 0) + d);
    }
    this.prevAlloc = now;
    return { perPath, host };
  }
}
