/** Backoff bounds, from `pipeline.retry.initial_ms` / `pipeline.retry.max_ms`. */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

/**
 * Longest delay a Node timer can hold (2^31-1 ms, ~24.8 days): a larger one fires after 1 ms,
 * which would turn a far Retry-After into a busy retry loop.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Delay before retry number `attempt` (0 = the first retry): "full jitter" exponential backoff,
 * uniform in [0, min(maxMs, initialMs * 2^attempt)], and never less than the server's retry-after.
 * A retry-after larger than `maxMs` wins: the server knows better than our cap (and sinks use it for
 * their own operator-error delay, e.g. `config_error_retry_ms`). Every result is at most `MAX_TIMER_MS`.
 * Pure: inject `random` to test.
 */
export function backoffMs(
  attempt: number,
  opts: BackoffOptions,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number {
  const initial = Math.max(0, finiteOr(opts.initialMs, 0));
  const max = Math.max(initial, finiteOr(opts.maxMs, initial));
  const n = Math.max(0, Math.floor(finiteOr(attempt, 0)));
  // 2^n overflows to Infinity for large n; Math.min keeps the ceiling finite.
  const ceiling = Math.min(max, initial * Math.pow(2, n));
  const r = Math.min(1, Math.max(0, finiteOr(random(), 0)));
  const jittered = Math.round(r * ceiling);
  const floor = retryAfterMs !== undefined && Number.isFinite(retryAfterMs) && retryAfterMs > 0 ? Math.ceil(retryAfterMs) : 0;
  return Math.min(MAX_TIMER_MS, Math.max(jittered, floor));
}

function finiteOr(v: number, fallback: number): number {
  return Number.isFinite(v) ? v : fallback;
}
