import fs from 'node:fs';
import path from 'node:path';
import { detectCgroupVersion } from '../../src/pipeline/enrich/host';
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
