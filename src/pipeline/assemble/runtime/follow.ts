import type { RuntimeStatus } from './types';

const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 30_000;
/** A failed list is retried on its own backoff while its event stream stays up. */
export const LIST_RETRY_MIN_MS = 500;
export const LIST_RETRY_MAX_MS = 30_000;

export interface EventStream {
  /** ends (resolves or rejects) when the stream does */
  done: Promise<unknown>;
}

/**
 * Keeps a runtime's event stream open, reconnecting with exponential backoff (0.5 s up to 30 s), until
 * `stop()`. `follow` resolves with the first status reported: after the first list, or the first failure.
 */
export class EventFollower {
  private stoppedFlag = false;
  private timer: ReturnType<typeof setTimeout> | null = null;

  get stopped(): boolean {
    return this.stoppedFlag;
  }

  /** `open` starts one stream; its `report` gives a status, `connected` resets the backoff. */
  follow(
    open: (report: (s: RuntimeStatus) => void, connected: () => void) => EventStream,
    failed: (why: string) => RuntimeStatus,
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
        if (this.stoppedFlag) return;
        open(report, () => (backoff = RECONNECT_MIN_MS))
          .done.catch((e: Error) => report(failed(e.message)))
          .finally(() => {
            report(failed('event stream ended'));
            if (this.stoppedFlag) return;
            this.timer = setTimeout(connect, backoff);
            this.timer.unref();
            backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
          });
      };
      connect();
    });
  }

  stop(): void {
    this.stoppedFlag = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
