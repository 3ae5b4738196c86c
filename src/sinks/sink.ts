import type { OomRecord } from '../record/record';

/** Outcome of one `write`: the lane owns retries, spooling and dead letters; the sink only classifies. */
export type WriteResult =
  | { status: 'delivered' }
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
}
