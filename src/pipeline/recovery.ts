import { KmsgFollower, killsFromKmsg, type KmsgRecord } from '../collectors/kmsg/kmsg';
import { addKernelLogReader } from '../collectors/kmsg/pump';
import type { Logger } from '../observe/logger';
import type { PipelineMetrics } from '../observe/metrics';
import type { HostFacts } from '../host/facts';
import type { RecordAssembler } from './assemble/assemble';
import { backfillFromJournald, type JournaldBackfillOptions } from './journald-backfill';
import { killKeyOfLine, type KillLedger } from './ledger';
import type { OomRecord } from '../record/record';

/** Kernel-log OOM lines kept this long (printk µs) for a recovery: a lost event's line is printed right after its loss. */
const KEEP_US = 120_000_000;
/** …and at most this many (a sweep's lines, their reports' task tables not included). */
const MAX_KEPT = 50_000;
/** After a loss, rounds (one a second) until as many kills came back from the log as were lost. */
const ROUNDS = 30;
const ROUND_MS = 1000;
const OOM_LINE = /Killed process|oom-kill:|invoked oom-killer/;
/**
 * While OOM events or kernel-log lines arrive, the log is also read on this timer: a 1,000-process sweep prints ~300 KB
 * in ~1.5 s into a 128 KiB printk ring, and the wake-ups that follow the collector's ring wait for its back-pressure
 * (a recovery's own records fill the queue), so they alone fall ~1 s behind (6.12 VM: 96 and 139 of 1,000 lines
 * overwritten unread).
 */
const BUSY_READ_MS = 25;
/** …until the kernel and the rounds were quiet this long: an idle agent keeps no timer. */
const BUSY_QUIET_MS = 5000;
/** Kills assembled between two reads in a round (each costs ~25 ms under emulation). */
const READ_EVERY_KILLS = 4;

export interface DropRecoveryParts {
  ledger: KillLedger;
  assembler: RecordAssembler;
  /** journals them and enters them in the ledger (as live captures are), then queues them for the sinks */
  record: (items: Array<{ record: OomRecord; tUs: number; key: number }>, opts?: { inLedger: boolean }) => Promise<void>;
  metrics: PipelineMetrics;
  logger: Logger;
  /**
   * Reads the collector's ring and delivers (captures, enters in the ledger) everything it held: after it, a kill whose
   * line was read before it is either recorded or lost. False when the delivery could not finish (held up downstream).
   */
  flush: () => Promise<boolean>;
  /** Events the kernel side lost so far (its counter). */
  lost: () => bigint;
  /** where no /dev/kmsg can be read: systemd-journald (null: not configured) */
  journald: { options: JournaldBackfillOptions; facts: HostFacts; printkToRealtimeNs: (ns: bigint) => bigint } | null;
}

/**
 * Kills the kernel's ring buffer lost (full), recovered from the kernel log while the agent runs, as the start-up
 * backfill recovers those from before it. Kernel-log OOM lines are read as events arrive (a big sweep scrolls the
 * printk ring) and kept briefly; when the loss counter moves, the collector's ring is flushed first, so every line read
 * before names a kill that is either in the ledger (matched by its key: never recorded twice) or lost — and a lost one
 * is recorded from its line. Rounds go on until the log gave back as many kills as were lost (a lost event's line may
 * be printed after its loss is counted).
 */
export class DropRecovery {
  private follower: KmsgFollower | null = null;
  private kept: KmsgRecord[] = [];
  private gapSaid = false;
  private lostSeen = 0n;
  private recovered = 0n;
  private running: Promise<void> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private wake: (() => void) | null = null;
  private stopped = false;
  private busyTimer: ReturnType<typeof setInterval> | null = null;
  private reading = false;
  private unpump: (() => void) | null = null;
  private lastBusy = 0;
  private lossCheckQueued = false;
  private recheck = false;

  constructor(private readonly parts: DropRecoveryParts) {}

  /**
   * From now on (lines logged before are the start-up backfill's). `watch`: wakes `check` when the kernel logs a line,
   * so a loss is noticed even when no event at all reached user space (the collector's own wait, no timer).
   */
  start(watch?: (fd: number, onWake: () => void) => void): void {
    // losses before this start are the start-up backfill's (its lines are before the attach)
    this.lostSeen = this.recovered = this.parts.lost();
    try {
      this.follower = new KmsgFollower();
      this.follower.skip();
      const fd = this.follower.descriptor;
      if (watch && fd !== null) watch(fd, () => this.checkLoss());
      // long synchronous loops elsewhere (a report's thousands of lines, a /proc walk) read the log on for us
      this.unpump = addKernelLogReader(() => this.read());
    } catch (err) {
      this.parts.logger.info(`live recovery of lost events: /dev/kmsg unreadable (${(err as Error).message}); ${this.parts.journald ? 'the systemd journal instead' : 'none'}`);
    }
  }

  /** Reads the kernel log on (cheap when nothing is new): called as events arrive. */
  read(): void {
    if (!this.follower || this.reading) return;
    this.reading = true;
    try {
      this.readNow();
    } finally {
      this.reading = false;
    }
  }

  private readNow(): void {
    if (!this.follower) return;
    try {
      // only the kernel's own lines (facility 0), as killsFromKmsg will demand: a process's lines cannot crowd them out
      let oom = false;
      for (const r of this.follower.read()) {
        if ((r.facility === undefined || r.facility === 0) && OOM_LINE.test(r.message)) {
          this.kept.push(r);
          oom = true;
        }
      }
      // an OOM report in progress: its lines may scroll the printk ring (other kernel chatter starts no timer)
      if (oom) {
        this.busy();
        this.checkLossSoon();
      }
      // the printk ring overwrote lines before they were read (a sweep's report and lines scroll it): said once
      if (this.follower.overwritten > 0 && !this.gapSaid) {
        this.gapSaid = true;
        this.parts.logger.warn('live recovery: the kernel log overwrote lines before they were read; kills among them cannot be recovered while running');
      }
    } catch (err) {
      // closed, so a descriptor that stays readable cannot keep waking the agent
      this.parts.logger.warn(`live recovery: /dev/kmsg unreadable, no live recovery from here on: ${(err as Error).message}`);
      this.follower.close();
      this.follower = null;
      return;
    }
    const newest = this.kept.length ? this.kept[this.kept.length - 1].usec : 0;
    let drop = 0;
    while (drop < this.kept.length && (newest - this.kept[drop].usec > KEEP_US || this.kept.length - drop > MAX_KEPT)) drop++;
    if (drop) this.kept = this.kept.slice(drop);
  }

  /** Reads the log on a short timer from now until the kernel and the rounds have been quiet for BUSY_QUIET_MS. */
  private busy(): void {
    this.lastBusy = Date.now();
    if (this.busyTimer || this.stopped || !this.follower) return;
    this.busyTimer = setInterval(() => {
      this.read();
      if (this.stopped || (!this.running && Date.now() - this.lastBusy > BUSY_QUIET_MS)) {
        clearInterval(this.busyTimer!);
        this.busyTimer = null;
      }
    }, BUSY_READ_MS);
    this.busyTimer.unref?.();
  }

  /** After each delivery: when the loss counter moved, recovers at once (one recovery at a time, then rounds). */
  check(): void {
    this.busy();
    this.checkLoss();
  }

  /**
   * After OOM lines were read here: a line read on the busy timer or by a long loop no longer wakes the collector's
   * wait on the log's descriptor, and with every event lost (no delivery either) nothing else would look at the loss
   * counter (the likely cause of a 6.1 VM run whose test of 12 lost kills took 68 s, not 12, and whose audit called one
   * missed that was recorded later).
   */
  private checkLossSoon(): void {
    if (this.lossCheckQueued || this.stopped) return;
    this.lossCheckQueued = true;
    setImmediate(() => {
      this.lossCheckQueued = false;
      this.checkLoss();
    });
  }

  /** On a delivery or a kernel-log wake-up. */
  private checkLoss(): void {
    this.read();
    if (this.stopped) return;
    // the rounds in flight may have read the counter for the last time already: look again once they end
    if (this.running) {
      this.recheck = true;
      return;
    }
    const lost = this.parts.lost();
    if (lost <= this.lostSeen && this.recovered >= this.lostSeen) return;
    if (lost > this.lostSeen) {
      this.parts.metrics.dropped.inc({ stage: 'kernel_ringbuf', reason: 'ringbuf_full' }, Number(lost - this.lostSeen));
      this.parts.logger.error(`kernel ring buffer was full: ${lost - this.lostSeen} OOM events lost; recovering them from the kernel log`);
      this.lostSeen = lost;
    }
    this.running = this.rounds().finally(() => {
      this.running = null;
      if (this.recheck) {
        this.recheck = false;
        this.checkLoss();
      }
    });
  }

  private async rounds(): Promise<void> {
    const { logger } = this.parts;
    for (let round = 0; round < ROUNDS && !this.stopped; round++) {
      if (round > 0) {
        await new Promise<void>((r) => {
          this.wake = r;
          this.timer = setTimeout(r, ROUND_MS);
        });
      }
      if (this.stopped) break;
      const n = await this.round();
      this.recovered += BigInt(n);
      if (n > 0) logger.warn(`live recovery: recorded ${n} OOM kill(s) from the kernel log that the kernel ring buffer lost`);
      const lost = this.parts.lost();
      if (lost > this.lostSeen) {
        this.parts.metrics.dropped.inc({ stage: 'kernel_ringbuf', reason: 'ringbuf_full' }, Number(lost - this.lostSeen));
        logger.error(`kernel ring buffer was full: ${lost - this.lostSeen} more OOM events lost; recovering them from the kernel log`);
        this.lostSeen = lost;
        round = 0;
      }
      if (this.recovered >= this.lostSeen) return;
    }
    if (this.recovered < this.lostSeen && !this.stopped) {
      logger.error(`live recovery: ${this.lostSeen - this.recovered} lost OOM event(s) not found in the kernel log; the audit reports them as missed`);
      this.recovered = this.lostSeen; // said once; a later loss starts anew
    }
  }

  /** One pass: the log read, then the ring flushed, then every kill line read before it that no capture recorded. */
  private async round(): Promise<number> {
    const { ledger, assembler, metrics, logger } = this.parts;
    if (!this.follower) return (await this.parts.flush()) ? this.fromJournald() : 0;
    this.read();
    // what was read before the flush: a line read after it may name a kill still on its way
    const lines = this.kept.slice();
    // a line whose event is still on its way would be recorded twice: nothing this round then
    if (!(await this.parts.flush())) return 0;
    const items: Array<{ record: OomRecord; tUs: number; key: number }> = [];
    const ids = new Set<string>();
    let seen = 0;
    for (const kill of killsFromKmsg(lines)) {
      // the log scrolls while a big sweep is recovered: read between kills (kept for the next round)
      if (++seen % READ_EVERY_KILLS === 0) this.read();
      const key = killKeyOfLine(kill.killed);
      if (ledger.matches(kill.killed.pid, kill.usec, ledger.bootId, key)) continue;
      const record = assembler.kmsg(kill);
      if (ledger.has(record.event_id) || ids.has(record.event_id)) continue;
      ids.add(record.event_id);
      items.push({ record, tUs: kill.usec, key });
    }
    // in the ledger (and journaled) at once, as a batch: the sinks get them through the queue
    if (items.length) await this.parts.record(items);
    return items.length;
  }

  private async fromJournald(): Promise<number> {
    const j = this.parts.journald;
    if (!j) return 0;
    const { ledger, logger } = this.parts;
    return backfillFromJournald({
      // as configured (fewer boots would drop the others' kills from the ledger); this boot from the cursor the
      // start-up pass (or the last round) left, every line after it
      options: j.options,
      logger,
      ledger,
      facts: j.facts,
      beforeAttachUs: Number.POSITIVE_INFINITY,
      toRealtime: j.printkToRealtimeNs,
      // backfillFromJournald enters it in the ledger itself, after this
      emit: (record) => this.parts.record([{ record, tUs: 0, key: 0 }], { inLedger: true }),
    });
  }

  /** Ends the rounds (the stop path flushes the ring itself) and waits for a round in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.busyTimer) clearInterval(this.busyTimer);
    this.busyTimer = null;
    this.wake?.();
    await this.running;
    this.unpump?.();
    this.unpump = null;
    this.follower?.close();
    this.follower = null;
  }
}
