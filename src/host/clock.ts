import { loadLibBpf } from '../bpf/libbpf';

/**
 * The clocks a record is dated with. Kernel events carry CLOCK_BOOTTIME (bpf_ktime_get_boot_ns),
 * kernel log lines the printk clock (CLOCK_MONOTONIC-like); records carry wall-clock time.
 * Injected so that record assembly can be tested without libbpf.
 */
export interface Clock {
  /** CLOCK_BOOTTIME now, ns */
  bootNowNs(): bigint;
  /** CLOCK_BOOTTIME ns → wall-clock ns */
  bootToRealtimeNs(bootNs: bigint): bigint;
  /** the printk clock now, µs */
  printkNowUs(): number;
  /** printk clock ns → wall-clock ns */
  printkToRealtimeNs(printkNs: bigint): bigint;
}

/**
 * Converts CLOCK_BOOTTIME (what bpf_ktime_get_boot_ns() returns) to wall-clock ns, sampled per
 * call so that clock steps (NTP) after start-up are followed.
 */
export function bootToRealtimeNs(bootNs: bigint): bigint {
  const lib = loadLibBpf();
  const b1 = lib.clockGettimeNs('boottime');
  const rt = lib.clockGettimeNs('realtime');
  const b2 = lib.clockGettimeNs('boottime');
  return bootNs + rt - (b1 + b2) / 2n;
}

/** The printk clock now, in µs: CLOCK_MONOTONIC (libuv's hrtime), which printk's local_clock follows closely. */
export function printkNowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** This host's clocks (CLOCK_BOOTTIME and CLOCK_REALTIME through libbpf's libc). */
export const systemClock: Clock = {
  bootNowNs: () => loadLibBpf().clockGettimeNs('boottime'),
  bootToRealtimeNs,
  printkNowUs,
  // printk's local_clock runs with CLOCK_MONOTONIC
  printkToRealtimeNs: (printkNs) => loadLibBpf().clockGettimeNs('realtime') - (process.hrtime.bigint() - printkNs),
};

/** RFC 3339 in UTC with all nine fractional digits. */
export function formatRfc3339Nanos(epochNs: bigint): string {
  const seconds = epochNs / 1_000_000_000n;
  const nanos = epochNs % 1_000_000_000n;
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  return `${base}.${nanos.toString().padStart(9, '0')}Z`;
}

/** Wall-clock milliseconds as RFC 3339 (what trail times carry). */
export function formatRfc3339Ms(ms: number): string {
  return formatRfc3339Nanos(BigInt(ms) * 1_000_000n);
}
