import type { AppConfig } from '../config/schema';
import type { Collector } from '../collectors/collector';
import type { RawOomEvent } from '../collectors/oomkill/event';
import type { Logger } from '../observe/logger';
import { MetricsRegistry, PipelineMetrics, startMetricsServer, type MetricsServer } from '../observe/metrics';
import type { Sink } from '../sinks/sink';
import type { OomRecord } from '../record/record';
import type { PressureEvent, TrailSource } from '../collectors/trail/sampler';
import { systemClock, type Clock } from '../host/clock';
import { readHostFacts, type HostFacts } from '../host/facts';
import { RecordAssembler, type DeathSource, type RuntimeNames } from './assemble/assemble';
import { readHostTotalPages } from './assemble/enrich';
import { KillAudit, type AuditedCgroups } from './audit';
import { Backfill } from './backfill';
import { KillJournal } from './journal';
import { DirLock } from './lock';
import { KillLedger, killKeyOfRecord, noteKill } from './ledger';
import { Lane } from './lane';
import { BoundedQueue } from './queue';
import { Router } from './router';

export { JOURNAL_DIR } from './journal';

/** Longest wait at stop for a sink write still in flight, and the least (even past the deadline). */
const LANE_CLOSE_GRACE_MS = 2000;
const LANE_CLOSE_MIN_GRACE_MS = 100;

/** What the agent needs of the trail sampler: its lifetime, trails for records, its cgroups for the audit. */
export type AgentTrail = TrailSource & AuditedCgroups & { start(): void; stop(): Promise<void> };

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
  ev: RawOomEvent;
  record: OomRecord;
  journalSeq: number | null;
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
  private lostReported = 0n;
  private lock: DirLock | null = null;
  private journal: KillJournal | null = null;
  private ledger: KillLedger | null = null;
  private audit: KillAudit | null = null;
  private backfill: Backfill | null = null;
  private backfillDone: Promise<void> = Promise.resolve();

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
    });
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
      this.backfill?.cancelTimer();
      this.audit?.stopTimer();
      await this.parts.collector.stop().catch(() => undefined);
      await Promise.resolve(this.trail?.stop()).catch(() => undefined);
      this.parts.reclaim?.stop();
      this.audit?.close();
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
    const replay = await this.journal.readUnfinished(this.router.lanes);
    await this.router.open();
    await this.journal.replay(replay, this.router.lanes, {
      emitted: (record) => this.metrics.recordCapture(record.hook, record.victim_cgroup || record.oom_cgroup),
      entry: (record, tUs) => noteKill(ledger, logger, record.victim_pid, tUs, record.event_id, record.victim_cgroup, killKeyOfRecord(record)),
    });
    const startUs = this.clock.printkNowUs();
    await collector.start((ev) => this.capture(ev));
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
    if (config.collectors.oomkill.backfill) {
      this.backfill = new Backfill({
        ledger,
        router: this.router,
        assembler: this.assembler!,
        metrics: this.metrics,
        logger,
        journald: o.backfill_journald
          ? {
              options: { directory: o.backfill_journald_dir, previousBoots: o.backfill_previous_boots },
              facts: this.facts!,
              printkToRealtimeNs: this.clock.printkToRealtimeNs,
            }
          : null,
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
   * Right after decode, before any wait: the kill's record is made durable in the journal, and the
   * kill entered in the ledger. The death confirmation later only amends the record on its way to
   * the sinks; a crash before that leaves the journal entry, re-emitted at the next start.
   */
  private async capture(ev: RawOomEvent): Promise<void> {
    const record = this.assembler!.kill(ev);
    // the kill on the printk clock (CLOCK_MONOTONIC-like), to match it with its kernel log line
    const tUs = this.assembler!.killPrintkUs(ev);
    const journalSeq = await this.journal!.append(record, tUs);
    // matched with its kernel log line by its key, not by tUs: CLOCK_MONOTONIC drifts from the printk clock
    noteKill(this.ledger!, this.parts.logger, ev.victimPid, tUs, record.event_id, record.victim_cgroup, killKeyOfRecord(record));
    await this.queue.push({ kind: 'kill', ev, record, journalSeq });
  }

  /** Moves assembled records from the queue to the router, and acks each kill's journal entry once routed. */
  private async consume(): Promise<void> {
    const { collector, logger } = this.parts;
    const assembler = this.assembler!;
    for (let item = await this.queue.shift(); item !== undefined; item = await this.queue.shift()) {
      if (isPressure(item)) {
        const pr = assembler.pressure(item);
        logger.info(`memory pressure in ${item.cgroup}: ${item.info.reasons.join(', ')}`, { event_id: pr.event_id });
        await this.router.route(pr);
        continue;
      }
      // the journal holds this record already: the wait for the death amends it, it never gates its durability
      const record = await assembler.complete(item.ev, item.record, { wait: !this.stopping });
      // labelled by the victim's cgroup (the workload that lost a process), as the metric's help says;
      // oom_cgroup would put every global OOM under "/" and every child's kill under its limited ancestor
      this.metrics.recordCapture(record.hook, record.victim_cgroup || record.oom_cgroup);
      logger.info(`captured OOM kill of pid ${record.victim_pid} (${record.victim_comm}) in ${record.victim_cgroup || '?'}`, {
        event_id: record.event_id,
      });
      await this.router.route(record);
      if (item.journalSeq !== null) await this.journal!.ack(item.journalSeq, record.event_id);
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
    this.backfill?.cancelTimer();
    this.audit?.stopTimer();
    await this.parts.collector.stop();
    await this.trail?.stop();
    this.queue.close();
    await this.consumer;
    // every live capture is in the ledger now: a backfill waiting to check against them may go on
    this.backfill?.wake();
    await this.backfillDone;
    // every capture is in the ledger: the saved kernel-log position moves over all the kills it holds
    this.backfill?.advance(true);
    this.audit?.check();
    const left = await this.router.drain(remaining());
    // A write still in flight is waited for only within the deadline (a hung sink must not hold the
    // stop past it); an abandoned write's records stay in the spool.
    await this.router.close(Math.min(LANE_CLOSE_GRACE_MS, Math.max(LANE_CLOSE_MIN_GRACE_MS, remaining())));
    await this.server?.close();
    this.parts.reclaim?.stop();
    await this.journal?.close().catch(() => undefined);
    this.audit?.close();
    this.lock?.release();
    this.lock = null;
    return left;
  }
}
