/*
 * A runtime socket that accepts and never answers (a FAULT stand-in: a unix server that reads nothing and
 * writes nothing, where dockerd's socket would be): the agent still starts, and a real OOM kill in a
 * docker-shaped cgroup is recorded without names, no later than the lookup bound allows.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { makeNestedTestCgroup, removeCgroup, spawnDdHog } from '../helpers/cgroup';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';

describe('a hanging runtime socket', { timeout: 120_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-hang-'));
  const sock = path.join(dir, 'docker.sock');
  const conns: net.Socket[] = [];
  let server: net.Server;
  let agent: RunningAgent;
  let startMs = 0;
  const dirs: string[] = [];

  before(async () => {
    server = net.createServer((c) => conns.push(c));
    await new Promise<void>((r) => server.listen(sock, r));
    const t0 = Date.now();
    // a request would hang 20 s; a record may wait 300 ms
    agent = await startAgent(
      ['enrich:', '  runtime:', '    runtimes: docker', `    docker_socket: ${JSON.stringify(sock)}`, '    request_timeout_ms: 20000', '    lookup_timeout_ms: 300'].join('\n'),
    );
    startMs = Date.now() - t0;
  });

  after(async () => {
    await agent?.stop();
    for (const c of conns) c.destroy();
    server?.close();
    for (const d of dirs) await removeCgroup(d);
  });

  test('the agent starts, the record goes out within the bound, without names', async () => {
    assert.ok(conns.length >= 1, 'the agent did connect');
    // the start waits for the runtimes at most 2 s, not the 20 s request timeout (BPF loading takes the rest)
    assert.ok(startMs < 12_000, `start took ${startMs} ms`);
    console.log(`# hanging runtime: agent start ${startMs} ms`);
    const id = crypto.randomBytes(32).toString('hex');
    const cg = makeNestedTestCgroup([`oomtrail-hang-${process.pid}`, 'docker', id]);
    dirs.push(...cg.dirs);
    const hog = await spawnDdHog(cg.procs);
    assert.equal(hog.signal, 'SIGKILL');
    const killedAt = Date.now();
    let seenAt = 0;
    const rs = await agent.waitFor(
      (r) => {
        const hit = r.some((x) => x.victim_pid === hog.pid);
        if (hit && !seenAt) seenAt = Date.now();
        return hit;
      },
      15_000,
      'the record',
    );
    const r = rs.find((x) => x.victim_pid === hog.pid)!;
    assert.equal(r.container_id, id);
    assert.equal(r.container_runtime, 'docker');
    assert.equal(r.container_name, undefined, 'no names: the runtime never answered');
    // lookup bound 300 ms + the death wait (the victim exits at once) + one 100 ms batch + 100 ms polling
    assert.ok(seenAt - killedAt < 1500, `record after ${seenAt - killedAt} ms`);
    console.log(`# hanging runtime: record in the file ${seenAt - killedAt} ms after the kill (lookup bound 300 ms)`);
    await sleep(100);
    assert.match(agent.stderr(), /runtime docker: .* does not answer \(no answer in 2000 ms\)/, "reported once at start");
    assert.equal(agent.stderr().match(/runtime docker/g)?.length, 1, "and not per record");
  });
});
