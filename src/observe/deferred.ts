import type { Logger } from './logger';

/**
 * A stand-in logger for what runs before winston is loaded (the BPF loads at start-up: libbpf's
 * parse of the kernel's BTF peaks on a smaller process without winston's ~10 MB). Calls are kept and
 * replayed in order on `attach`; later calls go straight to the real logger.
 */
export function deferredLogger(level = 'info'): { logger: Logger; attach(real: Logger): void } {
  // winston's npm levels: calls above the configured one are not kept (libbpf's debug output at load is long)
  const rank = (l: string | symbol) => ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'].indexOf(String(l));
  const max = rank(level);
  const kept: Array<[string | symbol, unknown[]]> = [];
  let real: Logger | null = null;
  const logger = new Proxy({} as Logger, {
    get(_target, method) {
      if (real) {
        const v = (real as unknown as Record<string | symbol, unknown>)[method];
        return typeof v === 'function' ? v.bind(real) : v;
      }
      return (...args: unknown[]) => {
        if (rank(method) <= max) kept.push([method, args]);
        return logger;
      };
    },
  });
  return {
    logger,
    attach(to: Logger) {
      real = to;
      for (const [method, args] of kept.splice(0)) {
        (to as unknown as Record<string | symbol, (...a: unknown[]) => unknown>)[method](...args);
      }
    },
  };
}
