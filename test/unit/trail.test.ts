import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ringBytes, TrailStore } from '../../src/collectors/trail/store';
import { parsePsi, parsePsiAvg10 } from '../../src/collectors/psi/psi';
import { decodeReclaimStat, decodeVictim, RECLAIM_STAT_SIZE, VICTIM_STATE_SIZE } from '../../src/collectors/reclaim/collector';

const REPO = path.resolve(__dirname, '../../..');
const fmt = (ms: number) => new Date(ms).toISOString();
const sample = (u: number) => ({ usageBytes: u, limitBytes: 100, reclaimStallMs: u / 10, reclaimedPages: 1, psiSome: 0.5, psiFull: null });

test('trail ring keeps the last N samples, oldest first, with start and step', () => {
  const s = new TrailStore(3, 1000, 10);
  for (let i = 0; i < 5; i++) {
    s.beginTick(10_000 + i * 1000);
    s.record('/a', sample(i));
  }
  const t = s.snapshot('/a', fmt)!;
  assert.deepEqual(t.usage_bytes, [2, 3, 4]);
  assert.deepEqual(t.limit_bytes, [100, 100, 100]);
  assert.deepEqual(t.reclaim_stall_ms, [0.2, 0.3, 0.4]);
  assert.deepEqual(t.psi_full_avg10, [null, null, null]);
  assert.equal(t.step_ms, 1000);
  assert.equal(t.start, fmt(12_000));
  assert.equal(s.snapshot('/b', fmt), undefined);
});

test('samples taken after the kill are left out of its trail', () => {
  const s = new TrailStore(10, 1000, 10);
  for (let i = 0; i < 5; i++) {
    s.beginTick(10_000 + i * 1000);
    s.record('/a', sample(i));
  }
  // kill at 12.5 s: the samples of 13 s and 14 s are already the victim freeing its memory
  assert.deepEqual(s.snapshot('/a', fmt, 12_500)!.usage_bytes, [0, 1, 2]);
  assert.deepEqual(s.snapshot('/a', fmt, 12_000)!.usage_bytes, [0, 1, 2], 'a sample at the kill time stays');
  assert.equal(s.snapshot('/a', fmt, 12_000)!.start, fmt(10_000));
  assert.equal(s.snapshot('/a', fmt, 9_000), undefined, 'nothing before the kill');
  assert.deepEqual(s.snapshot('/a', fmt, 20_000)!.usage_bytes, [0, 1, 2, 3, 4]);
  // the stall those late samples counted (the step at the limit before the kill) is not lost
  assert.deepEqual(s.lateReclaim('/a', 12_500), { stallMs: 0.3 + 0.4, reclaimedPages: 2 });
  assert.deepEqual(s.lateReclaim('/a', 20_000), { stallMs: 0, reclaimedPages: 0 });
  assert.deepEqual(s.lateReclaim('/b', 12_500), { stallMs: 0, reclaimedPages: 0 });
});

test('a tick a cgroup missed is an unknown, not a shifted series', () => {
  const s = new TrailStore(5, 1000, 10);
  s.beginTick(0);
  s.record('/a', sample(1));
  s.beginTick(1000); // /a not sampled
  s.beginTick(2000);
  s.record('/a', sample(3));
  assert.deepEqual(s.snapshot('/a', fmt)!.usage_bytes, [1, null, 3]);
});

test('bounded: the least recently sampled cgroup goes first; prune forgets idle ones', () => {
  const s = new TrailStore(2, 1000, 2);
  s.beginTick(0);
  s.record('/a', sample(1));
  s.record('/b', sample(1));
  s.beginTick(1000);
  s.record('/a', sample(2));
  s.record('/c', sample(2)); // evicts /b
  assert.equal(s.size, 2);
  assert.equal(s.snapshot('/b', fmt), undefined);
  for (let i = 2; i < 6; i++) {
    s.beginTick(i * 1000);
    s.record('/c', sample(i));
  }
  s.prune();
  assert.equal(s.snapshot('/a', fmt), undefined);
  assert.ok(s.snapshot('/c', fmt));
  assert.equal(ringBytes(60), 2160); // the stated bound: 60 samples = 2,160 payload bytes per cgroup
});

test('PSI parse', () => {
  const p = parsePsi('some avg10=1.50 avg60=0.04 avg300=0.19 total=36503406\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=8381472\n');
  assert.equal(p.some!.avg10, 1.5);
  assert.equal(p.full!.avg10, 0.25);
  assert.equal(p.full!.totalUs, 8381472);
  assert.deepEqual(parsePsi(''), { some: null, full: null });
});

test('PSI avg10 parse (every cgroup and step on v2) agrees with the full parse', () => {
  const texts = [
    'some avg10=1.50 avg60=0.04 avg300=0.19 total=36503406\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=8381472\n',
    'some avg10=100.00 avg60=99.99 avg300=12.00 total=18446744073709551615\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n',
    'some avg10=0.07 avg60=0.00 avg300=0.00 total=12\n', // no full line
    '',
  ];
  for (const t of texts) {
    const full = parsePsi(t);
    assert.deepEqual(parsePsiAvg10(t), { some: full.some?.avg10 ?? null, full: full.full?.avg10 ?? null }, JSON.stringify(t));
  }
  assert.deepEqual(parsePsiAvg10('xsome avg10=3.00 avg60=0.00 avg300=0.00 total=1\n'), { some: null, full: null }, 'only at a line start');
});

test('reclaim map decoders match bpf/reclaim.h', (t) => {
  const b = Buffer.alloc(RECLAIM_STAT_SIZE);
  for (let i = 0; i < 6; i++) b.writeBigUInt64LE(BigInt(i + 1), i * 8);
  assert.deepEqual(decodeReclaimStat(b), { directStallNs: 1n, memcgStallNs: 2n, directReclaimed: 3n, memcgReclaimed: 4n, directCount: 5n, memcgCount: 6n });
  const v = Buffer.alloc(VICTIM_STATE_SIZE);
  v.writeBigUInt64LE(10n, 0);
  assert.deepEqual(decodeVictim(v), { markNs: 10n, exitNs: null, reapedNs: null });
  let cc: string | null = null;
  for (const c of ['cc', 'gcc', 'clang']) {
    try {
      execFileSync(c, ['--version'], { stdio: 'ignore' });
      cc = c;
      break;
    } catch {
      /* next */
    }
  }
  if (!cc) return t.skip('no C compiler');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-reclaim-layout-'));
  fs.writeFileSync(
    path.join(dir, 'l.c'),
    `#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include "${path.join(REPO, 'bpf/reclaim.h')}"\n` +
      'int main(void){printf("%zu %zu %zu %zu %zu\\n", sizeof(struct oomtrail_reclaim_stat), sizeof(struct oomtrail_victim_state),' +
      ' offsetof(struct oomtrail_victim_state, exit_ns), offsetof(struct oomtrail_victim_state, reaped_ns), offsetof(struct oomtrail_reclaim_stat, memcg_count));return 0;}\n',
  );
  execFileSync(cc, ['-o', path.join(dir, 'l'), path.join(dir, 'l.c')]);
  const [stat, victim, exitOff, reapOff, countOff] = execFileSync(path.join(dir, 'l'), { encoding: 'utf8' }).trim().split(' ').map(Number);
  fs.rmSync(dir, { recursive: true, force: true });
  assert.deepEqual([stat, victim, exitOff, reapOff, countOff], [RECLAIM_STAT_SIZE, VICTIM_STATE_SIZE, 8, 16, 40]);
});
