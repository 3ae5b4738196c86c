import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { BpfObject, RingBufferReader } from '../../bpf/object';
import { installLibbpfLogger, withLibbpfLog } from '../../bpf/log';
import type { Collector, CollectorDescription } from '../collector';
import type { Hook } from '../../record/record';
import type { Logger } from '../../observe/logger';
import { CgroupPathMemo, decodeEvent, EVENT_HEADER_SIZE, SWEEP_GAP_NS, sweepKey, type CgroupPath, type RawOomEvent } from './event';
import { CONTEXT_HOOKS, OBJECT_PATH, PROGRAMS, loadAndAttach, VICTIM_HOOKS, companionNeeded, companionOrder, degradations, ensureTracefs, probeHook, type CompanionProbe, type HookProbe, type SignalProgram } from './hooks';
import { HOOK_ORDER } from '../../record/record';
import { KmsgFollower } from '../kmsg/kmsg';
import { OomReportParser, type ReportQuery } from '../kmsg/report';
import { loadLibBpf } from '../../bpf/libbpf';
import { readCgroupTasks, type ProcTaskRead } from './procfs';
import { detectCgroupVersion, memoryRoot } from '../../host/facts';
import { printkNowUs } from '../../host/clock';

export class CollectorError extends Error {
  readonly retriable = false;
  constructor(
    readonly code: 'NO_HOOK' | 'HOOK_UNAVAILABLE',
    message: string,
  ) {
    super(message);
    this.name = 'CollectorError';
  }
}

export interface OomKillOptions {
  hook: 'auto' | Hook;
  logger: Logger;
  objectPath?: string;
  /** collectors.oomkill.candidates: 0 turns the /proc fallback off too (default: on) */
  candidates?: number;
  /** collectors.oomkill.ring_bytes: the kernel ring buffer's size (a power of two, pages); the object's own when absent */
  ringBytes?: number;
}

/** What the ring-buffer callbacks cost: each only copies an event out (decode and every read run after). */
export interface ConsumeStats {
  /** ring_buffer__consume calls that returned events, and those events */
  calls: number;
  events: number;
  /** the longest consume call, and the most one call spent per event it returned (ms) */
  maxCallMs: number;
  maxMsPerEvent: number;
  /** events read with both cgroup paths, and header-only ones (cgroups as the last full event's) */
  fullEvents: number;
  headerEvents: number;
}

/** Reads the memory controller's path from /proc when the kernel side could not find the task. */
function procMemoryCgroup(pid: number): string | null {
  try {
    const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
    const v1 = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l));
    const v2 = lines.find((l) => l.startsWith('0::'));
    const line = v1 ?? v2;
    return line ? line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1) : null;
  } catch {
    return null;
  }
}

const MEMORY_HIERARCHIES = ['/sys/fs/cgroup/memory', '/sys/fs/cgroup'];
/** An event is stamped (bpf_ktime_get_boot_ns) a few µs before it is submitted: `flush` vouches for what came before this. */
const FLUSH_MARGIN_NS = 10_000_000n;
const FLUSH_WAIT_MS = 1000;

/**
 * A path deeper than the kernel side's 16 slots arrives cut at the root side; its kernfs id is
 * the cgroup directory's inode number, so the whole path is found in cgroupfs while the cgroup
 * exists. Only the directories whose tail matches are descended into past the cut depth.
 */
export function resolveTruncatedCgroup(cg: CgroupPath, roots = MEMORY_HIERARCHIES, maxDirs = 200_000): CgroupPath {
  if (!cg.truncated || cg.id === 0n) return cg;
  for (const root of roots) {
    let seen = 0;
    const stack = [''];
    while (stack.length && seen < maxDirs) {
      const rel = stack.pop()!;
      seen++;
      let entries;
      try {
        entries = readdirSync(path.join(root, rel), { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        const child = `${rel}/${e.name}`;
        try {
          if (statSync(path.join(root, child), { bigint: true }).ino === cg.id) return { id: cg.id, path: child, truncated: false };
        } catch {
          continue;
        }
        stack.push(child);
      }
    }
  }
  return cg;
}

/**
 * What picks this kill's printed report: its pid (the caller), the comm and cgroups BPF read (they
 * settle an `oom-kill:` line whose names read more than one way), and its time. The kill is on
 * CLOCK_BOOTTIME, the report on the printk clock, which runs unslewed beside CLOCK_MONOTONIC: NTP
 * moves them apart by at most 500 ppm, so the window is 30 s plus twice that of the time since boot.
 */
export function reportQuery(event: RawOomEvent, bootMinusMonoNs = bootMinusMonotonicNs()): ReportQuery {
  const killUs = Number((event.bootNs - bootMinusMonoNs) / 1000n);
  const slack = 30_000_000 + Math.ceil(killUs / 1000);
  const cg = (c: CgroupPath | null) => (c && !c.truncated ? c.path : undefined);
  return {
    comm: event.victimComm,
    ...(event.constraint === 'memcg' && cg(event.oomCgroup) !== undefined ? { oomMemcg: cg(event.oomCgroup) } : {}),
    ...(cg(event.victimCgroup) !== undefined ? { taskMemcg: cg(event.victimCgroup) } : {}),
    notBeforeUs: killUs - slack,
    notAfterUs: killUs + slack,
  };
}

/** CLOCK_BOOTTIME − CLOCK_MONOTONIC now (the time spent suspended), ns. */
function bootMinusMonotonicNs(): bigint {
  const mono1 = process.hrtime.bigint();
  const boot = loadLibBpf().clockGettimeNs('boottime');
  const mono2 = process.hrtime.bigint();
  return boot - (mono1 + mono2) / 2n;
}

/** The oomkill collector: one RawOomEvent per victim, through the first hook this kernel allows. */
export class OomKillCollector implements Collector<RawOomEvent> {
  readonly name = 'oomkill';
  private obj: BpfObject | null = null;
  private reader: RingBufferReader | null = null;
  /** events copied out of the ring, not yet decoded and delivered */
  private pending: Buffer[] = [];
  private delivering: Promise<void> | null = null;
  private flushedThrough = 0n;
  private readonly stats: ConsumeStats = { calls: 0, events: 0, maxCallMs: 0, maxMsPerEvent: 0, fullEvents: 0, headerEvents: 0 };
  private chosen: Hook | null = null;
  private programs: string[] = [];
  private probes: HookProbe[] = [];
  private companions: CompanionProbe[] = [];
  private degraded: string[] = [];
  private emit: (e: RawOomEvent[]) => Promise<void> = async () => {};
  /** The kernel's printed reports: printed before mark_victim, so already readable when its event is. */
  private kmsg: KmsgFollower | null = null;
  private rssInexactSaid = false;
  private readonly reports = new OomReportParser();
  /** the cgroup paths of the last full event, for the header-only events of a sweep */
  private readonly cgroups = new CgroupPathMemo((id) => {
    const found = resolveTruncatedCgroup({ id, path: '', truncated: true });
    return found.truncated ? null : found;
  });
  /** the memory hierarchy's root, found at the first procfs fallback */
  private memRoot: string | null | undefined;

  private attached: { beforeUs: number; afterUs: number } | null = null;

  constructor(private readonly opts: OomKillOptions) {}

  attachWindowUs(): { beforeUs: number; afterUs: number } | null {
    return this.attached;
  }

  /**
   * Probes, loads and attaches the hook (kills from here on wait in the ring buffer until `start`).
   * Callable before the rest of the agent is built, so that libbpf's parse of the kernel's BTF
   * (~12 MB, freed right after) peaks on a small process; `start` does it when nobody did.
   */
  load(): void {
    if (this.obj) return;
    const { logger } = this.opts;
    const objectPath = this.opts.objectPath ?? OBJECT_PATH;
    installLibbpfLogger(logger);
    if (!this.kmsg) {
      // before the hook attaches: reports already in the log belong to kills not seen here
      try {
        this.kmsg = new KmsgFollower();
        this.kmsg.skip();
      } catch (err) {
        logger.info(`oomkill: kernel reports unavailable (/dev/kmsg: ${(err as Error).message}): no candidates, no kmsg fallback`);
      }
    }
    const tracefs = ensureTracefs();
    // Start-up loads as few objects as it can (each load costs seconds under emulation): a context
    // hook is probed alone first (its failure is cheap and names the reason), a victim hook is
    // loaded straight with its partners and probed alone only to explain a failure.
    const probe = (hook: Hook): HookProbe => {
      let p = this.probes.find((x) => x.hook === hook);
      if (!p) {
        p = probeHook(withLibbpfLog, hook, objectPath);
        this.probes.push(p);
        if (!p.ok) logger.info(`oomkill: hook ${hook} unavailable: ${p.reason}`);
      }
      return p;
    };
    const tryPlan = (plan: string[]): Error | null =>
      withLibbpfLog(() => {
        try {
          this.obj = loadAndAttach(objectPath, plan, this.opts.ringBytes);
        } catch (err) {
          return err as Error;
        }
        this.programs = plan;
        return null;
      });

    const candidates = this.opts.hook === 'auto' ? HOOK_ORDER : [this.opts.hook];
    const beforeUs = printkNowUs();
    for (const hook of candidates) {
      const context = CONTEXT_HOOKS.includes(hook);
      if (context && !probe(hook).ok) continue;
      for (const victimHook of context ? VICTIM_HOOKS : [hook]) {
        const base = context ? [PROGRAMS[hook], PROGRAMS[victimHook]] : [PROGRAMS[hook]];
        // with a signal companion where mark_victim lacks the task, the first that works; else without
        const extras = companionNeeded(victimHook, tracefs) ? companionOrder(victimHook).map((c) => [c]) : [];
        const refused: CompanionProbe[] = [];
        for (const extra of [...extras, []]) {
          const err = tryPlan([...base, ...extra]);
          if (extra.length) {
            if (err) refused.push({ program: extra[0] as SignalProgram, ok: false, reason: err.message });
            else this.companions.push({ program: extra[0] as SignalProgram, ok: true });
          }
          if (!err) break;
        }
        if (this.obj) {
          // a companion refused while its hook then attached without it: the companion's own failure
          for (const c of refused) logger.info(`oomkill: companion ${c.program} unavailable: ${c.reason}`);
          this.companions.push(...refused);
          break;
        }
        if (!probe(victimHook).ok) continue;
        logger.info(`oomkill: hook ${hook} failed to attach with its partner program ${PROGRAMS[victimHook]}`);
      }
      if (this.obj) {
        this.chosen = hook;
        break;
      }
    }
    if (!this.obj || !this.chosen) {
      const why = this.probes.filter((p) => !p.ok && candidates.includes(p.hook)).map((p) => `${p.hook}: ${p.reason}`);
      throw new CollectorError(
        this.opts.hook === 'auto' ? 'NO_HOOK' : 'HOOK_UNAVAILABLE',
        `no OOM hook could be attached (${this.opts.hook === 'auto' ? 'tried ' + HOOK_ORDER.join(', ') : 'forced ' + this.opts.hook}): ${why.join(' | ') || 'no victim program (tp_btf/tracepoint) available'}`,
      );
    }
    this.attached = { beforeUs, afterUs: printkNowUs() };
    logger.info(`oomkill: attached hook ${this.chosen} (programs: ${this.programs.join(', ')})`);
    this.degraded = degradations(this.chosen, this.programs, this.probes, this.companions, tracefs);
    for (const d of this.degraded) logger.info(`oomkill: degraded on this kernel: ${d}`);
  }

  /**
   * Delivers every event: to `emitBatch` as the batches one ring read gave (one journal commit each), else one
   * by one to `emit`.
   */
  async start(emit: (event: RawOomEvent) => Promise<void>, emitBatch?: (events: RawOomEvent[]) => Promise<void>): Promise<void> {
    const { logger } = this.opts;
    this.emit = emitBatch ?? (async (events) => {
      for (const e of events) await emit(e);
    });
    this.load();
    this.reader = new RingBufferReader(
      this.obj!.mapFd('events'), // load() threw unless a hook is attached
      // runs inside ring_buffer__consume, which holds the ring's consumer position: a copy only (no throw
      // either); decode, the kernel report, /proc and path lookups run after it, in deliver()
      (data) => {
        this.pending.push(data);
        if (data.length === EVENT_HEADER_SIZE) this.stats.headerEvents++;
        else this.stats.fullEvents++;
      },
      (err) => logger.error(`oomkill: ring buffer: ${err.message}`),
      () => this.deliver(),
    );
    for (const w of this.watches) {
      if (!this.reader.watch(w.fd, w.onWake)) logger.warn(`oomkill: cannot wait for fd ${w.fd} beside the ring buffer`);
    }
    this.reader.onConsumed = (events, ms) => {
      if (events === 0) return;
      this.stats.calls++;
      this.stats.events += events;
      this.stats.maxCallMs = Math.max(this.stats.maxCallMs, ms);
      this.stats.maxMsPerEvent = Math.max(this.stats.maxMsPerEvent, ms / events);
    };
    this.reader.start();
  }

  /** Wakes `onWake` (on the main thread) whenever `fd` turns readable, from the ring buffer's own wait: no timer. */
  watch(fd: number, onWake: () => void): void {
    this.watches.push({ fd, onWake });
    if (this.reader && !this.reader.watch(fd, onWake)) this.opts.logger.warn(`oomkill: cannot wait for fd ${fd} beside the ring buffer`);
  }

  private readonly watches: Array<{ fd: number; onWake: () => void }> = [];

  consumeStats(): ConsumeStats {
    return { ...this.stats };
  }

  /**
   * Reads the ring now and delivers everything in it: every event the kernel submitted before the returned
   * CLOCK_BOOTTIME (ns) has been emitted when this resolves (a sweep is complete, a kernel-log line can be
   * compared with the live captures).
   */
  async flush(): Promise<bigint> {
    const t = loadLibBpf().clockGettimeNs('boottime');
    try {
      this.reader?.consume();
    } catch (err) {
      this.opts.logger.error(`oomkill: ring buffer: ${(err as Error).message}`);
    }
    // a delivery held up downstream (a full queue blocking) vouches for nothing new: the caller waits, never deadlocks
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = await Promise.race([
      this.deliver().then(() => true),
      new Promise<false>((r) => (timer = setTimeout(() => r(false), FLUSH_WAIT_MS))),
    ]);
    clearTimeout(timer);
    // an event stamped just before `t` may still be between its reserve and submit
    if (done && t - FLUSH_MARGIN_NS > this.flushedThrough) this.flushedThrough = t - FLUSH_MARGIN_NS;
    return this.flushedThrough;
  }
  private decode(data: Buffer): RawOomEvent {
    const event = decodeEvent(data);
    if (event.rssInexact && !this.rssInexactSaid) {
      this.rssInexactSaid = true;
      this.opts.logger.warn('oomkill: this kernel prints the exact per-CPU sums of the RSS counters, which the kernel side could not read here: RSS fields are the global counts and may differ from the kernel\'s line by up to a batch per CPU');
    }
    // the context hook names the record even though a mark_victim program emitted it
    if (this.chosen) event.hook = this.chosen;
    if (event.victimCgroup?.truncated) event.victimCgroup = resolveTruncatedCgroup(event.victimCgroup);
    if (event.oomCgroup?.truncated) event.oomCgroup = resolveTruncatedCgroup(event.oomCgroup);
    if (this.cgroups.settle(event) === 'looked-up') {
      const { victimId, oomId } = event.cgAsBefore!;
      this.opts.logger.warn(
        `oomkill: the full event naming cgroups ${victimId}/${oomId} was not read (lost to a full ring, or undecodable): ` +
          `looked up by id in cgroupfs: victim ${event.victimCgroup?.path ?? 'not found'}, OOM ${event.oomCgroup?.path ?? (oomId === 0n ? '/' : 'not found')}`,
      );
    }
    // a header-only event's victim cgroup is known by id: when the lookup failed, nothing is guessed from /proc
    if (!event.victimCgroup && !event.cgAsBefore) {
      const path = procMemoryCgroup(event.victimPid);
      if (path) event.victimCgroup = { id: 0n, path, truncated: false };
    }
    event.kernelReport = this.reportFor(event);
    if (!event.kernelReport?.tasks.length && !this.laterSweepMember(event)) event.procfsTasks = this.procfsTasksFor(event);
    return event;
  }

  /** memory.oom.group sweeps seen lately: triggering thread + OOM cgroup → the boot time of their latest member. */
  private readonly sweeps = new Map<string, bigint>();

  /**
   * True for a sweep's second and later members. The candidates are the OOM decision's, which the sweep's first event
   * (the chosen victim) carries; a /proc walk per member re-read the group while it died, synchronously: 1,000 members
   * × ~70 ms on this machine (1–2 s each under emulation) blocked the main thread, and the kernel log's reader with it.
   */
  private laterSweepMember(event: RawOomEvent): boolean {
    if (!event.oomGroupKill) return false;
    for (const [k, at] of this.sweeps) if (event.bootNs - at > SWEEP_GAP_NS) this.sweeps.delete(k);
    const key = sweepKey(event);
    const seen = this.sweeps.has(key);
    this.sweeps.set(key, event.bootNs);
    return seen;
  }

  /**
   * The candidate list's last fallback (no printed table for this kill): the OOM cgroup's processes
   * from /proc, read here because this is the earliest moment user space can, before the record
   * waits for the victim's exit. Memcg kills only: a global OOM's domain is the whole host.
   */
  private procfsTasksFor(event: RawOomEvent): ProcTaskRead | null {
    const cg = event.oomCgroup;
    if (this.opts.candidates === 0 || event.constraint !== 'memcg' || !cg || cg.truncated || cg.path === '/') return null;
    if (this.memRoot === undefined) this.memRoot = memoryRoot(detectCgroupVersion());
    if (!this.memRoot) return null;
    const read = readCgroupTasks(path.join(this.memRoot, cg.path), new Set([event.victimPid]));
    this.opts.logger.debug(`oomkill: no printed table for the kill of ${event.victimPid}: ${read.tasks.length} task(s) of ${cg.path} read from /proc in ${read.ms.toFixed(2)} ms`);
    return read;
  }

  private reportFor(event: RawOomEvent) {
    if (!this.kmsg) return null;
    try {
      this.reports.feed(this.kmsg.read());
    } catch (err) {
      this.opts.logger.warn(`oomkill: /dev/kmsg: ${(err as Error).message}`);
    }
    const q = reportQuery(event);
    return this.reports.take(event.victimPid, q) ?? this.reports.take(event.victimTid, q);
  }

  /** Decodes and emits what the ring gave, a batch at a time; one run at once, and it resolves once nothing is pending. */
  private async deliver(): Promise<void> {
    while (this.delivering) await this.delivering;
    if (!this.pending.length) return;
    this.delivering = (async () => {
      while (this.pending.length) {
        const batch: RawOomEvent[] = [];
        for (const data of this.pending.splice(0)) {
          try {
            batch.push(this.decode(data));
          } catch (err) {
            this.opts.logger.error(`oomkill: undecodable event: ${(err as Error).message}`);
          }
        }
        if (batch.length) await this.emit(batch);
      }
    })().finally(() => (this.delivering = null));
    await this.delivering;
  }

  async stop(): Promise<void> {
    if (this.reader) {
      await this.reader.stop();
      this.reader = null;
      await this.deliver();
    }
    this.obj?.close();
    this.obj = null;
    this.kmsg?.close();
    this.kmsg = null;
  }

  lostEvents(): bigint {
    return this.obj ? this.obj.readCounter('lost_events') : 0n;
  }

  describe(): CollectorDescription {
    return {
      name: this.name,
      hook: this.chosen,
      programs: this.programs,
      unavailable: this.probes.filter((p) => !p.ok).map((p) => ({ hook: p.hook, reason: p.reason ?? '' })),
      degraded: this.degraded,
    };
  }
}

