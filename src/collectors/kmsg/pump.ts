/**
 * The kernel log is a ring (128 KiB on Debian) that one big OOM report scrolls in about a second (a 1,000-process
 * sweep prints ~300 KB in ~1.5 s), and the agent's live recovery must read it before it wraps. Long synchronous loops
 * over kernel-log lines or processes call `pumpKernelLog()` once per item, so the reader registered here keeps up
 * even while the main thread is busy in them (under emulation such loops held it 0.6–1.8 s, and the ring wrapped).
 * Cheap: a counter, and every PUMP_EVERY calls one non-blocking read.
 */
const PUMP_EVERY = 32;

const readers = new Set<() => void>();
let inPump = false;
let calls = 0;

/**
 * A reader to run from long loops (the live recovery's, the audit's); returns its removal. A reader guards itself
 * against being run from its own read loop: the pump cannot tell a direct call from its own.
 */
export function addKernelLogReader(fn: () => void): () => void {
  readers.add(fn);
  return () => {
    readers.delete(fn);
  };
}

/** Called once per item of a long synchronous loop: runs the readers every PUMP_EVERY calls, never re-entered. */
export function pumpKernelLog(): void {
  if (!readers.size || inPump || ++calls % PUMP_EVERY !== 0) return;
  inPump = true;
  try {
    for (const read of readers) read();
  } finally {
    inPump = false;
  }
}
