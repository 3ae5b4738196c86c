/** What a collector reports about its attachment, for logs and `oomtrail check`. */
export interface CollectorDescription {
  name: string;
  hook: string | null;
  programs: string[];
  unavailable: Array<{ hook: string; reason: string }>;
  /** What this kernel lacks and what that costs the records (empty: nothing). */
  degraded?: string[];
}

/**
 * A source of raw kernel events. `start` attaches and begins delivering to `emit`
 * (awaited: a slow consumer slows reading, never drops); `stop` detaches and delivers
 * whatever the kernel had already queued before it resolves.
 */
export interface Collector<E> {
  readonly name: string;
  /** `emitBatch`, when given, takes the events one read of the kernel's ring gave, together (one journal commit). */
  start(emit: (event: E) => Promise<void>, emitBatch?: (events: E[]) => Promise<void>): Promise<void>;
  /**
   * Reads the kernel's ring now and delivers what it held; resolves with the CLOCK_BOOTTIME (ns) before which every
   * event the kernel queued has been emitted.
   */
  flush?(): Promise<bigint>;
  /** Runs `onWake` whenever `fd` turns readable, woken by the collector's own wait (e.g. the kernel log). */
  watch?(fd: number, onWake: () => void): void;
  /** What reading the kernel's ring costs (its callbacks only copy the events out). */
  consumeStats?(): { maxMsPerEvent: number; fullEvents?: number; headerEvents?: number };
  stop(): Promise<void>;
  describe(): CollectorDescription;
  /** Events the kernel side could not queue (ring buffer full); never silently lost. */
  lostEvents(): bigint;
  /**
   * When the kernel side was attached (printk clock, µs), if that happened before `start` (a
   * collector may attach early): kills logged before `beforeUs` are not in its stream.
   */
  attachWindowUs?(): { beforeUs: number; afterUs: number } | null;
}
