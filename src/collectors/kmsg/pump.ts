/**
 * The kernel log is a ring (128 KiB on Debian) that one big OOM report scrolls in about a second (a 1,000-process
 * sweep prints ~300 KB in ~1.5 s), and the agent's live recovery must read it before it wraps. Long synchronous loops
 * over kernel-log lines or processes call `pumpKernelLog()` once per item, so the reader registered here keeps up
 * even while the main thread is busy in them (under emulation such loops held it 0.6–1.8 s, and the ring wrapped).
 * Cheap: a counter, and every PUMP_EVERY calls one non-blocking read.
 */
const PUMP_EVERY = 32;

let pump: (() => void) | null = null;
let inPump = false;
let calls = 0;

/** The reader to run from long loops (null: none). */
export function setKernelLogPump(fn: (() => void) | null): void {
  pump = fn;
}

/** Called once per item of a long synchronous loop: runs the reader every PUMP_EVERY calls, never re-entered. */
export function pumpKernelLog(): void {
  if (!pump || inPump || ++calls % PUMP_EVERY !== 0) return;
  inPump = true;
  try {
    pump();
  } finally {
    inPump = false;
  }
}
