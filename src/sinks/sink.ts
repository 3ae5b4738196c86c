import type { OomRecord } from '../record/record';

/** A record of a batch that the destination refused for good, with the destination's reason. */
export interface RejectedRecord {
  record: OomRecord;
  reason: string;
}

/**
 * Outcome of one `write`: the lane owns retries, spooling and dead letters; the sink only classifies.
 * `delivered` may name records the destination refused while it accepted the rest (a partial success, e.g. Loki's
 * 400 after writing the valid entries): the lane dead-letters exactly those and acks the whole batch. Sinks that
 * never return `rejectedRecords` are unaffected.
 */
export type WriteResult =
  | { status: 'delivered'; rejectedRecords?: readonly RejectedRecord[] }
  | { status: 'retryable'; reason: string; afterMs?: number }
  | { status: 'rejected'; reason: string };

export interface HealthStatus {
  healthy: boolean;
  detail?: string;
}

/** A destination for records. Implementations never throw from `write`; they answer a WriteResult. */
export interface Sink {
  readonly name: string;
  write(batch: readonly OomRecord[]): Promise<WriteResult>;
  flush(): Promise<void>;
  close(): Promise<void>;
  healthcheck(): Promise<HealthStatus>;
  /** Reopen local files before the next write (SIGHUP, after log rotation). Sinks without files leave it out. */
  reopen?(): void;
}
