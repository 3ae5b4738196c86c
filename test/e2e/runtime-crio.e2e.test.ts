/*
 * CRI-O names. No CRI-O can be had here (not in Debian 12): its HTTP info API is played by a STAND-IN
 * server on a unix socket, shaped from CRI-O's own source (server/inspect.go: GET /info, GET /containers/<id>
 * answering pkg/types ContainerInfo as JSON, 404 for an unknown id). The kill is real: a process OOM-killed
 * in a cgroup shaped like CRI-O's cgroupfs layout (`crio-<id>`).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import { startAgent, type RunningAgent } from '../helpers/agent';

describe('runtime names from CRI-O (info API stand-in)', { timeout: 120_000 }, () => {
  const id = crypto.randomBytes(32).toString('hex');
  const unknownId = crypto.randomBytes(32).toString('hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-crio-'));
  const sock = path.join(dir, 'crio.sock');
  const asked: string[] = [];
  let server: http.Server;
  let agent: RunningAgent;
  const cgs: TestCgroup[] = [];

  before(async () => {
    // STAND-IN for CRI-O's info API, field names from its pkg/types.ContainerInfo
    server = http.createServer((req, res) => {
      asked.push(req.url ?? '');
      if (req.url === '/info') {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify({ storage_driver: 'overlay', storage_root: '/var/lib/containers/storage', cgroup_driver: 'cgroupfs' }));
      }
      if (req.url === `/containers/${id}`) {
        res.setHeader('content-type', 'application/json');
        return res.end(
          JSON.stringify({
            name: 'k8s_cache_redis-0_data_2f1e_0',
            pid: 4242,
            image: 'docker.io/library/redis:7.2',
            image_ref: 'sha256:' + 'e'.repeat(64),
            created_time: 1700000000000000000,
            labels: {
              'io.kubernetes.container.name': 'cache',
              'io.kubernetes.pod.name': 'redis-0',
              'io.kubernetes.pod.namespace': 'data',
              'io.kubernetes.pod.uid': '2f1e0000-1111-2222-3333-444455556666',
            },
            annotations: { 'io.kubernetes.container.restartCount': '0' },
            crio_annotations: {},
            log_path: '/var/log/pods/x/cache/0.log',
            root: '/var/lib/containers/storage/overlay/x/merged',
            sandbox: 'f'.repeat(64),
            ip_addresses: ['10.88.0.7'],
          }),
        );
      }
      res.statusCode = 404;
      res.end('can\'t find the container with id ' + req.url);
    });
    await new Promise<void>((r) => server.listen(sock, r));
    agent = await startAgent(['enrich:', '  runtime:', '    runtimes: cri-o', `    crio_socket: ${JSON.stringify(sock)}`].join('\n'));
  });

  after(async () => {
    await agent?.stop();
    server?.close();
    for (const cg of cgs) await removeCgroup(cg.dir);
  });

  test('a kill in a crio-<id> cgroup is named from GET /containers/<id>', async () => {
    const cg = makeTestCgroup(`crio-${id}`);
    cgs.push(cg);
    const hog = await spawnDdHog(cg.procs);
    assert.equal(hog.signal, 'SIGKILL');
    const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 20_000, 'the crio kill');
    const r = rs.find((x) => x.victim_pid === hog.pid)!;
    assert.equal(r.container_runtime, 'cri-o');
    assert.equal(r.container_id, id);
    assert.equal(r.container_name, 'k8s_cache_redis-0_data_2f1e_0');
    assert.equal(r.container_image, 'docker.io/library/redis:7.2');
    assert.equal(r.pod_name, 'redis-0');
    assert.equal(r.pod_namespace, 'data');
    assert.equal(r.k8s_container, 'cache');
    assert.equal(r.victim_is_container_init, false, 'a process in the host pid namespace is no container init');
    assert.ok(asked.includes(`/containers/${id}`));
  });

  test('a container CRI-O does not know: the record goes out without names', async () => {
    const cg = makeTestCgroup(`crio-${unknownId}`);
    cgs.push(cg);
    const hog = await spawnDdHog(cg.procs);
    const rs = await agent.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 20_000, 'the unknown crio kill');
    const r = rs.find((x) => x.victim_pid === hog.pid)!;
    assert.equal(r.container_id, unknownId);
    assert.equal(r.container_name, undefined);
    assert.equal(r.pod_name, undefined);
    assert.match(agent.stderr(), /runtime cri-o: .* answers/);
  });
});
