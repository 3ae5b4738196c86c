import type { AppConfig } from '../config/schema';
import type { Collector } from '../collectors/collector';
import type { RawOomEvent } from '../collectors/oomkill/event';
import type { Logger } from '../observe/logger';
import { MetricsRegistry, PipelineMetrics, startMetricsServer, type MetricsServer } from '../observe/metrics';
import type { Sink } from '../sinks/sink';
import type { ReclaimCollector } from '../collectors/reclaim/collector';
import { enrich, enrichPressure } from './enrich/enrich';
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
}

type QueueItem = RawOomEvent | ({ kind: 'memory_pressure' } & PressureEvent);

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
    const { config, logger, collector } = this.parts;
    this.facts = readHostFacts(config.host.name);
    await this.router.open();
    await collector.start((ev) => this.queue.push(ev));
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
      `oomtrail ${this.facts.agentVersion} started: config ${this.parts.sources.join(' <- ')}; ` +
        `collector ${d.name} hook ${d.hook}; sinks ${this.parts.sinks.map((s) => s.name).join(', ') || 'none'}; ` +
        `spool ${config.pipeline.spool.dir}; metrics ${this.server ? `${this.server.host}:${this.server.port}` : 'off'}`,
    );
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
      // while stopping, only what the kernel already recorded: no wait
      const death = reclaim?.running
        ? await reclaim.confirmDeath(ev.victimTid, ev.bootNs, this.stopping ? 0 : (this.parts.deathWaitMs ?? 1000), bootNowNs)
        : null;
      const record = enrich(ev, this.facts!, bootToRealtimeNs);
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
    await this.parts.collector.stop();
    await this.parts.trail?.stop();
    this.queue.close();
    await this.consumer;
    const left = await this.router.drain(remaining());
    // A write still in flight is waited for only within the deadline (a hung sink must not hold the
    // stop past it); an abandoned write's records stay in the spool.
    await this.router.close(Math.min(LANE_CLOSE_GRACE_MS, Math.max(LANE_CLOSE_MIN_GRACE_MS, remaining())));
    await this.server?.close();
    this.parts.reclaim?.stop();
    return left;
  }
}
