/**
 * What a full queue does with a new item (`pipeline.queue.overflow`):
 * - `block`: `push` waits until a consumer makes room. Nothing is dropped; the producer slows down.
 * - `drop_newest`: `push` returns at once and the new item is discarded (counted `queue_full_drop_newest`).
 * - `drop_oldest`: `push` returns at once; the oldest queued item is discarded to make room
 *   (counted `queue_full_drop_oldest`). Favours fresh events during a storm.
 */
export type OverflowPolicy = 'block' | 'drop_newest' | 'drop_oldest';

export const OVERFLOW_POLICIES: readonly OverflowPolicy[] = ['block', 'drop_newest', 'drop_oldest'];

/** Drop reasons counted by {@link BoundedQueue.dropped}. */
export type QueueDropReason = 'queue_full_drop_newest' | 'queue_full_drop_oldest' | 'queue_closed';

export class QueueError extends Error {
  readonly retriable = false;
  constructor(readonly code: 'QUEUE_CONFIG', message: string) {
    super(message);
    this.name = 'QueueError';
  }
}

export interface BoundedQueueOptions<T> {
  /** Called once per dropped item, e.g. to bump `oomtrail_dropped_total{stage="queue",reason}`. */
  onDrop?: (reason: QueueDropReason, item: T) => void;
}

interface BlockedPush<T> {
  item: T;
  resolve: () => void;
}

/**
 * A bounded FIFO between producers (the oomkill collector, the trail sampler's pressure events) and one
 * consumer (the agent's loop, which assembles each record and hands it to the router).
 * Every discarded item is counted by reason; a `push` that waits under `block` is never a drop.
 * After `close()`: new pushes and pushes still waiting for room are dropped as `queue_closed`;
 * items already queued are still handed out by `shift`, which resolves `undefined` once empty.
 */
export class BoundedQueue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  private readonly takers: ((v: T | undefined) => void)[] = [];
  private readonly blocked: BlockedPush<T>[] = [];
  private readonly drops = new Map<QueueDropReason, number>();
  private closed = false;

  constructor(
    readonly capacity: number,
    readonly policy: OverflowPolicy,
    private readonly opts: BoundedQueueOptions<T> = {},
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new QueueError('QUEUE_CONFIG', `queue capacity must be a positive integer, got ${capacity}`);
    }
    if (!OVERFLOW_POLICIES.includes(policy)) {
      throw new QueueError('QUEUE_CONFIG', `unknown overflow policy ${String(policy)}`);
    }
  }

  /** Items currently queued (not counting pushes blocked for room). */
  get depth(): number {
    return this.items.length - this.head;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Enqueues `item`; see {@link OverflowPolicy} for what happens when the queue is full. Never rejects. */
  push(item: T): Promise<void> {
    if (this.closed) {
      this.drop('queue_closed', item);
      return Promise.resolve();
    }
    const taker = this.takers.shift();
    if (taker) {
      taker(item);
      return Promise.resolve();
    }
    if (this.depth < this.capacity) {
      this.items.push(item);
      return Promise.resolve();
    }
    switch (this.policy) {
      case 'drop_newest':
        this.drop('queue_full_drop_newest', item);
        return Promise.resolve();
      case 'drop_oldest': {
        const oldest = this.take() as T;
        this.drop('queue_full_drop_oldest', oldest);
        this.items.push(item);
        return Promise.resolve();
      }
      case 'block':
        return new Promise<void>((resolve) => this.blocked.push({ item, resolve }));
    }
  }

  /** Next item, waiting for one if needed; `undefined` once the queue is closed and empty. */
  shift(): Promise<T | undefined> {
    if (this.depth > 0) {
      const item = this.take() as T;
      this.admitBlocked();
      return Promise.resolve(item);
    }
    if (this.closed) return Promise.resolve(undefined);
    return new Promise<T | undefined>((resolve) => this.takers.push(resolve));
  }

  /** Stops intake. Waiting consumers get `undefined` once the remaining items are taken. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const b of this.blocked.splice(0)) {
      this.drop('queue_closed', b.item);
      b.resolve();
    }
    // Takers only wait when the queue is empty, so they can be released now.
    for (const t of this.takers.splice(0)) t(undefined);
  }

  /** Drop counts by reason (only reasons that occurred). */
  dropped(): Record<string, number> {
    return Object.fromEntries(this.drops);
  }

  private take(): T | undefined {
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head++;
    // Compact occasionally so the backing array does not grow forever.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  private admitBlocked(): void {
    while (this.depth < this.capacity && this.blocked.length > 0) {
      const b = this.blocked.shift()!;
      this.items.push(b.item);
      b.resolve();
    }
  }

  private drop(reason: QueueDropReason, item: T): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
    this.opts.onDrop?.(reason, item);
  }
}
