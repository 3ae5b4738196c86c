/*
 * Issue 25 part 3, in the guest of test/vm/limits.test.ts (the 5.10 VM: no cgroup iterator, so each
 * cgroup's memory.current is held beside its memory.pressure). 5,000 memory-limited cgroups, the agent
 * under the unit's LimitNOFILE (read from systemd/oomtrail.service, applied with `ulimit -n`), 20 real OOM
 * kills: 20 records, each the kernel's, no EMFILE anywhere in the agent's output, and the agent's
 * descriptors (`ls /proc/<pid>/fd`, sampled all along) within the trail's stated budget plus what the rest of
 * the agent uses. Then the same under 4096 (the unit's value before the budget): the trail holds its budget,
 * reads the rest by path, and every kill is still recorded.
 * Needs root and cgroup v2 with the memory controller; not run on the host (test/vm/guest/ is guest-only).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, sleep, startAgent, type RunningAgent } from '../../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup } from '../../helpers/cgroup';
import { causeKills } from '../../helpers/kills';
import { KmsgReader, parseKilled } from '../../helpers/kmsg';

const N = Number(process.env.OOMTRAIL_E2E_FD_CGROUPS ?? 5000);
const ROOT = '/sys/fs/cgroup';
const PARENT = path.join(ROOT, `oomtrail-fd-${process.pid}`);
/** collectors.psi.max_cgroup_triggers' default: trigger descriptors come out of the same budget */
const TRIGGERS = 256;
const agents: RunningAgent[] = [];
let made = 0;
let killCg: TestCgroup | null = null;

after(async () => {
  for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.stop('SIGKILL');
  if (killCg) await removeCgroup(killCg.dir);
  for (let i = 0; i < made; i++) fs.rmdirSync(path.join(PARENT, `c${i}`));
  if (fs.existsSync(PARENT)) fs.rmdirSync(PARENT);
});

function unitLimit(): number {
  const unit = fs.readFileSync(path.join(REPO, 'systemd/oomtrail.service'), 'utf8');
  const m = /^LimitNOFILE=(\d+)$/m.exec(unit);
  assert.ok(m, 'the unit sets LimitNOFILE');
  return Number(m[1]);
}

async function metric(port: number, name: string, labels = ''): Promise<number | null> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name}${labels ? `\\{${labels}\\}` : ''} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

async function run(t: { diagnostic: (s: string) => void }, limit: number, kills: number, port: number): Promise<void> {
  const kmsg = new KmsgReader();
  const agent = await startAgent(`metrics:\n  listen: 127.0.0.1:${port}\n`, {}, { wrap: ['sh', '-c', `ulimit -n ${limit} && exec "$@"`, 'sh'] });
  agents.push(agent);
  const pid = agent.child.pid!;
  const limits = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
  assert.match(limits, new RegExp(`^Max open files +${limit} +${limit} +files`, 'm'), 'the agent runs under the limit');
  // sampled all along: the trail's first step (every cgroup found and opened) ran before "started"
  let maxFds = 0;
  const sampler = setInterval(() => {
    try {
      maxFds = Math.max(maxFds, fs.readdirSync(`/proc/${pid}/fd`).length);
    } catch {
      /* exited */
    }
  }, 250);
  let pids: number[];
  const t0 = Date.now();
  try {
    maxFds = Math.max(maxFds, fs.readdirSync(`/proc/${pid}/fd`).length);
    pids = await causeKills(killCg!, kills);
    await agent.waitFor((rs) => pids.every((p) => rs.some((r) => r.victim_pid === p)), 120_000, `records of the ${kills} kills`).catch(() => undefined);
  } finally {
    clearInterval(sampler);
  }
  const killMs = Date.now() - t0;
  kmsg.drain();
  kmsg.close();
  // the descriptors the trail holds now: links into the test's cgroups
  const fds = fs.readdirSync(`/proc/${pid}/fd`);
  let trailFds = 0;
  for (const fd of fds) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(PARENT + '/')) trailFds++;
    } catch {
      /* closed meanwhile */
    }
  }
  const held = await metric(port, 'oomtrail_trail_cgroups', 'mode="held"');
  const byPath = await metric(port, 'oomtrail_trail_cgroups', 'mode="by_path"');
  const openFiles = await metric(port, 'oomtrail_trail_open_files');
  const stop = await agent.stop('SIGTERM');
  const out = agent.stderr() + agent.stdout();

  assert.ok(!/EMFILE|too many open files/i.test(out), `no EMFILE in the agent's output: ${out.split('\n').filter((l) => /EMFILE|too many open/i.test(l)).slice(0, 5).join('\n')}`);
  const logged = kmsg.records.map((r) => parseKilled(r.message)).filter((k) => k && pids.includes(k.pid));
  assert.equal(logged.length, kills, 'the kernel logged every kill');
  const recs = agent.records().filter((r) => (r.kind ?? 'oom_kill') === 'oom_kill' && pids.includes(r.victim_pid));
  assert.equal(recs.length, kills, `${kills} kills -> ${recs.length} records (pids without one: ${pids.filter((p) => !recs.some((r) => r.victim_pid === p)).join(',')})`);
  for (const k of logged) {
    const r = recs.find((x) => x.victim_pid === k!.pid)!;
    assert.equal(r.victim_comm, k!.comm);
    assert.equal(r.victim_anon_rss_kb, k!.anonRssKb, `pid ${k!.pid}: anon-rss as the kernel printed it`);
  }
  assert.equal(stop.code, 0, out.slice(-3000));

  const m = /trail: descriptor budget (\d+) \(.*?, (\d+) kept for the rest of the agent\)/.exec(out);
  assert.ok(m, `the agent states its budget: ${out.slice(0, 3000)}`);
  const [budget, reserve] = [Number(m[1]), Number(m[2])];
  assert.ok(budget + reserve <= limit && reserve >= 1024, `budget ${budget} + reserve ${reserve} within ${limit}`);
  const want = 2 * (N + 1); // memory.current + memory.pressure of each limited cgroup, the kill cgroup too
  assert.ok(trailFds <= budget && openFiles !== null && trailFds <= openFiles && openFiles <= budget, `trail descriptors ${trailFds} (metric ${openFiles}) <= budget ${budget}`);
  assert.equal((held ?? 0) + (byPath ?? 0), N + 1, `oomtrail_trail_cgroups held ${held} + by_path ${byPath}`);
  if (want + 1 + TRIGGERS <= budget) {
    // room for all: every cgroup file held (and the PSI triggers: the system's and TRIGGERS cgroups')
    assert.equal(byPath, 0);
    assert.ok(trailFds >= want, `trail descriptors ${trailFds} >= ${want}`);
  } else {
    // the budget is used to the last descriptor; the triggers got what the cgroups' files left
    assert.equal(openFiles, budget);
    assert.ok(held! >= Math.floor((budget - 1 - TRIGGERS) / 2), `held ${held} of a budget ${budget}`);
  }
  // everything else the agent holds (node, BPF, spool, ledger, journal, metrics socket) stays well inside the reserve
  assert.ok(maxFds <= budget + 256 && maxFds < limit, `most descriptors open at once ${maxFds} <= budget ${budget} + 256 (limit ${limit})`);
  t.diagnostic(
    `LimitNOFILE ${limit}: budget ${budget}, reserve ${reserve}; ${N + 1} limited cgroups: ${held} held, ${byPath} by path; ` +
      `trail descriptors ${trailFds}; most open at once ${maxFds}; ${kills} kills -> ${recs.length} records in ${(killMs / 1000).toFixed(1)} s`,
  );
}

test(`${N} memory-limited cgroups, the unit's LimitNOFILE, then 4096: every kill recorded, no EMFILE, descriptors within the budget`, { timeout: 900_000 }, async (t) => {
  const limit = unitLimit();
  const t0 = Date.now();
  fs.mkdirSync(PARENT);
  fs.writeFileSync(path.join(PARENT, 'cgroup.subtree_control'), '+memory');
  for (; made < N; made++) {
    const d = path.join(PARENT, `c${made}`);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'memory.max'), String(64 << 20));
  }
  killCg = makeTestCgroup(path.relative(ROOT, path.join(PARENT, 'kill')));
  t.diagnostic(`${N} cgroups made in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await run(t, limit, 20, 19464);
  if (limit !== 4096) {
    await sleep(500);
    await run(t, 4096, 10, 19465);
  }
});
