import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { OomRecord } from '../record/record';
import type { Sink, WriteResult } from '../sinks/sink';
import type { Logger } from '../observe/logger';
import type { PipelineMetrics } from '../observe/metrics';
import { Batcher, type BatchLimits } from './batcher';
import { backoffMs, MAX_TIMER_MS, type BackoffOptions } from './retry';
import { rotateBySize } from './rotate';
import { Spool, SpoolError, SpoolFullError, SpoolSyncError, type FsyncPolicy, type SpooledRecord } from './spool';

export type LaneErrorCode = 'LANE_CONFIG' | 'LANE_STATE';

export class LaneError extends Error {
  readonly retriable = false;
  constructor(readonly code: LaneErrorCode, message: string) {
    super(message);
    this.name = 'LaneError';
  }
}

export interface LaneOptions {
  sink: Sink;
  /** `pipeline.spool.dir`: the lane spools under `<spoolDir>/<sink>/`, dead letters go to `<spoolDir>/<sink>.dead-letter.jsonl`. */
  spoolDir: string;
  fsync: FsyncPolicy;
  /** `pipeline.spool.max_bytes`, per sink; 0 = no cap. */
  maxSpoolBytes: number;
  batch: BatchLimits;
  retry: BackoffOptions;
  logger: Logger;
  metrics?: PipelineMetrics;
  /**
   * `pipeline.dead_letter.*`: before an append would take the dead-letter file past `maxBytes`, it is renamed
   * to `.1` (`.1` to `.2`, …, `.keep` dropped), so it takes at most (keep + 1) x maxBytes (plus one batch).
   * Default 16 MiB, keep 3.
   */
  deadLetter?: { maxBytes: number; keep: number };
  /**
   * `pipeline.spool.hold_max_records` / `hold_max_bytes`: records the spool cannot take (disk full, quota, I/O error,
   * read-only) are held in memory up to these caps, delivered from there, and appended to the spool in order once it
   * takes writes again. Past either cap a new record is dropped (reason `hold_full`). Default 1000 records, 8 MiB.
   */
  hold?: { maxRecords: number; maxBytes: number };
  /** How long `close()` waits for a sink write still in flight. Default 2000 ms. */
  closeGraceMs?: number;
  /** Test seams. */
  random?: () => number;
  now?: () => number;
}

/**
 * `spooled`: durable in this lane's spool. `held`: the spool could not take it; held in memory (delivered from there,
 * spooled once the disk takes writes again; `whenTaken` says when). `dropped`: counted under a reason in `dropped()`.
 */
export type AcceptResult = 'spooled' | 'held' | 'dropped';

export type LaneDropReason = 'spool_full' | 'spool_error' | 'lane_closed' | 'hold_full';

/** What a lane has not delivered: still in its spool (kept for the next start), in memory only, or dropped this run. */
export interface LaneUndelivered {
  spooled: number;
  /** records the spool never took, held in memory: gone when the process exits */
  memory: number;
  /** event_ids of those, so the caller can tell which of them its journal still keeps */
  memoryIds: string[];
  dropped: Record<string, number>;
}

/** A record the spool could not take. `waiting`: for the pump or the spool; `moving`: being appended to the spool; `reading`: in a batch. */
interface HeldEntry {
  record: OomRecord;
  bytes: number;
  state: 'waiting' | 'moving' | 'reading';
  /** set when the entry was spooled at the stop while in a batch: a late delivery acks it */
  spooledSeq?: number;
  taken: Promise<boolean>;
  settle: (taken: boolean) => void;
}

/** A record in a batch: read from the spool (`seq` > 0), or one held in memory (`held`, `seq` 0). */
type LaneItem = SpooledRecord & { held?: HeldEntry };

/** What the lane holds in memory, to check it stays bounded while a sink is down. */
export interface LaneMemoryStats {
  /** Records read from the spool and not yet acknowledged or abandoned. */
  buffered: number;
  bufferedHighWater: number;
  /** Largest number of records read from disk in one go. */
  largestRead: number;
}

export interface LaneStats {
  sink: string;
  delivered: number;
  retried: number;
  rejected: number;
  dropped: Record<string, number>;
  spoolRecords: number;
  spoolBytes: number;
  lastSuccessMs: number | null;
  failingSinceMs: number | null;
  lastFailure: string | null;
}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const DEAD_LETTER_DEFAULTS = { maxBytes: 16 << 20, keep: 3 };
const HOLD_DEFAULTS = { maxRecords: 1000, maxBytes: 8 << 20 };
/** The same rejection reason is logged as a warning at most this often per lane. */
export const REJECTION_LOG_INTERVAL_MS = 60_000;
/** Longest wait between two attempts to move held records into the spool (the next accept also tries). */
const HOLD_RETRY_MAX_MS = 2000;

/**
 * One per sink: accepted records go to the lane's durable spool first; a pump reads them back in
 * batch-sized chunks, batches them and writes them to the sink. `delivered` acks them in the
 * spool; `retryable` retries the identical batch after a jittered backoff (honouring `afterMs`);
 * `rejected` appends them to the dead-letter file, then acks. At startup the lane replays
 * whatever its spool still holds. At most one batch is read, one open and one in flight.
 */
export class Lane {
  readonly name: string;
  private readonly spoolPath: string;
  readonly deadLetterPath: string;
  private spool: Spool | undefined;
  private readonly batcher: Batcher<LaneItem>;
  /** Records the spool could not take, oldest first: `reading` ones, then `moving`/`waiting` ones. */
  private readonly held: HeldEntry[] = [];
  private heldBytes = 0;
  private holdTimer: ReturnType<typeof setTimeout> | null = null;
  private holdAttempt = 0;
  private moving: Promise<void> | null = null;
  private state: 'new' | 'open' | 'closing' | 'closed' = 'new';
  private stopping = false;
  private cursor = 0;
  private dirty = false;
  private wake: (() => void) | null = null;
  private readonly sleepers = new Set<() => void>();
  private pumpDone: Promise<void> = Promise.resolve();
  private idleWaiters: (() => void)[] = [];
  private inFlight = 0;
  private draining = false;
  private spoolFullLogged = false;
  /** the spool refused a write and has not taken one since: logged once per streak */
  private spoolFailing = false;

  private nDelivered = 0;
  private nRetried = 0;
  private nRejected = 0;
  private readonly drops = new Map<string, number>();
  private lastSuccess: number | null = null;
  private failingSince: number | null = null;
  private lastRejection: { reason: string; at: number; since: number } | null = null;
  private lastFailure: string | null = null;
  private mem: LaneMemoryStats = { buffered: 0, bufferedHighWater: 0, largestRead: 0 };

  constructor(private readonly opts: LaneOptions) {
    this.name = opts.sink.name;
    if (!NAME_RE.test(this.name)) throw new LaneError('LANE_CONFIG', `sink name ${JSON.stringify(this.name)} is not usable as a file name`);
    this.spoolPath = path.join(opts.spoolDir, this.name);
    this.deadLetterPath = path.join(opts.spoolDir, `${this.name}.dead-letter.jsonl`);
    this.batcher = new Batcher<LaneItem>({
      ...opts.batch,
      sizeOf: (r) => r.bytes,
      onBatch: (batch) => this.deliver(batch),
      onError: (err) => this.opts.logger.error('lane: batch delivery failed', { sink: this.name, error: String(err) }),
    });
  }

  /** Opens the spool and starts delivering, beginning with what the spool still holds. */
  async open(): Promise<void> {
    if (this.state !== 'new') throw new LaneError('LANE_STATE', `lane ${this.name} already opened`);
    this.spool = await Spool.open({
      dir: this.spoolPath,
      fsync: this.opts.fsync,
      maxBytes: this.opts.maxSpoolBytes,
      logger: this.opts.logger,
    });
    this.state = 'open';
    this.updateSpoolGauges();
    if (this.spool.count > 0) {
      this.opts.logger.info('lane: replaying spooled records', { sink: this.name, records: this.spool.count, bytes: this.spool.bytes });
    }
    this.pumpDone = this.pump();
  }

  /**
   * Appends the record to the spool; resolves once it is durable there, held in memory (the spool could not take
   * it), or counted as dropped. Never rejects.
   */
  async accept(record: OomRecord): Promise<AcceptResult> {
    const spool = this.spool;
    if (this.state !== 'open' || !spool) return this.drop('lane_closed');
    // behind records already held: they go to the spool (and the sink) first
    if (this.held.some((e) => e.state !== 'reading')) {
      const res = this.hold(record);
      void this.moveHeld();
      return res;
    }
    try {
      await spool.append([record]);
    } catch (err) {
      if (err instanceof SpoolSyncError) {
        // written, read back and delivered like any other; only a power loss could take it
        this.opts.logger.warn('lane: spool fsync failed; the record is spooled but may not survive a power loss', { sink: this.name, error: err.message });
        this.updateSpoolGauges();
        this.notify();
        return 'spooled';
      }
      if (err instanceof SpoolFullError) {
        if (!this.spoolFullLogged) {
          this.spoolFullLogged = true;
          this.opts.logger.warn('lane: spool full, dropping new records until the sink catches up', {
            sink: this.name,
            spool_bytes: err.spoolBytes,
            max_bytes: err.maxBytes,
          });
        }
        return this.drop('spool_full');
      }
      if (err instanceof SpoolError && err.code === 'SPOOL_CLOSED') return this.drop('lane_closed');
      if (err instanceof SpoolError && err.code === 'SPOOL_RECORD_TOO_LARGE') {
        this.opts.logger.error('lane: record too large for the spool, dropped', { sink: this.name, error: err.message });
        return this.drop('spool_error');
      }
      // the disk's fault (ENOSPC, EDQUOT, EIO, EROFS, …), not the record's: hold it and try the spool again later
      if (!this.spoolFailing) {
        this.spoolFailing = true;
        this.opts.logger.error('lane: spool append failed; holding records in memory until the spool takes writes again', {
          sink: this.name,
          error: (err as Error).message,
        });
      }
      const res = this.hold(record);
      this.scheduleMoveHeld();
      return res;
    }
    if (this.spoolFullLogged) {
      this.spoolFullLogged = false;
      this.opts.logger.info('lane: spool accepting records again', { sink: this.name });
    }
    if (this.spoolFailing) {
      this.spoolFailing = false;
      this.opts.logger.info('lane: spool takes writes again', { sink: this.name });
    }
    this.updateSpoolGauges();
    this.notify();
    return 'spooled';
  }

  /**
   * Delivers everything deliverable before `deadlineMs` elapses (no waiting for batch age, retries
   * cut short at the deadline), then flushes the sink. Whatever is left stays in the spool.
   * Delivery stops afterwards; call `close()` next. Resolves with the records left undelivered.
   */
  async drain(deadlineMs: number): Promise<number> {
    const spool = this.spool;
    if (!spool || this.state !== 'open' || this.stopping) return spool?.count ?? 0;
    this.draining = true;
    this.notify();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), Math.max(0, deadlineMs));
    });
    try {
      const idle = new Promise<'idle'>((resolve) => this.whenIdle(() => resolve('idle')));
      if ((await Promise.race([idle, deadline])) === 'idle') {
        await Promise.race([this.opts.sink.flush().catch((err) => this.opts.logger.warn('lane: sink flush failed', { sink: this.name, error: String(err) })), deadline]);
      }
    } finally {
      clearTimeout(timer);
      this.stopDelivery();
    }
    // what is held in memory goes to the spool now if the disk takes it (the next start delivers it)
    await this.spoolAllHeld();
    const left = spool.count;
    if (left > 0) this.opts.logger.warn('lane: records left in spool for next start', { sink: this.name, records: left });
    if (this.held.length > 0) {
      this.opts.logger.error('lane: records held in memory could not be spooled; they are lost at exit', { sink: this.name, records: this.held.length });
    }
    return left + this.held.length;
  }

  /**
   * Resolves true once the record with `eventId`, if held in memory, is spooled or delivered; false if it is lost
   * (dropped at close). A record not held resolves true at once.
   */
  whenTaken(eventId: string): Promise<boolean> {
    return this.held.find((e) => e.record.event_id === eventId)?.taken ?? Promise.resolve(true);
  }

  /** Records not delivered: in the spool, held in memory, dropped this run (by reason). */
  undelivered(): LaneUndelivered {
    return {
      spooled: this.spool?.count ?? 0,
      memory: this.held.length + this.lostAtClose.length,
      memoryIds: [...this.lostAtClose, ...this.held.map((e) => e.record.event_id)],
      dropped: this.dropped(),
    };
  }

  /** Closed in time: no sink write abandoned, spool closed, and the sink's close returned within the grace. */
  get closed(): boolean {
    return this.state === 'closed' && this.sinkClosed && !this.writeAbandoned;
  }
  private sinkClosed = false;
  private writeAbandoned = false;
  /** sink writes out now */
  private writing = 0;
  /** event_ids of records held in memory when the lane closed: lost with the process */
  private readonly lostAtClose: string[] = [];

  /** Records held in memory because the spool could not take them. */
  get heldRecords(): number {
    return this.held.length;
  }

  /**
   * Stops delivery, waits briefly for a write in flight (at most `graceMs`, default `closeGraceMs`;
   * an abandoned write's records stay spooled), closes the spool and the sink.
   */
  async close(graceMs = this.opts.closeGraceMs ?? 2000): Promise<void> {
    if (this.state === 'closed' || this.state === 'closing') return;
    const wasOpen = this.state === 'open';
    const closeBy = Date.now() + Math.max(0, graceMs);
    this.state = 'closing';
    this.stopDelivery();
    this.batcher.stop();
    this.clearHoldTimer();
    if (wasOpen) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((resolve) => {
        // Not unref'd: a bounded wait that must finish so the spool is closed cleanly.
        timer = setTimeout(resolve, Math.max(0, graceMs));
      });
      const pumped = await Promise.race([this.pumpDone.then(() => true), grace.then(() => false)]);
      clearTimeout(timer);
      // a delivery only waiting for its retry is no loss; one whose write is still out at the sink is
      if (!pumped && this.writing > 0) {
        this.writeAbandoned = true;
        this.opts.logger.warn('lane: a sink write still out at the close was abandoned; its records stay spooled', { sink: this.name, grace_ms: graceMs });
      }
    }
    await this.spool?.close();
    this.state = 'closed';
    // held records the spool never took are gone with the process: kept here only to be reported
    for (const e of this.held.splice(0)) {
      this.lostAtClose.push(e.record.event_id);
      e.settle(false);
    }
    this.heldBytes = 0;
    this.updateHeldGauge();
    // bounded too, within the same grace: a client that never answers its disconnect (a broker gone) must not hold the stop
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, closeBy - Date.now()))));
    await Promise.race([
      this.opts.sink
        .close()
        .catch((err) => this.opts.logger.warn('lane: sink close failed', { sink: this.name, error: String(err) }))
        .then(() => (this.sinkClosed = true)),
      grace.then(() => this.opts.logger.warn('lane: sink close did not finish in time; abandoned', { sink: this.name, grace_ms: graceMs })),
    ]);
    clearTimeout(timer);
  }

  get delivered(): number {
    return this.nDelivered;
  }
  get retried(): number {
    return this.nRetried;
  }
  get rejected(): number {
    return this.nRejected;
  }
  dropped(): Record<string, number> {
    return Object.fromEntries(this.drops);
  }
  get spoolRecords(): number {
    return this.spool?.count ?? 0;
  }
  get spoolBytes(): number {
    return this.spool?.bytes ?? 0;
  }
  /** Wall-clock ms of the last delivered batch, or null. */
  get lastSuccessMs(): number | null {
    return this.lastSuccess;
  }
  /** Ms since the first failed write of the current failure streak, or null when not failing. */
  get failingSinceMs(): number | null {
    return this.failingSince === null ? null : this.now() - this.failingSince;
  }
  get lastFailureReason(): string | null {
    return this.lastFailure;
  }
  get memory(): LaneMemoryStats {
    return { ...this.mem };
  }

  stats(): LaneStats {
    return {
      sink: this.name,
      delivered: this.nDelivered,
      retried: this.nRetried,
      rejected: this.nRejected,
      dropped: this.dropped(),
      spoolRecords: this.spoolRecords,
      spoolBytes: this.spoolBytes,
      lastSuccessMs: this.lastSuccess,
      failingSinceMs: this.failingSinceMs,
      lastFailure: this.lastFailure,
    };
  }

  // --- internals -------------------------------------------------------------------------------

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** Reads the spool from the cursor in batch-sized chunks and feeds the batcher. */
  private async pump(): Promise<void> {
    const spool = this.spool!;
    const { maxEvents, maxBytes } = this.opts.batch;
    let failures = 0;
    while (!this.stopping) {
      this.dirty = false;
      let chunk: LaneItem[];
      try {
        // Read only what fits in the open batch: memory stays at one open plus one in-flight batch.
        const room = Math.max(1, maxEvents - this.batcher.count);
        chunk = await spool.readPending(this.cursor, room, Math.max(1, maxBytes - this.batcher.bytes));
        failures = 0;
      } catch (err) {
        if (this.stopping) break;
        this.opts.logger.error('lane: spool read failed', { sink: this.name, error: (err as Error).message });
        await this.sleep(backoffMs(failures++, this.opts.retry, undefined, this.opts.random));
        continue;
      }
      if (chunk.length === 0) chunk = this.takeHeld(Math.max(1, maxEvents - this.batcher.count), Math.max(1, maxBytes - this.batcher.bytes));
      if (chunk.length === 0) {
        if (this.draining) await this.batcher.flush().catch(() => undefined);
        if (this.inFlight === 0 && this.batcher.count === 0 && spool.count === 0 && this.held.length === 0) this.fireIdle();
        if (this.stopping) break;
        if (!this.dirty) await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
        continue;
      }
      this.mem.largestRead = Math.max(this.mem.largestRead, chunk.length);
      this.mem.buffered += chunk.length;
      this.mem.bufferedHighWater = Math.max(this.mem.bufferedHighWater, this.mem.buffered);
      for (const rec of chunk) {
        if (!(rec as LaneItem).held) this.cursor = rec.seq;
        if (this.stopping) {
          this.mem.buffered--;
          continue;
        }
        await this.batcher.add(rec).catch(() => undefined);
      }
    }
    this.batcher.stop();
    this.mem.buffered -= this.batcher.count;
  }

  /** Writes one batch until it is delivered, dead-lettered, or delivery is stopped. */
  private async deliver(batch: LaneItem[]): Promise<void> {
    this.inFlight++;
    // The same array goes to every attempt so a retry is byte-identical (sinks dedup on it).
    const records: readonly OomRecord[] = Object.freeze(batch.map((b) => b.record));
    const spooled = batch.filter((b) => !b.held).map((b) => b.seq);
    const held = batch.flatMap((b) => (b.held ? [b.held] : []));
    // held records spooled at the stop while this batch was out: their new seqs (read at ack time)
    const seqs = (): number[] => [...spooled, ...held.flatMap((h) => (h.spooledSeq ? [h.spooledSeq] : []))];
    const sink = this.name;
    try {
      for (let attempt = 0; !this.stopping; attempt++) {
        const res = await this.write(records);
        if (this.state === 'closed') return;
        if (res.status === 'delivered') {
          // A partial success: the sink wrote the batch except `rejectedRecords`, which are dead-lettered (each
          // with its own reason) and never written again; the whole batch is then acked.
          const refused = res.rejectedRecords ?? [];
          if (refused.length > 0) {
            this.logRejection('lane: sink refused some records of the batch, writing dead letters', { sink, records: refused.length, of: records.length, reason: refused[0]!.reason });
            if (!(await this.deadLetter(refused))) return;
          }
          await this.ack(seqs());
          this.release(held);
          this.nDelivered += records.length - refused.length;
          this.nRejected += refused.length;
          this.lastSuccess = Date.now();
          if (this.failingSince !== null) this.opts.logger.info('lane: sink recovered', { sink, failed_for_ms: this.failingSinceMs });
          this.failingSince = null;
          this.opts.metrics?.sinkDelivered.inc({ sink }, records.length - refused.length);
          if (refused.length > 0) this.opts.metrics?.sinkRejected.inc({ sink }, refused.length);
          this.opts.metrics?.sinkLastSuccess.set({ sink }, this.lastSuccess / 1000);
          return;
        }
        if (res.status === 'rejected') {
          // The sink answered, so it is not down: a rejection does not start a failure streak
          // (one bad record must not keep /healthz red until the next delivery, maybe hours away).
          this.logRejection('lane: sink rejected batch, writing dead letters', { sink, records: records.length, reason: res.reason });
          if (!(await this.deadLetter(records.map((record) => ({ record, reason: res.reason }))))) return;
          await this.ack(seqs());
          this.release(held);
          this.nRejected += records.length;
          this.failingSince = null;
          this.opts.metrics?.sinkRejected.inc({ sink }, records.length);
          return;
        }
        this.markFailing(res.reason);
        this.nRetried++;
        this.opts.metrics?.sinkRetried.inc({ sink });
        const delay = backoffMs(attempt, this.opts.retry, res.afterMs, this.opts.random);
        const log = attempt === 0 ? 'warn' : 'debug';
        this.opts.logger.log(log, 'lane: sink write failed, will retry', { sink, attempt: attempt + 1, delay_ms: delay, reason: res.reason });
        if (!(await this.sleep(delay))) return;
      }
    } finally {
      this.inFlight--;
      this.mem.buffered -= batch.length;
      this.notify();
    }
  }

  private async write(records: readonly OomRecord[]): Promise<WriteResult> {
    this.writing++;
    try {
      return await this.opts.sink.write(records);
    } catch (err) {
      // Sinks should answer, not throw; a throw is treated as transient so nothing is lost.
      return { status: 'retryable', reason: `sink threw: ${(err as Error).message}` };
    } finally {
      this.writing--;
    }
  }

  /**
   * A rejection is a warning once per reason a minute; the same reason again within it (a forbidden sink refusing
   * every kill of a burst) is a debug line, its count kept for the next warning. Each record's reason is in its dead
   * letter either way.
   */
  private logRejection(message: string, fields: { sink: string; records: number; of?: number; reason: string }): void {
    const now = Date.now();
    const last = this.lastRejection;
    if (last && last.reason === fields.reason && now - last.at < REJECTION_LOG_INTERVAL_MS) {
      last.since += fields.records;
      this.opts.logger.debug(message, fields);
      return;
    }
    const since = last && last.reason === fields.reason ? last.since : 0;
    this.lastRejection = { reason: fields.reason, at: now, since: 0 };
    this.opts.logger.warn(message, since > 0 ? { ...fields, also_since_last_warning: since } : fields);
  }

  private markFailing(reason: string): void {
    if (this.failingSince === null) this.failingSince = this.now();
    this.lastFailure = reason;
  }

  /** Appends one JSON line per record (with its reason) and fsyncs; retries with backoff until it succeeds or delivery stops. */
  private async deadLetter(refused: readonly { record: OomRecord; reason: string }[]): Promise<boolean> {
    const time = new Date().toISOString();
    const lines = refused.map(({ record, reason }) => JSON.stringify({ reason, sink: this.name, time, record }) + '\n').join('');
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        await this.rotateDeadLetters(Buffer.byteLength(lines));
        const fh = await fsp.open(this.deadLetterPath, 'a', 0o600);
        try {
          await fh.writeFile(lines);
          if (this.opts.fsync !== 'never') await fh.datasync();
        } finally {
          await fh.close();
        }
        return true;
      } catch (err) {
        this.opts.logger.error('lane: dead-letter write failed, will retry', { sink: this.name, file: this.deadLetterPath, error: (err as Error).message });
        if (!(await this.sleep(backoffMs(attempt, this.opts.retry, undefined, this.opts.random)))) return false;
      }
    }
    return false;
  }

  /** Shifts `<file>` to `<file>.1`, `.1` to `.2` … when `adding` more bytes would pass the size cap. */
  private async rotateDeadLetters(adding: number): Promise<void> {
    const { maxBytes, keep } = this.opts.deadLetter ?? DEAD_LETTER_DEFAULTS;
    const size = await rotateBySize(this.deadLetterPath, adding, maxBytes, keep);
    if (size === 0) return;
    this.opts.logger.info('lane: dead-letter file rotated', { sink: this.name, file: this.deadLetterPath, bytes: size, keep });
  }

  private async ack(seqs: number[]): Promise<void> {
    if (seqs.length === 0) return;
    try {
      await this.spool!.ack(seqs);
    } catch (err) {
      // The records stay spooled and are redelivered after a restart (sinks dedup by event_id).
      this.opts.logger.error('lane: spool ack failed', { sink: this.name, error: (err as Error).message });
    }
    this.updateSpoolGauges();
  }

  // --- records held in memory ------------------------------------------------------------------

  private hold(record: OomRecord): AcceptResult {
    const { maxRecords, maxBytes } = this.opts.hold ?? HOLD_DEFAULTS;
    const bytes = Buffer.byteLength(JSON.stringify(record));
    if (this.held.length + 1 > maxRecords || this.heldBytes + bytes > maxBytes) {
      this.opts.logger.error('lane: spool unwritable and the in-memory hold is full; record dropped', {
        sink: this.name,
        held_records: this.held.length,
        held_bytes: this.heldBytes,
      });
      return this.drop('hold_full');
    }
    let settle!: (taken: boolean) => void;
    const taken = new Promise<boolean>((resolve) => (settle = resolve));
    this.held.push({ record, bytes, state: 'waiting', taken, settle });
    this.opts.metrics?.sinkHeldTotal.inc({ sink: this.name });
    this.heldBytes += bytes;
    this.updateHeldGauge();
    this.notify();
    return 'held';
  }

  /** Up to `max` held records (and `maxBytes`, at least one) for the pump, in order; none while the oldest is being spooled. */
  private takeHeld(max: number, maxBytes: number): LaneItem[] {
    const out: LaneItem[] = [];
    let bytes = 0;
    for (const e of this.held) {
      if (e.state === 'reading') continue;
      if (e.state === 'moving' || out.length >= max || (out.length > 0 && bytes + e.bytes > maxBytes)) break;
      e.state = 'reading';
      out.push({ seq: 0, record: e.record, bytes: e.bytes, held: e });
      bytes += e.bytes;
    }
    return out;
  }

  /** Held records delivered or dead-lettered: done with. */
  private release(entries: readonly HeldEntry[]): void {
    for (const e of entries) {
      const i = this.held.indexOf(e);
      if (i >= 0) {
        this.held.splice(i, 1);
        this.heldBytes -= e.bytes;
      }
      e.settle(true);
    }
    if (entries.length > 0) this.updateHeldGauge();
  }

  private scheduleMoveHeld(): void {
    if (this.holdTimer || this.state !== 'open') return;
    const delay = Math.min(HOLD_RETRY_MAX_MS, backoffMs(this.holdAttempt++, this.opts.retry, undefined, this.opts.random));
    this.holdTimer = setTimeout(() => {
      this.holdTimer = null;
      void this.moveHeld();
    }, delay);
    this.holdTimer.unref();
  }

  private clearHoldTimer(): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
  }

  /** Appends the held records not yet in a batch to the spool, oldest first, one at a time; stops at the first failure. */
  private moveHeld(): Promise<void> {
    if (!this.moving) {
      this.moving = this.moveHeldNow().finally(() => {
        this.moving = null;
      });
    }
    return this.moving;
  }

  private async moveHeldNow(): Promise<void> {
    const spool = this.spool;
    if (!spool) return;
    let moved = 0;
    for (;;) {
      if (this.state !== 'open' && this.state !== 'closing') return;
      const e = this.held.find((x) => x.state !== 'reading');
      if (!e || e.state !== 'waiting') break;
      e.state = 'moving';
      try {
        await spool.append([e.record]);
      } catch (err) {
        if (!(err instanceof SpoolSyncError)) {
          e.state = 'waiting';
          if (err instanceof SpoolError && err.code === 'SPOOL_CLOSED') return;
          this.notify();
          this.scheduleMoveHeld();
          return;
        }
      }
      this.held.splice(this.held.indexOf(e), 1);
      this.heldBytes -= e.bytes;
      e.settle(true);
      moved++;
      this.updateHeldGauge();
      this.updateSpoolGauges();
      this.notify();
    }
    this.holdAttempt = 0;
    if (moved > 0) {
      this.spoolFailing = false;
      this.opts.logger.info('lane: spool takes writes again; held records spooled', { sink: this.name, records: moved });
    }
  }

  /** At the stop: every held record (in a batch or not) to the spool if it takes them; those in a batch keep their new seq for a late ack. */
  private async spoolAllHeld(): Promise<void> {
    this.clearHoldTimer();
    await this.moving;
    const spool = this.spool;
    if (!spool) return;
    while (this.held.length > 0) {
      const e = this.held[0];
      try {
        const [seq] = await spool.append([e.record]);
        e.spooledSeq = seq;
      } catch (err) {
        if (err instanceof SpoolSyncError) e.spooledSeq = err.seqs[0];
        else return;
      }
      const i = this.held.indexOf(e);
      if (i < 0) {
        // a late write of its batch delivered it meanwhile: the copy just spooled must not go out again
        await this.ack([e.spooledSeq]);
        continue;
      }
      this.held.splice(i, 1);
      this.heldBytes -= e.bytes;
      e.settle(true);
      this.updateHeldGauge();
      this.updateSpoolGauges();
    }
  }

  private updateHeldGauge(): void {
    this.opts.metrics?.sinkHeld.set({ sink: this.name }, this.held.length);
  }

  private drop(reason: LaneDropReason): AcceptResult {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
    this.opts.metrics?.dropped.inc({ stage: 'spool', reason });
    return 'dropped';
  }

  private updateSpoolGauges(): void {
    const m = this.opts.metrics;
    if (!m || !this.spool) return;
    m.spoolRecords.set({ sink: this.name }, this.spool.count);
    m.spoolBytes.set({ sink: this.name }, this.spool.bytes);
  }

  private notify(): void {
    this.dirty = true;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private whenIdle(fn: () => void): void {
    this.idleWaiters.push(fn);
    this.notify();
  }

  private fireIdle(): void {
    for (const fn of this.idleWaiters.splice(0)) fn();
  }

  private stopDelivery(): void {
    this.stopping = true;
    this.batcher.stop();
    for (const cancel of [...this.sleepers]) cancel();
    this.notify();
  }

  /** Resolves true after `ms`, or false at once if delivery is stopped meanwhile. */
  private sleep(ms: number): Promise<boolean> {
    if (this.stopping) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const cancel = (): void => {
        clearTimeout(t);
        this.sleepers.delete(cancel);
        resolve(false);
      };
      const t = setTimeout(() => {
        this.sleepers.delete(cancel);
        resolve(true);
      }, Math.min(MAX_TIMER_MS, ms)); // a longer timer fires after 1 ms
      t.unref();
      this.sleepers.add(cancel);
    });
  }
}
