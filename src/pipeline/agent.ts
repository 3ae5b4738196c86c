import type { AppConfig } from '../config/schema';
import type { Collector } from '../collectors/collector';
import type { RawOomEvent } from '../collectors/oomkill/event';
import type { Logger } from '../observe/logger';
import { MetricsRegistry, PipelineMetrics, startMetricsServer, type MetricsServer } from '../observe/metrics';
import type { Sink } from '../sinks/sink';
import type { ReclaimCollector } from '../collectors/reclaim/collector';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { enrich, enrichKmsg, enrichPressure } from './enrich/enrich';
import type { OomRecord } from '../record/record';
import { KillLineDeduper, KmsgFollower, killsFromKmsg, parseKilled, readKmsgRing } from '../collectors/kmsg/kmsg';
import { DirLock } from './lock';
import { KillLedger, printkNowUs, readVmstatOomKills } from './ledger';
import { Spool } from './spool';
import { formatRfc3339Nanos } from './enrich/host';
import type { PressureEvent, TrailSampler } from './trail/sampler';
import { bootToRealtimeNs, readHostFacts, type HostFacts } from './enrich/host';
import { loadLibBpf } from '../bpf/libbpf';
import { Lane } from './lane';
import { BoundedQueue } from './queue';
import { Router } from './router';

const bootNowNs = () => loadLibBpf().clockGettimeNs('boottime');

/** Longest wait at stop for a sink write still in flight, and the least (even past the deadline). */
const LANE_CLOSE_GRACE_MS = 2000;
const LANE_CLOSE_MIN_GRACE_MS = 100;

export interface AgentParts {
  config: AppConfig;
  logger: Logger;
  collector: Collector<RawOomEvent>;
  sinks: Sink[];
  /** where the configuration came from, for the start-up line */
  sources: string[];
  /** optional: reclaim stalls and victims' deaths (kill→exit latency) */
  reclaim?: ReclaimCollector | null;
  /** optional: per-cgroup trails attached to records, and memory_pressure records */
  trail?: TrailSampler | null;
  /** longest wait after a kill for the victim's exit before its record goes out */
  deathWaitMs?: number;
  /** optional: container/pod names from the container runtimes (bounded, never fails a record) */
  runtime?: { annotate(r: OomRecord): Promise<Partial<OomRecord>> } | null;
}

/** A captured kill: its record as built right after decode, and its entry in the journal (null if that failed). */
interface KillItem {
  kind: 'kill';
  ev: RawOomEvent;
  record: OomRecord;
  journalSeq: number | null;
}

type QueueItem = KillItem | ({ kind: 'memory_pressure' } & PressureEvent);

/** What the journal holds per kill: the record without death/trail fields, and the kill's printk time. */
interface JournalEntry {
  j: 1;
  t_us: number;
  record: OomRecord;
}

/** `<spool.dir>/.journal`: a sink name can never start with a dot, so no lane's spool collides with it. */
export const JOURNAL_DIR = '.journal';

/** Kernel-log lines this close to the collector's attach are checked against live captures a little later. */
const BACKFILL_SETTLE_MS = 2000;
const AUDIT_INTERVAL_MS = 1000;

function isPressure(item: QueueItem): item is { kind: 'memory_pressure' } & PressureEvent {
  return (item as { kind?: string }).kind === 'memory_pressure';
}

/**
 * collector → bounded queue → enrich → router → one lane per sink (spool, batch, retry).
 * `stop()` is the graceful path: detach, drain the queue, flush lanes within the deadline;
 * whatever is not delivered stays in each lane's spool for the next start.
 */
export class Agent {
  private readonly queue: BoundedQueue<QueueItem>;
  private stopping = false;
  private readonly router: Router;
  readonly metrics: PipelineMetrics;
  private facts: HostFacts | null = null;
  private consumer: Promise<void> = Promise.resolve();
  private server: MetricsServer | null = null;
  private lostReported = 0n;
  private lock: DirLock | null = null;
  private journal: Spool | null = null;
  private ledger: KillLedger | null = null;
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private readonly wakers = new Set<() => void>();
  private backfillDone: Promise<void> = Promise.resolve();
  private auditSamples: Array<{ at: number; unexplained: number }> = [];
  private cgroupsSeenVersion = -1;
  private kernelReported: number | null = null;
  private missedReported = 0;
  /** the kernel log, read as it grows, for kills the kernel counted twice (memory.oom.group sweeps) */
  private kmsgFollower: KmsgFollower | null = null;
  private readonly repeats = new KillLineDeduper();
  private repeatedSinceBase = 0;

  constructor(private readonly parts: AgentParts) {
    const { config, logger } = parts;
    this.metrics = new PipelineMetrics(new MetricsRegistry());
    this.queue = new BoundedQueue<QueueItem>(config.pipeline.queue.capacity, config.pipeline.queue.overflow, {
      onDrop: (reason) => {
        this.metrics.dropped.inc({ stage: 'queue', reason });
        logger.warn(`queue: dropped an OOM event (${reason})`);
      },
    });
    const lanes = parts.sinks.map(
      (sink) =>
        new Lane({
          sink,
          spoolDir: config.pipeline.spool.dir,
          fsync: config.pipeline.spool.fsync,
          maxSpoolBytes: config.pipeline.spool.max_bytes,
          batch: {
            maxEvents: config.pipeline.batch.max_events,
            maxBytes: config.pipeline.batch.max_bytes,
            maxAgeMs: config.pipeline.batch.max_age_ms,
          },
          retry: { initialMs: config.pipeline.retry.initial_ms, maxMs: config.pipeline.retry.max_ms },
          deadLetter: { maxBytes: config.pipeline.dead_letter.max_bytes, keep: config.pipeline.dead_letter.keep },
          logger,
          metrics: this.metrics,
        }),
    );
    this.router = new Router(lanes, logger);
    // sampled at scrape time, so they are current even while the consumer or a lane is blocked
    this.metrics.registry.onCollect(() => {
      this.metrics.queueDepth.set({}, this.queue.depth);
      for (const lane of lanes) this.metrics.sinkBuffered.set({ sink: lane.name }, lane.memory.buffered);
    });
  }

  /** Queues a memory_pressure record (the trail sampler calls this). */
  pushPressure(ev: PressureEvent): void {
    if (this.stopping) return;
    void this.queue.push({ kind: 'memory_pressure', ...ev });
  }

  async start(): Promise<void> {
    const { config } = this.parts;
    this.facts = readHostFacts(config.host.name);
    const dir = config.pipeline.spool.dir;
    // before any spool is touched: a second agent on this directory would replay, ack and delete
    // the first one's records
    this.lock = DirLock.acquire(dir);
    try {
      await this.startLocked();
    } catch (err) {
      // Whatever started must stop before the error reaches the exit: a reader blocked in epoll_wait
      // (ring buffer, PSI) holds a libuv worker, and Node's exit joins those workers.
      this.stopping = true;
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
      await this.parts.collector.stop().catch(() => undefined);
      await Promise.resolve(this.parts.trail?.stop()).catch(() => undefined);
      this.parts.reclaim?.stop();
      this.kmsgFollower?.close();
      this.kmsgFollower = null;
      await this.journal?.close().catch(() => undefined);
      this.lock.release();
      this.lock = null;
      throw err;
    }
  }

  private async startLocked(): Promise<void> {
    const { config, logger, collector } = this.parts;
    const dir = config.pipeline.spool.dir;
    this.ledger = KillLedger.open(dir, this.facts!.bootId);
    // `batch` gives each append the guarantee of `always` (resolved after an fsync that began after its
    // write) with fsyncs shared across a burst, so a kill's journal ack does not queue behind a burst's fsyncs
    const journalFsync = config.pipeline.spool.fsync === 'never' ? 'never' : 'batch';
    this.journal = await Spool.open({ dir: path.join(dir, JOURNAL_DIR), fsync: journalFsync, maxBytes: 0, logger });
    const replay = await this.readJournal();
    await this.router.open();
    await this.replayJournal(replay);
    const beforeAttachUs = printkNowUs();
    await collector.start((ev) => this.capture(ev));
    const afterAttachUs = printkNowUs();
    this.startAudit();
    if (config.collectors.oomkill.backfill) this.backfillDone = this.backfill(beforeAttachUs, afterAttachUs);
    const { reclaim, trail } = this.parts;
    if (reclaim) {
      try {
        reclaim.start();
      } catch (err) {
        logger.warn(`reclaim collector not running: ${(err as Error).message}`);
      }
    }
    trail?.start();
    this.consumer = this.consume();
    this.server = await startMetricsServer(config.metrics.listen, this.metrics.registry, () =>
      this.router.health(config.metrics.sink_failing_after_ms),
    );
    const d = collector.describe();
    logger.info(
      `oomtrail ${this.facts!.agentVersion} started: config ${this.parts.sources.join(' <- ')}; ` +
        `collector ${d.name} hook ${d.hook}; sinks ${this.parts.sinks.map((s) => s.name).join(', ') || 'none'}; ` +
        `spool ${config.pipeline.spool.dir}; metrics ${this.server ? `${this.server.host}:${this.server.port}` : 'off'}`,
    );
  }

  /**
   * Right after decode, before any wait: the kill's record is made durable in the journal, and the
   * kill entered in the ledger. The death confirmation later only amends the record on its way to
   * the sinks; a crash before that leaves the journal entry, re-emitted at the next start.
   */
  private async capture(ev: RawOomEvent): Promise<void> {
    const { logger } = this.parts;
    const record = enrich(ev, this.facts!, bootToRealtimeNs);
    // the kill on the printk clock (CLOCK_MONOTONIC-like), to match it with its kernel log line
    const tUs = printkNowUs() - Number((bootNowNs() - ev.bootNs) / 1000n);
    let journalSeq: number | null = null;
    try {
      [journalSeq] = await this.journal!.append([{ j: 1, t_us: tUs, record } as unknown as OomRecord]);
    } catch (err) {
      logger.error(`journal: cannot write the record of pid ${ev.victimPid}; it is held in memory only: ${(err as Error).message}`, {
        event_id: record.event_id,
      });
    }
    this.addToLedger(ev.victimPid, tUs, record.event_id, record.victim_cgroup);
    await this.queue.push({ kind: 'kill', ev, record, journalSeq });
  }

  private addToLedger(pid: number, tUs: number, eventId: string, cgroup = ''): void {
    try {
      this.ledger!.add(pid, tUs, eventId, cgroup);
    } catch (err) {
      this.parts.logger.warn(`kill ledger: cannot record pid ${pid}: ${(err as Error).message}`);
    }
  }

  /** Journal entries a previous run never finished, and which lanes already spooled each (by event_id). */
  private async readJournal(): Promise<{ entries: Array<{ seq: number; entry: JournalEntry }>; spooled: Map<string, Set<string>> }> {
    const entries: Array<{ seq: number; entry: JournalEntry }> = [];
    for await (const r of this.journal!.pending()) entries.push({ seq: r.seq, entry: r.record as unknown as JournalEntry });
    const spooled = new Map<string, Set<string>>();
    if (entries.length === 0) return { entries, spooled };
    const { config, logger } = this.parts;
    // read before the lanes open: once open, a lane may deliver and delete what it holds
    for (const lane of this.router.lanes) {
      const ids = new Set<string>();
      const spool = await Spool.open({ dir: path.join(config.pipeline.spool.dir, lane.name), fsync: 'never', maxBytes: 0, logger });
      try {
        for await (const r of spool.pending()) ids.add(r.record.event_id);
      } finally {
        await spool.close();
      }
      spooled.set(lane.name, ids);
    }
    return { entries, spooled };
  }

  private async replayJournal(replay: Awaited<ReturnType<Agent['readJournal']>>): Promise<void> {
    if (replay.entries.length === 0) return;
    const { logger } = this.parts;
    let emitted = 0;
    for (const { seq, entry } of replay.entries) {
      const record = entry.record;
      let any = false;
      for (const lane of this.router.lanes) {
        if (replay.spooled.get(lane.name)?.has(record.event_id)) continue;
        await lane.accept(record);
        any = true;
      }
      if (any) {
        emitted++;
        logger.info(`journal: re-emitting the record of pid ${record.victim_pid} (${record.victim_comm})`, { event_id: record.event_id });
        this.metrics.recordCapture(record.hook, record.victim_cgroup || record.oom_cgroup);
      }
      this.addToLedger(record.victim_pid, entry.t_us, record.event_id, record.victim_cgroup);
      await this.journal!.ack([seq]);
    }
    if (emitted > 0) {
      logger.warn(`journal: re-emitted ${emitted} OOM kill record(s) the previous run captured but did not spool (it stopped abruptly)`);
    }
  }

  /**
   * Kills in the kernel log this host has no record of: those logged before the collector attached.
   * Lines logged while it was attaching may be live captures still on their way: they are checked
   * again against the ledger a little later.
   */
  private async backfill(beforeAttachUs: number, afterAttachUs: number): Promise<void> {
    const { logger } = this.parts;
    const ledger = this.ledger!;
    let ring;
    try {
      ring = readKmsgRing();
    } catch (err) {
      logger.warn(`backfill: cannot read /dev/kmsg: ${(err as Error).message}`);
      return;
    }
    const since = ledger.state.kmsg_seq;
    const lastSeq = ring.filter((r) => r.usec < afterAttachUs).reduce((m, r) => Math.max(m, r.seq), since);
    if (ring.length > 0 && since >= 0 && ring[0].seq > since + 1) {
      logger.warn(`backfill: the kernel log lost ${ring[0].seq - since - 1} line(s) since the last look; kills among them cannot be recovered`);
    }
    const kills = killsFromKmsg(ring.filter((r) => r.seq > since && r.usec < afterAttachUs));
    const now = kills.filter((k) => k.usec < beforeAttachUs);
    const later = kills.filter((k) => k.usec >= beforeAttachUs);
    let n = await this.emitKmsgKills(now);
    if (later.length > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.wakers.delete(resolve);
          resolve();
        }, BACKFILL_SETTLE_MS);
        this.timers.add(t);
        this.wakers.add(resolve); // stop() cuts the wait short
      });
      n += await this.emitKmsgKills(later);
    }
    ledger.state.kmsg_seq = lastSeq;
    try {
      ledger.saveState();
    } catch (err) {
      logger.warn(`backfill: cannot save progress: ${(err as Error).message}`);
    }
    if (n > 0) logger.warn(`backfill: recorded ${n} OOM kill(s) from the kernel log that no agent captured`);
  }

  private async emitKmsgKills(kills: ReturnType<typeof killsFromKmsg>): Promise<number> {
    const ledger = this.ledger!;
    // printk clock → wall clock; printk's local_clock runs with CLOCK_MONOTONIC
    const toRealtime = (printkNs: bigint) => loadLibBpf().clockGettimeNs('realtime') - (process.hrtime.bigint() - printkNs);
    let n = 0;
    for (const kill of kills) {
      if (ledger.matches(kill.killed.pid, kill.usec)) continue;
      const record = enrichKmsg(kill, this.facts!, toRealtime);
      if (ledger.has(record.event_id)) continue;
      this.metrics.recordCapture(record.hook, record.victim_cgroup || record.oom_cgroup);
      this.parts.logger.info(`backfilled OOM kill of pid ${record.victim_pid} (${record.victim_comm}) from the kernel log`, { event_id: record.event_id });
      await this.router.route(record);
      this.addToLedger(kill.killed.pid, kill.usec, record.event_id, record.victim_cgroup);
      n++;
    }
    return n;
  }

  /**
   * Reconciles the kernel's kill count with what this host recorded, from the first agent start of
   * this boot on. A shortfall counts as missed only once it stays unexplained for the grace period
   * (records in flight, a backfill still running).
   */
  private startAudit(): void {
    const ledger = this.ledger!;
    // the counter and the clock read together: a kill before this instant is in the base and not
    // counted as recorded, one after it is both counted by the kernel and (by its time) recorded
    const startUs = printkNowUs();
    const kernel = readVmstatOomKills();
    if (kernel === null) return;
    if (ledger.state.audit_base_kills === null || ledger.state.audit_base_us === null) {
      ledger.state.audit_base_kills = kernel;
      ledger.state.audit_base_us = startUs;
      try {
        ledger.saveState();
      } catch (err) {
        this.parts.logger.warn(`audit: cannot save its baseline: ${(err as Error).message}`);
      }
    }
    try {
      this.kmsgFollower = new KmsgFollower();
    } catch (err) {
      this.parts.logger.info(`audit: no kernel log (${(err as Error).message}): kills the kernel counts twice (memory.oom.group) cannot be told apart`);
    }
    const tick = () => {
      this.audit();
      if (this.stopping) return;
      const t = setTimeout(() => {
        this.timers.delete(t);
        tick();
      }, AUDIT_INTERVAL_MS);
      t.unref();
      this.timers.add(t);
    };
    tick();
  }

  /** A memory cgroup's own OOM kill count: v1 memory.oom_control, v2 memory.events.local (not its descendants'). */
  private cgroupKills(dir: string): number | null {
    const v2 = this.facts?.cgroupVersion === 2;
    for (const f of v2 ? ['memory.events.local', 'memory.events'] : ['memory.oom_control']) {
      try {
        const m = /^oom_kill (\d+)$/m.exec(readFileSync(path.join(dir, f), 'utf8'));
        if (m) return Number(m[1]);
      } catch {
        /* gone, or an older kernel without the file */
      }
    }
    return null;
  }

  /** Notes the own kill counter of every memory-limited cgroup the trail sampler found, at first sight this boot. */
  private baseCgroups(): void {
    const trail = this.parts.trail;
    const state = this.ledger!.state;
    if (!trail) return;
    // every second at 10,000 cgroups: only when the sampler's set changed
    if (trail.cgroupsVersion() === this.cgroupsSeenVersion) return;
    this.cgroupsSeenVersion = trail.cgroupsVersion();
    const base = (state.cg_base ??= {});
    let added = false;
    const seen = new Set<string>();
    for (const { rel, dir } of trail.cgroups()) {
      seen.add(rel);
      if (base[rel]) continue;
      const n = this.cgroupKills(dir);
      if (n === null) continue;
      base[rel] = [n, printkNowUs()];
      added = true;
    }
    if (!added) return;
    // bounded by the cgroups that exist: forget removed ones when adding
    for (const rel of Object.keys(base)) if (!seen.has(rel)) delete base[rel];
    try {
      this.ledger!.saveState();
    } catch {
      /* retried with the next new cgroup */
    }
  }

  /** Cgroups whose own counter grew by more than the kills recorded in them since first seen. */
  private cgroupShortfalls(): Array<[string, number]> {
    const trail = this.parts.trail;
    const base = this.ledger!.state.cg_base;
    if (!trail || !base) return [];
    const since = new Map(Object.entries(base).map(([rel, [, t]]) => [rel, t]));
    const recorded = this.ledger!.countByCgroupSince(since);
    const out: Array<[string, number]> = [];
    for (const { rel, dir } of trail.cgroups()) {
      const b = base[rel];
      const n = b ? this.cgroupKills(dir) : null;
      if (!b || n === null) continue;
      const short = n - b[0] - (recorded.get(rel) ?? 0);
      if (short > 0) out.push([rel, short]);
    }
    return out;
  }

  private audit(): void {
    const ledger = this.ledger!;
    this.baseCgroups();
    const kernel = readVmstatOomKills();
    if (kernel === null || ledger.state.audit_base_kills === null || ledger.state.audit_base_us === null) return;
    if (this.kernelReported === null) this.metrics.kernelOomKills.inc({}, kernel);
    else if (kernel > this.kernelReported) this.metrics.kernelOomKills.inc({}, kernel - this.kernelReported);
    this.kernelReported = kernel;
    // Read the log after the counter: a kill counted is then either logged below or still to come
    // (and explained at a later tick, within the grace).
    try {
      for (const r of this.kmsgFollower?.read() ?? []) {
        const k = parseKilled(r.message);
        // a memory.oom.group sweep logs its victim twice, and each line is counted in oom_kill
        if (k && this.repeats.isRepeat(k.pid, r.usec) && r.usec >= ledger.state.audit_base_us) this.repeatedSinceBase++;
      }
    } catch (err) {
      this.parts.logger.warn(`audit: kernel log unreadable, stop reading it: ${(err as Error).message}`);
      this.kmsgFollower?.close();
      this.kmsgFollower = null;
    }
    const unexplained = Math.max(
      0,
      kernel - ledger.state.audit_base_kills - this.repeatedSinceBase - ledger.countSince(ledger.state.audit_base_us),
    );
    const now = Date.now();
    const grace = this.parts.config.collectors.oomkill.audit_grace_ms;
    this.auditSamples.push({ at: now, unexplained });
    // keep the newest sample at least `grace` old and everything after it
    while (this.auditSamples.length > 1 && this.auditSamples[1].at <= now - grace) this.auditSamples.shift();
    if (this.auditSamples[0].at > now - grace) return;
    const settled = Math.min(...this.auditSamples.map((x) => x.unexplained));
    if (settled > this.missedReported) {
      this.metrics.missedKills.inc({}, settled - this.missedReported);
      const where = this.cgroupShortfalls();
      this.parts.logger.warn(
        `audit: the kernel counted ${kernel - ledger.state.audit_base_kills} OOM kill(s) since the first agent start of this boot, ` +
          `this host recorded ${ledger.countSince(ledger.state.audit_base_us)}: ${settled} missed` +
          (where.length ? `; by the cgroups' own counters: ${where.map(([cg, n]) => `${cg} ${n}`).join(', ')}` : ''),
      );
      this.missedReported = settled;
    }
  }

  private async consume(): Promise<void> {
    const { collector, logger } = this.parts;
    const { reclaim, trail } = this.parts;
    const toTime = (ms: number) => formatRfc3339Nanos(BigInt(ms) * 1_000_000n);
    for (let ev = await this.queue.shift(); ev !== undefined; ev = await this.queue.shift()) {
      if (isPressure(ev)) {
        const pr = enrichPressure(ev, this.facts!, bootToRealtimeNs);
        const t = trail?.store.snapshot(ev.cgroup, toTime);
        if (t) pr.trail = t;
        logger.info(`memory pressure in ${ev.cgroup}: ${ev.info.reasons.join(', ')}`, { event_id: pr.event_id });
        await this.router.route(pr);
        continue;
      }
      const item = ev;
      const raw = item.ev;
      // while stopping, only what the kernel already recorded: no wait
      const death = reclaim?.running
        ? await reclaim.confirmDeath(raw.victimTid, raw.bootNs, this.stopping ? 0 : (this.parts.deathWaitMs ?? 1000), bootNowNs)
        : null;
      // the journal holds this record already: the wait above amends it, it never gates its durability
      const record: OomRecord = { ...item.record, ...(await this.parts.runtime?.annotate(item.record)) };
      if (reclaim?.running && reclaim.confirmsDeaths) {
        const ms = (ns: bigint | null | undefined) => (death && ns ? Number(ns - death.markNs) / 1e6 : null);
        record.victim_exit_latency_ms = ms(death?.exitNs);
        record.victim_reaped_latency_ms = ms(death?.reapedNs);
      }
      const killMs = Date.parse(record.time);
      const t = trail?.store.snapshot(record.oom_cgroup || '/', toTime, killMs);
      if (t) {
        const now = trail!.sampleNow(record.oom_cgroup || '/');
        // reclaim since the last sample the trail keeps: samples after the kill are left out of it
        const late = trail!.store.lateReclaim(record.oom_cgroup || '/', killMs);
        const plus = (x: number | null, y: number) => (x === null && y === 0 ? null : (x ?? 0) + y);
        if (now)
          t.at_record = {
            time: toTime(now.timeMs),
            usage_bytes: now.usageBytes,
            limit_bytes: now.limitBytes,
            reclaim_stall_ms: plus(now.reclaimStallMs, late.stallMs),
            reclaimed_pages: plus(now.reclaimedPages, late.reclaimedPages),
            psi_some_avg10: now.psiSome,
            psi_full_avg10: now.psiFull,
          };
        record.trail = t;
      }
      // labelled by the victim's cgroup (the workload that lost a process), as the metric's help says;
      // oom_cgroup would put every global OOM under "/" and every child's kill under its limited ancestor
      this.metrics.recordCapture(record.hook, record.victim_cgroup || record.oom_cgroup);
      logger.info(`captured OOM kill of pid ${record.victim_pid} (${record.victim_comm}) in ${record.victim_cgroup || '?'}`, {
        event_id: record.event_id,
      });
      await this.router.route(record);
      if (item.journalSeq !== null) {
        try {
          await this.journal!.ack([item.journalSeq]);
        } catch (err) {
          // an entry left in the journal is re-emitted at the next start only where it is not spooled
          logger.warn(`journal: cannot mark ${record.event_id} spooled: ${(err as Error).message}`);
        }
      }
      const lost = collector.lostEvents();
      if (lost > this.lostReported) {
        this.metrics.dropped.inc({ stage: 'kernel_ringbuf', reason: 'ringbuf_full' }, Number(lost - this.lostReported));
        logger.error(`kernel ring buffer was full: ${lost - this.lostReported} OOM events lost`);
        this.lostReported = lost;
      }
    }
  }

  /** Graceful stop; resolves with the records left undelivered per sink (kept in their spools). */
  async stop(deadlineMs: number): Promise<Record<string, number>> {
    const started = Date.now();
    const remaining = () => Math.max(0, deadlineMs - (Date.now() - started));
    this.stopping = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.parts.collector.stop();
    await this.parts.trail?.stop();
    this.queue.close();
    await this.consumer;
    // every live capture is in the ledger now: a backfill waiting to check against them may go on
    for (const wake of this.wakers) wake();
    this.wakers.clear();
    await this.backfillDone;
    this.audit();
    const left = await this.router.drain(remaining());
    // A write still in flight is waited for only within the deadline (a hung sink must not hold the
    // stop past it); an abandoned write's records stay in the spool.
    await this.router.close(Math.min(LANE_CLOSE_GRACE_MS, Math.max(LANE_CLOSE_MIN_GRACE_MS, remaining())));
    await this.server?.close();
    this.parts.reclaim?.stop();
    await this.journal?.close().catch(() => undefined);
    this.kmsgFollower?.close();
    this.lock?.release();
    this.lock = null;
    return left;
  }
}
