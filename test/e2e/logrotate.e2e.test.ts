/*
 * events.jsonl under rotation, with the real agent and real OOM kills. Needs root.
 * logrotate is not installed here: its `create` mode is done by hand (rename, create, `kill -HUP`), the
 * same three steps in the same order; `mv` and `rm` are the plain commands' system calls.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { readJsonl, sleep, startAgent, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';

const agents: RunningAgent[] = [];
const cgroups: TestCgroup[] = [];
after(async () => {
  for (const a of agents) await a.stop('SIGKILL');
  for (const cg of cgroups) await removeCgroup(cg.dir).catch(() => undefined);
});

const pidsIn = (file: string): number[] => readJsonl(file).map((r) => r.victim_pid);

async function waitForPids(file: string, pids: number[], a: RunningAgent): Promise<void> {
  const end = Date.now() + 15_000;
  while (!pids.every((p) => pidsIn(file).includes(p))) {
    if (Date.now() > end) throw new Error(`pids ${pids} not in ${file}; agent log:\n${a.stderr().slice(-3000)}`);
    await sleep(100);
  }
}

test('logrotate create + SIGHUP, then mv, then rm: the agent lives on and every later kill lands at the path', async () => {
  const cg = makeTestCgroup(`oomtrail-rotate-${process.pid}`);
  cgroups.push(cg);
  const a = await startAgent();
  agents.push(a);
  const events = a.eventsPath;

  const first = await causeKills(cg, 1);
  await waitForPids(events, first, a);

  // logrotate `create 0640`: rename, create the new file, then its postrotate `kill -HUP`
  fs.renameSync(events, `${events}.1`);
  fs.writeFileSync(events, '', { mode: 0o640 });
  a.child.kill('SIGHUP');
  await sleep(500);
  assert.equal(a.child.exitCode, null, `the agent survives SIGHUP; log:\n${a.stderr().slice(-2000)}`);
  assert.equal(a.child.signalCode, null);
  assert.match(a.stderr(), /SIGHUP: reopening files/);
  const second = await causeKills(cg, 1);
  await waitForPids(events, second, a);
  assert.deepEqual(pidsIn(`${events}.1`).filter((p) => second.includes(p)), [], 'nothing new in the rotated file');

  // mv without any signal
  fs.renameSync(events, `${events}.2`);
  const third = await causeKills(cg, 1);
  await waitForPids(events, third, a);
  assert.deepEqual(pidsIn(`${events}.2`).filter((p) => third.includes(p)), []);

  // rm without any signal: a record acked into the deleted inode would never show up
  fs.unlinkSync(events);
  const fourth = await causeKills(cg, 1);
  await waitForPids(events, fourth, a);

  const stopped = await a.stop('SIGTERM');
  assert.equal(stopped.code, 0);
});
