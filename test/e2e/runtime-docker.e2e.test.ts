/*
 * Runtime names from a real Docker engine (Debian's dockerd, private socket and data-root): containers
 * OOM-killed for real, the agent names them from its cache (list + event stream), and tells a container's
 * init from a child. io.kubernetes.* labels name a pod only for a container in a kubepods pod cgroup (as
 * cri-dockerd places kubelet's; here `--cgroup-parent` under a private root), never for a plain `docker run`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CACHE, DEBIAN_IMAGE, startDockerEngine, type DockerEngine } from '../servers/docker/engine';
import { execFileSync } from 'node:child_process';
import { MAIN, startAgent, sleep, type RunningAgent } from '../helpers/agent';
import type { OomRecord } from '../../src/record/record';

// its images persist between runs: kept with the other test caches, outside the clone
const DATA_ROOT = path.join(CACHE, 'runtime-test-root');
const K8S = ['--label', 'io.kubernetes.pod.name=web-7d9f', '--label', 'io.kubernetes.pod.namespace=shop', '--label', 'io.kubernetes.container.name=app'];
const LIMIT = ['--memory', '32m', '--memory-swap', '32m', '--network', 'none'];
// a kubepods pod cgroup as kubelet's cgroupfs driver makes it, under a --cgroup-root of this run's own
const POD_ROOT = `/oomtrail-rt-${process.pid}`;
const POD_UID = '0b1c2d3e-aaaa-bbbb-cccc-0123456789ab';
const IN_POD = ['--cgroup-parent', `${POD_ROOT}/kubepods/besteffort/pod${POD_UID}`];

function removePodCgroups(): void {
  for (const ctl of fs.readdirSync('/sys/fs/cgroup')) {
    const top = path.join('/sys/fs/cgroup', ctl, POD_ROOT);
    for (const d of [`kubepods/besteffort/pod${POD_UID}`, 'kubepods/besteffort', 'kubepods', '.'].map((x) => path.join(top, x))) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* not there, or a link to another controller */
      }
    }
  }
}

describe('runtime names from docker', { timeout: 300_000 }, () => {
  let engine: DockerEngine;
  let agent: RunningAgent;
  const tag = `oomt-rt-${process.pid}`;

  before(async () => {
    engine = await startDockerEngine({ dataRoot: DATA_ROOT });
    if (!(await engine.docker(['images', '-q', DEBIAN_IMAGE])).trim()) {
      await engine.docker(['import', '--change', 'CMD ["/bin/bash"]', path.join(CACHE, 'rootfs.tar'), DEBIAN_IMAGE], { timeoutMs: 300_000 });
    }
    const sock = engine.host.replace(/^unix:\/\//, '');
    agent = await startAgent(
      ['enrich:', '  runtime:', '    runtimes: docker', `    docker_socket: ${JSON.stringify(sock)}`, '    labels: team,absent.label'].join('\n'),
    );
  });

  after(async () => {
    await agent?.stop();
    if (engine) {
      const ids = (await engine.docker(['ps', '-aq', '--filter', `name=${tag}`]).catch(() => '')).split('\n').filter(Boolean);
      if (ids.length) await engine.docker(['rm', '-f', ...ids]).catch(() => undefined);
      await engine.stop();
    }
    removePodCgroups();
  });

  const recordOf = async (id: string, what: string): Promise<OomRecord> => {
    const rs = await agent.waitFor((r) => r.some((x) => x.container_id === id), 30_000, what);
    return rs.find((x) => x.container_id === id)!;
  };

  test('a plain docker run with io.kubernetes.* labels OOM-killed at its init, within 1 s of its start: names, image, init, no pod', async () => {
    const id = (
      await engine.docker(['run', '-d', '--name', `${tag}-init`, ...LIMIT, ...K8S, '--label', 'team=infra', DEBIAN_IMAGE, 'tail', '/dev/zero'])
    ).trim();
    const r = await recordOf(id, 'the init kill');
    assert.equal(r.container_runtime, 'docker');
    assert.equal(r.container_name, `${tag}-init`);
    assert.equal(r.container_image, DEBIAN_IMAGE);
    // any image or `docker run` can spell kubelet's labels: without a kubepods cgroup they name no pod
    assert.equal(r.pod_uid, '');
    assert.equal(r.pod_name, undefined);
    assert.equal(r.pod_namespace, undefined);
    assert.equal(r.k8s_container, undefined);
    assert.deepEqual(r.labels, { team: 'infra' }, 'only allow-listed labels that exist');
    assert.equal(r.victim_comm, 'tail');
    assert.equal(r.victim_ns_pid, 1);
    assert.equal(r.victim_is_container_init, true);
    assert.equal(r.oom_group_kill, false, 'cgroup v1 has no memory.oom.group: a single kill');
    // created after the agent started, killed within a second of its start
    const started = Date.parse((await engine.docker(['inspect', '-f', '{{.State.StartedAt}}', id])).trim());
    const killed = Date.parse(r.time);
    assert.ok(killed - started < 1000, `killed ${killed - started} ms after start`);
    assert.equal((await engine.docker(['inspect', '-f', '{{.State.OOMKilled}} {{.State.Running}}', id])).trim(), 'true false');
  });

  test('--rm, in a kubepods pod cgroup: the container is gone before the record is built, the names (pod too) are not', async () => {
    // the agent is paused through the kill and the removal, so that docker's destroy event reaches it before
    // the record is built (what a busy agent sees): only the cache's grace period keeps the names
    process.kill(agent.child.pid!, 'SIGSTOP');
    let id = '';
    try {
      id = (await engine.docker(['run', '-d', '--rm', '--name', `${tag}-rm`, ...LIMIT, ...IN_POD, ...K8S, DEBIAN_IMAGE, 'tail', '/dev/zero'])).trim();
      for (let i = 0; i < 100 && (await engine.docker(['ps', '-aq', '--no-trunc', '--filter', `id=${id}`])).trim(); i++) await sleep(100);
      assert.equal((await engine.docker(['ps', '-aq', '--no-trunc', '--filter', `id=${id}`])).trim(), '', 'container removed');
    } finally {
      process.kill(agent.child.pid!, 'SIGCONT');
    }
    const r = await recordOf(id, 'the --rm kill');
    assert.equal(r.container_name, `${tag}-rm`);
    assert.equal(r.pod_uid, POD_UID);
    assert.equal(r.pod_name, 'web-7d9f');
    assert.equal(r.pod_namespace, 'shop');
    assert.equal(r.victim_is_container_init, true);
  });

  test('a child killed while PID 1 survives (kubepods pod cgroup): not the init, and the container keeps running', async () => {
    const id = (
      await engine.docker(['run', '-d', '--name', `${tag}-child`, ...LIMIT, ...IN_POD, ...K8S, DEBIAN_IMAGE, 'bash', '-c', 'tail /dev/zero; exec sleep 600'])
    ).trim();
    const r = await recordOf(id, 'the child kill');
    assert.equal(r.victim_comm, 'tail');
    assert.equal(r.container_name, `${tag}-child`);
    assert.equal(r.k8s_container, 'app');
    assert.ok(r.victim_ns_pid !== null && r.victim_ns_pid !== undefined && r.victim_ns_pid > 1, `ns pid ${r.victim_ns_pid}`);
    assert.notEqual(r.victim_ns_pid, r.victim_pid, 'the namespace pid, not the host pid');
    assert.equal(r.victim_is_container_init, false);
    await sleep(500);
    assert.equal((await engine.docker(['inspect', '-f', '{{.State.Running}}', id])).trim(), 'true', 'the container still runs');
  });

  test('a container renamed while it runs is named by its new name', async () => {
    const id = (
      await engine.docker(['run', '-d', '--name', `${tag}-before`, ...LIMIT, DEBIAN_IMAGE, 'bash', '-c', 'sleep 2; tail /dev/zero; exec sleep 600'])
    ).trim();
    await engine.docker(['rename', `${tag}-before`, `${tag}-after`]);
    const r = await recordOf(id, 'the renamed container\'s kill');
    assert.equal(r.container_name, `${tag}-after`);
  });

  test('check: each runtime found and reachable, or not found', () => {
    const sock = engine.host.replace(/^unix:\/\//, '');
    const run = (env: NodeJS.ProcessEnv) =>
      JSON.parse(execFileSync(process.execPath, [MAIN, 'check', '--json'], { env: { ...process.env, ...env }, encoding: 'utf8' })) as {
        runtimes: Array<{ runtime: string; found: boolean; reachable: boolean; containers: number | null }>;
      };
    const ok = run({ OOMTRAIL_ENRICH_RUNTIME_RUNTIMES: 'docker', OOMTRAIL_ENRICH_RUNTIME_DOCKER_SOCKET: sock });
    assert.equal(ok.runtimes.length, 1);
    assert.equal(ok.runtimes[0].found, true);
    assert.equal(ok.runtimes[0].reachable, true);
    assert.ok((ok.runtimes[0].containers ?? -1) >= 2, 'the containers the tests left');
    const missing = run({ OOMTRAIL_ENRICH_RUNTIME_RUNTIMES: 'docker', OOMTRAIL_ENRICH_RUNTIME_DOCKER_SOCKET: '/nonexistent/docker.sock' });
    assert.deepEqual(missing.runtimes.map((r) => [r.found, r.reachable]), [[false, false]]);
  });

  test('the runtime and what it knew are reported at start', () => {
    assert.ok(fs.existsSync(agent.eventsPath));
    assert.match(agent.stderr(), /runtime docker: \d+ containers known from/);
  });
});
