/*
 * What memory_at_kill costs the kernel per kill: the mark_victim program's own run time
 * (kernel.bpf_stats_enabled=1), measured for two builds of bpf/oomkill.bpf.o on the same real
 * memcg OOM kills, interleaved round by round. Only this process's program is counted (other
 * agents on the host run programs of the same name); kills of other tenants that run it count too.
 *
 *   npx tsc -p . && node dist/bench/explain-cost.js <old.bpf.o> [new.bpf.o=bpf/oomkill.bpf.o] [rounds=5] [kills=6]
 * Needs root, BTF, bpftool. Restores kernel.bpf_stats_enabled.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { OomKillCollector } from '../src/collectors/oomkill/collector';
import { makeTestCgroup, removeCgroup, spawnDdHog } from '../test/helpers/cgroup';
import type { Logger } from '../src/observe/logger';

const OLD = process.argv[2];
const NEW = process.argv[3] ?? path.resolve(__dirname, '../../bpf/oomkill.bpf.o');
const ROUNDS = Number(process.argv[4] ?? 5);
const KILLS = Number(process.argv[5] ?? 6);

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger;

type Prog = { id: number; name: string; run_time_ns?: number; run_cnt?: number };
const progs = (): Prog[] => JSON.parse(execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' })) as Prog[];
const markVictimIds = (): Set<number> => new Set(progs().filter((p) => p.name.startsWith('tp_btf_mark_vic')).map((p) => p.id));

/** The programs this process loaded: ids that appeared while the collector started (bpftool here shows no pids). */
function stats(ids: Set<number>): { runNs: number; runCnt: number } {
  const mine = progs().filter((p) => ids.has(p.id));
  return { runNs: mine.reduce((a, p) => a + (p.run_time_ns ?? 0), 0), runCnt: mine.reduce((a, p) => a + (p.run_cnt ?? 0), 0) };
}

async function round(objectPath: string): Promise<{ runNs: number; runCnt: number }> {
  const c = new OomKillCollector({ hook: 'tp_btf', logger: quiet, objectPath });
  const others = markVictimIds();
  await c.start(async () => {});
  const ids = new Set([...markVictimIds()].filter((id) => !others.has(id)));
  const myMarkVictim = () => stats(ids);
  const cg = makeTestCgroup(`oomtrail-bench-explain-${process.pid}`);
  try {
    const before = myMarkVictim();
    for (let i = 0; i < KILLS; i++) {
      const h = await spawnDdHog(cg.procs);
      if (h.signal !== 'SIGKILL') throw new Error(`hog ended by ${h.signal}`);
    }
    const after = myMarkVictim();
    return { runNs: after.runNs - before.runNs, runCnt: after.runCnt - before.runCnt };
  } finally {
    await c.stop();
    await removeCgroup(cg.dir);
  }
}

async function main(): Promise<void> {
  if (!OLD) throw new Error('usage: explain-cost.js <old.bpf.o> [new.bpf.o] [rounds] [kills]');
  const was = fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  const per: Record<string, number[]> = { old: [], new: [] };
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const [k, obj] of [['old', OLD], ['new', NEW]] as const) {
        const s = await round(obj);
        if (s.runCnt > 0) per[k].push(s.runNs / s.runCnt);
      }
    }
  } finally {
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', was);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  for (const k of ['old', 'new']) console.log(`mark_victim ${k}: median ${median(per[k]).toFixed(0)} ns/run over ${per[k].length} rounds (${per[k].map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`added per kill: ${(median(per.new) - median(per.old)).toFixed(0)} ns`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
