import { loadLibBpf } from './libbpf';
import type { Logger } from '../observe/logger';

const LIBBPF_WARN = 0;
let capture: string[] | null = null;
let installed = false;

/** Routes libbpf's own messages into the agent's logger (warnings at warn, the rest at debug). */
export function installLibbpfLogger(logger: Logger): void {
  if (installed) return;
  installed = true;
  loadLibBpf().setPrint((level, message) => {
    if (capture) {
      // expected failures while probing hooks: keep for the explanation, log only at debug
      capture.push(message);
      logger.debug(message);
      return;
    }
    if (level === LIBBPF_WARN) logger.warn(message);
    else logger.debug(message);
  });
}

/** Runs fn with libbpf's messages collected for it instead of logged as warnings. */
export function withLibbpfLog<T>(fn: (log: string[]) => T): T {
  const previous = capture;
  capture = [];
  try {
    return fn(capture);
  } finally {
    capture = previous;
  }
}
