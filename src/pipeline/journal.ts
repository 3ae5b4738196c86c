import path from 'node:path';
import type { Logger } from '../observe/logger';
import type { OomRecord } from '../record/record';
import type { Lane } from './lane';
import { Spool, type FsyncPolicy } from './spool';

/** `<spool.dir>/.journal`: a sink name can never start with a dot, so no lane's spool collides with it. */
export const JOURNAL_DIR = '.journal';

/** What the journal holds per kill: the record without death/trail fields, and the kill's printk time. */
export interface JournalEntry {
  j: 1;
  t_us: number;
  record: OomRecord;
  /**
   * Only these lanes still need the record (the others spooled or delivered it): written when some lane could not
   * take it, so a restart re-emits it there and nowhere else. Absent: every lane that does not hold it in its spool.
   */
  lanes?: string[];
}

/** Journal entries a previous run never finished, and which lanes already spooled each (by event_id). */
export interface JournalReplay {
  entries: Array<{ seq: number; entry: JournalEntry }>;
  spooled: Map<string, Set<string>>;
}

/**
 * The write-ahead journal of kills: a kill's first record is appended right after decode, before
 * any wait, and acked once the router has handed it to every lane's spool. What a crash leaves in
 * it is re-emitted at the next start, to the lanes that do not hold it yet.
 */
export class KillJournal {
  private constructor(
    private readonly spool: Spool,
    private readonly spoolDir: string,
    private readonly logger: Logger,
  ) {}

  /** Opens `<spoolDir>/.journal`. */
  static async open(spoolDir: string, fsync: FsyncPolicy, logger: Logger): Promise<KillJournal> {
    // `batch` gives each append the guarantee of `always` (resolved after an fsync that began after its
    // write) with fsyncs shared across a burst, so a kill's journal ack does not queue behind a burst's fsyncs
    const journalFsync = fsync === 'never' ? 'never' : 'batch';
    const spool = await Spool.open({ dir: path.join(spoolDir, JOURNAL_DIR), fsync: journalFsync, maxBytes: 0, logger });
    return new KillJournal(spool, spoolDir, logger);
  }

  /** Makes `record` durable; its sequence number, or null when the write failed (the record is then held in memory only). */
  async append(record: OomRecord, tUs: number): Promise<number | null> {
    try {
      const [seq] = await this.spool.append([{ j: 1, t_us: tUs, record } as unknown as OomRecord]);
      return seq;
    } catch (err) {
      this.logger.error(`journal: cannot write the record of pid ${record.victim_pid}; it is held in memory only: ${(err as Error).message}`, {
        event_id: record.event_id,
      });
      return null;
    }
  }

  /**
   * Makes a batch of kills durable together: one write and one fsync for all (group commit). Their sequence numbers in
   * order, or nulls when the write failed (the records are then held in memory only).
   */
  async appendMany(items: ReadonlyArray<{ record: OomRecord; tUs: number }>): Promise<Array<number | null>> {
    try {
      return await this.spool.append(items.map(({ record, tUs }) => ({ j: 1, t_us: tUs, record }) as unknown as OomRecord));
    } catch (err) {
      this.logger.error(`journal: cannot write the records of ${items.length} kill(s); they are held in memory only: ${(err as Error).message}`);
      return items.map(() => null);
    }
  }

  /**
   * A second entry for a kill some lanes could not take (held in memory, dropped), naming those lanes; the caller
   * then acks the first. Its sequence number, or null when the write failed (the first entry then stays).
   */
  async appendFor(record: OomRecord, tUs: number, lanes: readonly string[]): Promise<number | null> {
    try {
      const [seq] = await this.spool.append([{ j: 1, t_us: tUs, record, lanes: [...lanes] } as unknown as OomRecord]);
      return seq;
    } catch (err) {
      this.logger.warn(`journal: cannot note which sinks still need the record of pid ${record.victim_pid}: ${(err as Error).message}`, {
        event_id: record.event_id,
      });
      return null;
    }
  }

  /** The record is in every lane's spool: its entry is done. */
  async ack(seq: number, eventId: string): Promise<void> {
    try {
      await this.spool.ack([seq]);
    } catch (err) {
      // an entry left in the journal is re-emitted at the next start only where it is not spooled
      this.logger.warn(`journal: cannot mark ${eventId} spooled: ${(err as Error).message}`);
    }
  }

  /** Entries a previous run never finished, and which lanes already spooled each. Call before the lanes open. */
  async readUnfinished(lanes: readonly Lane[]): Promise<JournalReplay> {
    const entries: Array<{ seq: number; entry: JournalEntry }> = [];
    for await (const r of this.spool.pending()) entries.push({ seq: r.seq, entry: r.record as unknown as JournalEntry });
    const spooled = new Map<string, Set<string>>();
    if (entries.length === 0) return { entries, spooled };
    // read before the lanes open: once open, a lane may deliver and delete what it holds
    for (const lane of lanes) {
      const ids = new Set<string>();
      const spool = await Spool.open({ dir: path.join(this.spoolDir, lane.name), fsync: 'never', maxBytes: 0, logger: this.logger });
      try {
        for await (const r of spool.pending()) ids.add(r.record.event_id);
      } finally {
        await spool.close();
      }
      spooled.set(lane.name, ids);
    }
    return { entries, spooled };
  }

  /**
   * Re-emits each unfinished entry to the lanes that do not hold it (`onEmitted` for each one that
   * went anywhere), notes it (`onEntry`, e.g. the kill ledger), and acks it.
   */
  async replay(
    replay: JournalReplay,
    lanes: readonly Lane[],
    on: { emitted(record: OomRecord): void; entry(record: OomRecord, tUs: number): void },
  ): Promise<void> {
    if (replay.entries.length === 0) return;
    const { logger } = this;
    let emitted = 0;
    for (const { seq, entry } of replay.entries) {
      const record = entry.record;
      let any = false;
      for (const lane of lanes) {
        if (entry.lanes && !entry.lanes.includes(lane.name)) continue;
        if (replay.spooled.get(lane.name)?.has(record.event_id)) continue;
        await lane.accept(record);
        any = true;
      }
      if (any) {
        emitted++;
        logger.info(`journal: re-emitting the record of pid ${record.victim_pid} (${record.victim_comm})`, { event_id: record.event_id });
        on.emitted(record);
      }
      on.entry(record, entry.t_us);
      await this.spool.ack([seq]);
    }
    if (emitted > 0) {
      logger.warn(`journal: re-emitted ${emitted} OOM kill record(s) the previous run captured but did not spool (it stopped abruptly)`);
    }
  }

  async close(): Promise<void> {
    await this.spool.close();
  }
}
