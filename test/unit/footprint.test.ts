import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TrailSampler } from '../../src/collectors/trail/sampler';
import { silentLogger } from '../../src/observe/logger';
import * as libbpf from '../../src/bpf/libbpf';
import { RingBufferReader } from '../../src/bpf/object';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-footprint-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fake v1 memory cgroup (a tmpfs dir, like test/unit/trail-sampler.test.ts). */
function cg(rel: string, limit: number, usage: number): void {
  const d = path.join(root, rel);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'memory.limit_in_bytes'), String(limit));
  fs.writeFileSync(path.join(d, 'memory.usage_in_bytes'), String(usage));
}

function sampler(): TrailSampler {
  return new TrailSampler({
    logger: silentLogger(),
    cgroupVersion: 1,
    root,
    stepMs: 3_600_000, // steps are driven by hand below
    samples: 8,
    maxCgroups: 100,
    reclaim: null,
    psi: null,
    pressure: null,
    nowBootNs: () => 1n,
    onPressure: () => undefined,
  });
}

test('a running sampler neither walks the hierarchy nor re-opens usage files at each step', async () => {
  for (let i = 0; i < 20; i++) cg(`pod${i % 4}/c${i}`, 1 << 30, 4096 * i);
  const s = sampler();
  s.start();
  try {
    const calls = { readdir: 0, open: 0, readFile: 0 };
    const orig = { readdir: fs.readdirSync, open: fs.openSync, readFile: fs.readFileSync };
    (fs as { readdirSync: unknown }).readdirSync = (...a: unknown[]) => (calls.readdir++, (orig.readdir as (...x: unknown[]) => unknown)(...a));
    (fs as { openSync: unknown }).openSync = (...a: unknown[]) => (calls.open++, (orig.open as (...x: unknown[]) => unknown)(...a));
    (fs as { readFileSync: unknown }).readFileSync = (...a: unknown[]) => {
      if (String(a[0]).startsWith(root)) calls.readFile++;
      return (orig.readFile as (...x: unknown[]) => unknown)(...a);
    };
    try {
      for (let t = 0; t < 3; t++) s.tick();
    } finally {
      Object.assign(fs, { readdirSync: orig.readdir, openSync: orig.open, readFileSync: orig.readFile });
    }
    assert.deepEqual(calls, { readdir: 0, open: 0, readFile: 0 }, 'steps only pread the kept-open usage files');
    const t = s.store.snapshot('/pod3/c7', String)!;
    assert.deepEqual(t.usage_bytes, [7 * 4096, 7 * 4096, 7 * 4096, 7 * 4096]);
    assert.equal(s.store.size, 21, '20 cgroups and the host');
  } finally {
    await s.stop();
    fs.rmSync(root, { recursive: true, force: true });
    fs.mkdirSync(root);
  }
});

test('a running sampler follows new, removed, re-limited and recreated cgroups exactly (inotify)', async () => {
  cg('a', 100_000, 1_000);
  const s = sampler();
  s.start();
  try {
    cg('b', 200_000, 2_000); // made after the first walk
    fs.writeFileSync(path.join(root, 'a', 'memory.limit_in_bytes'), '150000');
    await sleep(200);
    s.tick();
    fs.writeFileSync(path.join(root, 'b', 'memory.usage_in_bytes'), '3000');
    s.tick();
    const b = s.store.snapshot('/b', String)!;
    assert.deepEqual(b.usage_bytes, [2_000, 3_000]);
    assert.deepEqual(b.limit_bytes, [200_000, 200_000]);
    assert.deepEqual(s.store.snapshot('/a', String)!.limit_bytes, [100_000, 150_000, 150_000]);
    // removed, then a new cgroup under the same name (new files): read from the new one
    fs.rmSync(path.join(root, 'b'), { recursive: true });
    await sleep(200);
    s.tick();
    assert.equal(s.store.latest('/b')?.usageBytes, 3_000, 'no sample for a removed cgroup');
    assert.equal(s.sampleNow('/b'), null);
    cg('b', 300_000, 7_000);
    await sleep(200);
    s.tick();
    assert.deepEqual(s.store.latest('/b'), { ...s.store.latest('/b')!, usageBytes: 7_000, limitBytes: 300_000 });
    // unlimited: no longer sampled
    fs.writeFileSync(path.join(root, 'a', 'memory.limit_in_bytes'), '9223372036854771712');
    await sleep(200);
    const before = s.store.snapshot('/a', String)!.usage_bytes.length;
    s.tick();
    assert.equal(s.store.snapshot('/a', String)!.usage_bytes.length, before);
  } finally {
    await s.stop();
  }
});

test('with the default configuration no network sink client library is loaded', () => {
  const registry = path.resolve(__dirname, '../../src/sinks/registry.js');
  const load = path.resolve(__dirname, '../../src/config/load.js');
  const etc = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-footprint-etc-'));
  try {
    const out = execFileSync(
      process.execPath,
      [
        '-e',
        `const { loadConfig } = require(${JSON.stringify(load)});
         const { createSinks } = require(${JSON.stringify(registry)});
         const { config } = loadConfig({ etcDir: ${JSON.stringify(etc)}, env: { OOMTRAIL_SINKS_FILE_PATH: ${JSON.stringify(path.join(etc, 'e.jsonl'))} } });
         const sinks = createSinks(config, { info() {}, warn() {}, error() {}, debug() {} });
         const libs = Object.keys(require.cache).filter((f) => /node_modules\\/(kafkajs|@clickhouse|protobufjs|snappy)\\//.test(f)).map((f) => f.split('node_modules/')[1].split('/')[0]);
         console.log(JSON.stringify({ sinks: sinks.map((s) => s.name), libs: [...new Set(libs)] }));`,
      ],
      { encoding: 'utf8' },
    );
    assert.deepEqual(JSON.parse(out), { sinks: ['console', 'file'], libs: [] });
  } finally {
    fs.rmSync(etc, { recursive: true, force: true });
  }
});

test('the ring-buffer reader waits without a timeout and stop() wakes it through an eventfd', async () => {
  const timeouts: number[] = [];
  const ctl: Array<[number, number]> = [];
  let pending: ((err: unknown, ret: number) => void) | null = null;
  let signalled = 0;
  const fake = {
    ringBufferNew: () => ({}),
    ringBufferEpollFd: () => 40,
    ringBufferConsume: () => 0,
    ringBufferFree: () => undefined,
    eventfd: () => 41,
    eventfdSignal: (fd: number) => {
      assert.equal(fd, 41);
      signalled++;
      const cb = pending;
      pending = null;
      setImmediate(() => cb?.(null, 1));
      return 8;
    },
    epollCtl: (epfd: number, _op: number, fd: number) => (ctl.push([epfd, fd]), 0),
    close: () => 0,
    epollWaitAsync: (_epfd: number, timeoutMs: number, cb: (err: unknown, ret: number) => void) => {
      timeouts.push(timeoutMs);
      pending = cb;
    },
    errno: () => 0,
  };
  const orig = libbpf.loadLibBpf;
  (libbpf as { loadLibBpf: unknown }).loadLibBpf = () => fake;
  try {
    const r = new RingBufferReader(3, () => undefined, (e) => assert.fail(e));
    r.start();
    await sleep(20);
    assert.deepEqual(ctl, [[40, 41]], 'the eventfd sits in the ring epoll set');
    assert.deepEqual(timeouts, [-1], 'an idle reader sleeps until data or stop');
    const t0 = Date.now();
    await r.stop();
    assert.equal(signalled, 1);
    assert.ok(Date.now() - t0 < 100, 'stop() does not wait for a poll timeout');
  } finally {
    (libbpf as { loadLibBpf: unknown }).loadLibBpf = orig;
  }
});
