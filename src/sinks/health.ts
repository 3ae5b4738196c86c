import type { Logger } from '../observe/logger';
import type { Sink } from './sink';

/** How long a sink's healthcheck may take before it counts as unreachable (a server that accepts and never answers). */
export const HEALTHCHECK_TIMEOUT_MS = 5000;

export interface SinkHealth {
  sink: string;
  healthy: boolean;
  detail?: string;
  ms: number;
}

/** Every sink's healthcheck at once, each bounded by `timeoutMs`; never throws. */
export async function checkSinks(sinks: readonly Sink[], timeoutMs = HEALTHCHECK_TIMEOUT_MS): Promise<SinkHealth[]> {
  return Promise.all(
    sinks.map(async (sink): Promise<SinkHealth> => {
      const t0 = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<{ healthy: false; detail: string }>((resolve) => {
        // not unref'd: a healthcheck pending on nothing but this timer must still get its verdict
        timer = setTimeout(() => resolve({ healthy: false, detail: `no answer within ${timeoutMs} ms` }), timeoutMs);
      });
      const h = await Promise.race([
        sink.healthcheck().catch((err: unknown) => ({ healthy: false, detail: err instanceof Error ? err.message : String(err) })),
        timeout,
      ]);
      clearTimeout(timer);
      const out: SinkHealth = { sink: sink.name, healthy: h.healthy, ms: Math.round(performance.now() - t0) };
      if (h.detail !== undefined) out.detail = h.detail;
      return out;
    }),
  );
}

/**
 * At start: each sink's healthcheck, logged, never fatal; `meanwhile` says what waits for an unreachable one
 * (the agent's records in the spool, the relay's batches). Not awaited by the start, so a hanging server delays nothing.
 */
export function logSinkHealth(
  sinks: readonly Sink[],
  logger: Logger,
  meanwhile = 'its records are spooled until it answers',
  timeoutMs = HEALTHCHECK_TIMEOUT_MS,
): Promise<SinkHealth[]> {
  return checkSinks(sinks, timeoutMs).then((results) => {
    for (const r of results) {
      if (r.healthy) logger.info(`sink ${r.sink}: reachable${r.detail ? ` (${r.detail})` : ''}`, { sink: r.sink, ms: r.ms });
      else logger.warn(`sink ${r.sink}: unreachable at start: ${r.detail ?? 'unhealthy'}; ${meanwhile}`, { sink: r.sink, ms: r.ms });
    }
    return results;
  });
}

/** `oomtrail check --sinks` as text: one line per enabled sink. */
export function formatSinkHealth(results: readonly SinkHealth[]): string {
  if (results.length === 0) return 'no sink enabled\n';
  return results.map((r) => `${r.sink.padEnd(11)} ${r.healthy ? 'ok' : 'UNREACHABLE'}${r.detail ? `: ${r.detail}` : ''} (${r.ms} ms)\n`).join('');
}
