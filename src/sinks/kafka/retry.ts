import type { RetryOptions } from 'kafkajs';

/**
 * kafkajs's retry of one request/send, always explicit: `kafka.producer()` always passes a retry object, so the
 * idempotent producer's documented "retry forever" (MAX_SAFE_INTEGER) default never applies, and kafkajs's own
 * default (5 retries, ~10 s) gave up during a 13 s outage. With 8 retries from 300 ms doubling to 30 s a send
 * keeps trying for about a minute (the broker dedups the resends: same producer id and sequence), then the
 * lane's retry and spool take over for outages of any length.
 */
export function retrySettings(retries: number): RetryOptions {
  return { retries, initialRetryTime: 300, maxRetryTime: 30_000, multiplier: 2, factor: 0.2 };
}
