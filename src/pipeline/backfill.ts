import type { Logger } from '../observe/logger';
import type { PipelineMetrics } from '../observe/metrics';
import { KmsgFollower, killsFromKmsg, parseInvoked, readKmsgRing, type KmsgRecord } from '../collectors/kmsg/kmsg';
import type { HostFacts } from '../host/facts';
import type { RecordAssembler } from './assemble/assemble';
import { backfillFromJournald, type JournaldBackfillOptions } from './journald-backfill';
import { killKeyOfLine, noteKill, readVmstatOomKills, type KillLedger } from './ledger';
import type { Router } from './router';

/** Kernel-log lines this close to the collector's attach are checked against live captures a little later. */
const BACKFILL_SETTLE_MS = 2000;
/** How often the saved kernel-log position moves on over lines whose kills are all recorded. */
const ADVANCE_MS = 5000;
/** Kernel-log records held back (not yet settled, or an OOM report still open) before the position moves on anyway. */
const MAX_HELD_RECORDS = 20_000;

export interface BackfillParts {
  ledger: KillLedger;
  router: Router;
  assembler: RecordAssembler;
  metrics: PipelineMetrics;
  logger: Logger;
  /** the state dir (pipeline.spool.dir) the ledger is kept in, named in the summary */
  stateDir: string;
  /** also read systemd-journald (this boot's kills the ring lost, previous boots'); null: the ring only */
  journald: { options: JournaldBackfillOptions; facts: HostFacts; printkToRealtimeNs: (ns: bigint) => bigint } | null;
}

/**
 * Kills in the kernel log this host has no record of: those logged before the collector attached.
 * Lines logged while it was attaching may be live captures still on their way: they are checked
 * again against the ledger a little later (or when `wake()` says every live capture is in it).
 */
export class Backfill {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private waker: (() => void) | null = null;
  private readonly stopJournalctl = new AbortController();
  /** follows /dev/kmsg after the start-up pass, to move `kmsg_seq` on while running */
  private follower: KmsgFollower | null = null;
  private held: KmsgRecord[] = [];
  private advanceTimer: ReturnType<typeof setInterval> | null = null;
  /** a kill in the log no capture matched: the position stays before it, for the next start's backfill */
  private frozen = false;
  /** kernel-log records the start-up pass examined (for tests and the log) */
  ringRecordsExamined = 0;

  constructor(private readonly parts: BackfillParts) {}

  /** Stops the settle timer (from now on only `wake()` ends the wait) and a journalctl still reading. */
  cancelTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.advanceTimer) clearInterval(this.advanceTimer);
    this.advanceTimer = null;
    this.stopJournalctl.abort();
  }

  /** Every live capture is in the ledger now: a backfill waiting to check against them may go on. */
  wake(): void {
    const w = this.waker;
    this.waker = null;
    w?.();
  }

  async run(beforeAttachUs: number, afterAttachUs: number): Promise<void> {
    const { logger, ledger } = this.parts;
    const recordedBefore = ledger.count;
    let ring: ReturnType<typeof readKmsgRing>;
    let ringReadable = true;
    try {
      ring = readKmsgRing();
    } catch (err) {
      logger.warn(`backfill: cannot read /dev/kmsg: ${(err as Error).message}`);
      ring = []; // the journal may still be readable
      ringReadable = false;
    }
    const since = ledger.state.kmsg_seq;
    const lastSeq = ring.filter((r) => r.usec < afterAttachUs).reduce((m, r) => Math.max(m, r.seq), since);
    // the ring's oldest record of any origin: lines processes wrote are left out of `ring` but are no loss
    const firstSeq = ring.firstSeq !== undefined && ring.firstSeq >= 0 ? ring.firstSeq : (ring[0]?.seq ?? -1);
    if (firstSeq >= 0 && since >= 0 && firstSeq > since + 1) {
      logger.warn(`backfill: the kernel log lost ${firstSeq - since - 1} line(s) since the last look; kills among them cannot be recovered`);
    }
    const fresh = ring.filter((r) => r.seq > since && r.usec < afterAttachUs);
    this.ringRecordsExamined = fresh.length;
    const kills = killsFromKmsg(fresh);
    const now = kills.filter((k) => k.usec < beforeAttachUs);
    const later = kills.filter((k) => k.usec >= beforeAttachUs);
    let n = await this.emitKmsgKills(now);
    const inLog = ringReadable ? killsFromKmsg(ring).length : null;
    if (later.length > 0) {
      await new Promise<void>((resolve) => {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.waker = null;
          resolve();
        }, BACKFILL_SETTLE_MS);
        this.waker = resolve; // stop() cuts the wait short
      });
      n += await this.emitKmsgKills(later);
    }
    const fromRing = n;
    const j = this.parts.journald;
    // after the ring's settle pass: a slow journalctl must not hold back kills the audit is waiting for
    if (j && !this.stopJournalctl.signal.aborted) {
      const { metrics, router } = this.parts;
      n += await backfillFromJournald({
        options: j.options,
        logger,
        ledger,
        facts: j.facts,
        beforeAttachUs,
        signal: this.stopJournalctl.signal,
        toRealtime: j.printkToRealtimeNs,
        emit: async (r) => {
          metrics.recordCapture(r);
          await router.route(r);
        },
      });
    }
    ledger.state.kmsg_seq = lastSeq;
    try {
      ledger.saveState();
    } catch (err) {
      logger.warn(`backfill: cannot save progress: ${(err as Error).message}`);
    }
    // Kernel vs recorded, explained: the kernel counts every kill, its log ring loses old lines, and this state dir
    // holds only what agents using it recorded (an agent with another spool dir records elsewhere, unseen here).
    const kernel = readVmstatOomKills();
    const account =
      `the kernel counted ${kernel ?? 'an unknown number of'} OOM kill(s) this boot; ` +
      (inLog === null ? 'the kernel log was unreadable; ' : `the kernel log holds ${inLog}${kernel !== null && kernel > inLog ? ` (${kernel - inLog} no longer in it)` : ''}; `) +
      `${recordedBefore} were recorded in this state dir (${this.parts.stateDir}) before this start`;
    if (n > 0) {
      logger.warn(
        `backfill: recorded ${n} OOM kill(s) not in this state dir (${fromRing} from the kernel log, ${n - fromRing} from the journal): ` +
          `no agent using this state dir captured them (one with another state dir may have); ${account}`,
      );
    } else if (kernel !== null && kernel > ledger.count) logger.info(`backfill: nothing to record; ${account}`);
    logger.info(`backfill: examined ${this.ringRecordsExamined} kernel log record(s) after seq ${since}; position now seq ${lastSeq}`);
    this.followFrom(lastSeq);
  }

  /**
   * From here on the saved position (`kmsg_seq`) moves on while running, over lines whose kills are
   * all in the ledger, so that the next start reads only what no run has examined.
   */
  private followFrom(seq: number): void {
    if (this.stopJournalctl.signal.aborted) return; // stopping already
    try {
      this.follower = new KmsgFollower();
    } catch {
      return; // no /dev/kmsg: the position stays where the start-up pass left it
    }
    this.held = this.follower.read().filter((r) => r.seq > seq);
    this.advanceTimer = setInterval(() => this.advance(false), ADVANCE_MS);
    this.advanceTimer.unref();
  }

  /**
   * Moves `kmsg_seq` over the records read before, up to the last kill line whose kill the ledger holds
   * (matched on its key, not on a clock). Records read by this call (live captures of their kills may
   * still be on their way: settled by the time of reading, ≥ 5 s, not by comparing clocks) and an OOM
   * report not yet ended by its kill line are held for the next call; `final` (at stop, every capture in
   * the ledger) settles all. A kill nobody recorded freezes the position before it: the next start's
   * backfill records it.
   */
  advance(final: boolean): void {
    const { ledger, logger } = this.parts;
    if (!this.follower) return;
    const settled = final ? Infinity : this.held.length;
    try {
      for (const r of this.follower.read()) this.held.push(r);
    } catch (err) {
      logger.warn(`backfill: kernel log unreadable, the saved position stays: ${(err as Error).message}`);
      this.closeFollower();
      return;
    }
    if (final) this.closeFollower();
    if (this.frozen) {
      this.held = [];
      return;
    }
    const records = this.held.slice(0, settled);
    let pos = -1;
    for (const kill of killsFromKmsg(records)) {
      if (!ledger.matches(kill.killed.pid, kill.usec, ledger.bootId, killKeyOfLine(kill.killed))) {
        this.frozen = true;
        logger.warn(`backfill: kernel log seq ${kill.seq} holds a kill of pid ${kill.killed.pid} no capture recorded; the next start recovers it`);
        break;
      }
      pos = kill.seq;
    }
    let keepFrom: number;
    if (this.frozen) keepFrom = this.held.length;
    else {
      // after the last kill line: up to an OOM report still open (its invoked line), if any
      const after = pos < 0 ? 0 : records.findIndex((r) => r.seq === pos) + 1;
      const open = records.findIndex((r, i) => i >= after && parseInvoked(r.message) !== null);
      keepFrom = open < 0 ? records.length : open;
      if (this.held.length - keepFrom > MAX_HELD_RECORDS) keepFrom = this.held.length - MAX_HELD_RECORDS;
      if (keepFrom > 0) pos = Math.max(pos, this.held[keepFrom - 1].seq);
    }
    this.held = this.held.slice(keepFrom);
    if (pos > ledger.state.kmsg_seq) {
      ledger.state.kmsg_seq = pos;
      try {
        ledger.saveState();
      } catch (err) {
        logger.warn(`backfill: cannot save progress: ${(err as Error).message}`);
      }
    }
  }

  private closeFollower(): void {
    if (this.advanceTimer) clearInterval(this.advanceTimer);
    this.advanceTimer = null;
    this.follower?.close();
    this.follower = null;
  }

  private async emitKmsgKills(kills: ReturnType<typeof killsFromKmsg>): Promise<number> {
    const { ledger, assembler, metrics, logger, router } = this.parts;
    let n = 0;
    for (const kill of kills) {
      const key = killKeyOfLine(kill.killed);
      if (ledger.matches(kill.killed.pid, kill.usec, ledger.bootId, key)) continue;
      const record = assembler.kmsg(kill);
      if (ledger.has(record.event_id)) continue;
      metrics.recordCapture(record);
      logger.info(`backfilled OOM kill of pid ${record.victim_pid} (${record.victim_comm}) from the kernel log`, { event_id: record.event_id });
      await router.route(record);
      noteKill(ledger, logger, kill.killed.pid, kill.usec, record.event_id, record.victim_cgroup, key);
      n++;
    }
    return n;
  }
}
