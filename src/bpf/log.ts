import { loadLibBpf } from './libbpf';
import type { Logger } from '../observe/logger';

const LIBBPF_WARN = 0;
const LIBBPF_INFO = 1;
const LIBBPF_DEBUG = 2;
let capture: string[] | null = null;
let installed = false;

/**
 * Routes libbpf's own messages into the agent's logger (warnings at warn, the rest at debug). Its
 * debug messages (~3,500 per hook load, mostly CO-RE relocation steps) are taken only when the
 * logger is at debug: formatting and keeping them grew the heap right at the BTF parse, the
 * agent's peak RSS. The reasons of a failed load are warnings.
 */
export function installLibbpfLogger(logger: Logger): void {
  if (installed) return;
  installed = true;
  const maxLevel = logger.isLevelEnabled('debug') ? LIBBPF_DEBUG : LIBBPF_INFO;
  loadLibBpf().setPrint((level, message) => {
    if (capture) {
      // expected failures while probing hooks: keep for the explanation, log only at debug
      capture.push(message);
      logger.debug(message);
      return;
    }
    if (level === LIBBPF_WARN) logger.warn(message);
    else logger.debug(message);
  }, maxLevel);
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
