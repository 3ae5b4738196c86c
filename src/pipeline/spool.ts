import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { OomRecord } from '../record/record';
import type { Logger } from '../observe/logger';

/**
 * When appended bytes reach the disk (`pipeline.spool.fsync`):
 * - `always`: every `append` call fsyncs the segment before it resolves.
 * - `batch`: same guarantee, but appends that overlap in time share one fsync (group commit).
 * - `never`: no fsync. Still survives a crash or SIGKILL of the process (the bytes are in the page
 *   cache once `write` returns), but not a power loss or kernel panic.
 */
export type FsyncPolicy = 'always' | 'batch' | 'never';

export const FSYNC_POLICIES: readonly FsyncPolicy[] = ['always', 'batch', 'never'];

export type SpoolErrorCode = 'SPOOL_FULL' | 'SPOOL_CLOSED' | 'SPOOL_IO' | 'SPOOL_RECORD_TOO_LARGE' | 'SPOOL_CONFIG';

export class SpoolError extends Error {
  constructor(
    readonly code: SpoolErrorCode,
    message: string,
    readonly retriable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'SpoolError';
  }
}

/**
 * The records were written to the segment but its fsync failed: they are in the spool (and will be read back and
 * delivered), only their durability across a power loss is in doubt. A caller must not append them again.
 */
export class SpoolSyncError extends SpoolError {
  constructor(readonly seqs: readonly number[], cause: unknown) {
    super('SPOOL_IO', `spool fsync failed after the write: ${(cause as Error).message}`, true, { cause });
    this.name = 'SpoolSyncError';
  }
}

/**
 * The spool reached `maxBytes`. Policy: the new records are refused (nothing already spooled is
 * evicted, so the oldest evidence survives an outage); the caller counts them as dropped
 * (`reason="spool_full"`). Retriable: space comes back once the sink accepts again.
 */
export class SpoolFullError extends SpoolError {
  override readonly code = 'SPOOL_FULL' as const;
  constructor(readonly spoolBytes: number, readonly maxBytes: number, readonly neededBytes: number) {
    super('SPOOL_FULL', `spool full: ${spoolBytes} + ${neededBytes} bytes > max ${maxBytes}`, true);
    this.name = 'SpoolFullError';
  }
}

export interface SpoolOptions {
  /** Directory owned by this spool alone (one per sink). Created if missing. */
  dir: string;
  fsync: FsyncPolicy;
  /** Cap on segment bytes on disk; 0 means no cap. See {@link SpoolFullError} for the policy. */
  maxBytes: number;
  /** Size at which a new segment file is started. Default: maxBytes/8 clamped to [64 KiB, 8 MiB]. */
  segmentBytes?: number;
  logger: Logger;
}

/** One spooled record; `bytes` is the length of its JSON payload. */
export interface SpooledRecord {
  seq: number;
  record: OomRecord;
  bytes: number;
}

// Frame: [u32 LE payload length][u32 LE crc32 of (seq + payload)][u64 LE seq][payload: UTF-8 JSON].
const HEADER = 16;
const MAX_PAYLOAD = 16 * 1024 * 1024;
const READ_CHUNK = 256 * 1024;
const SEGMENT_RE = /^(\d{20})\.seg$/;
const STATE_FILE = 'ack.state';
const STATE_TMP = 'ack.state.tmp';

const crc32: (data: Uint8Array) => number =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (d) => zlib.crc32(d) : tableCrc32;

interface Segment {
  first: number;
  /** Last valid seq; `first - 1` when empty. Seqs inside a segment are contiguous. */
  last: number;
  size: number;
  file: string;
  fh?: FileHandle; // only the active (last) segment is open for writing
}

type ScanResult = { offset: number; lastSeq: number; stopped: boolean; error?: string };

/**
 * A durable write-ahead spool for one sink: append-only segment files of checksummed frames,
 * monotonically increasing sequence numbers, and an acknowledgement state file.
 * Acked records may reappear after a crash (at-least-once); appended records are never lost.
 */
export class Spool {
  private segments: Segment[] = [];
  private nextSeq = 1;
  private ackedThrough = 0;
  private readonly ackedAbove = new Set<number>();
  private pendingCount = 0;
  private diskBytes = 0;
  private closed = false;
  private chain: Promise<unknown> = Promise.resolve();
  private pendingSync: Promise<void> | null = null;
  private cursor: { file: string; seq: number; offset: number } | null = null;
  private readonly segmentBytes: number;

  private constructor(private readonly opts: SpoolOptions) {
    const cap = opts.maxBytes > 0 ? opts.maxBytes : Infinity;
    this.segmentBytes = opts.segmentBytes ?? Math.min(8 << 20, Math.max(64 << 10, Math.floor(cap / 8)));
  }

  /** Opens (or creates) the spool in `opts.dir`, recovering from a torn or corrupt tail. */
  static async open(opts: SpoolOptions): Promise<Spool> {
    if (!FSYNC_POLICIES.includes(opts.fsync)) {
      throw new SpoolError('SPOOL_CONFIG', `unknown fsync policy ${String(opts.fsync)}`, false);
    }
    if (!(opts.maxBytes >= 0)) throw new SpoolError('SPOOL_CONFIG', `bad spool max_bytes ${opts.maxBytes}`, false);
    const spool = new Spool(opts);
    try {
      await spool.recover();
    } catch (err) {
      if (err instanceof SpoolError) throw err;
      throw new SpoolError('SPOOL_IO', `cannot open spool ${opts.dir}: ${(err as Error).message}`, true, { cause: err });
    }
    return spool;
  }

  get dir(): string {
    return this.opts.dir;
  }

  /** Records appended and not yet acknowledged. */
  get count(): number {
    return this.pendingCount;
  }

  /** Bytes of segment files on disk (what `maxBytes` caps). */
  get bytes(): number {
    return this.diskBytes;
  }

  /** Number of segment files on disk. */
  get segmentCount(): number {
    return this.segments.length;
  }

  /**
   * Appends records and resolves with their sequence numbers once durable per the fsync policy.
   * All or nothing: rejects with {@link SpoolFullError} if the batch does not fit.
   */
  async append(records: readonly OomRecord[]): Promise<number[]> {
    if (records.length === 0) return [];
    const payloads = records.map((r) => Buffer.from(JSON.stringify(r), 'utf8'));
    for (const p of payloads) {
      if (p.length > MAX_PAYLOAD) {
        throw new SpoolError('SPOOL_RECORD_TOO_LARGE', `record of ${p.length} bytes exceeds ${MAX_PAYLOAD}`, false);
      }
    }
    const total = payloads.reduce((n, p) => n + HEADER + p.length, 0);
    const seqs = await this.lock(async () => {
      this.assertOpen();
      if (this.opts.maxBytes > 0 && this.diskBytes + total > this.opts.maxBytes) {
        throw new SpoolFullError(this.diskBytes, this.opts.maxBytes, total);
      }
      let seg = this.active();
      if (!seg || (seg.size > 0 && seg.size + total > this.segmentBytes)) seg = await this.roll();
      const buf = Buffer.allocUnsafe(total);
      const out: number[] = [];
      let off = 0;
      for (const p of payloads) {
        const seq = this.nextSeq + out.length;
        buf.writeUInt32LE(p.length, off);
        buf.writeBigUInt64LE(BigInt(seq), off + 8);
        p.copy(buf, off + HEADER);
        buf.writeUInt32LE(crc32(buf.subarray(off + 8, off + HEADER + p.length)), off + 4);
        off += HEADER + p.length;
        out.push(seq);
      }
      await this.writeAll(seg, buf);
      seg.size += total;
      seg.last = out[out.length - 1];
      this.nextSeq = seg.last + 1;
      this.diskBytes += total;
      this.pendingCount += out.length;
      if (this.opts.fsync === 'always') await this.syncFile(seg).catch((err: unknown) => Promise.reject(new SpoolSyncError(out, err)));
      return out;
    });
    if (this.opts.fsync === 'batch') await this.groupSync().catch((err: unknown) => Promise.reject(new SpoolSyncError(seqs, err)));
    return seqs;
  }

  /**
   * Marks records as delivered (or dead-lettered). The ack state is persisted before any
   * fully acknowledged segment is deleted, so a crash in between only causes redelivery.
   */
  async ack(seqs: Iterable<number>): Promise<void> {
    await this.lock(async () => {
      this.assertOpen();
      let changed = false;
      for (const s of seqs) {
        if (this.isAcked(s) || !this.exists(s)) continue;
        this.ackedAbove.add(s);
        this.pendingCount--;
        changed = true;
      }
      if (!changed) return;
      this.normalize();
      await this.persistState();
      await this.deleteAckedSegments();
    });
  }

  /**
   * Up to `maxRecords` unacknowledged records with seq > `afterSeq`, in order, read from disk
   * (and at most `maxBytes` of payload, but always at least one record).
   */
  readPending(afterSeq: number, maxRecords: number, maxBytes = Infinity): Promise<SpooledRecord[]> {
    return this.lock(async () => {
      this.assertOpen();
      const out: SpooledRecord[] = [];
      let bytes = 0;
      for (const seg of [...this.segments]) {
        if (seg.last <= afterSeq || seg.last < seg.first) continue;
        let start = 0;
        let startSeq = seg.first - 1;
        if (this.cursor && this.cursor.file === seg.file && this.cursor.seq === afterSeq) {
          start = this.cursor.offset;
          startSeq = afterSeq;
        }
        let endOffset = start;
        let endSeq = -1;
        const fh = await fsp.open(path.join(this.opts.dir, seg.file), 'r');
        let res: ScanResult;
        try {
          res = await scanFrames(fh, start, seg.size, startSeq, (seq, payload, off, len) => {
            if (seq <= afterSeq || this.isAcked(seq)) return true;
            if (out.length > 0 && bytes + payload.length > maxBytes) return false;
            out.push({ seq, record: JSON.parse(payload.toString('utf8')) as OomRecord, bytes: payload.length });
            bytes += payload.length;
            endOffset = off + len;
            endSeq = seq;
            return out.length < maxRecords;
          });
        } finally {
          await fh.close();
        }
        if (res.error) await this.cutSegment(seg, res.offset, res.lastSeq, res.error);
        if (endSeq >= 0) this.cursor = { file: seg.file, seq: endSeq, offset: endOffset };
        if (res.stopped) break;
      }
      return out;
    });
  }

  /** All pending records in order, read from disk `chunk` records at a time. */
  async *pending(chunk = 256): AsyncGenerator<SpooledRecord> {
    let after = 0;
    for (;;) {
      const recs = await this.readPending(after, chunk);
      if (recs.length === 0) return;
      for (const r of recs) yield r;
      after = recs[recs.length - 1].seq;
    }
  }

  async close(): Promise<void> {
    await this.lock(async () => {
      if (this.closed) return;
      this.closed = true;
      for (const seg of this.segments) {
        if (seg.fh) {
          if (this.opts.fsync !== 'never') await seg.fh.datasync().catch(() => undefined);
          await seg.fh.close().catch(() => undefined);
          seg.fh = undefined;
        }
      }
    });
  }

  // --- internals -------------------------------------------------------------------------------

  private lock<R>(fn: () => Promise<R>): Promise<R> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private assertOpen(): void {
    if (this.closed) throw new SpoolError('SPOOL_CLOSED', `spool ${this.opts.dir} is closed`, false);
  }

  private active(): Segment | undefined {
    const last = this.segments[this.segments.length - 1];
    return last?.fh ? last : undefined;
  }

  private isAcked(seq: number): boolean {
    return seq <= this.ackedThrough || this.ackedAbove.has(seq);
  }

  private exists(seq: number): boolean {
    return this.segments.some((s) => seq >= s.first && seq <= s.last);
  }

  /** Advances the watermark over contiguous acks and over gaps left by deleted or cut segments. */
  private normalize(): void {
    for (;;) {
      const next = this.ackedThrough + 1;
      if (this.ackedAbove.delete(next)) {
        this.ackedThrough = next;
        continue;
      }
      const seg = this.segments.find((s) => s.last >= next && s.last >= s.first);
      if (!seg) {
        // Nothing unacked exists; remembering nextSeq-1 keeps seqs monotonic across restarts.
        this.ackedThrough = Math.max(this.ackedThrough, this.nextSeq - 1);
        this.ackedAbove.clear();
        return;
      }
      if (seg.first > next) {
        this.ackedThrough = seg.first - 1;
        continue;
      }
      return;
    }
  }

  private async recover(): Promise<void> {
    const dir = this.opts.dir;
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 }); // records name every tenant's commands and cgroups
    await fsp.rm(path.join(dir, STATE_TMP), { force: true });
    await this.loadState();
    const names = (await fsp.readdir(dir)).filter((n) => SEGMENT_RE.test(n)).sort();
    for (const file of names) {
      const first = Number(SEGMENT_RE.exec(file)![1]);
      const full = path.join(dir, file);
      const fh = await fsp.open(full, 'r+');
      let res: ScanResult;
      let size: number;
      try {
        size = (await fh.stat()).size;
        res = await scanFrames(fh, 0, size, first - 1, () => true);
        if (res.error) {
          this.opts.logger.warn('spool: skipping torn or corrupt tail', {
            file: full,
            offset: res.offset,
            discarded_bytes: size - res.offset,
            reason: res.error,
          });
          await fh.truncate(res.offset);
          size = res.offset;
        }
      } finally {
        await fh.close();
      }
      if (res.lastSeq < first) {
        await fsp.rm(full, { force: true });
        continue;
      }
      this.segments.push({ first, last: res.lastSeq, size, file });
    }
    const lastSeq = this.segments.length ? this.segments[this.segments.length - 1].last : 0;
    this.nextSeq = Math.max(lastSeq, this.ackedThrough) + 1;
    for (const s of [...this.ackedAbove]) if (!this.exists(s)) this.ackedAbove.delete(s);
    this.normalize();
    for (const seg of this.segments) {
      this.diskBytes += seg.size;
      for (let s = seg.first; s <= seg.last; s++) if (!this.isAcked(s)) this.pendingCount++;
    }
    await this.deleteAckedSegments();
  }

  private async loadState(): Promise<void> {
    const file = path.join(this.opts.dir, STATE_FILE);
    let buf: Buffer;
    try {
      buf = await fsp.readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      const len = buf.readUInt32LE(0);
      const crc = buf.readUInt32LE(4);
      const body = buf.subarray(8, 8 + len);
      if (body.length !== len || crc32(body) !== crc) throw new Error('checksum mismatch');
      const st = JSON.parse(body.toString('utf8')) as { acked_through: number; acked: number[] };
      if (!Number.isSafeInteger(st.acked_through) || !Array.isArray(st.acked)) throw new Error('bad fields');
      this.ackedThrough = st.acked_through;
      for (const s of st.acked) if (Number.isSafeInteger(s) && s > st.acked_through) this.ackedAbove.add(s);
    } catch (err) {
      // Losing ack state only means redelivery (sinks dedup by event_id); never lose records over it.
      this.opts.logger.warn('spool: ack state unreadable, pending records will be redelivered', {
        file,
        reason: (err as Error).message,
      });
    }
  }

  private async persistState(): Promise<void> {
    const body = Buffer.from(
      JSON.stringify({ v: 1, acked_through: this.ackedThrough, acked: [...this.ackedAbove].sort((a, b) => a - b) }),
    );
    const buf = Buffer.allocUnsafe(8 + body.length);
    buf.writeUInt32LE(body.length, 0);
    buf.writeUInt32LE(crc32(body), 4);
    body.copy(buf, 8);
    const tmp = path.join(this.opts.dir, STATE_TMP);
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(buf);
      if (this.opts.fsync !== 'never') await fh.datasync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path.join(this.opts.dir, STATE_FILE));
    await this.syncDir();
  }

  private async deleteAckedSegments(): Promise<void> {
    let removed = false;
    while (this.segments.length > 0) {
      const seg = this.segments[0];
      if (seg.last >= seg.first && seg.last > this.ackedThrough) break;
      this.segments.shift();
      if (seg.fh) {
        await seg.fh.close().catch(() => undefined);
        seg.fh = undefined;
      }
      await fsp.rm(path.join(this.opts.dir, seg.file), { force: true });
      this.diskBytes -= seg.size;
      if (this.cursor?.file === seg.file) this.cursor = null;
      removed = true;
    }
    if (removed) await this.syncDir();
  }

  /** Drops a segment's frames from `offset` on after a corrupt frame was found while reading. */
  private async cutSegment(seg: Segment, offset: number, lastGood: number, reason: string): Promise<void> {
    const full = path.join(this.opts.dir, seg.file);
    this.opts.logger.warn('spool: skipping corrupt records', {
      file: full,
      offset,
      discarded_bytes: seg.size - offset,
      reason,
    });
    for (let s = lastGood + 1; s <= seg.last; s++) {
      if (this.ackedAbove.delete(s)) continue;
      if (s > this.ackedThrough) this.pendingCount--;
    }
    if (seg.fh) {
      // Seqs inside a segment must stay contiguous: new appends go to a fresh segment.
      await seg.fh.close().catch(() => undefined);
      seg.fh = undefined;
    }
    await fsp.truncate(full, offset);
    this.diskBytes -= seg.size - offset;
    seg.size = offset;
    seg.last = lastGood;
    if (this.cursor?.file === seg.file) this.cursor = null;
    if (seg.last < seg.first) {
      this.segments = this.segments.filter((s) => s !== seg);
      await fsp.rm(full, { force: true });
    }
    this.normalize();
  }

  private async roll(): Promise<Segment> {
    const prev = this.active();
    if (prev?.fh) {
      if (this.opts.fsync !== 'never') await prev.fh.datasync();
      await prev.fh.close();
      prev.fh = undefined;
    }
    const file = `${String(this.nextSeq).padStart(20, '0')}.seg`;
    const fh = await fsp.open(path.join(this.opts.dir, file), 'wx', 0o600);
    const seg: Segment = { first: this.nextSeq, last: this.nextSeq - 1, size: 0, file, fh };
    this.segments.push(seg);
    await this.syncDir();
    return seg;
  }

  private async writeAll(seg: Segment, buf: Buffer): Promise<void> {
    let done = 0;
    try {
      while (done < buf.length) {
        const { bytesWritten } = await seg.fh!.write(buf, done, buf.length - done, seg.size + done);
        done += bytesWritten;
      }
    } catch (err) {
      // Never leave a partial frame in the middle of a segment: later frames would be unreachable.
      await seg.fh!.truncate(seg.size).catch(() => undefined);
      const code = (err as NodeJS.ErrnoException).code;
      throw new SpoolError('SPOOL_IO', `spool write failed (${code ?? (err as Error).message})`, true, { cause: err });
    }
  }

  private async syncFile(seg: Segment): Promise<void> {
    try {
      await seg.fh?.datasync();
    } catch (err) {
      throw new SpoolError('SPOOL_IO', `spool fsync failed: ${(err as Error).message}`, true, { cause: err });
    }
  }

  /** Group commit: every caller resolves after an fsync that started after its write finished. */
  private groupSync(): Promise<void> {
    if (!this.pendingSync) {
      this.pendingSync = new Promise<void>((resolve, reject) => {
        setImmediate(() => {
          this.pendingSync = null;
          this.lock(async () => {
            const seg = this.active();
            if (seg && !this.closed) await this.syncFile(seg);
          }).then(resolve, reject);
        });
      });
    }
    return this.pendingSync;
  }

  private async syncDir(): Promise<void> {
    if (this.opts.fsync === 'never') return;
    const fh = await fsp.open(this.opts.dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}

/**
 * Reads frames from `start` to `end` in chunks, calling `visit` for each valid one until it
 * returns false. Stops at the first torn or corrupt frame and reports where.
 * `payload` is only valid during the call.
 */
async function scanFrames(
  fh: FileHandle,
  start: number,
  end: number,
  prevSeq: number,
  visit: (seq: number, payload: Buffer, offset: number, frameLen: number) => boolean,
): Promise<ScanResult> {
  let buf = Buffer.allocUnsafe(READ_CHUNK);
  let bufStart = start;
  let bufLen = 0;
  let off = start;
  let lastSeq = prevSeq;

  const ensure = async (n: number): Promise<boolean> => {
    if (off + n > end) return false;
    if (off - bufStart + n <= bufLen) return true;
    const keep = bufStart + bufLen - off;
    if (n > buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(n, buf.length * 2));
      buf.copy(bigger, 0, off - bufStart, off - bufStart + keep);
      buf = bigger;
    } else {
      buf.copy(buf, 0, off - bufStart, off - bufStart + keep);
    }
    bufStart = off;
    bufLen = keep;
    while (bufLen < n) {
      const want = Math.min(buf.length - bufLen, end - (bufStart + bufLen));
      if (want <= 0) return false;
      const { bytesRead } = await fh.read(buf, bufLen, want, bufStart + bufLen);
      if (bytesRead === 0) return false;
      bufLen += bytesRead;
    }
    return true;
  };

  while (off < end) {
    if (!(await ensure(HEADER))) return { offset: off, lastSeq, stopped: false, error: 'torn frame header' };
    const rel = off - bufStart;
    const len = buf.readUInt32LE(rel);
    const crc = buf.readUInt32LE(rel + 4);
    if (len < 2 || len > MAX_PAYLOAD) return { offset: off, lastSeq, stopped: false, error: `bad length ${len}` };
    if (!(await ensure(HEADER + len))) return { offset: off, lastSeq, stopped: false, error: 'torn frame payload' };
    const r = off - bufStart; // ensure() may have moved the buffer
    if (crc32(buf.subarray(r + 8, r + HEADER + len)) !== crc) {
      return { offset: off, lastSeq, stopped: false, error: 'crc mismatch' };
    }
    const seq = Number(buf.readBigUInt64LE(r + 8));
    if (seq !== lastSeq + 1) return { offset: off, lastSeq, stopped: false, error: `unexpected seq ${seq}` };
    const cont = visit(seq, buf.subarray(r + HEADER, r + HEADER + len), off, HEADER + len);
    lastSeq = seq;
    off += HEADER + len;
    if (!cont) return { offset: off, lastSeq, stopped: true };
  }
  return { offset: off, lastSeq, stopped: false };
}

let CRC_TABLE: Uint32Array | undefined;

/** Fallback for Node < 20.15 without zlib.crc32 (same IEEE polynomial). */
export function tableCrc32(data: Uint8Array): number {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC_TABLE[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
