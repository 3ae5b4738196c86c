/*
 * Modes of what the agent creates: records, the kill ledger and the spool name every tenant's
 * commands and cgroups, so each file is 0600 and each directory 0700 whatever the umask (README,
 * "Install"). The real agent under umask 022 (Docker's and most shells'), a real OOM kill, then every
 * path it created is walked.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgent, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';

function walk(p: string): string[] {
  const st = fs.lstatSync(p);
  return st.isDirectory() ? [p, ...fs.readdirSync(p).flatMap((e) => walk(path.join(p, e)))] : [p];
}

const agents: RunningAgent[] = [];
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-modes-'));
after(() => {
  for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
  fs.rmSync(base, { recursive: true, force: true });
});

test('under umask 022 every file the agent creates is 0600 and every directory 0700', async () => {
  // the agent's own directories, none of which exist yet: the spool root (ledger, lock, journal, lanes) and the file sink's
  const dir = path.join(base, 'agent');
  fs.mkdirSync(dir, { mode: 0o700 });
  const out = path.join(dir, 'out', 'events.jsonl');
  const cg = makeTestCgroup(`oomtrail-modes-${process.pid}`);
  try {
    const agent = await startAgent('', {}, { dir, eventsPath: out, wrap: ['/bin/sh', '-c', 'umask 022; exec "$@"', 'sh'] });
    agents.push(agent);
    const [pid] = await causeKills(cg, 1);
    await agent.waitFor((rs) => rs.some((r) => r.victim_pid === pid), 15_000, `the record of pid ${pid}`);
    await agent.stop();
  } finally {
    await removeCgroup(cg.dir);
  }
  const created = [...walk(path.join(dir, 'spool')), ...walk(path.join(dir, 'out'))];
  const names = created.map((p) => path.relative(dir, p));
  // what must be there for the walk to mean anything
  for (const must of ['spool', 'spool/kills.jsonl', 'spool/kills.state.json', 'spool/agent.lock', 'out', 'out/events.jsonl']) {
    assert.ok(names.includes(must), `${must} exists (have: ${names.join(', ')})`);
  }
  const wrong = created
    .map((p) => {
      const st = fs.lstatSync(p);
      const mode = st.mode & 0o777;
      const want = st.isDirectory() ? 0o700 : 0o600;
      return mode === want ? null : `${path.relative(dir, p)} ${mode.toString(8)} (want ${want.toString(8)})`;
    })
    .filter((x) => x !== null);
  assert.deepEqual(wrong, [], 'modes');
});
