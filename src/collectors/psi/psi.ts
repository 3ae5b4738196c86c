import fs from 'node:fs';
import { loadLibBpf } from '../../bpf/libbpf';
import type { Logger } from '../../observe/logger';
import type { FdBudget } from '../trail/fdbudget';

export const SYSTEM_PSI = '/proc/pressure/memory';

export interface PsiLine {
  avg10: number;
  avg60: number;
  avg300: number;
  totalUs: number;
}
export interface Psi {
  some: PsiLine | null;
  full: PsiLine | null;
}

/** Parses /proc/pressure/memory or a cgroup's memory.pressure. */
export function parsePsi(text: string): Psi {
  const out: Psi = { some: null, full: null };
  for (const line of text.split('\n')) {
    const m = /^(some|full) avg10=([\d.]+) avg60=([\d.]+) avg300=([\d.]+) total=(\d+)/.exec(line);
    if (m) out[m[1] as 'some' | 'full'] = { avg10: Number(m[2]), avg60: Number(m[3]), avg300: Number(m[4]), totalUs: Number(m[5]) };
  }
  return out;
}

/** The two numbers a trail sample keeps: avg10 of "some" and of "full" (null: line absent). */
export interface PsiAvg10 {
  some: number | null;
  full: number | null;
}

/**
 * avg10 of both lines of a PSI file's text, without the regex of parsePsi: this runs for every cgroup
 * and trail step on cgroup v2 (`some avg10=1.50 avg60=…\nfull avg10=0.25 …`).
 */
export function parsePsiAvg10(text: string): PsiAvg10 {
  const at = (prefix: string): number | null => {
    const i = text.indexOf(prefix);
    if (i < 0 || (i > 0 && text[i - 1] !== '\n')) return null;
    const v = parseFloat(text.slice(i + prefix.length, i + prefix.length + 12));
    return Number.isFinite(v) ? v : null;
  };
  return { some: at('some avg10='), full: at('full avg10=') };
}

export function readPsi(file: string): Psi | null {
  try {
    return parsePsi(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

const EPOLLPRI = 0x002;
const EPOLLERR = 0x008;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;

export interface PsiTriggerOptions {
  kind: 'some' | 'full';
  /** stall time within the window that fires the trigger, µs */
  stallUs: number;
  /** window, µs (the kernel accepts 500 ms .. 10 s) */
  windowUs: number;
  /** most files watched at once (system + cgroups) */
  maxFiles: number;
  logger: Logger;
  /** called on the main thread with the file whose trigger fired */
  onTrigger: (file: string) => void;
  /** each trigger's descriptor is taken from it (the trail's): none left, no more triggers */
  fdBudget?: FdBudget;
}

/**
 * PSI triggers (Documentation/accounting/psi.rst): write "<some|full> <stall us> <window us>" to
 * an O_RDWR fd and wait for EPOLLPRI. All trigger fds sit in one epoll set waited on by one libuv
 * worker thread: no busy loop, one thread however many cgroups. The kernel wakes it at most once per
 * window per file; stop() wakes it through an eventfd in the same set (without one, a 250 ms timeout
 * re-checks for stop). Needs root and CONFIG_PSI.
 */
export class PsiTriggers {
  private readonly files = new Map<string, { fd: number; id: number }>();
  private readonly byId = new Map<number, string>();
  private nextId = 1;
  private epfd = -1;
  private wakeFd = -1;
  private stopped = false;
  private waiting: Promise<void> | null = null;
  private toClose: number[] = [];
  fired = 0;

  constructor(private readonly opts: PsiTriggerOptions) {}

  /** No more files will be watched (the bound reached, or stopped). */
  get full(): boolean {
    return this.stopped || this.files.size >= this.opts.maxFiles;
  }

  watch(file: string): boolean {
    if (this.files.has(file)) return true;
    if (this.stopped || this.files.size >= this.opts.maxFiles) return false;
    const lib = loadLibBpf();
    if (!lib.epollCreate || !lib.epollCtl || !lib.epollWaitEventsAsync) return false;
    const budget = this.opts.fdBudget;
    if (budget && !budget.take()) return false;
    const ok = this.arm(file, lib.epollCreate, lib.epollCtl);
    if (!ok) budget?.give();
    return ok;
  }

  private arm(file: string, epollCreate: () => number, epollCtl: (ep: number, op: number, fd: number, events: number, data: number) => number): boolean {
    const lib = loadLibBpf();
    if (this.epfd < 0) {
      this.epfd = epollCreate();
      if (this.epfd < 0) return false;
      const w = lib.eventfd?.() ?? -1;
      // data 0 is no trigger's id (they start at 1)
      if (w >= 0 && epollCtl(this.epfd, EPOLL_CTL_ADD, w, 1 /* EPOLLIN */, 0) >= 0) this.wakeFd = w;
      else if (w >= 0) lib.close?.(w);
    }
    let fd = -1;
    // without CAP_SYS_RESOURCE (e.g. in a container) the kernel (>= 6.5) takes only windows that are
    // multiples of 2 s: retry with the window rounded up, the stall scaled with it
    const win2s = Math.ceil(this.opts.windowUs / 2_000_000) * 2_000_000;
    const attempts = [[this.opts.stallUs, this.opts.windowUs]];
    if (win2s !== this.opts.windowUs) attempts.push([Math.round((this.opts.stallUs * win2s) / this.opts.windowUs), win2s]);
    for (const [stall, win] of attempts) {
      try {
        fd = fs.openSync(file, 'r+');
        fs.writeSync(fd, `${this.opts.kind} ${stall} ${win}\0`);
        if (win !== this.opts.windowUs) this.opts.logger.debug(`psi: trigger on ${file} uses a ${win} us window (unprivileged)`);
        break;
      } catch (err) {
        if (fd >= 0) fs.closeSync(fd);
        fd = -1;
        this.opts.logger.debug(`psi: no trigger "${this.opts.kind} ${stall} ${win}" on ${file}: ${(err as Error).message}`);
      }
    }
    if (fd < 0) return false;
    const id = this.nextId++;
    if (epollCtl(this.epfd, EPOLL_CTL_ADD, fd, EPOLLPRI, id) < 0) {
      fs.closeSync(fd);
      return false;
    }
    this.files.set(file, { fd, id });
    this.byId.set(id, file);
    if (!this.waiting) this.waiting = this.loop();
    return true;
  }

  get watching(): string[] {
    return [...this.files.keys()];
  }

  private async loop(): Promise<void> {
    const lib = loadLibBpf();
    while (!this.stopped && this.files.size) {
      const ready = await new Promise<Array<{ events: number; data: number }>>((resolve) =>
        lib.epollWaitEventsAsync!(this.epfd, 16, this.wakeFd >= 0 ? -1 : 250, (_err, r) => resolve(r)),
      );
      // fds unwatched while the wait was in flight are closed only now
      for (const fd of this.toClose.splice(0)) fs.closeSync(fd);
      if (this.stopped) break;
      for (const { events, data } of ready) {
        const file = this.byId.get(data);
        if (!file) continue;
        if (events & EPOLLERR) {
          this.unwatch(file); // the cgroup was removed
          continue;
        }
        if (events & EPOLLPRI) {
          this.fired++;
          try {
            this.opts.onTrigger(file);
          } catch (e) {
            this.opts.logger.error(`psi: trigger handler: ${(e as Error).message}`);
          }
        }
      }
    }
    for (const fd of this.toClose.splice(0)) fs.closeSync(fd);
    this.waiting = null;
  }

  unwatch(file: string): void {
    const f = this.files.get(file);
    if (!f) return;
    this.files.delete(file);
    this.byId.delete(f.id);
    this.opts.fdBudget?.give();
    loadLibBpf().epollCtl?.(this.epfd, EPOLL_CTL_DEL, f.fd, 0, 0);
    if (this.waiting) this.toClose.push(f.fd);
    else fs.closeSync(f.fd);
  }

  /** Resolves once the in-flight wait returned (≤ 250 ms) and every fd is closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    const w = this.waiting;
    if (w && this.wakeFd >= 0) loadLibBpf().eventfdSignal?.(this.wakeFd);
    for (const f of [...this.files.keys()]) this.unwatch(f);
    await w;
    for (const fd of this.toClose.splice(0)) fs.closeSync(fd);
    if (this.epfd >= 0) loadLibBpf().close?.(this.epfd);
    if (this.wakeFd >= 0) loadLibBpf().close?.(this.wakeFd);
    this.epfd = -1;
    this.wakeFd = -1;
  }
}
