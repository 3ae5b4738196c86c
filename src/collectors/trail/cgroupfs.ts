import fs from 'node:fs';
import path from 'node:path';
import { loadLibBpf } from '../../bpf/libbpf';
import type { Logger } from '../../observe/logger';
import { parsePsiAvg10, type PsiAvg10 } from '../psi/psi';
import { FdBudget } from './fdbudget';

/** Without inotify (tick() driven by hand, or no watch could be set), past this many limited
 *  cgroups the hierarchy is walked (and limits re-read) only every REDISCOVER_TICKS steps: at
 *  10,000 cgroups a full walk costs ~250 ms of main-thread time. */
const LARGE_HOST_CGROUPS = 1000;
const REDISCOVER_TICKS = 5;

/** page_counter "no limit" as v1 prints it: anything at or above 2^62 bytes is unlimited. */
export const UNLIMITED_BYTES = 2 ** 62;

/** A memory-limited cgroup the walker follows. */
export interface TrackedCgroup {
  /** path relative to the memory hierarchy root */
  rel: string;
  dir: string;
  ino: bigint;
  /** the same id as a number, the key of the usage source */
  id: number;
  /** as last read: at discovery, at each inotify event on the limit file, or at each walk */
  limit: number;
  /** the usage file, kept open and pread each step without a usage source (-1: not open, read by path) */
  fd: number;
  /** its usage comes from the usage source's pass (no usage file needed) */
  viaSource: boolean;
  /** with `psiFile`: that file, kept open and pread each step (-1: not open, read by path) */
  psiFd: number;
}

/** A directory of the memory hierarchy the walker knows, limited or not. */
interface Dir {
  rel: string;
  ino: bigint;
  children: Set<string>;
  watcher: fs.FSWatcher | null;
}

const readBuf = Buffer.allocUnsafe(32);
/** a memory.pressure file: two lines of ~60-90 bytes */
const psiBuf = Buffer.allocUnsafe(256);

/** libc pread through koffi when libbpf/libc load (the agent), else fs.readSync (~0.7 us more per call). */
let nativePread: ((fd: number, buf: Buffer, n: number) => number) | null | undefined;
function pread(fd: number, buf: Buffer = readBuf): number {
  if (nativePread === undefined) {
    try {
      nativePread = loadLibBpf().pread ?? null;
    } catch {
      nativePread = null;
    }
  }
  if (nativePread) {
    const n = nativePread(fd, buf, buf.length);
    if (n < 0) throw new Error('pread failed');
    return n;
  }
  return fs.readSync(fd, buf, 0, buf.length, 0);
}

/** Open, read into `buf`, close (a by-path read: no fstat and growing buffer as in readFileSync); null: gone or unreadable. */
function readByPath(file: string, buf: Buffer): number | null {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return null;
  }
  try {
    return pread(fd, buf);
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
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

/** Cgroups given a descriptor per step once the budget has room again (bounds a step's opens). */
const PROMOTE_PER_STEP = 512;
/**
 * By-path cgroups read per step, at most: an open-read-close costs ~4x a pread of a held descriptor (6 us vs
 * 1.5 us on this host's cgroupfs), so past this many each is read every k-th step, in turn (its trail has
 * nulls between), and a step's by-path reads stay ~6 ms however many cgroups are past the budget.
 */
export const BY_PATH_PER_STEP = 512;

export function readNumber(file: string): number | null {
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
export function hostMemory(): { usage: number; limit: number } | null {
  try {
    const t = fs.readFileSync('/proc/meminfo', 'utf8');
    const total = Number(/^MemTotal:\s+(\d+)/m.exec(t)?.[1]) * 1024;
    const avail = Number(/^MemAvailable:\s+(\d+)/m.exec(t)?.[1]) * 1024;
    return Number.isFinite(total) && Number.isFinite(avail) ? { usage: total - avail, limit: total } : null;
  } catch {
    return null;
  }
}

/** Usage of many cgroups read in one pass per step (the reclaim object's cgroup iterator), by cgroup id. */
export interface UsageSource {
  /** false: not taken (full) */
  track(id: bigint): boolean;
  untrack(id: bigint): void;
  refresh(): void;
  /** bytes at the last refresh; undefined when that pass did not see the cgroup */
  usage(id: number): number | undefined;
}

export interface CgroupTreeOptions {
  logger: Logger;
  cgroupVersion: 1 | 2 | null;
  /** memory hierarchy root: /sys/fs/cgroup/memory (v1) or /sys/fs/cgroup (v2); null: none */
  root: string | null;
  maxCgroups: number;
  /** a PSI file each limited cgroup has and the sampler reads each step (v2: memory.pressure), or null */
  psiFile?: string | null;
  /** the descriptors it may keep open (shared with the PSI triggers); past it files are read by path. Default: no bound */
  fdBudget?: FdBudget;
}

/** How the limited cgroups are read: `held` have every file they need open, `byPath` open and close some each step. */
export interface TrailFdUse {
  held: number;
  byPath: number;
  /** descriptors the trail holds (with the PSI triggers') and its budget */
  fds: number;
  budget: number;
}

/**
 * What is known of the memory hierarchy: every directory (by path and by cgroup id, which the
 * reclaim/alloc maps key by) and the memory-limited cgroups among them (only those can have a
 * memcg OOM), each with its usage file kept open. With `watch()` every directory has an inotify
 * watch and `discover()` rescans only where something changed; without, it walks the hierarchy.
 */
export class CgroupTree {
  /** limited cgroups, by directory, in discovery order */
  private readonly tracked = new Map<string, TrackedCgroup>();
  private readonly byRel = new Map<string, TrackedCgroup>();
  /** bumped whenever a cgroup starts or stops being tracked: lets a reader skip an unchanged set */
  private changes = 0;
  private usageSource: UsageSource | null = null;
  private readonly dirs = new Map<string, Dir>();
  private readonly byIno = new Map<bigint, string>();
  private watching = false;
  private readonly dirty = new Set<string>();
  private readonly renamed = new Set<string>();
  readonly limitFile: string;
  readonly usageFile: string;
  readonly budget: FdBudget;
  /** a descriptor was given back since the last promotion: by-path cgroups may get one */
  private freed = false;
  /** by-path cgroups met this step and the last, the step count, and k: each is read every k-th step */
  private byPathSeen = 0;
  private byPathLast = 0;
  private steps = 0;
  private everyK = 1;

  constructor(private readonly opts: CgroupTreeOptions) {
    this.limitFile = opts.cgroupVersion === 1 ? 'memory.limit_in_bytes' : 'memory.max';
    this.usageFile = opts.cgroupVersion === 1 ? 'memory.usage_in_bytes' : 'memory.current';
    this.budget = opts.fdBudget ?? new FdBudget(Infinity);
  }

  /** Opens `file` for reading if the budget has a descriptor left; -1: read by path each step. */
  private open(file: string): number {
    if (!this.budget.take()) return -1;
    try {
      return fs.openSync(file, 'r');
    } catch {
      this.budget.give(); // ENOENT and the like: read by path each step
      return -1;
    }
  }

  private closeFd(fd: number): void {
    if (fd < 0) return;
    fs.closeSync(fd);
    this.budget.give();
    this.freed = true;
  }

  private needsOpen(t: TrackedCgroup): boolean {
    return (!t.viaSource && t.fd < 0) || (!!this.opts.psiFile && t.psiFd < 0);
  }

  /** Held vs by-path cgroups now (for the metrics; a pass over the tracked set). */
  fdUse(): TrailFdUse {
    let byPath = 0;
    for (const t of this.tracked.values()) if (this.needsOpen(t)) byPath++;
    return { held: this.tracked.size - byPath, byPath, fds: this.budget.held, budget: this.budget.max };
  }

  /** A sampling step begins: the by-path cgroups' turn (`due`) is planned from the last step's count. */
  beginStep(): void {
    this.byPathLast = this.byPathSeen;
    this.byPathSeen = 0;
    this.steps++;
    this.everyK = Math.max(1, Math.ceil(this.byPathLast / BY_PATH_PER_STEP));
  }

  /** Whether `t` is read this step: a held cgroup always, a by-path one every k-th step, in turn (call once per cgroup and step). */
  due(t: TrackedCgroup): boolean {
    if (!this.needsOpen(t)) return true;
    return (this.byPathSeen++ + this.steps) % this.everyK === 0;
  }

  /** By-path cgroups are read every this many steps (1: every step). */
  get byPathEvery(): number {
    return this.everyK;
  }

  /** Once descriptors were given back (cgroups gone): by-path cgroups get them, a bounded number per step. */
  private promote(): void {
    if (!this.freed) return;
    this.freed = false;
    let n = 0;
    for (const t of this.tracked.values()) {
      if (this.budget.left <= 0 || n >= PROMOTE_PER_STEP) break;
      if (!this.needsOpen(t)) continue;
      n++;
      if (!t.viaSource && t.fd < 0) t.fd = this.open(path.join(t.dir, this.usageFile));
      if (this.opts.psiFile && t.psiFd < 0) t.psiFd = this.open(path.join(t.dir, this.opts.psiFile));
    }
    if (n >= PROMOTE_PER_STEP) this.freed = true;
  }

  get root(): string | null {
    return this.opts.root;
  }

  /** From now on, watch every directory found (mkdir/rmdir and limit writes raise inotify events on cgroupfs). */
  watch(): void {
    this.watching = this.opts.root !== null;
  }

  /** Reads usages through `source` from now on: one pass per step instead of a pread per cgroup. */
  useUsageSource(source: UsageSource): void {
    this.usageSource = source;
    for (const t of this.tracked.values()) {
      if (!source.track(t.ino)) continue;
      t.viaSource = true;
      this.closeFd(t.fd);
      t.fd = -1;
    }
  }

  /** The usage source's pass for this step; on failure it is dropped and each file is read again. */
  refreshUsage(): void {
    if (!this.usageSource) return;
    try {
      this.usageSource.refresh();
    } catch (err) {
      this.opts.logger.warn(`trail: cgroup usage pass failed (${(err as Error).message}): reading each cgroup's ${this.usageFile} from now on`);
      this.usageSource = null;
      for (const t of this.tracked.values()) {
        t.viaSource = false;
        if (t.fd < 0) t.fd = this.open(path.join(t.dir, this.usageFile));
      }
    }
  }

  close(): void {
    this.watching = false;
    for (const d of this.dirs.values()) d.watcher?.close();
    for (const t of this.tracked.values()) {
      this.closeFd(t.fd);
      this.closeFd(t.psiFd);
    }
    this.dirs.clear();
    this.byIno.clear();
    this.tracked.clear();
    this.byRel.clear();
  }

  /** The limited cgroups, in discovery order. */
  cgroups(): Iterable<TrackedCgroup> {
    return this.tracked.values();
  }

  /** Changes whenever the set of `cgroups()` does. */
  get version(): number {
    return this.changes;
  }

  get(rel: string): TrackedCgroup | undefined {
    return this.byRel.get(rel);
  }

  isTracked(rel: string): boolean {
    return this.byRel.has(rel);
  }

  /** Every known directory's path by its cgroup id (unlimited ones too: their tasks count for a limited ancestor). */
  get idToPath(): ReadonlyMap<bigint, string> {
    return this.byIno;
  }

  private watchDir(dir: string): fs.FSWatcher | null {
    if (!this.watching) return null;
    try {
      const w = fs.watch(dir, { persistent: false }, (ev, name) => {
        // a write to another control file (cgroup.procs, ...) changes nothing the walker keeps
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

  /** Reads the limit file of `dir` and starts or stops following it. */
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
    const viaSource = this.usageSource?.track(d.ino) ?? false;
    const fd = viaSource ? -1 : this.open(path.join(dir, this.usageFile));
    const psiFd = this.opts.psiFile ? this.open(path.join(dir, this.opts.psiFile)) : -1;
    const nt: TrackedCgroup = { rel: d.rel, dir, ino: d.ino, id: Number(d.ino), limit, fd, viaSource, psiFd };
    this.tracked.set(dir, nt);
    this.byRel.set(d.rel, nt);
    this.changes++;
  }

  private untrack(dir: string, t: TrackedCgroup): void {
    this.closeFd(t.fd);
    this.closeFd(t.psiFd);
    t.fd = -1;
    t.psiFd = -1;
    this.usageSource?.untrack(t.ino);
    this.changes++;
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
        d.watcher = this.watchDir(dir); // before readdir: a child made in between still raises an event
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

  /**
   * Keeps the known hierarchy current: rescans changed directories, or walks it all without
   * inotify (on a large host only every REDISCOVER_TICKS-th `step`).
   */
  discover(step: number): void {
    const root = this.opts.root;
    if (!root) return;
    if (this.watching && this.dirs.size > 0) {
      if (this.dirty.size === 0) {
        this.promote();
        return;
      }
      const dirty = [...this.dirty];
      this.dirty.clear();
      for (const c of this.renamed) if (c !== root) this.forget(c);
      this.renamed.clear();
      for (const dir of dirty) if (this.dirs.has(dir) || dir === root) this.scan(dir, false);
      this.promote();
      return;
    }
    this.dirty.clear();
    this.renamed.clear();
    const large = this.tracked.size > LARGE_HOST_CGROUPS;
    if (!large || step % REDISCOVER_TICKS === 0 || this.dirs.size === 0) this.scan(root, true);
    this.promote();
  }

  /** Usage of a tracked cgroup: from this step's pass, else a pread of its kept-open file; null (and forgotten) once removed. */
  readUsage(t: TrackedCgroup): number | null {
    const passed = this.usageSource?.usage(t.id);
    if (passed !== undefined) return passed;
    if (t.fd < 0) {
      const n = readByPath(path.join(t.dir, this.usageFile), readBuf);
      return n === null ? null : parseBuf(n);
    }
    try {
      return parseBuf(pread(t.fd));
    } catch {
      // ENODEV: the cgroup was removed; its parent's rescan (or the next walk) forgets the rest
      this.untrack(t.dir, t);
      this.dirty.add(t.dir);
      this.dirty.add(path.dirname(t.dir));
      return null;
    }
  }

  /** avg10 of the cgroup's `psiFile`: a pread of its kept-open file (by path when not open); null once removed. */
  readPsiAvg10(t: TrackedCgroup): PsiAvg10 | null {
    if (!this.opts.psiFile) return null;
    if (t.psiFd < 0) {
      const n = readByPath(path.join(t.dir, this.opts.psiFile), psiBuf);
      return n === null ? null : parsePsiAvg10(psiBuf.toString('latin1', 0, n));
    }
    try {
      return parsePsiAvg10(psiBuf.toString('latin1', 0, pread(t.psiFd, psiBuf)));
    } catch {
      return null; // removed: the usage read forgets the cgroup
    }
  }

  /** Usage and limit read by path now (off the step schedule); null when `rel` is not followed. */
  readNow(rel: string): { dir: string; usage: number | null; limit: number | null } | null {
    const t = this.byRel.get(rel);
    if (!t) return null;
    return { dir: t.dir, usage: readNumber(path.join(t.dir, this.usageFile)), limit: readNumber(path.join(t.dir, this.limitFile)) };
  }
}
