import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { detectCgroupVersion } from '../../src/host/facts';
import { makeDemoCgroup, removeCgroup, spawnMemoryHog } from '../../src/cli/demo';

export { removeCgroup, spawnMemoryHog };

export interface TestCgroup {
  dir: string;
  procs: string;
  /** the path the kernel prints for it: relative to the memory hierarchy's root */
  kernelPath: string;
  oomKills: () => number;
}

/** A 64 MiB memory cgroup on whichever hierarchy carries the memory controller (v1 here, v2 in the VM). */
export function makeTestCgroup(name: string): TestCgroup {
  const cg = makeDemoCgroup(name);
  const version = detectCgroupVersion();
  const root = version === 1 ? '/sys/fs/cgroup/memory' : '/sys/fs/cgroup';
  const counterFile = version === 1 ? path.join(cg.dir, 'memory.oom_control') : path.join(cg.dir, 'memory.events');
  return {
    ...cg,
    kernelPath: '/' + path.relative(root, cg.dir),
    oomKills: () => Number(/^oom_kill (\d+)$/m.exec(fs.readFileSync(counterFile, 'utf8'))?.[1] ?? NaN),
  };
}

/**
 * A 64 MiB memory cgroup at the end of a chain of nested ones (`parts` from the top): every level
 * but the leaf is a plain parent (with +memory delegated on cgroup v2). `dirs` lists them leaf first,
 * for removal.
 */
export function makeNestedTestCgroup(parts: string[]): TestCgroup & { dirs: string[] } {
  const version = detectCgroupVersion();
  const root = version === 1 ? '/sys/fs/cgroup/memory' : '/sys/fs/cgroup';
  const dirs: string[] = [];
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    if (version === 2) {
      const sc = path.join(dir, 'cgroup.subtree_control');
      if (!fs.readFileSync(sc, 'utf8').includes('memory')) fs.writeFileSync(sc, '+memory');
    }
    dir = path.join(dir, part);
    fs.mkdirSync(dir);
    dirs.unshift(dir);
  }
  if (version === 2) fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), '+memory');
  const leaf = makeTestCgroup(path.relative(root, path.join(dir, parts[parts.length - 1])));
  return { ...leaf, dirs: [leaf.dir, ...dirs] };
}

export interface HogResult {
  pid: number;
  signal: NodeJS.Signals | null;
}

/**
 * A hog cheap enough for bursts and for the VM: `dd` with a `mib`-sized buffer, which it fills
 * from /dev/zero (comm `dd`). The shell joins the cgroup, then execs dd under the same pid.
 */
export function spawnDdHog(procs: string, mib = 128): Promise<HogResult> {
  const child = spawn('/bin/sh', ['-c', `echo $$ > "$1" && exec dd if=/dev/zero of=/dev/null bs=${mib}M count=1 2>/dev/null`, 'sh', procs], {
    stdio: 'ignore',
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (_code, signal) => resolve({ pid: child.pid ?? -1, signal }));
  });
}

/** A process in the cgroup that holds almost nothing and waits: a bystander a group kill must take too. */
export function spawnSleeper(procs: string): { pid: number; exited: Promise<HogResult> } {
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$1" && exec sleep 600', 'sh', procs], { stdio: 'ignore' });
  const exited = new Promise<HogResult>((resolve) => child.on('exit', (_c, signal) => resolve({ pid: child.pid ?? -1, signal })));
  return { pid: child.pid ?? -1, exited };
}
