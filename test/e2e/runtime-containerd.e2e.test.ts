/*
 * Runtime names from a real containerd (Debian's 1.6, its own root and socket, started here; the image an
 * OCI tarball built locally and imported with ctr): containers in namespace k8s.io labelled as the CRI
 * plugin labels them, OOM-killed for real; the agent names them over containerd's gRPC API.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { CACHE_ROOT } from '../servers/common';
import { enrichYaml, ensureImage, IMAGE, removeContainers, startContainerd, type Containerd } from '../servers/containerd/engine';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import type { OomRecord } from '../../src/record/record';

// its image store persists between runs: kept with the other test caches, outside the clone
const ROOT = path.join(CACHE_ROOT, 'containerd', 'runtime-test-root');
const NS = 'k8s.io';
/** a plain `ctr run` namespace: cgroup `/<namespace>/<id>` with any id; not Kubernetes */
const PLAIN_NS = 'default';
const K8S = ['--label', 'io.kubernetes.pod.name=api-5c6d', '--label', 'io.kubernetes.pod.namespace=payments', '--label', 'io.kubernetes.container.name=worker'];
const LIMIT = ['--memory-limit', String(32 << 20)];

describe('runtime names from containerd', { timeout: 300_000 }, () => {
  let c: Containerd;
  let agent: RunningAgent;
  const ids: string[] = [];
  const newId = () => {
    const id = crypto.randomBytes(32).toString('hex');
    ids.push(id);
    return id;
  };

  before(async () => {
    c = await startContainerd(ROOT);
    await ensureImage(c, NS, ROOT + '-image');
    await ensureImage(c, PLAIN_NS, ROOT + '-image');
    agent = await startAgent(enrichYaml(c, [NS, PLAIN_NS], 'io.kubernetes.pod.uid'));
  });

  after(async () => {
    await agent?.stop();
    if (c) {
      await removeContainers(c, ids, [NS, PLAIN_NS]);
      await c.stop();
    }
  });

  const recordOf = async (id: string, what: string): Promise<OomRecord> => {
    const rs = await agent.waitFor((r) => r.some((x) => x.container_id === id), 30_000, what);
    return rs.find((x) => x.container_id === id)!;
  };
  const run = (id: string, extra: string[], cmd: string[]) =>
    c.ctr(['run', '-d', ...LIMIT, ...K8S, '--label', 'io.kubernetes.pod.uid=0b1c2d3e-aaaa-bbbb-cccc-0123456789ab', ...extra, IMAGE, id, ...cmd], { namespace: NS });

  test('init killed within 1 s of its start, the container deleted at once: pod, namespace, container, image, init', async () => {
    const id = newId();
    const t0 = Date.now();
    await run(id, [], ['tail', '/dev/zero']);
    // delete as soon as the task is gone, as kubelet does with a restarted container: the names come from the cache
    for (let i = 0; i < 100; i++) {
      const tasks = await c.ctr(['task', 'ls'], { namespace: NS });
      if (!new RegExp(`${id}\\s+\\d+\\s+RUNNING`).test(tasks)) break;
      await sleep(20);
    }
    await c.ctr(['task', 'rm', '-f', id], { namespace: NS }).catch(() => undefined);
    await c.ctr(['containers', 'rm', id], { namespace: NS });
    const r = await recordOf(id, 'the containerd init kill');
    assert.ok(Date.parse(r.time) - t0 < 1000 + 500, `killed ${Date.parse(r.time) - t0} ms after ctr run began`);
    assert.equal(r.container_runtime, 'containerd');
    assert.equal(r.container_image, IMAGE);
    assert.equal(r.pod_name, 'api-5c6d');
    // a 4-character suffix is no generated one: the heuristic says a bare Pod
    assert.deepEqual([r.workload_kind, r.workload_name], ['Pod', 'api-5c6d']);
    assert.equal(r.pod_namespace, 'payments');
    assert.equal(r.k8s_container, 'worker');
    assert.deepEqual(r.labels, { 'io.kubernetes.pod.uid': '0b1c2d3e-aaaa-bbbb-cccc-0123456789ab' });
    assert.equal(r.victim_ns_pid, 1);
    assert.equal(r.victim_is_container_init, true);
    assert.doesNotMatch(await c.ctr(['containers', 'ls', '-q'], { namespace: NS }), new RegExp(id), 'deleted');
  });

  test('a child killed while PID 1 survives: not the init, the task still running', async () => {
    const id = newId();
    await run(id, [], ['bash', '-c', 'tail /dev/zero; exec sleep 600']);
    const r = await recordOf(id, 'the containerd child kill');
    assert.equal(r.victim_comm, 'tail');
    assert.equal(r.pod_name, 'api-5c6d');
    assert.ok((r.victim_ns_pid ?? 0) > 1, `ns pid ${r.victim_ns_pid}`);
    assert.equal(r.victim_is_container_init, false);
    await sleep(300);
    assert.match(await c.ctr(['task', 'ls'], { namespace: NS }), new RegExp(`${id}\\s+\\d+\\s+RUNNING`));
  });

  test('deleted while the agent is busy (paused): the delete event comes first, the cache keeps the names', async () => {
    const id = newId();
    await run(id, [], ['bash', '-c', 'sleep 1; exec tail /dev/zero']);
    await sleep(300); // the agent learns the container (create event, Get) while it runs
    process.kill(agent.child.pid!, 'SIGSTOP');
    try {
      for (let i = 0; i < 100; i++) {
        if (!new RegExp(`${id}\\s+\\d+\\s+RUNNING`).test(await c.ctr(['task', 'ls'], { namespace: NS }))) break;
        await sleep(50);
      }
      await c.ctr(['task', 'rm', '-f', id], { namespace: NS }).catch(() => undefined);
      await c.ctr(['containers', 'rm', id], { namespace: NS });
    } finally {
      process.kill(agent.child.pid!, 'SIGCONT');
    }
    const r = await recordOf(id, 'the kill of the deleted container');
    assert.equal(r.pod_name, 'api-5c6d');
    assert.equal(r.k8s_container, 'worker');
    assert.equal(r.victim_is_container_init, true);
  });

  test('a plain `ctr run` (cgroup /default/<name>, no id pattern) killed at init: found by the cgroup its spec gave it', async () => {
    const id = `oomtrail-plain-${process.pid}`;
    ids.push(id);
    // kubelet's labels on a non-Kubernetes namespace: the container is named, the pod is not believed
    await c.ctr(['run', '-d', ...LIMIT, ...K8S, IMAGE, id, 'tail', '/dev/zero'], { namespace: PLAIN_NS });
    const rs = await agent.waitFor((r) => r.some((x) => x.victim_cgroup === `/${PLAIN_NS}/${id}`), 30_000, 'the plain ctr run kill');
    const r = rs.find((x) => x.victim_cgroup === `/${PLAIN_NS}/${id}`)!;
    assert.equal(r.victim_comm, 'tail');
    assert.equal(r.container_id, id);
    assert.equal(r.container_runtime, 'containerd');
    assert.equal(r.container_image, IMAGE);
    assert.equal(r.victim_ns_pid, 1);
    assert.equal(r.victim_is_container_init, true);
    assert.equal(r.pod_name, undefined, 'namespace default is not Kubernetes: io.kubernetes.* not believed');
    assert.equal(r.k8s_container, undefined);
  });
});
