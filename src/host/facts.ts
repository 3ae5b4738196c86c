import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';

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

/** The memory hierarchy's root: /sys/fs/cgroup/memory (v1) or /sys/fs/cgroup (v2). */
export function memoryRoot(version: 1 | 2 | null): string | null {
  return version === 1 ? '/sys/fs/cgroup/memory' : version === 2 ? '/sys/fs/cgroup' : null;
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
    // dist/src/host/facts.js → the package root
    return JSON.parse(readFileSync(`${__dirname}/../../../package.json`, 'utf8')).version as string;
  } catch {
    return '0.0.0';
  }
}

export function readBootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

export function readHostFacts(hostName = ''): HostFacts {
  return {
    host: hostName || os.hostname(),
    bootId: readBootId(),
    kernelRelease: os.release(),
    pageSize: pageSize(),
    cgroupVersion: detectCgroupVersion(),
    agentVersion: agentVersion(),
  };
}
