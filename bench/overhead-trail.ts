/*
 * The trail's own cost at scale: N fake memory-limited cgroups (v1 file layout in a temp dir), the
 * sampler ticked `samples` times so every ring is full. Reports ms per tick and the memory the
 * store holds (heap + array buffers, measured after GC) against the stated bound.
 *
 *   npx tsc -p . && node --expose-gc dist/bench/overhead-trail.js [cgroups=10000] [samples=60]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TrailSampler } from '../src/collectors/trail/sampler';
import { ringBytes } from '../src/collectors/trail/store';
import { silentLogger } from '../src/observe/logger';

const N = Number(process.argv[2] ?? 10_000);
const SAMPLES = Number(process.argv[3] ?? 60);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-bench-trail-'));
try {
  for (let i = 0; i < N; i++) {
    // 100 parents x 100 children, like pods x containers
    const d = path.join(root, `pod${Math.floor(i / 100)}`, `c${i}`);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, 'memory.limit_in_bytes'), String(1 << 30));
    fs.writeFileSync(path.join(d, 'memory.usage_in_bytes'), String(i * 4096));
  }
  const s = new TrailSampler({
    logger: silentLogger(),
    cgroupVersion: 1,
    root,
    stepMs: 1000,
    samples: SAMPLES,
    maxCgroups: N,
    reclaim: null,
    psi: null,
    pressure: { enabled: true, usageRatio: 0.9, psiFullAvg10: 10, minIntervalMs: 60_000 },
    nowBootNs: () => 0n,
    onPressure: () => undefined,
  });
  gc();
  const m0 = process.memoryUsage();
  const times: number[] = [];
  for (let t = 0; t < SAMPLES; t++) {
    const t0 = process.hrtime.bigint();
    s.tick();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  gc();
  const m1 = process.memoryUsage();
  const held = m1.heapUsed - m0.heapUsed + (m1.arrayBuffers - m0.arrayBuffers);
  const sorted = [...times].sort((a, b) => a - b);
  const snapT0 = process.hrtime.bigint();
  const snap = s.store.snapshot('/pod0/c1', (ms) => new Date(ms).toISOString());
  const snapUs = Number(process.hrtime.bigint() - snapT0) / 1e3;
  console.log(
    `${s.store.size - 1} cgroups x ${SAMPLES} samples: tick median ${sorted[sorted.length >> 1].toFixed(1)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms; ` +
      `store holds ${(held / 1e6).toFixed(1)} MB (stated bound ${((N * (ringBytes(SAMPLES) + 800)) / 1e6).toFixed(1)} MB); ` +
      `snapshot ${snapUs.toFixed(0)} us, ${JSON.stringify(snap).length} JSON bytes`,
  );
} finally {
  fs.rmSync(root, { recursive: true, force: true });
}
