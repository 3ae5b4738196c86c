import type { RuntimeStatus } from './types';

const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 30_000;

export interface EventStream {
  /** ends (resolves or rejects) when the stream does */
  done: Promise<unknown>;
}

/**
 * Keeps a runtime's event stream open, reconnecting with exponential backoff (0.5 s up to 30 s), and
 * resolves with the first status reported: after the first list, or the first failure.
 * `open` starts one stream; `report` gives a status, `connected` resets the backoff.
 */
export function followEvents(
  open: (report: (s: RuntimeStatus) => void, connected: () => void) => EventStream,
  failed: (why: string) => RuntimeStatus,
  owner: { stopped(): boolean; schedule(fn: () => void, ms: number): void },
): Promise<RuntimeStatus> {
  return new Promise<RuntimeStatus>((resolveFirst) => {
    let first = true;
    let backoff = RECONNECT_MIN_MS;
    const report = (s: RuntimeStatus) => {
      if (first) {
        first = false;
        resolveFirst(s);
      }
    };
    const connect = () => {
      if (owner.stopped()) return;
      open(report, () => (backoff = RECONNECT_MIN_MS))
        .done.catch((e: Error) => report(failed(e.message)))
        .finally(() => {
          report(failed('event stream ended'));
          if (owner.stopped()) return;
          owner.schedule(connect, backoff);
          backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
        });
    };
    connect();
  });
}
