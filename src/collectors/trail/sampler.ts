import fs from 'node:fs';
import path from 'node:path';
import type { ReclaimCollector } from '../reclaim/collector';
import type { AllocCollector } from '../alloc/collector';
import { PsiTriggers, readPsi, SYSTEM_PSI, type Psi, type PsiAvg10 } from '../psi/psi';
import type { Logger } from '../../observe/logger';
import type { Trail } from '../../record/record';
import { formatRfc3339Ms } from '../../host/clock';
import { TrailStore, type TrailSample } from './store';
import { CgroupTree, hostMemory, UNLIMITED_BYTES, type TrailFdUse } from './cgroupfs';
import { FdBudget } from './fdbudget';
import { CounterDeltas } from './deltas';
import { PressureDetector, type PressureEvent, type PressureThresholds } from './pressure';

export type { PressureEvent } from './pressure';

/** What record assembly asks of the trail: a cgroup's last seconds. */
export interface TrailSource {
  /**
   * The cgroup's trail, oldest first; undefined when it was never sampled. With `killTimeMs` (a
   * kill's wall-clock time) samples taken after it are left out, and `at_record` holds the cgroup's
   * state read now with the reclaim since the last kept sample.
   */
  trailFor(cgroup: string, killTimeMs?: number): Trail | undefined;
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
  pressure: PressureThresholds | null;
  /** descriptors the trail may keep open (cgroup files and PSI triggers; host/limits.ts trailFdBudget); default no bound */
  maxOpenFiles?: number;
  nowBootNs: () => bigint;
  /** wall clock, ms (Date.now unless a test steers it) */
  nowMs?: () => number;
  /** a memory_pressure decision, with the cgroup's trail up to it */
  onPressure: (ev: PressureEvent) => void;
}

/**
 * Once per step: brings the known memory hierarchy up to date (CgroupTree), reads the reclaim and
 * alloc collectors' counters once (CounterDeltas), PSI (per cgroup on v2, the system's otherwise),
 * records one trail sample per memory-limited cgroup plus the host ('/') and checks each against the
 * pressure thresholds (PressureDetector). All on the main thread, never overlapping.
 */
export class TrailSampler implements TrailSource {
  readonly store: TrailStore;
  private readonly tree: CgroupTree;
  private readonly deltas: CounterDeltas;
  private readonly pressure: PressureDetector;
  private readonly nowMs: () => number;
  private timer: NodeJS.Timeout | null = null;
  private triggers: PsiTriggers | null = null;
  ticks = 0;
  lastTickMs = 0;

  constructor(private readonly opts: SamplerOptions) {
    this.store = new TrailStore(opts.samples, opts.stepMs, opts.maxCgroups + 1);
    this.store.psiScope = !opts.psi?.enabled ? 'none' : opts.cgroupVersion === 2 ? 'cgroup' : 'system';
    this.nowMs = opts.nowMs ?? Date.now;
    this.tree = new CgroupTree({
      logger: opts.logger,
      cgroupVersion: opts.cgroupVersion,
      root: opts.root,
      maxCgroups: opts.maxCgroups,
      psiFile: this.store.psiScope === 'cgroup' ? 'memory.pressure' : null,
      fdBudget: new FdBudget(opts.maxOpenFiles ?? Infinity),
    });
    this.deltas = new CounterDeltas(opts.reclaim, opts.alloc ?? null);
    this.pressure = new PressureDetector({ thresholds: opts.pressure, maxCgroups: opts.maxCgroups, nowMs: this.nowMs, nowBootNs: opts.nowBootNs });
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
        fdBudget: this.tree.budget,
        logger,
        onTrigger: (file) => this.pressure.noteTrigger(file === SYSTEM_PSI ? '/' : '/' + path.relative(this.opts.root ?? '/', path.dirname(file))),
      });
      if (!this.triggers.watch(SYSTEM_PSI)) logger.warn(`psi: no trigger on ${SYSTEM_PSI} (CONFIG_PSI, or a window the kernel refuses); sampling avg10 only`);
    } else if (psi?.enabled) {
      logger.warn(`psi: ${SYSTEM_PSI} not found (CONFIG_PSI off or psi=0): no PSI in trails`);
      this.store.psiScope = 'none';
    }
    const { reclaim, root } = this.opts;
    if (reclaim?.running && root) {
      try {
        this.tree.useUsageSource(reclaim.memcgUsage(root));
        logger.info('trail: usage of every cgroup read by one cgroup-iterator pass per step');
      } catch (err) {
        logger.info(`trail: usage read from each cgroup's file (no cgroup iterator: ${(err as Error).message})`);
      }
    }
    // with a watch per directory, steps read only the usages instead of walking the hierarchy
    this.tree.watch();
    this.tick();
    this.timer = setInterval(() => this.tick(), this.opts.stepMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.tree.close();
    await this.triggers?.stop();
    this.opts.alloc?.stop();
  }

  describePsi(): string[] {
    return this.triggers?.watching ?? [];
  }

  /** The memory-limited cgroups the sampler follows (for the kill-count audit's per-cgroup counters). */
  cgroups(): Iterable<{ rel: string; dir: string }> {
    return this.tree.cgroups();
  }

  /** Cgroups read through held descriptors vs by path, and the descriptors held against the budget. */
  fdUse(): TrailFdUse {
    return this.tree.fdUse();
  }

  /** Changes whenever the set of `cgroups()` does. */
  cgroupsVersion(): number {
    return this.tree.version;
  }

  tick(): void {
    const { cgroupVersion, logger } = this.opts;
    try {
      const nowMs = this.nowMs();
      this.store.beginTick(nowMs);
      this.ticks++;
      this.lastTickMs = nowMs;
      this.tree.discover(this.ticks);
      this.tree.beginStep();
      this.tree.refreshUsage();
      // stall of tasks in unlimited child cgroups is credited to their limited ancestor: every
      // known directory's id maps to its path
      const { perPath, host } = this.deltas.reclaim(this.tree);
      const allocs = this.deltas.alloc(this.tree);
      const systemPsi = this.store.psiScope === 'none' ? null : avg10(readPsi(SYSTEM_PSI));
      const mem = hostMemory();
      this.sample('/', mem?.usage ?? null, mem?.limit ?? null, host.stallMs, host.pages, allocs ? allocs.host : null, systemPsi);
      for (const t of this.tree.cgroups()) {
        // past the descriptor budget and BY_PATH_PER_STEP: not this cgroup's turn (its ring gets a null)
        if (!this.tree.due(t)) continue;
        const usage = this.tree.readUsage(t);
        if (usage === null) continue; // removed since the walk
        let psi = systemPsi;
        if (cgroupVersion === 2 && this.store.psiScope === 'cgroup') {
          psi = this.tree.readPsiAvg10(t);
          // bounded by max_cgroup_triggers and the descriptor budget: once either is spent, a step asks nothing of it
          if (this.triggers && !this.triggers.full && this.tree.budget.left > 0) this.triggers.watch(path.join(t.dir, 'memory.pressure'));
        }
        const r = perPath.size ? perPath.get(t.rel) : undefined;
        this.sample(t.rel, usage, t.limit, r?.stallMs ?? 0, r?.pages ?? 0, allocs ? allocs.perPath.get(t.rel) ?? 0 : null, psi);
      }
      this.pressure.endStep();
      // rings of cgroups gone for a full window are dropped once per window (every `samples` steps)
      if (this.ticks % this.opts.samples === 0) this.store.prune();
    } catch (err) {
      logger.error(`trail: sampling failed: ${(err as Error).message}`);
    }
  }

  /**
   * The cgroup's state now (at a kill), off the regular schedule: usage, limit and what reclaim did
   * since the last regular sample (the stall right before a kill happens at the limit, after it).
   * Leaves the rings and the reclaim baseline untouched.
   */
  sampleNow(rel: string): (TrailSample & { timeMs: number }) | null {
    const timeMs = this.nowMs();
    const { perPath, host } = this.deltas.reclaim(this.tree, false);
    const r = rel === '/' ? host : perPath.get(rel);
    const running = this.deltas.reclaimRunning;
    if (rel === '/') {
      const mem = hostMemory();
      const psi = this.store.psiScope === 'none' ? null : readPsi(SYSTEM_PSI);
      return { timeMs, usageBytes: mem?.usage ?? null, limitBytes: mem?.limit ?? null, reclaimStallMs: running ? r?.stallMs ?? 0 : null, reclaimedPages: running ? r?.pages ?? 0 : null, psiSome: psi?.some?.avg10 ?? null, psiFull: psi?.full?.avg10 ?? null };
    }
    const now = this.tree.readNow(rel);
    if (!now) return null;
    const psi = this.store.psiScope === 'cgroup' ? readPsi(path.join(now.dir, 'memory.pressure')) : this.store.psiScope === 'system' ? readPsi(SYSTEM_PSI) : null;
    return {
      timeMs,
      usageBytes: now.usage,
      limitBytes: now.limit === null || now.limit >= UNLIMITED_BYTES ? null : now.limit,
      reclaimStallMs: running ? Number((r?.stallMs ?? 0).toFixed(3)) : null,
      reclaimedPages: running ? r?.pages ?? 0 : null,
      psiSome: psi?.some?.avg10 ?? null,
      psiFull: psi?.full?.avg10 ?? null,
    };
  }

  trailFor(cgroup: string, killTimeMs?: number): Trail | undefined {
    const t = this.store.snapshot(cgroup, formatRfc3339Ms, killTimeMs);
    if (!t || killTimeMs === undefined) return t;
    const now = this.sampleNow(cgroup);
    // reclaim since the last sample the trail keeps: samples after the kill are left out of it
    const late = this.store.lateReclaim(cgroup, killTimeMs);
    const plus = (x: number | null, y: number) => (x === null && y === 0 ? null : (x ?? 0) + y);
    if (now)
      t.at_record = {
        time: formatRfc3339Ms(now.timeMs),
        usage_bytes: now.usageBytes,
        limit_bytes: now.limitBytes,
        reclaim_stall_ms: plus(now.reclaimStallMs, late.stallMs),
        reclaimed_pages: plus(now.reclaimedPages, late.reclaimedPages),
        psi_some_avg10: now.psiSome,
        psi_full_avg10: now.psiFull,
      };
    return t;
  }

  private sample(rel: string, usage: number | null, limit: number | null, stallMs: number, pages: number, allocPages: number | null, psi: PsiAvg10 | null): void {
    const reclaimRunning = this.deltas.reclaimRunning;
    const s: TrailSample = {
      usageBytes: usage,
      limitBytes: limit === null || limit === Infinity || limit >= UNLIMITED_BYTES ? null : limit,
      reclaimStallMs: reclaimRunning ? stallMs : null,
      reclaimedPages: reclaimRunning ? pages : null,
      psiSome: psi?.some ?? null,
      psiFull: psi?.full ?? null,
      allocPages,
    };
    // the previous sample is read back only for the pressure check (off by default)
    const prev = this.pressure.enabled ? this.store.latest(rel) : null;
    this.store.record(rel, s);
    // the system PSI is not this cgroup's: on v1 it speaks only for '/'
    const ev = this.pressure.check(rel, s, prev, rel === '/' || this.store.psiScope === 'cgroup');
    if (!ev) return;
    const trail = this.store.snapshot(rel, formatRfc3339Ms);
    this.opts.onPressure(trail ? { ...ev, trail } : ev);
  }
}

const avg10 = (p: Psi | null): PsiAvg10 | null => (p ? { some: p.some?.avg10 ?? null, full: p.full?.avg10 ?? null } : null);
