import type { OomRecord } from '../record/record';
import type { Logger } from '../observe/logger';
import type { HealthReport } from '../observe/metrics';
import type { AcceptResult, Lane } from './lane';
import type { BoundedQueue } from './queue';

/**
 * Fans every record out to every lane. Each lane only appends to its own spool here, so a slow or
 * dead sink never stalls another: delivery happens later, in each lane's own pump.
 */
export class Router {
  constructor(
    readonly lanes: readonly Lane[],
    private readonly logger: Logger,
  ) {}

  /** Opens every lane (spool recovery + replay). Fails if any lane cannot open its spool. */
  async open(): Promise<void> {
    const results = await Promise.allSettled(this.lanes.map((l) => l.open()));
    const failed = results.findIndex((r) => r.status === 'rejected');
    if (failed >= 0) {
      await Promise.allSettled(this.lanes.map((l) => l.close()));
      throw (results[failed] as PromiseRejectedResult).reason;
    }
  }

  /** Accepts the record into every lane's spool concurrently; one lane's outcome never affects another's. */
  async route(record: OomRecord): Promise<AcceptResult[]> {
    return Promise.all(this.lanes.map((l) => l.accept(record)));
  }

  /** Routes records from the queue until it is closed and empty. */
  async consume(queue: BoundedQueue<OomRecord>): Promise<void> {
    for (let r = await queue.shift(); r !== undefined; r = await queue.shift()) {
      await this.route(r);
    }
  }

  /** Drains every lane in parallel within the same deadline; resolves with the records left per sink. */
  async drain(deadlineMs: number): Promise<Record<string, number>> {
    const left = await Promise.all(this.lanes.map((l) => l.drain(deadlineMs)));
    return Object.fromEntries(this.lanes.map((l, i) => [l.name, left[i]]));
  }

  /** Closes every lane; `graceMs` bounds each lane's wait for a write still in flight. */
  async close(graceMs?: number): Promise<void> {
    const results = await Promise.allSettled(this.lanes.map((l) => l.close(graceMs)));
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.logger.error('router: lane close failed', { sink: this.lanes[i].name, error: String(r.reason) });
    });
  }

  /** Unhealthy when some sink has been failing for longer than `failingAfterMs` (`metrics.sink_failing_after_ms`). */
  health(failingAfterMs: number): HealthReport {
    const failing = this.lanes
      .map((l) => ({ l, ms: l.failingSinceMs }))
      .filter((x): x is { l: Lane; ms: number } => x.ms !== null && x.ms > failingAfterMs);
    if (failing.length === 0) return { healthy: true };
    const reason = failing
      .map(({ l, ms }) => `sink ${l.name} failing for ${Math.round(ms / 1000)}s: ${l.lastFailureReason ?? 'unknown'}`)
      .join('; ');
    return { healthy: false, reason };
  }
}
