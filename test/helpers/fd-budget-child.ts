/*
 * Run by test/unit/trail-fdbudget.test.ts under a low RLIMIT_NOFILE (prlimit): builds a fake cgroup v2
 * tree of N memory-limited cgroups, lets the trail's CgroupTree discover it with the budget the agent
 * would use (`budget`) or with none (`unbounded`, the code before the budget), then does what the rest
 * of the agent does with descriptors — spool segment rolls and ack saves, the ledger, the kill journal —
 * and counts the descriptors left. Prints one JSON line.
 *
 *   node fd-budget-child.js budget|unbounded <dir> <cgroups>
 */
import fs from 'node:fs';
import path from 'node:path';
import { CgroupTree } from '../../src/collectors/trail/cgroupfs';
import { FdBudget } from '../../src/collectors/trail/fdbudget';
import { openFilesLimit, trailFdBudget } from '../../src/host/limits';
import { Spool } from '../../src/pipeline/spool';
import { KillLedger } from '../../src/pipeline/ledger';
import { KillJournal } from '../../src/pipeline/journal';
import { silentLogger } from '../../src/observe/logger';
import type { OomRecord } from '../../src/record/record';

const openFds = () => {
  try {
    return fs.readdirSync('/proc/self/fd').length;
  } catch {
    return -1; // EMFILE: not even this directory can be opened
  }
};

async function main(): Promise<void> {
  const [mode, dir, nArg] = process.argv.slice(2);
  const n = Number(nArg);
  const t0 = Date.now();
  const root = path.join(dir, 'cg');
  for (let i = 0; i < n; i++) {
    const d = path.join(root, `c${i}`);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, 'memory.max'), '67108864\n');
    fs.writeFileSync(path.join(d, 'memory.current'), `${4096 * (i + 1)}\n`);
    fs.writeFileSync(path.join(d, 'memory.pressure'), 'some avg10=1.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=1\n');
  }
  const tMade = Date.now();
  const limit = openFilesLimit();
  const budget = mode === 'budget' ? trailFdBudget(32768, limit?.soft ?? null).budget : Infinity;
  const baseline = openFds();
  const tree = new CgroupTree({ logger: silentLogger(), cgroupVersion: 2, root, maxCgroups: 10_000, psiFile: 'memory.pressure', fdBudget: new FdBudget(budget) });
  tree.discover(0);
  const afterTrail = openFds();
  const use = tree.fdUse();
  // every cgroup still reads right, held or by path
  let usageOk = 0;
  for (const t of tree.cgroups()) if (tree.readUsage(t) === 4096 * (Number(t.rel.slice(2)) + 1) && tree.readPsiAvg10(t)?.full === 0.5) usageOk++;

  const errors: string[] = [];
  const note = (what: string, err: unknown) => errors.push(`${what}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  const rec = (i: number) => ({ event_id: `e${i}`, victim_pid: i, pad: 'x'.repeat(600) }) as unknown as OomRecord;
  let spooled = 0;
  try {
    // 1 kB segments: a roll (a new segment file) every record or two, an ack save after each append
    const spool = await Spool.open({ dir: path.join(dir, 'spool'), fsync: 'never', maxBytes: 0, segmentBytes: 1024, logger: silentLogger() });
    for (let i = 0; i < 100; i++) {
      try {
        const seqs = await spool.append([rec(i)]);
        await spool.ack(seqs);
        spooled++;
      } catch (err) {
        note('spool', err);
      }
    }
    await spool.close();
  } catch (err) {
    note('spool open', err);
  }
  let ledgered = 0;
  try {
    const ledger = KillLedger.open(path.join(dir, 'state'), 'boot', false);
    for (let i = 0; i < 100; i++) {
      ledger.add(1000 + i, i * 1000, `e${i}`, '/c', 'boot', 7);
      ledgered++;
    }
    ledger.saveState();
  } catch (err) {
    note('ledger', err);
  }
  let journaled = 0;
  // kept open to the end, as the agent keeps it: dropped unclosed, its segment's FileHandle would be closed by the
  // GC, which Node 26 turns into an error (this child failed that way, now and then, under load)
  let journal: KillJournal | undefined;
  try {
    journal = await KillJournal.open(path.join(dir, 'state'), 'always', silentLogger());
    for (let i = 0; i < 20; i++) if ((await journal.append(rec(i), i)) !== null) journaled++;
  } catch (err) {
    note('journal', err);
  }
  // what is left for everything else (sinks' sockets, journald's pipes, ...): open until EMFILE
  const held: number[] = [];
  try {
    for (;;) held.push(fs.openSync('/dev/null', 'r'));
  } catch {
    /* EMFILE */
  }
  const headroom = held.length;
  for (const fd of held) fs.closeSync(fd);
  await journal?.close();
  tree.close();
  process.stdout.write(JSON.stringify({ madeMs: tMade - t0, runMs: Date.now() - tMade, soft: limit?.soft, budget, baseline, afterTrail, usageOk, use, errors, spooled, ledgered, journaled, headroom }) + '\n');
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ fatal: (err as Error).stack }) + '\n');
  process.exit(1);
});
