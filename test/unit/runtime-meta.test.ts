import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import winston from 'winston';
import { MetaCache } from '../../src/pipeline/assemble/runtime/cache';
import { defaultSources, fieldsOf, RuntimeMetadata } from '../../src/pipeline/assemble/runtime';
import type { RuntimeEnrichConfig } from '../../src/pipeline/assemble/runtime/config';
import { DockerSource } from '../../src/pipeline/assemble/runtime/docker';

const ID = (c: string) => c.repeat(64);
const meta = (name: string) => ({ name, image: 'img:1', labels: {} });

function cfg(over: Partial<RuntimeEnrichConfig> = {}): RuntimeEnrichConfig {
  return {
    enabled: true,
    runtimes: 'docker',
    docker_socket: '/nonexistent/docker.sock',
    containerd_socket: '/nonexistent/containerd.sock',
    containerd_namespaces: 'k8s.io,moby',
    crio_socket: '/nonexistent/crio.sock',
    lookup_timeout_ms: 200,
    request_timeout_ms: 500,
    grace_ms: 1000,
    max_containers: 100,
    labels: '',
    ...over,
  };
}

function memLogger(): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = winston.createLogger({ level: 'debug', transports: [new winston.transports.Console({ silent: true })] });
  logger.on('data', (i: { message: string }) => lines.push(i.message));
  return { logger, lines };
}

test('cache: a removed container is kept for the grace period, then gone', () => {
  let now = 0;
  const c = new MetaCache(10, 1000, () => now);
  c.put(ID('a'), meta('a'));
  c.removed(ID('a'));
  now = 999;
  assert.equal(c.get(ID('a'))?.name, 'a');
  now = 1001;
  assert.equal(c.get(ID('a')), null);
});

test('cache: bounded; removed containers are evicted before live ones, oldest first', () => {
  let now = 0;
  const c = new MetaCache(3, 60_000, () => now);
  c.put(ID('a'), meta('a'));
  c.put(ID('b'), meta('b'));
  c.put(ID('c'), meta('c'));
  c.removed(ID('b'));
  c.put(ID('d'), meta('d'));
  assert.equal(c.size, 3);
  assert.equal(c.get(ID('b')), null, 'the removed one went first');
  assert.ok(c.get(ID('a')) && c.get(ID('c')) && c.get(ID('d')));
  c.put(ID('e'), meta('e'));
  assert.equal(c.get(ID('a')), null, 'then the oldest written');
  assert.equal(c.size, 3);
});

test('cache: a second runtime\'s blanks do not erase what the first one knew (docker + containerd moby)', () => {
  const c = new MetaCache(10, 1000);
  c.put(ID('a'), { name: 'web', image: 'nginx:1.27', labels: { 'io.kubernetes.pod.name': 'p' } });
  c.put(ID('a'), { name: '', image: '', labels: { 'com.docker/engine.bundle.path': '/run/x' } });
  assert.deepEqual(c.get(ID('a')), { name: 'web', image: 'nginx:1.27', labels: { 'io.kubernetes.pod.name': 'p', 'com.docker/engine.bundle.path': '/run/x' } });
  c.put(ID('a'), { name: 'web2', image: '', labels: {} });
  assert.equal(c.get(ID('a'))?.name, 'web2', 'a rename still wins');
});

test('cache: a waiter is called when the id is put, and can cancel', () => {
  const c = new MetaCache(10, 1000);
  const got: string[] = [];
  c.waitFor(ID('a'), (m) => got.push(m.name));
  const cancel = c.waitFor(ID('b'), (m) => got.push(m.name));
  cancel();
  c.put(ID('a'), meta('x'));
  c.put(ID('b'), meta('y'));
  assert.deepEqual(got, ['x']);
});

test('fields: io.kubernetes.* labels name pod, namespace, container; labels only those allowed and present', () => {
  const f = fieldsOf(
    {
      name: 'k8s_app_web-1_shop_uid_0',
      image: 'nginx:1.27',
      labels: { 'io.kubernetes.pod.name': 'web-1', 'io.kubernetes.pod.namespace': 'shop', 'io.kubernetes.container.name': 'app', team: 'infra', secret: 'x' },
    },
    ['team', 'missing'],
    true,
  );
  assert.deepEqual(f, { container_name: 'k8s_app_web-1_shop_uid_0', container_image: 'nginx:1.27', pod_name: 'web-1', workload_kind: 'StatefulSet', workload_name: 'web', workload_source: 'name', pod_namespace: 'shop', k8s_container: 'app', labels: { team: 'infra' } });
  assert.deepEqual(fieldsOf(meta('plain'), [], true), { container_name: 'plain', container_image: 'img:1' });
  assert.deepEqual(fieldsOf({ name: '', image: '', labels: { 'io.kubernetes.pod.name': 'p' } }, [], true), { pod_name: 'p', workload_kind: 'Pod', workload_name: 'p', workload_source: 'name' }, 'unknown stays absent');
  // a static pod (its UID, from the kernel's cgroup path, is the manifest's hash): its node-suffixed name is no StatefulSet's
  assert.deepEqual(fieldsOf({ name: '', image: '', labels: { 'io.kubernetes.pod.name': 'etcd-node-1' } }, [], true, 'ab'.repeat(16)), { pod_name: 'etcd-node-1', workload_kind: 'Pod', workload_name: 'etcd-node-1', workload_source: 'name' });
});

test('a missing socket: reported once at start, lookups answer {} at once', async () => {
  const { logger, lines } = memLogger();
  const rt = new RuntimeMetadata(cfg(), logger);
  const st = await rt.start();
  assert.deepEqual(st.map((s) => [s.runtime, s.found, s.reachable]), [['docker', false, false]]);
  const t0 = Date.now();
  for (let i = 0; i < 5; i++) assert.deepEqual(await rt.annotate({ container_id: ID('a') }), {});
  assert.ok(Date.now() - t0 < 50);
  assert.equal(lines.filter((l) => /runtime docker/.test(l)).length, 1);
  rt.stop();
});

test('a socket that accepts and never answers (fault stand-in): start and lookups stay within their bounds', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-hang-'));
  const sock = path.join(dir, 'docker.sock');
  const conns: net.Socket[] = [];
  const server = net.createServer((c) => conns.push(c)); // reads nothing, writes nothing
  await new Promise<void>((r) => server.listen(sock, r));
  const { logger, lines } = memLogger();
  try {
    const rt = new RuntimeMetadata(cfg({ docker_socket: sock, request_timeout_ms: 400, lookup_timeout_ms: 150 }), logger);
    let t0 = Date.now();
    const st = await rt.start();
    assert.ok(Date.now() - t0 < 1000, `start took ${Date.now() - t0} ms`);
    assert.equal(st[0].found, true);
    assert.equal(st[0].reachable, false);
    assert.ok(lines.some((l) => /does not answer/.test(l)));
    t0 = Date.now();
    assert.deepEqual(await rt.annotate({ container_id: ID('b') }), {});
    const took = Date.now() - t0;
    assert.ok(took >= 140 && took < 400, `lookup took ${took} ms (bound 150)`);
    assert.deepEqual(await rt.annotate({ container_id: '' }), {}, 'no container: no lookup');
    rt.stop();
  } finally {
    for (const c of conns) c.destroy();
    server.close();
  }
});

test('docker source against a socket that closes at once: inspect rejects, never hangs', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-close-'));
  const sock = path.join(dir, 'docker.sock');
  const server = net.createServer((c) => c.destroy());
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    const s = new DockerSource(sock, 300);
    await assert.rejects(s.inspect(ID('c'), new AbortController().signal), (e: Error & { code?: string }) => e.name === 'RuntimeApiError');
  } finally {
    server.close();
  }
});

test('config: enrich.runtime defaults, and a bad value names its key (exit 78)', async () => {
  const { loadConfig } = await import('../../src/config/load');
  const etcDir = path.join(os.tmpdir(), 'oomtrail-no-such-etc');
  const { config } = loadConfig({ etcDir, env: {} });
  assert.equal(config.enrich.runtime.enabled, true);
  assert.equal(config.enrich.runtime.runtimes, 'docker,containerd,cri-o');
  assert.equal(config.enrich.runtime.lookup_timeout_ms, 250);
  for (const [env, key] of [
    ['OOMTRAIL_ENRICH_RUNTIME_RUNTIMES', 'enrich.runtime.runtimes'],
    ['OOMTRAIL_ENRICH_RUNTIME_DOCKER_SOCKET', 'enrich.runtime.docker_socket'],
  ] as const) {
    let caught: unknown;
    try {
      loadConfig({ etcDir, env: { [env]: env.endsWith('RUNTIMES') ? 'docker,podman' : 'relative.sock' } });
    } catch (e) {
      caught = e;
    }
    const err = caught as { name?: string; exitCode?: number; message: string };
    assert.equal(err?.name, 'ConfigError', String(caught));
    assert.equal(err.exitCode, 78);
    assert.ok(err.message.includes(key), err.message);
  }
});

test('a runtime whose socket path holds a directory (the DaemonSet\'s file mount on a node without it) is absent, never dialled', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-notsock-'));
  try {
    // what the container runtime makes of a hostPath file mount whose source is missing: an empty directory
    const dirs = ['containerd.sock', 'crio.sock', 'docker.sock'].map((n) => path.join(tmp, n));
    for (const d of dirs) fs.mkdirSync(d);
    const sources = defaultSources(cfg({ runtimes: 'containerd,cri-o,docker', containerd_socket: dirs[0], crio_socket: dirs[1], docker_socket: dirs[2] }));
    const st = await Promise.all(sources.map((s) => s.start(new MetaCache(10, 1000))));
    assert.deepEqual(
      st.map((s) => [s.runtime, s.found, s.reachable]),
      [
        ['containerd', false, false],
        ['cri-o', false, false],
        ['docker', false, false],
      ],
    );
    for (const s of sources) s.stop();
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
