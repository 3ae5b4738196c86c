/*
 * The e2e helper's check that an agent runs from where OOMTRAIL_E2E_AGENT_ROOT says (the arm64 VM cells run the
 * agent from the unpacked .deb): read from /proc of a real process, it must refuse an agent run from elsewhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { assertAgentFrom } from '../helpers/agent';

test('assertAgentFrom: the process\'s executable and main.js must both lie under the root', async () => {
  const nodeRoot = path.dirname(path.dirname(fs.realpathSync(process.execPath)));
  const main = path.join(nodeRoot, 'dist/src/cli/main.js');
  // a node whose command line names a main.js under node's own prefix (not run: -e keeps the process alive)
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', main], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(assertAgentFrom(child.pid!, nodeRoot), { exe: fs.realpathSync(process.execPath), main });
    // the tree's agent (or any other place) is refused, naming what ran
    assert.throws(() => assertAgentFrom(child.pid!, '/usr/lib/oomtrail'), /does not run from \/usr\/lib\/oomtrail: exe /);
    // a prefix of a directory name is not that directory
    assert.throws(() => assertAgentFrom(child.pid!, nodeRoot.slice(0, -1)), /does not run from/);
  } finally {
    child.kill('SIGKILL');
  }
});

test('assertAgentFrom: a process without a main.js in its command line is refused', async () => {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    assert.throws(() => assertAgentFrom(child.pid!, '/'), /does not run from \/: exe /);
  } finally {
    child.kill('SIGKILL');
  }
});
