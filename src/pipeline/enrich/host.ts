import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { loadLibBpf } from '../../bpf/libbpf';

/** Facts about this host that every record carries, read once at start. */
export interface HostFacts {
  host: string;
  bootId: string;
  kernelRelease: string;
  pageSize: number;
  cgroupVersion: 1 | 2 | null;
  agentVersion: string;
}

export function detectCgroupVersion(root = '/sys/fs/cgroup'): 1 | 2 | null {
  try {
    const controllers = readFileSync(`${root}/cgroup.controllers`, 'utf8').split(/\s+/);
    if (controllers.includes('memory')) return 2;
  } catch {
    /* not a cgroup2 root */
  }
  if (existsSync(`${root}/memory/memory.limit_in_bytes`) || existsSync(`${root}/memory/cgroup.procs`)) return 1;
  return null;
}

function pageSize(): number {
  try {
    return Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim()) || 4096;
  } catch {
    return 4096;
  }
}

export function agentVersion(): string {
  try {
    return JSON.parse(readFileSync(`${__dirname}/../../../../package.json`, 'utf8')).version as string;
  } catch {
    return '0.0.0';
  }
}

export function readHostFacts(hostName = ''): HostFacts {
  return {
    host: hostName || os.hostname(),
    bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    kernelRelease: os.release(),
    pageSize: pageSize(),
    cgroupVersion: detectCgroupVersion(),
    agentVersion: agentVersion(),
  };
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

/** RFC 3339 in UTC with all nine fractional digits. */
export function formatRfc3339Nanos(epochNs: bigint): string {
  const seconds = epochNs / 1_000_000_000n;
  const nanos = epochNs % 1_000_000_000n;
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  return `${base}.${nanos.toString().padStart(9, '0')}Z`;
}
