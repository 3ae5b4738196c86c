import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { OomKillCollector } from '../collectors/oomkill/collector';
import type { RawOomEvent } from '../collectors/oomkill/event';
import { enrich } from '../pipeline/assemble/enrich';
import { bootToRealtimeNs } from '../host/clock';
import { detectCgroupVersion, readHostFacts } from '../host/facts';
import type { OomRecord, Hook } from '../record/record';
import type { Logger } from '../observe/logger';

const LIMIT_BYTES = 64 * 1024 * 1024;

export interface DemoCgroup {
  dir: string;
  procs: string;
}

/** A throwaway memory cgroup with a 64 MiB limit on whichever hierarchy has the memory controller. */
export function makeDemoCgroup(name: string): DemoCgroup {
  const version = detectCgroupVersion();
  if (version === 1) {
    const dir = path.join('/sys/fs/cgroup/memory', name);
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(LIMIT_BYTES));
    // no swap for the hog, so the limit is hit at once instead of after swapping
    try {
      writeFileSync(path.join(dir, 'memory.swappiness'), '0');
    } catch {
      /* not on every kernel */
    }
    return { dir, procs: path.join(dir, 'cgroup.procs') };
  }
  if (version === 2) {
    const dir = path.join('/sys/fs/cgroup', name);
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'memory.max'), String(LIMIT_BYTES));
    if (existsSync(path.join(dir, 'memory.swap.max'))) writeFileSync(path.join(dir, 'memory.swap.max'), '0');
    return { dir, procs: path.join(dir, 'cgroup.procs') };
  }
  throw new Error('no memory cgroup controller found (neither cgroup v1 /sys/fs/cgroup/memory nor v2 with memory)');
}

export async function removeCgroup(dir: string): Promise<void> {
  // the killed hog may take a moment to be reaped before the cgroup is empty
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  rmdirSync(dir);
}

/** Starts a process that joins `procs` and then allocates until the kernel kills it. */
export function spawnMemoryHog(procs: string, comm = 'oomtrail-hog'): Promise<{ pid: number; signal: NodeJS.Signals | null }> {
  // process.title sets the kernel comm, so the kernel's report names the hog recognisably
  const code = `process.title = ${JSON.stringify(comm)};` +
    `require('fs').writeFileSync(${JSON.stringify(procs)}, String(process.pid));` +
    `const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (_code, signal) => resolve({ pid: child.pid ?? -1, signal }));
  });
}

/** Runs one real, contained OOM kill and returns its record. Root only; removes its cgroup. */
export async function runDemo(logger: Logger, hook: 'auto' | Hook, timeoutMs = 10_000): Promise<OomRecord> {
  const facts = readHostFacts();
  const collector = new OomKillCollector({ hook, logger });
  const events: RawOomEvent[] = [];
  let notify: () => void = () => {};
  await collector.start(async (e) => {
    events.push(e);
    notify();
  });
  const cg = makeDemoCgroup(`oomtrail-demo-${process.pid}`);
  try {
    const hog = spawnMemoryHog(cg.procs);
    const { pid, signal } = await hog;
    logger.info(`demo: memory hog ${pid} ended by ${signal ?? 'exit'}`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ev = events.find((e) => e.victimPid === pid);
      if (ev) return enrich(ev, facts, bootToRealtimeNs);
      if (Date.now() > deadline) throw new Error(`no OOM record for the hog (pid ${pid}) within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        notify = r;
        setTimeout(r, 100).unref();
      });
    }
  } finally {
    await collector.stop();
    await removeCgroup(cg.dir);
  }
}
