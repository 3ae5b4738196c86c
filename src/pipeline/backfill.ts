import type { Logger } from '../observe/logger';
import type { PipelineMetrics } from '../observe/metrics';
import { killsFromKmsg, readKmsgRing } from '../collectors/kmsg/kmsg';
import type { HostFacts } from '../host/facts';
import type { RecordAssembler } from './assemble/assemble';
import { backfillFromJournald, type JournaldBackfillOptions } from './journald-backfill';
import { noteKill, readVmstatOomKills, type KillLedger } from './ledger';
import type { Router } from './router';

/** Kernel-log lines this close to the collector's attach are checked against live captures a little later. */
const BACKFILL_SETTLE_MS = 2000;

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

  constructor(private readonly parts: BackfillParts) {}

  /** Stops the settle timer (from now on only `wake()` ends the wait) and a journalctl still reading. */
  cancelTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
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
    const kills = killsFromKmsg(ring.filter((r) => r.seq > since && r.usec < afterAttachUs));
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
          metrics.recordCapture(r.hook, r.victim_cgroup || r.oom_cgroup);
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
  }

  private async emitKmsgKills(kills: ReturnType<typeof killsFromKmsg>): Promise<number> {
    const { ledger, assembler, metrics, logger, router } = this.parts;
    let n = 0;
    for (const kill of kills) {
      if (ledger.matches(kill.killed.pid, kill.usec)) continue;
      const record = assembler.kmsg(kill);
      if (ledger.has(record.event_id)) continue;
      metrics.recordCapture(record.hook, record.victim_cgroup || record.oom_cgroup);
      logger.info(`backfilled OOM kill of pid ${record.victim_pid} (${record.victim_comm}) from the kernel log`, { event_id: record.event_id });
      await router.route(record);
      noteKill(ledger, logger, kill.killed.pid, kill.usec, record.event_id, record.victim_cgroup);
      n++;
    }
    return n;
  }
}
