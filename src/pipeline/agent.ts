import { kernelLineRejects, onKernelLineRejected, type KernelLineRejectReason } from '../collectors/kmsg/lines';
import type { AppConfig } from '../config/schema';
import type { Collector } from '../collectors/collector';
import type { RawOomEvent } from '../collectors/oomkill/event';
import type { Logger } from '../observe/logger';
import { MetricsRegistry, PipelineMetrics, startMetricsServer, type MetricsServer } from '../observe/metrics';
import type { Sink } from '../sinks/sink';
import type { OomRecord } from '../record/record';
import type { PressureEvent, TrailSource } from '../collectors/trail/sampler';
import type { TrailFdUse } from '../collectors/trail/cgroupfs';
import { systemClock, type Clock } from '../host/clock';
import { readHostFacts, type HostFacts } from '../host/facts';
import { RecordAssembler, type DeathSource, type RuntimeNames } from './assemble/assemble';
import { readHostTotalPages } from './assemble/enrich';
import { KillAudit, type AuditedCgroups } from './audit';
import { Backfill } from './backfill';
import { JOURNAL_DIR, KillJournal } from './journal';
import { DirLock } from './lock';
import { KillLedger, killKeyOfRecord, noteKill } from './ledger';
import { Lane, type AcceptResult } from './lane';
import { BoundedQueue } from './queue';
import { Router } from './router';
import { DropRecovery } from './recovery';


const KERNEL_LINE_REJECTS: Record<KernelLineRejectReason, string> = {
  not_kernel: 'an OOM line a process wrote to the kernel log, not the kernel',
  malformed: "an OOM line that is not the kernel's format start to end, e.g. a cgroup name spelling a kill",
  ambiguous: 'an oom-kill: line whose cgroup names or comm read more than one way',
};
export { JOURNAL_DIR } from './journal';

/** What a collector's flush vouches for lies this far before its start (an event is stamped before it is queued). */
const FLUSH_SLACK_NS = 20_000_000n;
/** Longest wait at stop for a sink write still in flight (or a sink's close). */
const LANE_CLOSE_GRACE_MS = 2000;
/**
 * Of the stop deadline, what is kept after the drain for closing the lanes (spool held records, close spools and
 * sinks: ms each, unless a sink hangs, which is then abandoned). The drain uses the rest.
 */
const CLOSE_RESERVE_MS = 25;

/** One lane's share of a stop: what it did not deliver, and whether it finished closing before the deadline. */
export interface LaneStopReport {
  sink: string;
  /** left in its spool: sent at the next start */
  spooled: number;
  /** held in memory (the spool would not take them): lost at exit, unless the journal keeps them */
  memory: number;
  /** of `memory`, those whose kill the journal still keeps for the next start */
  memoryInJournal: number;
  /** dropped during this run, by reason */
  dropped: Record<string, number>;
  closed: boolean;
}

export interface StopReport {
  /** every step of the stop finished within the deadline */
  complete: boolean;
  deadlineMs: number;
  ms: number;
  spoolDir: string;
  lanes: LaneStopReport[];
}

/**
 * The stop's last line: `stopped; every record delivered` only when every lane delivered everything it was given
 * this run and nothing is left in a spool or in memory; otherwise how many records were not delivered and where
 * they are.
 */
export function describeStop(r: StopReport): string {
  const sum = (f: (l: LaneStopReport) => number): number => r.lanes.reduce((n, l) => n + f(l), 0);
  const dropped = (l: LaneStopReport): number => Object.values(l.dropped).reduce((n, v) => n + v, 0);
  const list = (f: (l: LaneStopReport) => number, extra?: (l: LaneStopReport) => string): string =>
    r.lanes
      .filter((l) => f(l) > 0)
      .map((l) => `${l.sink} ${f(l)}${extra ? extra(l) : ''}`)
      .join(', ');
  const total = sum((l) => l.spooled + l.memory + dropped(l));
  const unclosed = r.lanes.filter((l) => !l.closed).map((l) => l.sink);
  const late = unclosed.length
    ? ` (${unclosed.join(', ')} did not finish within the ${r.deadlineMs} ms stop deadline)`
    : r.complete
      ? ''
      : ` (the ${r.deadlineMs} ms stop deadline passed before the stop finished)`;
  if (total === 0) return `stopped; every record delivered${late}`;
  const where: string[] = [];
  if (sum((l) => l.spooled) > 0) where.push(`in the spool ${r.spoolDir}, sent at the next start: ${list((l) => l.spooled)}`);
  if (sum((l) => l.memoryInJournal) > 0) where.push(`in memory and in the journal ${r.spoolDir}/${JOURNAL_DIR}, re-sent at the next start: ${list((l) => l.memoryInJournal)}`);
  if (sum((l) => l.memory - l.memoryInJournal) > 0) where.push(`in memory only, lost at exit: ${list((l) => l.memory - l.memoryInJournal)}`);
  if (sum(dropped) > 0) where.push(`dropped: ${list(dropped, (l) => ` (${Object.entries(l.dropped).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ')})`)}`);
  return `stopped; ${total} record${total === 1 ? '' : 's'} undelivered (held ${where.join('; ')})${late}`;
}

/** What the agent needs of the trail sampler: its lifetime, trails for records, its cgroups for the audit. */
export type AgentTrail = TrailSource & AuditedCgroups & { start(): void; stop(): Promise<void>; fdUse?(): TrailFdUse };

export interface AgentParts {
  config: AppConfig;
  logger: Logger;
  collector: Collector<RawOomEvent>;
  sinks: Sink[];
  /** where the configuration came from, for the start-up line */
  sources: string[];
  /** optional: reclaim stalls and victims' deaths (kill→exit latency) */
  reclaim?: (DeathSource & { start(): void; stop(): void }) | null;
  /** optional: per-cgroup trails attached to records, and memory_pressure records (given where they go) */
  trail?: ((onPressure: (ev: PressureEvent) => void) => AgentTrail) | null;
  /** the spool dir's lock, when the caller took it already (before the BPF attach); taken at start otherwise */
  lock?: DirLock | null;
  /** longest wait after a kill for the victim's exit before its record goes out */
  deathWaitMs?: number;
  /** host clocks (tests may steer them); the system's by default */
  clock?: Clock;
  /** optional: container/pod names from the container runtimes (bounded, never fails a record) */
  runtime?: RuntimeNames | null;
}

/** A captured kill: its record as built right after decode, and its entry in the journal (null if that failed). */
interface KillItem {
  kind: 'kill';
  /** null: a kill the kernel ring buffer lost, recorded from its kernel-log line (complete already) */
  ev: RawOomEvent | null;
  record: OomRecord;
  journalSeq: number | null;
  /** the kill on the printk clock */
  tUs: number;
}

type QueueItem = KillItem | ({ kind: 'memory_pressure' } & PressureEvent);

function isPressure(item: QueueItem): item is { kind: 'memory_pressure' } & PressureEvent {
  return (item as { kind?: string }).kind === 'memory_pressure';
}

/**
 * collector → bounded queue → record assembly → router → one lane per sink (spool, batch, retry).
 * `stop()` is the graceful path: detach, drain the queue, flush lanes within the deadline;
 * whatever is not delivered stays in each lane's spool for the next start.
 */
export class Agent {
  private readonly queue: BoundedQueue<QueueItem>;
  private stopping = false;
  private readonly router: Router;
  readonly metrics: PipelineMetrics;
  private readonly clock: Clock;
  private readonly trail: AgentTrail | null;
  private facts: HostFacts | null = null;
  private assembler: RecordAssembler | null = null;
  private consumer: Promise<void> = Promise.resolve();
  private server: MetricsServer | null = null;
  private lock: DirLock | null = null;
  private journal: KillJournal | null = null;
  private ledger: KillLedger | null = null;
  private audit: KillAudit | null = null;
  private backfill: Backfill | null = null;
  private backfillDone: Promise<void> = Promise.resolve();
  private recovery: DropRecovery | null = null;
  /** Kills whose journal entry stays until the lanes that held them in memory have taken them (event_id → entry seq). */
  private readonly journalKept = new Map<string, number>();
  private readonly unsubscribeRejects: () => void;

  constructor(private readonly parts: AgentParts) {
    const { config, logger } = parts;
    this.clock = parts.clock ?? systemClock;
    this.trail = parts.trail?.((ev) => this.pushPressure(ev)) ?? null;
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
            maxAgeMs: sink.batchMaxAgeMs ?? config.pipeline.batch.max_age_ms,
          },
          retry: { initialMs: config.pipeline.retry.initial_ms, maxMs: config.pipeline.retry.max_ms },
          deadLetter: { maxBytes: config.pipeline.dead_letter.max_bytes, keep: config.pipeline.dead_letter.keep },
          hold: { maxRecords: config.pipeline.spool.hold_max_records, maxBytes: config.pipeline.spool.hold_max_bytes },
          logger,
          metrics: this.metrics,
        }),
    );
    this.router = new Router(lanes, logger);
    // a refused kernel-log line is news once per reason; the metric counts them all
    const warned = new Set<string>();
    this.unsubscribeRejects = onKernelLineRejected((reason, message) => {
      if (warned.has(reason)) return;
      warned.add(reason);
      logger.warn(`kernel log: refused a line (${KERNEL_LINE_REJECTS[reason]}); further ones are only counted in oomtrail_kernel_lines_rejected_total: ${JSON.stringify(message.slice(0, 300))}`);
    });
    const rejectsReported: Record<string, number> = {};
    const ringbufReported = { full: 0, header: 0 };
    // sampled at scrape time, so they are current even while the consumer or a lane is blocked
    this.metrics.registry.onCollect(() => {
      for (const [reason, n] of Object.entries(kernelLineRejects())) {
        if (n > (rejectsReported[reason] ?? 0)) this.metrics.kernelLinesRejected.inc({ reason }, n - (rejectsReported[reason] ?? 0));
        rejectsReported[reason] = n;
      }
      this.metrics.queueDepth.set({}, this.queue.depth);
      const consumed = parts.collector.consumeStats?.();
      if (consumed) {
        this.metrics.ringbufConsumeMaxPerEvent.set({}, consumed.maxMsPerEvent / 1000);
        for (const layout of ['full', 'header'] as const) {
          const n = (layout === 'full' ? consumed.fullEvents : consumed.headerEvents) ?? 0;
          if (n > ringbufReported[layout]) this.metrics.ringbufEvents.inc({ layout }, n - ringbufReported[layout]);
          ringbufReported[layout] = n;
        }
      }
      for (const lane of lanes) this.metrics.sinkBuffered.set({ sink: lane.name }, lane.memory.buffered);
      const fds = this.trail?.fdUse?.();
      if (fds) {
        this.metrics.trailCgroups.set({ mode: 'held' }, fds.held);
        this.metrics.trailCgroups.set({ mode: 'by_path' }, fds.byPath);
        this.metrics.trailFds.set({}, fds.fds);
        if (Number.isFinite(fds.budget)) this.metrics.trailFdBudget.set({}, fds.budget);
      }
    });
  }

  /** The trail sampler's `onPressure`: queues a memory_pressure record. */
  private pushPressure(ev: PressureEvent): void {
    if (this.stopping) return;
    void this.queue.push({ kind: 'memory_pressure', ...ev });
  }

  async start(): Promise<void> {
    const { config } = this.parts;
    this.facts = readHostFacts(config.host.name);
    this.assembler = new RecordAssembler({
      facts: this.facts,
      clock: this.clock,
      trail: this.trail,
      deaths: this.parts.reclaim ?? null,
      deathWaitMs: this.parts.deathWaitMs ?? 1000,
      runtime: this.parts.runtime ?? null,
      explain: { candidates: config.collectors.oomkill.candidates, hostTotalPages: readHostTotalPages(this.facts.pageSize) },
      flush: this.parts.collector.flush ? () => this.parts.collector.flush!() : null,
    });
    const dir = config.pipeline.spool.dir;
    // before any spool is touched: a second agent on this directory would replay, ack and delete
    // the first one's records
    this.lock = this.parts.lock ?? DirLock.acquire(dir);
    try {
      await this.startLocked();
    } catch (err) {
      // Whatever started must stop before the error reaches the exit: a reader blocked in epoll_wait
      // (ring buffer, PSI) holds a libuv worker, and Node's exit joins those workers.
      this.stopping = true;
      this.backfill?.cancelTimer();
      this.audit?.stopTimer();
      await this.parts.collector.stop().catch(() => undefined);
      await this.recovery?.stop().catch(() => undefined);
      await Promise.resolve(this.trail?.stop()).catch(() => undefined);
      this.parts.reclaim?.stop();
      this.audit?.close();
      this.unsubscribeRejects();
      await this.journal?.close().catch(() => undefined);
      this.lock.release();
      this.lock = null;
      throw err;
    }
  }

  private async startLocked(): Promise<void> {
    const { config, logger, collector } = this.parts;
    const dir = config.pipeline.spool.dir;
    const o = config.collectors.oomkill;
    const ledger = (this.ledger = KillLedger.open(dir, this.facts!.bootId, o.backfill && o.backfill_journald && o.backfill_previous_boots > 0));
    this.journal = await KillJournal.open(dir, config.pipeline.spool.fsync, logger);
    // where the start-up backfill and the live recovery read kernel lines when there is no /dev/kmsg
    const journald = o.backfill_journald
      ? {
          options: { directory: o.backfill_journald_dir, previousBoots: o.backfill_previous_boots },
          facts: this.facts!,
          printkToRealtimeNs: this.clock.printkToRealtimeNs,
        }
      : null;
    // before the first event is read: the kernel-log lines of kills the ring buffer loses from here on
    this.recovery = new DropRecovery({
      ledger,
      assembler: this.assembler!,
      metrics: this.metrics,
      logger,
      record: (items, opts) => this.captureRecovered(items, opts),
      // complete when the ring was read, and all it held delivered, after this call began
      flush: async () => {
        if (!collector.flush) return true;
        const before = this.clock.bootNowNs();
        return (await collector.flush()) >= before - FLUSH_SLACK_NS;
      },
      lost: () => collector.lostEvents(),
      journald,
    });
    this.recovery.start(collector.watch ? (fd, onWake) => collector.watch!(fd, onWake) : undefined);
    const replay = await this.journal.readUnfinished(this.router.lanes);
    await this.router.open();
    await this.journal.replay(replay, this.router.lanes, {
      emitted: (record) => this.metrics.recordCapture(record),
      entry: (record, tUs) => noteKill(ledger, logger, record.victim_pid, tUs, record.event_id, record.victim_cgroup, killKeyOfRecord(record)),
    });
    const startUs = this.clock.printkNowUs();
    await collector.start(
      (ev) => this.capture([ev]),
      (evs) => this.capture(evs),
    );
    // the window in which the kernel side attached: main.ts has the collector attach before the agent exists
    const attached = collector.attachWindowUs?.() ?? null;
    const beforeAttachUs = attached ? Math.min(attached.beforeUs, startUs) : startUs;
    const afterAttachUs = Math.max(attached?.afterUs ?? 0, this.clock.printkNowUs());
    this.audit = new KillAudit({
      ledger,
      metrics: this.metrics,
      logger,
      cgroupVersion: this.facts!.cgroupVersion,
      graceMs: config.collectors.oomkill.audit_grace_ms,
      cgroups: this.trail,
    });
    this.audit.start();
    const auditLog = this.audit.logDescriptor();
    if (auditLog !== null) collector.watch?.(auditLog, () => this.audit?.readLog());
    if (config.collectors.oomkill.backfill) {
      this.backfill = new Backfill({
        ledger,
        router: this.router,
        assembler: this.assembler!,
        metrics: this.metrics,
        logger,
        stateDir: dir,
        journald,
      });
      this.backfillDone = this.backfill.run(beforeAttachUs, afterAttachUs);
    }
    const { reclaim } = this.parts;
    if (reclaim) {
      try {
        reclaim.start();
      } catch (err) {
        logger.warn(`reclaim collector not running: ${(err as Error).message}`);
      }
    }
    this.trail?.start();
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
   * Right after decode, before any wait: the kills' records are made durable in the journal (one commit for the
   * batch one ring read gave), and the kills entered in the ledger. The death confirmation later only amends a record
   * on its way to the sinks; a crash before that leaves the journal entry, re-emitted at the next start.
   */
  private async capture(evs: RawOomEvent[]): Promise<void> {
    const items = evs.map((ev) => ({ ev, record: this.assembler!.kill(ev), tUs: this.assembler!.killPrintkUs(ev) }));
    // tUs: the kill on the printk clock (CLOCK_MONOTONIC-like), to match it with its kernel log line
    const seqs = await this.journal!.appendMany(items.map(({ record, tUs }) => ({ record, tUs })));
    for (const { ev, record, tUs } of items) {
      // matched with its kernel log line by its key, not by tUs: CLOCK_MONOTONIC drifts from the printk clock
      noteKill(this.ledger!, this.parts.logger, ev.victimPid, tUs, record.event_id, record.victim_cgroup, killKeyOfRecord(record));
    }
    for (let i = 0; i < items.length; i++) await this.queue.push({ kind: 'kill', ev: items[i].ev, record: items[i].record, journalSeq: seqs[i], tUs: items[i].tUs });
    // the kernel side's loss counter, after every delivery: a loss is recovered from the kernel log at once
    this.recovery?.check();
  }

  /** Kills the kernel ring buffer lost, recorded from their kernel-log lines: journaled and entered as captures are. */
  private async captureRecovered(items: Array<{ record: OomRecord; tUs: number; key: number }>, opts = { inLedger: false }): Promise<void> {
    const seqs = await this.journal!.appendMany(items);
    if (!opts.inLedger) for (const { record, tUs, key } of items) noteKill(this.ledger!, this.parts.logger, record.victim_pid, tUs, record.event_id, record.victim_cgroup, key);
    for (let i = 0; i < items.length; i++) await this.queue.push({ kind: 'kill', ev: null, record: items[i].record, journalSeq: seqs[i], tUs: items[i].tUs });
  }

  /** Moves assembled records from the queue to the router, and acks each kill's journal entry once routed. */
  private async consume(): Promise<void> {
    const { logger } = this.parts;
    const assembler = this.assembler!;
    for (let item = await this.queue.shift(); item !== undefined; item = await this.queue.shift()) {
      if (isPressure(item)) {
        const pr = assembler.pressure(item);
        logger.info(`memory pressure in ${item.cgroup}: ${item.info.reasons.join(', ')}`, { event_id: pr.event_id });
        await this.router.route(pr);
        continue;
      }
      // the journal holds this record already: the wait for the death amends it, it never gates its durability
      const record = item.ev ? await assembler.complete(item.ev, item.record, { wait: !this.stopping }) : item.record;
      this.metrics.recordCapture(record);
      logger.info(`${item.ev ? 'captured' : 'recovered'} OOM kill of pid ${record.victim_pid} (${record.victim_comm}) in ${record.victim_cgroup || '?'}${item.ev ? '' : ' from the kernel log'}`, {
        event_id: record.event_id,
      });
      const outcomes = await this.router.route(record);
      await this.settleJournal(item, record, outcomes);
      // a big sweep scrolls the kernel log while its records are worked through: read it on between them
      this.recovery?.read();
      this.audit?.readLog();
    }
  }

  /**
   * A kill's journal entry is done once every lane has its record in its spool. Where a lane could not take it
   * (held in memory, dropped), the journal keeps it with the lanes that still need it, so a restart re-emits it to
   * those alone; an entry whose lanes all take it later (spooled or delivered from memory) is acked then.
   */
  private async settleJournal(item: KillItem, record: OomRecord, outcomes: AcceptResult[]): Promise<void> {
    const journal = this.journal!;
    const lanes = this.router.lanes;
    const missing = lanes.filter((_, i) => outcomes[i] !== 'spooled');
    if (missing.length === 0) {
      if (item.journalSeq !== null) await journal.ack(item.journalSeq, record.event_id);
      return;
    }
    this.parts.logger.warn(
      `record of pid ${record.victim_pid} not spooled by every sink: ${lanes.map((l, i) => `${l.name} ${outcomes[i]}`).join(', ')}`,
      { event_id: record.event_id },
    );
    let seq = item.journalSeq;
    if (seq !== null) {
      const narrowed = await journal.appendFor(record, item.tUs, missing.map((l) => l.name));
      if (narrowed !== null) {
        await journal.ack(seq, record.event_id);
        seq = narrowed;
      }
    }
    if (seq === null) return; // nothing durable: the lanes holding it in memory are all it has
    // a dropped record stays in the journal: the next start re-emits it to the lanes that lack it
    if (outcomes.includes('dropped')) return;
    const journalSeq = seq;
    this.journalKept.set(record.event_id, journalSeq);
    void Promise.all(missing.map((l) => l.whenTaken(record.event_id))).then(async (taken) => {
      if (!taken.every(Boolean) || this.stopped) return;
      this.journalKept.delete(record.event_id);
      await journal.ack(journalSeq, record.event_id);
    });
  }

  private stopped = false;
  private lanesClosed = false;

  /**
   * Graceful stop within `deadlineMs`, never longer: detach, drain the queue, deliver what the lanes can, spool what
   * they could not, close. Resolves with what was not delivered and where it is (see `describeStop`).
   */
  async stop(deadlineMs: number): Promise<StopReport> {
    const started = Date.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Not unref'd: the stop must come back with its report even when every other handle is gone.
    const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), deadlineMs)));
    const steps = this.stopSteps(deadlineMs, started).then(
      () => 'done' as const,
      (err: unknown) => {
        this.parts.logger.error(`stop: ${(err as Error).message}`);
        return 'failed' as const;
      },
    );
    const outcome = await Promise.race([steps, deadline]);
    clearTimeout(timer);
    this.stopped = true;
    if (outcome === 'deadline') this.parts.logger.error(`stop: the ${deadlineMs} ms deadline passed before every step finished; not waiting any longer`);
    return {
      // the lanes are what the line is about: the steps after them (metrics server, journal, lock) only tidy up
      complete: (outcome === 'done' || this.lanesClosed) && this.router.lanes.every((l) => l.closed),
      deadlineMs,
      ms: Date.now() - started,
      spoolDir: this.parts.config.pipeline.spool.dir,
      lanes: this.router.lanes.map((l) => {
        const u = l.undelivered();
        return {
          sink: l.name,
          spooled: u.spooled,
          memory: u.memory,
          memoryInJournal: u.memoryIds.filter((id) => this.journalKept.has(id)).length,
          dropped: u.dropped,
          closed: l.closed,
        };
      }),
    };
  }

  private async stopSteps(deadlineMs: number, started: number): Promise<void> {
    const remaining = () => Math.max(0, deadlineMs - (Date.now() - started));
    const reserve = Math.min(CLOSE_RESERVE_MS, Math.floor(deadlineMs / 10));
    // which step a stop that overruns was in
    const step = (name: string): void => void this.parts.logger.debug(`stop: ${name} done`, { ms: Date.now() - started });
    this.stopping = true;
    this.backfill?.cancelTimer();
    this.audit?.stopTimer();
    await this.parts.collector.stop();
    await this.trail?.stop();
    await this.recovery?.stop();
    step('collectors');
    this.queue.close();
    await this.consumer;
    // every live capture is in the ledger now: a backfill waiting to check against them may go on
    this.backfill?.wake();
    await this.backfillDone;
    // every capture is in the ledger: the saved kernel-log position moves over all the kills it holds
    this.backfill?.advance(true);
    this.audit?.check();
    // before the drain, whose share of the deadline is measured after it: its stop blocks up to a poll interval
    // (synchronously, so not even the deadline's timer runs meanwhile); the queued records had their deaths read
    this.parts.reclaim?.stop();
    step('queue');
    await this.router.drain(Math.max(0, remaining() - reserve));
    step('drain');
    // A write still in flight is waited for only within the deadline (a hung sink must not hold the
    // stop past it); an abandoned write's records stay in the spool.
    await this.router.close(Math.min(LANE_CLOSE_GRACE_MS, Math.max(0, remaining() - reserve / 2)));
    this.lanesClosed = true;
    step('lanes closed');
    this.stopped = true;
    await this.server?.close();
    await this.journal?.close().catch(() => undefined);
    this.audit?.close();
    this.unsubscribeRejects();
    this.lock?.release();
    this.lock = null;
    step('all');
  }

}
