import fs from 'node:fs';
import path from 'node:path';
import type { ReclaimCollector, ReclaimStat } from '../../collectors/reclaim/collector';
import type { AllocCollector, AllocStat } from '../../collectors/alloc/collector';
import { PsiTriggers, readPsi, SYSTEM_PSI, type Psi } from '../../collectors/psi/psi';
import type { Logger } from '../../observe/logger';
import type { PressureInfo } from '../../record/record';
import { TrailStore, type TrailSample } from './store';
import { loadLibBpf } from '../../bpf/libbpf';

/** Without inotify (tick() driven by hand, or no watch could be set), past this many limited
 *  cgroups the hierarchy is walked (and limits re-read) only every REDISCOVER_TICKS steps: at
 *  10,000 cgroups a full walk costs ~250 ms of main-thread time. */
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
  /** as last read: at discovery, at each inotify event on the limit file, or at each walk */
  limit: number;
  /** the usage file, kept open and pread each step (-1: could not be opened, read by path) */
  fd: number;
}

/** A directory of the memory hierarchy the sampler knows, limited or not. */
interface Dir {
  rel: string;
  ino: bigint;
  children: Set<string>;
  watcher: fs.FSWatcher | null;
}

const readBuf = Buffer.allocUnsafe(32);

/** libc pread through koffi when libbpf/libc load (the agent), else fs.readSync (~0.7 us more per call). */
let nativePread: ((fd: number, buf: Buffer, n: number) => number) | null | undefined;
function preadUsage(fd: number): number {
  if (nativePread === undefined) {
    try {
      nativePread = loadLibBpf().pread ?? null;
    } catch {
      nativePread = null;
    }
  }
  if (nativePread) {
    const n = nativePread(fd, readBuf, readBuf.length);
    if (n < 0) throw new Error('pread failed');
    return n;
  }
  return fs.readSync(fd, readBuf, 0, readBuf.length, 0);
}

/** Parses the number at the start of readBuf[0, len): bytes as v1/v2 print them, or 'max'. */
function parseBuf(len: number): number | null {
  if (len >= 3 && readBuf[0] === 0x6d /* m */ && readBuf[1] === 0x61 && readBuf[2] === 0x78) return Infinity;
  let n = 0;
  let i = 0;
  for (; i < len; i++) {
    const c = readBuf[i] - 0x30;
    if (c < 0 || c > 9) break;
    n = n * 10 + c;
  }
  return i === 0 ? null : n;
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
  /** limited cgroups sampled each step, by directory, in discovery order */
  private tracked = new Map<string, Tracked>();
  /** bumped whenever a cgroup starts or stops being tracked: lets a reader skip an unchanged set */
  private trackedChanges = 0;
  private byRel = new Map<string, Tracked>();
  /** every directory of the hierarchy seen, by absolute path, and by id (reclaim/alloc maps key by it) */
  private dirs = new Map<string, Dir>();
  private byIno = new Map<bigint, string>();
  /** inotify on every directory (start()): the hierarchy is then rescanned only where it changed */
  private watching = false;
  private dirty = new Set<string>();
  private renamed = new Set<string>();
  private readonly limitFile: string;
  private readonly usageFile: string;
  ticks = 0;
  lastTickMs = 0;

  constructor(private readonly opts: SamplerOptions) {
    this.store = new TrailStore(opts.samples, opts.stepMs, opts.maxCgroups + 1);
    this.store.psiScope = !opts.psi?.enabled ? 'none' : opts.cgroupVersion === 2 ? 'cgroup' : 'system';
    this.limitFile = opts.cgroupVersion === 1 ? 'memory.limit_in_bytes' : 'memory.max';
    this.usageFile = opts.cgroupVersion === 1 ? 'memory.usage_in_bytes' : 'memory.current';
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
    // mkdir/rmdir and limit writes raise inotify events on cgroupfs like on any file system: with a
    // watch per directory, steps read only the kept-open usage files instead of walking the hierarchy
    this.watching = this.opts.root !== null;
    this.tick();
    this.timer = setInterval(() => this.tick(), this.opts.stepMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.watching = false;
    for (const d of this.dirs.values()) d.watcher?.close();
    for (const t of this.tracked.values()) if (t.fd >= 0) fs.closeSync(t.fd);
    this.dirs.clear();
    this.byIno.clear();
    this.tracked.clear();
    this.byRel.clear();
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
    const trackedPaths = this.byRel;
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

  private watch(dir: string): fs.FSWatcher | null {
    if (!this.watching) return null;
    try {
      const w = fs.watch(dir, { persistent: false }, (ev, name) => {
        // a write to another control file (cgroup.procs, ...) changes nothing the sampler keeps
        if (ev === 'change' && name !== this.limitFile) return;
        // a child made, removed or renamed: forgotten and rescanned whole (a name can come back as a new cgroup)
        if (ev === 'rename' && name) this.renamed.add(path.join(dir, name.toString()));
        this.dirty.add(dir);
      });
      w.on('error', () => this.dirty.add(dir));
      return w;
    } catch (err) {
      // ENOSPC (fs.inotify.max_user_watches) and the like: back to walking the hierarchy each step
      this.opts.logger.warn(`trail: cannot watch ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): walking the hierarchy each step`);
      this.unwatchAll();
      return null;
    }
  }

  private unwatchAll(): void {
    this.watching = false;
    for (const d of this.dirs.values()) {
      d.watcher?.close();
      d.watcher = null;
    }
  }

  /** Reads the limit file of `dir` and starts or stops sampling it. */
  private checkLimit(dir: string, d: Dir): void {
    const limit = readNumber(path.join(dir, this.limitFile));
    const t = this.tracked.get(dir);
    if (limit === null || limit >= UNLIMITED_BYTES) {
      if (t) this.untrack(dir, t);
      return;
    }
    if (t) {
      t.limit = limit;
      return;
    }
    if (this.tracked.size >= this.opts.maxCgroups) return;
    let fd = -1;
    try {
      fd = fs.openSync(path.join(dir, this.usageFile), 'r');
    } catch {
      /* EMFILE and the like: read by path each step */
    }
    const nt: Tracked = { rel: d.rel, dir, ino: d.ino, limit, fd };
    this.tracked.set(dir, nt);
    this.byRel.set(d.rel, nt);
    this.trackedChanges++;
  }

  private untrack(dir: string, t: Tracked): void {
    if (t.fd >= 0) fs.closeSync(t.fd);
    this.trackedChanges++;
    this.tracked.delete(dir);
    if (this.byRel.get(t.rel) === t) this.byRel.delete(t.rel);
  }

  private forget(dir: string): void {
    const d = this.dirs.get(dir);
    if (!d) return;
    for (const c of d.children) this.forget(c);
    d.watcher?.close();
    this.dirs.delete(dir);
    if (this.byIno.get(d.ino) === d.rel) this.byIno.delete(d.ino);
    const t = this.tracked.get(dir);
    if (t) this.untrack(dir, t);
  }

  /**
   * Brings what is known of `dir` up to date: its limit and its children. New children are scanned
   * whole; known ones only when `deep` (a walk without inotify), since their own watches report them.
   */
  private scan(dir: string, deep: boolean): void {
    const root = this.opts.root!;
    let d = this.dirs.get(dir);
    let entries: fs.Dirent[];
    try {
      if (!d) {
        const ino = fs.statSync(dir, { bigint: true }).ino;
        d = { rel: dir === root ? '/' : '/' + path.relative(root, dir), ino, children: new Set(), watcher: null };
        this.dirs.set(dir, d);
        this.byIno.set(ino, d.rel);
        d.watcher = this.watch(dir); // before readdir: a child made in between still raises an event
      }
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      this.forget(dir); // removed meanwhile
      return;
    }
    if (dir !== root) this.checkLimit(dir, d);
    const seen = new Set<string>();
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const c = path.join(dir, e.name);
      seen.add(c);
      if (deep || !this.dirs.has(c)) this.scan(c, deep);
    }
    for (const c of d.children) if (!seen.has(c)) this.forget(c);
    d.children = seen;
  }

  /** Keeps the known hierarchy current: rescans changed directories, or walks it all without inotify. */
  private discover(): void {
    const root = this.opts.root;
    if (!root) return;
    if (this.watching && this.dirs.size > 0) {
      if (this.dirty.size === 0) return;
      const dirty = [...this.dirty];
      this.dirty.clear();
      for (const c of this.renamed) if (c !== root) this.forget(c);
      this.renamed.clear();
      for (const dir of dirty) if (this.dirs.has(dir) || dir === root) this.scan(dir, false);
      return;
    }
    this.dirty.clear();
    this.renamed.clear();
    const large = this.tracked.size > LARGE_HOST_CGROUPS;
    if (!large || this.ticks % REDISCOVER_TICKS === 0 || this.dirs.size === 0) this.scan(root, true);
  }

  /** Usage of a tracked cgroup: pread of its kept-open file; null (and forgotten) once removed. */
  private readUsage(t: Tracked): number | null {
    if (t.fd < 0) return readNumber(path.join(t.dir, this.usageFile));
    try {
      return parseBuf(preadUsage(t.fd));
    } catch {
      // ENODEV: the cgroup was removed; its parent's rescan (or the next walk) forgets the rest
      this.untrack(t.dir, t);
      this.dirty.add(t.dir);
      this.dirty.add(path.dirname(t.dir));
      return null;
    }
  }

  /** Per-step reclaim deltas, each credited to its cgroup and every tracked ancestor. */
  private reclaimDeltas(byIno: Map<bigint, string>, commit = true): { perPath: Map<string, { stallMs: number; pages: number }>; host: { stallMs: number; pages: number } } {
    const perPath = new Map<string, { stallMs: number; pages: number }>();
    const host = { stallMs: 0, pages: 0 };
    const reclaim = this.opts.reclaim;
    if (!reclaim?.running) return { perPath, host };
    const now = reclaim.read();
    const trackedPaths = this.byRel;
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
      this.discover();
      // stall of tasks in unlimited child cgroups is credited to their limited ancestor: every
      // known directory's id maps to its path
      const { perPath, host } = this.reclaimDeltas(this.byIno);
      const allocs = this.allocDeltas(this.byIno);
      this.pendingAlloc = allocs ? allocs.host : null;
      const systemPsi = this.store.psiScope === 'none' ? null : readPsi(SYSTEM_PSI);
      const mem = hostMemory();
      this.sample('/', mem?.usage ?? null, mem?.limit ?? null, host.stallMs, host.pages, systemPsi);
      for (const t of this.tracked.values()) {
        const usage = this.readUsage(t);
        if (usage === null) continue; // removed since the walk
        let psi = systemPsi;
        if (cgroupVersion === 2 && this.store.psiScope === 'cgroup') {
          const f = path.join(t.dir, 'memory.pressure');
          psi = readPsi(f);
          this.triggers?.watch(f); // bounded by max_cgroup_triggers
        }
        const r = perPath.size ? perPath.get(t.rel) : undefined;
        this.pendingAlloc = allocs ? allocs.perPath.get(t.rel) ?? 0 : null;
        this.sample(t.rel, usage, t.limit, r?.stallMs ?? 0, r?.pages ?? 0, psi);
      }
      this.triggered.clear();
      if (this.ticks % this.opts.samples === 0) this.store.prune();
    } catch (err) {
      logger.error(`trail: sampling failed: ${(err as Error).message}`);
    }
  }

  private pendingAlloc: number | null = null;

  /** The memory-limited cgroups the sampler follows (for the kill-count audit's per-cgroup counters). */
  cgroups(): Iterable<{ rel: string; dir: string }> {
    return this.tracked.values();
  }

  /** Changes whenever the set of `cgroups()` does. */
  cgroupsVersion(): number {
    return this.trackedChanges;
  }

  /**
   * The cgroup's state now (at a kill), off the regular schedule: usage, limit and what reclaim did
   * since the last regular sample (the stall right before a kill happens at the limit, after it).
   * Leaves the rings and the reclaim baseline untouched.
   */
  sampleNow(rel: string): (TrailSample & { timeMs: number }) | null {
    const timeMs = Date.now();
    const { perPath, host } = this.reclaimDeltas(this.byIno, false);
    const r = rel === '/' ? host : perPath.get(rel);
    const running = this.opts.reclaim?.running ?? false;
    if (rel === '/') {
      const mem = hostMemory();
      const psi = this.store.psiScope === 'none' ? null : readPsi(SYSTEM_PSI);
      return { timeMs, usageBytes: mem?.usage ?? null, limitBytes: mem?.limit ?? null, reclaimStallMs: running ? r?.stallMs ?? 0 : null, reclaimedPages: running ? r?.pages ?? 0 : null, psiSome: psi?.some?.avg10 ?? null, psiFull: psi?.full?.avg10 ?? null };
    }
    const t = this.byRel.get(rel);
    if (!t) return null;
    const usage = readNumber(path.join(t.dir, this.usageFile));
    const limit = readNumber(path.join(t.dir, this.limitFile));
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
    // the previous sample is read back only for the pressure check (off by default)
    const prev = this.opts.pressure?.enabled ? this.store.latest(rel) : null;
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
