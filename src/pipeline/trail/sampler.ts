import fs from 'node:fs';
import path from 'node:path';
import type { ReclaimCollector, ReclaimStat } from '../../collectors/reclaim/collector';
import type { AllocCollector, AllocStat } from '../../collectors/alloc/collector';
import { PsiTriggers, readPsi, SYSTEM_PSI, type Psi } from '../../collectors/psi/psi';
import type { Logger } from '../../observe/logger';
import type { PressureInfo } from '../../record/record';
import { TrailStore, type TrailSample } from './store';

/** Past this many limited cgroups the hierarchy is walked (and limits re-read) only every
 *  REDISCOVER_TICKS steps: at 10,000 cgroups a full walk costs ~250 ms of main-thread time. */
const LARGE_HOST_CGROUPS = 1000;
const REDISCOVER_TICKS = 5;

/** page_counter "no limit" as v1 prints it: anything at or above 2^62 bytes is unlimited. */
const UNLIMITED_BYTES = 2 ** 62;

export interface PressureEvent {
  /** cgroup path relative to the memory hierarchy root ('/' for the host) */
  cgroup: string;
  /** CLOCK_BOOTTIME of the decision */
  bootNs: bigint;
  usageBytes: number | null;
  limitBytes: number | null;
  info: PressureInfo;
}

export interface SamplerOptions {
  logger: Logger;
  cgroupVersion: 1 | 2 | null;
  /** memory hierarchy root: /sys/fs/cgroup/memory (v1) or /sys/fs/cgroup (v2) */
  root: string | null;
  stepMs: number;
  samples: number;
  maxCgroups: number;
  reclaim: ReclaimCollector | null;
  alloc?: AllocCollector | null;
  psi: { enabled: boolean; stallUs: number; windowUs: number; maxCgroupTriggers: number } | null;
  pressure: { enabled: boolean; usageRatio: number; psiFullAvg10: number; minIntervalMs: number } | null;
  nowBootNs: () => bigint;
  onPressure: (ev: PressureEvent) => void;
}

interface Tracked {
  rel: string;
  dir: string;
  ino: bigint;
  /** as read at discovery */
  limit: number;
}

function readNumber(file: string): number | null {
  try {
    const t = fs.readFileSync(file, 'utf8').trim();
    if (t === 'max') return Infinity;
    const n = Number(t);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

/** Host memory as a "root cgroup": MemTotal and MemTotal − MemAvailable, bytes. */
function hostMemory(): { usage: number; limit: number } | null {
  try {
    const t = fs.readFileSync('/proc/meminfo', 'utf8');
    const total = Number(/^MemTotal:\s+(\d+)/m.exec(t)?.[1]) * 1024;
    const avail = Number(/^MemAvailable:\s+(\d+)/m.exec(t)?.[1]) * 1024;
    return Number.isFinite(total) && Number.isFinite(avail) ? { usage: total - avail, limit: total } : null;
  } catch {
    return null;
  }
}

/**
 * Once per step: walks the memory hierarchy, samples every cgroup that has a memory limit (only
 * those can have a memcg OOM) plus the host ('/'), reads the reclaim collector's per-cgroup
 * counters once (one map pass), PSI (per cgroup on v2, the system's otherwise), records one trail
 * sample per cgroup and checks the pressure thresholds. All on the main thread, never overlapping.
 */
export class TrailSampler {
  readonly store: TrailStore;
  private timer: NodeJS.Timeout | null = null;
  private prevReclaim = new Map<bigint, ReclaimStat>();
  private lastPressure = new Map<string, number>();
  private triggered = new Set<string>();
  private triggers: PsiTriggers | null = null;
  private tracked: Tracked[] = [];
  ticks = 0;
  lastTickMs = 0;

  constructor(private readonly opts: SamplerOptions) {
    this.store = new TrailStore(opts.samples, opts.stepMs, opts.maxCgroups + 1);
    this.store.psiScope = !opts.psi?.enabled ? 'none' : opts.cgroupVersion === 2 ? 'cgroup' : 'system';
  }

  start(): void {
    const { psi, logger } = this.opts;
    if (this.opts.alloc) {
      try {
        this.opts.alloc.start();
        this.store.withAlloc = true;
      } catch (err) {
        logger.warn(`alloc collector not running: ${(err as Error).message}`);
      }
    }
    if (psi?.enabled && fs.existsSync(SYSTEM_PSI)) {
      this.triggers = new PsiTriggers({
        kind: 'some',
        stallUs: psi.stallUs,
        windowUs: psi.windowUs,
        maxFiles: 1 + psi.maxCgroupTriggers,
        logger,
        onTrigger: (file) => this.onTrigger(file),
      });
      if (!this.triggers.watch(SYSTEM_PSI)) logger.warn(`psi: no trigger on ${SYSTEM_PSI} (CONFIG_PSI, or a window the kernel refuses); sampling avg10 only`);
    } else if (psi?.enabled) {
      logger.warn(`psi: ${SYSTEM_PSI} not found (CONFIG_PSI off or psi=0): no PSI in trails`);
      this.store.psiScope = 'none';
    }
    this.tick();
    this.timer = setInterval(() => this.tick(), this.opts.stepMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.triggers?.stop();
    this.opts.alloc?.stop();
  }

  private prevAlloc = new Map<bigint, AllocStat>();

  /** Pages allocated during the step per tracked path (credited to tracked ancestors too), and in total. */
  private allocDeltas(byIno: Map<bigint, string>): { perPath: Map<string, number>; host: number } | null {
    const alloc = this.opts.alloc;
    if (!alloc?.running) return null;
    const now = alloc.read();
    const perPath = new Map<string, number>();
    let host = 0;
    const trackedPaths = new Set(this.tracked.map((t) => t.rel));
    for (const [id, st] of now) {
      const d = Number(st.pages - (this.prevAlloc.get(id)?.pages ?? 0n));
      if (d <= 0) continue;
      host += d;
      const p = byIno.get(id);
      if (!p) continue;
      for (let q = p; q !== '/' && q !== '.'; q = path.posix.dirname(q)) if (trackedPaths.has(q)) perPath.set(q, (perPath.get(q) ?? 0) + d);
    }
    this.prevAlloc = now;
    return { perPath, host };
  }

  describePsi(): string[] {
    return this.triggers?.watching ?? [];
  }

  private onTrigger(file: string): void {
    const rel = file === SYSTEM_PSI ? '/' : '/' + path.relative(this.opts.root ?? '/', path.dirname(file));
    this.triggered.add(rel);
  }

  /** Limited cgroups under the root, breadth first, at most maxCgroups. */
  private discover(): Tracked[] {
    const { root, maxCgroups, cgroupVersion } = this.opts;
    const out: Tracked[] = [];
    if (!root) return out;
    const limitFile = cgroupVersion === 1 ? 'memory.limit_in_bytes' : 'memory.max';
    const queue = [root];
    while (queue.length && out.length < maxCgroups) {
      const dir = queue.shift()!;
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) if (e.isDirectory()) queue.push(path.join(dir, e.name));
      if (dir === root) continue;
      const limit = readNumber(path.join(dir, limitFile));
      if (limit === null || limit >= UNLIMITED_BYTES) continue;
      try {
        out.push({ rel: '/' + path.relative(root, dir), dir, ino: fs.statSync(dir, { bigint: true }).ino, limit });
      } catch {
        /* removed meanwhile */
      }
    }
    return out;
  }

  /** Per-step reclaim deltas, each credited to its cgroup and every tracked ancestor. */
  private reclaimDeltas(byIno: Map<bigint, string>, commit = true): { perPath: Map<string, { stallMs: number; pages: number }>; host: { stallMs: number; pages: number } } {
    const perPath = new Map<string, { stallMs: number; pages: number }>();
    const host = { stallMs: 0, pages: 0 };
    const reclaim = this.opts.reclaim;
    if (!reclaim?.running) return { perPath, host };
    const now = reclaim.read();
    const trackedPaths = new Set(byIno.values());
    // ids unknown to the walk (unlimited cgroups) are resolved lazily only for the host total
    for (const [id, st] of now) {
      const prev = this.prevReclaim.get(id);
      const dStall = Number(st.directStallNs + st.memcgStallNs - (prev ? prev.directStallNs + prev.memcgStallNs : 0n)) / 1e6;
      const dPages = Number(st.directReclaimed + st.memcgReclaimed - (prev ? prev.directReclaimed + prev.memcgReclaimed : 0n));
      if (dStall <= 0 && dPages <= 0) continue;
      host.stallMs += dStall;
      host.pages += dPages;
      const p = byIno.get(id);
      if (!p) continue;
      for (let q = p; q !== '/' && q !== '.'; q = path.posix.dirname(q)) {
        if (!trackedPaths.has(q)) continue;
        const acc = perPath.get(q) ?? { stallMs: 0, pages: 0 };
        acc.stallMs += dStall;
        acc.pages += dPages;
        perPath.set(q, acc);
      }
    }
    if (commit) this.prevReclaim = now;
    return { perPath, host };
  }

  tick(): void {
    const { cgroupVersion, logger } = this.opts;
    try {
      const nowMs = Date.now();
      this.store.beginTick(nowMs);
      this.ticks++;
      this.lastTickMs = nowMs;
      // the walk (readdir + stat per cgroup) is the expensive part: redone every REDISCOVER_TICKS
      // ticks; in between the known cgroups are read (a removed one drops out when its read fails)
      const large = this.tracked.length > LARGE_HOST_CGROUPS;
      if (!large || this.ticks % REDISCOVER_TICKS === 0) this.tracked = this.discover();
      // stall of tasks in unlimited child cgroups is credited to their limited ancestor: map every
      // cgroup directory's id only when the reclaim map names ids we do not know
      const byIno = new Map<bigint, string>(this.tracked.map((t) => [t.ino, t.rel]));
      this.lastIds = this.withChildIds(byIno);
      const { perPath, host } = this.reclaimDeltas(this.lastIds);
      const allocs = this.allocDeltas(this.lastIds);
      this.pendingAlloc = allocs ? allocs.host : null;
      const systemPsi = this.store.psiScope === 'none' ? null : readPsi(SYSTEM_PSI);
      const mem = hostMemory();
      this.sample('/', mem?.usage ?? null, mem?.limit ?? null, host.stallMs, host.pages, systemPsi);
      for (const t of this.tracked) {
        const usage = readNumber(path.join(t.dir, cgroupVersion === 1 ? 'memory.usage_in_bytes' : 'memory.current'));
        // small hosts re-read the limit every step (discover() just did); large ones at each walk
        const limit = t.limit;
        if (usage === null) continue; // removed since the walk
        let psi = systemPsi;
        if (cgroupVersion === 2 && this.store.psiScope === 'cgroup') {
          const f = path.join(t.dir, 'memory.pressure');
          psi = readPsi(f);
          this.triggers?.watch(f); // bounded by max_cgroup_triggers
        }
        const r = perPath.get(t.rel);
        this.pendingAlloc = allocs ? allocs.perPath.get(t.rel) ?? 0 : null;
        this.sample(t.rel, usage, limit, r?.stallMs ?? 0, r?.pages ?? 0, psi);
      }
      this.triggered.clear();
      if (this.ticks % this.opts.samples === 0) this.store.prune();
    } catch (err) {
      logger.error(`trail: sampling failed: ${(err as Error).message}`);
    }
  }

  private lastIds = new Map<bigint, string>();
  private pendingAlloc: number | null = null;

  /**
   * The cgroup's state now (at a kill), off the regular schedule: usage, limit and what reclaim did
   * since the last regular sample (the stall right before a kill happens at the limit, after it).
   * Leaves the rings and the reclaim baseline untouched.
   */
  /** The memory-limited cgroups the last walk found (for the kill-count audit's per-cgroup counters). */
  cgroups(): ReadonlyArray<{ rel: string; dir: string }> {
    return this.tracked;
  }

  sampleNow(rel: string): (TrailSample & { timeMs: number }) | null {
    const { cgroupVersion } = this.opts;
    const timeMs = Date.now();
    const { perPath, host } = this.reclaimDeltas(this.lastIds, false);
    const r = rel === '/' ? host : perPath.get(rel);
    const running = this.opts.reclaim?.running ?? false;
    if (rel === '/') {
      const mem = hostMemory();
      const psi = this.store.psiScope === 'none' ? null : readPsi(SYSTEM_PSI);
      return { timeMs, usageBytes: mem?.usage ?? null, limitBytes: mem?.limit ?? null, reclaimStallMs: running ? r?.stallMs ?? 0 : null, reclaimedPages: running ? r?.pages ?? 0 : null, psiSome: psi?.some?.avg10 ?? null, psiFull: psi?.full?.avg10 ?? null };
    }
    const t = this.tracked.find((x) => x.rel === rel);
    if (!t) return null;
    const usage = readNumber(path.join(t.dir, cgroupVersion === 1 ? 'memory.usage_in_bytes' : 'memory.current'));
    const limit = readNumber(path.join(t.dir, cgroupVersion === 1 ? 'memory.limit_in_bytes' : 'memory.max'));
    const psi = this.store.psiScope === 'cgroup' ? readPsi(path.join(t.dir, 'memory.pressure')) : this.store.psiScope === 'system' ? readPsi(SYSTEM_PSI) : null;
    return {
      timeMs,
      usageBytes: usage,
      limitBytes: limit === null || limit >= UNLIMITED_BYTES ? null : limit,
      reclaimStallMs: running ? Number((r?.stallMs ?? 0).toFixed(3)) : null,
      reclaimedPages: running ? r?.pages ?? 0 : null,
      psiSome: psi?.some?.avg10 ?? null,
      psiFull: psi?.full?.avg10 ?? null,
    };
  }

  private childIds = new Map<bigint, string>();
  private childIdsTick = -1;

  /** Adds ids of unlimited descendants of tracked cgroups (refreshed at most every `samples` ticks). */
  private withChildIds(byIno: Map<bigint, string>): Map<bigint, string> {
    if ((!this.opts.reclaim?.running && !this.opts.alloc?.running) || !this.opts.root) return byIno;
    if (this.childIdsTick < 0 || this.ticks - this.childIdsTick >= 10) {
      this.childIds.clear();
      for (const t of this.tracked) {
        const stack = [t.dir];
        while (stack.length && this.childIds.size < this.opts.maxCgroups) {
          const d = stack.pop()!;
          let entries: fs.Dirent[];
          try {
            entries = fs.readdirSync(d, { withFileTypes: true });
          } catch {
            continue;
          }
          for (const e of entries) {
            if (!e.isDirectory()) continue;
            const sub = path.join(d, e.name);
            stack.push(sub);
            try {
              this.childIds.set(fs.statSync(sub, { bigint: true }).ino, '/' + path.relative(this.opts.root, sub));
            } catch {
              /* gone */
            }
          }
        }
      }
      this.childIdsTick = this.ticks;
    }
    const all = new Map(this.childIds);
    for (const [k, v] of byIno) all.set(k, v);
    return all;
  }

  private sample(rel: string, usage: number | null, limit: number | null, stallMs: number, pages: number, psi: Psi | null): void {
    const s: TrailSample = {
      usageBytes: usage,
      limitBytes: limit === null || limit === Infinity || limit >= UNLIMITED_BYTES ? null : limit,
      reclaimStallMs: this.opts.reclaim?.running ? stallMs : null,
      reclaimedPages: this.opts.reclaim?.running ? pages : null,
      psiSome: psi?.some?.avg10 ?? null,
      psiFull: psi?.full?.avg10 ?? null,
      allocPages: this.pendingAlloc,
    };
    const prev = this.store.latest(rel);
    this.store.record(rel, s);
    this.checkPressure(rel, s, prev);
  }

  private checkPressure(rel: string, s: TrailSample, prev: TrailSample | null): void {
    const p = this.opts.pressure;
    if (!p?.enabled) return;
    const reasons: PressureInfo['reasons'] = [];
    const ratio = s.usageBytes !== null && s.limitBytes ? s.usageBytes / s.limitBytes : null;
    // the host's own usage includes page cache reclaim will free: only PSI speaks for '/'
    if (rel !== '/' && ratio !== null && ratio >= p.usageRatio && prev?.usageBytes != null && s.usageBytes! > prev.usageBytes) reasons.push('usage');
    // the system PSI is not this cgroup's: on v1 it fires only for '/'
    const ownPsi = rel === '/' || this.store.psiScope === 'cgroup';
    if (ownPsi && s.psiFull !== null && s.psiFull >= p.psiFullAvg10) reasons.push('psi_full');
    if (ownPsi && this.triggered.has(rel)) reasons.push('psi_trigger');
    if (!reasons.length) return;
    const nowMs = Date.now();
    const last = this.lastPressure.get(rel);
    if (last !== undefined && nowMs - last < p.minIntervalMs) return;
    this.lastPressure.set(rel, nowMs);
    if (this.lastPressure.size > 2 * this.opts.maxCgroups) {
      for (const [k, t] of this.lastPressure) if (nowMs - t >= p.minIntervalMs) this.lastPressure.delete(k);
    }
    this.opts.onPressure({
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
    });
  }
}
