/** Batch limits (`pipeline.batch.max_events`, `max_bytes`, `max_age_ms`). */
export interface BatchLimits {
  maxEvents: number;
  maxBytes: number;
  maxAgeMs: number;
}

export interface BatcherOptions<T> extends BatchLimits {
  /** Size of one item in bytes (for records: the length of their JSON). */
  sizeOf: (item: T) => number;
  /** Receives each batch; batches are handed over one at a time, in order. */
  onBatch: (batch: T[]) => Promise<void> | void;
  /** Errors from batches emitted by the age timer (no caller to reject). */
  onError?: (err: unknown) => void;
}

export class BatcherError extends Error {
  readonly retriable = false;
  constructor(readonly code: 'BATCHER_CONFIG', message: string) {
    super(message);
    this.name = 'BatcherError';
  }
}

/**
 * Groups items into batches that close when they reach `maxEvents` items, when the next item
 * would push them past `maxBytes` (an oversized item travels alone), or `maxAgeMs` after their
 * first item. The age timer is unref'd so it never keeps the process alive.
 * Backpressure: a batch is handed to `onBatch` only after the previous one finished; `add`
 * resolves only once any batch it closed has been handled; and a batch that reaches its age while
 * another is in flight stays open (still filling up to its limits) until that one is handled.
 * So a caller that awaits `add` holds at most one open batch and one batch in flight.
 */
export class Batcher<T> {
  private items: T[] = [];
  private size = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private tail: Promise<void> = Promise.resolve();
  private running = 0; // batches handed out and not yet handled
  private due = false; // the age limit passed while a batch was in flight

  constructor(private readonly opts: BatcherOptions<T>) {
    for (const k of ['maxEvents', 'maxBytes'] as const) {
      if (!(opts[k] >= 1)) throw new BatcherError('BATCHER_CONFIG', `${k} must be >= 1, got ${opts[k]}`);
    }
    if (!(opts.maxAgeMs >= 0)) throw new BatcherError('BATCHER_CONFIG', `maxAgeMs must be >= 0, got ${opts.maxAgeMs}`);
  }

  /** Items in the open batch. */
  get count(): number {
    return this.items.length;
  }

  /** Bytes in the open batch. */
  get bytes(): number {
    return this.size;
  }

  /** Adds an item; resolves once any batch this closed has been handled by `onBatch`. */
  add(item: T): Promise<void> {
    const n = this.opts.sizeOf(item);
    let closed: Promise<void> | undefined;
    if (this.items.length > 0 && this.size + n > this.opts.maxBytes) closed = this.emit();
    this.items.push(item);
    this.size += n;
    if (this.items.length >= this.opts.maxEvents || this.size >= this.opts.maxBytes) return this.emit();
    if (this.items.length === 1) this.startTimer();
    return closed ?? Promise.resolve();
  }

  /** Closes the open batch now (if any) and resolves when every emitted batch has been handled. */
  flush(): Promise<void> {
    return this.emit();
  }

  /** Stops the age timer; the open batch stays (call `flush` first to send it). */
  stop(): void {
    this.clearTimer();
    this.due = false;
  }

  private emit(): Promise<void> {
    this.clearTimer();
    this.due = false;
    if (this.items.length === 0) return this.tail;
    const batch = this.items;
    this.items = [];
    this.size = 0;
    this.running++;
    const run = this.tail
      .then(() => this.opts.onBatch(batch))
      .finally(() => {
        this.running--;
        if (this.running === 0 && this.due) this.emitQuietly();
      });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private emitQuietly(): void {
    this.emit().catch((err) => this.opts.onError?.(err));
  }

  private startTimer(): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.running > 0) this.due = true;
      else this.emitQuietly();
    }, this.opts.maxAgeMs);
    this.timer.unref?.();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }
}
