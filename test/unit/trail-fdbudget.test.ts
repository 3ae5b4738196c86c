/*
 * Issue 25 part 3: the trail's descriptors come out of a budget derived from RLIMIT_NOFILE; past it a
 * cgroup's files are read by path, and the rest of the agent (spool, ack, ledger, journal) keeps its reserve.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BY_PATH_PER_STEP, CgroupTree } from '../../src/collectors/trail/cgroupfs';
import { FdBudget } from '../../src/collectors/trail/fdbudget';
import { MIN_FD_RESERVE, openFilesLimit, trailFdBudget } from '../../src/host/limits';
import { silentLogger } from '../../src/observe/logger';

test('openFilesLimit reads the soft and hard limits of /proc/self/limits', () => {
  const text = 'Limit                     Soft Limit           Hard Limit           Units     \nMax processes             63711                63711                processes \nMax open files            4096                 65536                files     \nMax locked memory         8388608              8388608              bytes     \n';
  assert.deepEqual(openFilesLimit(text), { soft: 4096, hard: 65536 });
  assert.deepEqual(openFilesLimit('Max open files            unlimited            unlimited            files     \n'), { soft: Infinity, hard: Infinity });
  assert.equal(openFilesLimit('Max open filesx 1 2 files\n'), null);
  const own = openFilesLimit();
  assert.ok(own && own.soft > 0 && own.soft <= own.hard, JSON.stringify(own));
});

test('trailFdBudget: at most the cap, never more than the limit less max(1024, half of it)', () => {
  assert.deepEqual(trailFdBudget(32768, 65536), { budget: 32768, reserve: 32768, limit: 65536 });
  assert.deepEqual(trailFdBudget(32768, 4096), { budget: 2048, reserve: 2048, limit: 4096 });
  assert.deepEqual(trailFdBudget(100, 4096), { budget: 100, reserve: 2048, limit: 4096 });
  assert.deepEqual(trailFdBudget(32768, 1024), { budget: 0, reserve: MIN_FD_RESERVE, limit: 1024 });
  assert.deepEqual(trailFdBudget(32768, 1536), { budget: 512, reserve: 1024, limit: 1536 });
  assert.equal(trailFdBudget(32768, null).budget, 0, 'unknown limit: taken as 1024, nothing held');
  assert.equal(trailFdBudget(500, Infinity).budget, 500);
});

function fakeTree(n: number): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-fdbudget-'));
  for (let i = 0; i < n; i++) {
    const d = path.join(root, `c${i}`);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'memory.max'), '67108864\n');
    fs.writeFileSync(path.join(d, 'memory.current'), `${1000 + i}\n`);
    fs.writeFileSync(path.join(d, 'memory.pressure'), `some avg10=${i}.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=1\n`);
  }
  return root;
}

test('CgroupTree holds at most its budget; the rest are read by path, right; freed descriptors go to by-path cgroups', (t) => {
  const root = fakeTree(30);
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const budget = new FdBudget(10);
  const tree = new CgroupTree({ logger: silentLogger(), cgroupVersion: 2, root, maxCgroups: 100, psiFile: 'memory.pressure', fdBudget: budget });
  const before = fs.readdirSync('/proc/self/fd').length;
  tree.discover(0);
  assert.equal(fs.readdirSync('/proc/self/fd').length - before, 10, 'the tree opened exactly its budget');
  assert.deepEqual(tree.fdUse(), { held: 5, byPath: 25, fds: 10, budget: 10 });
  const read = () => [...tree.cgroups()].map((c) => [c.rel, tree.readUsage(c), tree.readPsiAvg10(c)?.some]);
  const expect = (rels: string[]) => rels.map((r) => [r, 1000 + Number(r.slice(2)), Number(r.slice(2))]);
  assert.deepEqual(read(), expect([...tree.cgroups()].map((c) => c.rel)));
  const byPath = [...tree.cgroups()].find((c) => c.fd < 0)!;
  fs.writeFileSync(path.join(byPath.dir, 'memory.current'), '77\n');
  assert.equal(tree.readUsage(byPath), 77, 'a by-path cgroup reads its file anew each time');
  // three held cgroups lose their limit: untracked, their six descriptors go to three by-path cgroups
  const held = [...tree.cgroups()].filter((c) => c.fd >= 0).slice(0, 3);
  for (const c of held) fs.writeFileSync(path.join(c.dir, 'memory.max'), 'max\n');
  tree.discover(1);
  assert.deepEqual(tree.fdUse(), { held: 5, byPath: 22, fds: 10, budget: 10 });
  assert.equal(fs.readdirSync('/proc/self/fd').length - before, 10);
  tree.close();
  assert.equal(budget.held, 0);
  assert.equal(fs.readdirSync('/proc/self/fd').length, before, 'close gives every descriptor back');
});

test('budget 0 (trail.max_open_files 0): every cgroup read by path, none held', (t) => {
  const root = fakeTree(5);
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const tree = new CgroupTree({ logger: silentLogger(), cgroupVersion: 2, root, maxCgroups: 100, psiFile: 'memory.pressure', fdBudget: new FdBudget(0) });
  tree.discover(0);
  assert.deepEqual(tree.fdUse(), { held: 0, byPath: 5, fds: 0, budget: 0 });
  assert.deepEqual([...tree.cgroups()].map((c) => tree.readUsage(c)).sort(), [1000, 1001, 1002, 1003, 1004]);
  tree.close();
});

// LimitNOFILE as main's unit had it; 2,500 cgroups want 5,000 descriptors
const child = path.join(__dirname, '../helpers/fd-budget-child.js');
function runChild(mode: 'budget' | 'unbounded'): Record<string, any> {
  // tmpfs when there is one: 7,500 small files on a disk take seconds
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'oomtrail-fdchild-'));
  try {
    const r = spawnSync('prlimit', ['--nofile=4096:4096', process.execPath, child, mode, dir, '2500'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    return JSON.parse(r.stdout.trim().split('\n').pop()!);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('under RLIMIT_NOFILE 4096 with 2,500 limited cgroups: the trail holds its budget (2,048), spool rolls and acks, ledger and journal all succeed, >= 1,900 descriptors left', () => {
  const r = runChild('budget');
  assert.equal(r.soft, 4096);
  assert.equal(r.budget, 2048);
  assert.equal(r.usageOk, 2500, 'every cgroup read right, held or by path');
  assert.deepEqual(r.use, { held: 1024, byPath: 1476, fds: 2048, budget: 2048 });
  assert.ok(r.afterTrail - r.baseline <= r.budget, `the trail opened ${r.afterTrail - r.baseline} > budget ${r.budget}`);
  assert.deepEqual(r.errors, []);
  assert.equal(r.spooled, 100);
  assert.equal(r.ledgered, 100);
  assert.equal(r.journaled, 20);
  // the reserve (2,048) less what the process held besides the trail (node's own, the spool's, the ledger's)
  assert.ok(r.headroom >= 1900, `descriptors left after all that: ${r.headroom}`);
});

test('without the budget (the code before it), the same host leaves nothing: the spool/ledger/journal opens fail with EMFILE', () => {
  const r = runChild('unbounded');
  assert.equal(r.headroom, 0);
  assert.ok(r.errors.some((e: string) => /EMFILE/.test(e)), JSON.stringify(r.errors));
});

test('past BY_PATH_PER_STEP by-path cgroups, each is read every k-th step, in turn: every one once per k steps', (t) => {
  const n = 2 * BY_PATH_PER_STEP + 100;
  const root = fakeTree(n);
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const tree = new CgroupTree({ logger: silentLogger(), cgroupVersion: 2, root, maxCgroups: 10_000, psiFile: 'memory.pressure', fdBudget: new FdBudget(20) });
  tree.discover(0);
  const step = () => {
    tree.beginStep();
    return [...tree.cgroups()].filter((c) => tree.due(c)).map((c) => c.rel);
  };
  assert.equal(step().length, n, 'the first step reads all (no count yet)');
  assert.equal(tree.byPathEvery, 1);
  const seen = new Map<string, number>();
  for (let i = 0; i < 3; i++) for (const rel of step()) seen.set(rel, (seen.get(rel) ?? 0) + 1);
  assert.equal(tree.byPathEvery, 3);
  const held = [...tree.cgroups()].filter((c) => c.fd >= 0).map((c) => c.rel);
  assert.equal(held.length, 10);
  for (const c of tree.cgroups()) assert.equal(seen.get(c.rel), held.includes(c.rel) ? 3 : 1, `${c.rel} read ${seen.get(c.rel)} times in 3 steps`);
  tree.close();
});
