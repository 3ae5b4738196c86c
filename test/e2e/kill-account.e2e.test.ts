/*
 * Honest counts (issue 26 part 5): `oomtrail check` and the start-up backfill explain why the kernel's count of
 * this boot's OOM kills differs from what a state dir recorded — how many the kernel log no longer holds, how many
 * it holds that this state dir has not recorded ("not in this state dir": an agent with another state dir may have
 * them), how many the backfill then recorded. The kernel is the oracle: /proc/vmstat oom_kill and the
 * "Killed process" lines /dev/kmsg still holds, counted here independently of the agent's parser.
 * Two real OOM kills in a memory cgroup, no agent running, a fresh state dir. Needs root. Runtime: ~6 s.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAIN } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-account-'));
const cgroups: TestCgroup[] = [];
after(async () => {
  for (const cg of cgroups) await removeCgroup(cg.dir);
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Account {
  kernel: number;
  in_kernel_log: number;
  gone_from_log: number;
  recorded_here: number;
  in_log_not_here: number;
}

function check(config: string): { account: Account; text: string } {
  const json = JSON.parse(execFileSync(process.execPath, [MAIN, 'check', '--json', '--config', config], { encoding: 'utf8' })) as { kills: { account: Account } };
  const text = execFileSync(process.execPath, [MAIN, 'check', '--config', config], { encoding: 'utf8' });
  return { account: json.kills.account, text };
}

/** The victim pids of the "Killed process" lines in the kernel log now, read with dmesg (not the agent's reader). */
function killedProcessPids(): number[] {
  return execFileSync('dmesg', ['--notime'], { encoding: 'utf8', maxBuffer: 64 << 20 })
    .split('\n')
    .flatMap((l) => /Killed process (\d+) /.exec(l)?.[1] ?? [])
    .map(Number);
}

test('check and the backfill account for the kernel\'s kills: gone from the log, not in this state dir, backfilled', async () => {
  const cg = makeTestCgroup(`oomtrail-account-${process.pid}`);
  cgroups.push(cg);
  const hogs: number[] = [];
  for (let i = 0; i < 2; i++) {
    const hog = await spawnDdHog(cg.procs);
    assert.equal(hog.signal, 'SIGKILL', 'the hog was OOM-killed');
    hogs.push(hog.pid);
  }
  const config = path.join(dir, 'config.yaml');
  fs.writeFileSync(
    config,
    [
      'collectors:',
      '  oomkill: { backfill: true, backfill_journald: false }',
      'sinks:',
      '  console: { enabled: false }',
      `  file: { path: ${JSON.stringify(path.join(dir, 'events.jsonl'))} }`,
      `pipeline: { spool: { dir: ${JSON.stringify(path.join(dir, 'spool'))} } }`,
    ].join('\n'),
  );

  const before = check(config);
  const kernel = Number(/^oom_kill (\d+)$/m.exec(fs.readFileSync('/proc/vmstat', 'utf8'))![1]);
  const pids = killedProcessPids();
  const a = before.account;
  // the oracle: the kernel's counter and its log, and nothing recorded in a fresh state dir. A pid's line repeated
  // within seconds is one kill (a memory.oom.group sweep logs its victim twice), so the log's kills lie between
  // its distinct victims and its lines.
  assert.ok(a.kernel >= 2 && a.kernel <= kernel, `kernel ${a.kernel}, vmstat ${kernel}`);
  for (const pid of hogs) assert.ok(pids.includes(pid), `the kernel logged the kill of ${pid}`);
  assert.ok(a.in_kernel_log <= pids.length && a.in_kernel_log >= new Set(pids).size, `kills in the log: check ${a.in_kernel_log}, dmesg ${pids.length} lines of ${new Set(pids).size} pids`);
  assert.equal(a.gone_from_log, Math.max(0, a.kernel - a.in_kernel_log));
  assert.equal(a.recorded_here, 0);
  assert.equal(a.in_log_not_here, a.in_kernel_log, 'a fresh state dir holds none of them');
  // and in words: every part of the difference named
  assert.match(before.text, new RegExp(`^kills since boot: kernel ${a.kernel}, recorded 0$`, 'm'));
  if (a.gone_from_log > 0) assert.match(before.text, new RegExp(`^  ${a.gone_from_log} no longer in the kernel log`, 'm'));
  assert.match(before.text, new RegExp(`^  ${a.in_kernel_log} in the kernel log: 0 recorded in this state dir, ${a.in_kernel_log} not in this state dir`, 'm'));
  assert.ok(!fs.existsSync(path.join(dir, 'spool')), 'check created no state dir');

  // the start-up backfill records exactly those, and says how the rest of the kernel's count splits
  const child = spawn(process.execPath, [MAIN, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const t0 = Date.now();
  while (!/backfill: recorded \d+ OOM kill/.test(log)) {
    if (child.exitCode !== null || Date.now() - t0 > 15_000) {
      child.kill('SIGKILL');
      assert.fail(`no backfill summary:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGTERM');
  assert.equal(await exited, 0, log);
  const m = /backfill: recorded (\d+) OOM kill\(s\) not in this state dir \((\d+) from the kernel log, 0 from the journal\): .*the kernel counted (\d+) OOM kill\(s\) this boot; the kernel log holds (\d+)(?: \((\d+) no longer in it\))?; 0 were recorded in this state dir \(([^)]+)\) before this start/.exec(log);
  assert.ok(m, `the summary explains the counts:\n${log}`);
  assert.equal(Number(m[1]), a.in_log_not_here, 'backfilled = not in this state dir');
  assert.equal(Number(m[4]), a.in_kernel_log);
  assert.equal(Number(m[5] ?? 0), Math.max(0, Number(m[3]) - Number(m[4])));
  assert.equal(m[6], path.join(dir, 'spool'));
  assert.doesNotMatch(log, /no agent captured/, 'the old wording said "no agent" meaning "not in this state dir"');

  const afterRun = check(config).account;
  assert.equal(afterRun.in_log_not_here, 0, 'every kill the log holds is now in this state dir');
  assert.equal(afterRun.recorded_here, a.in_log_not_here);
});
