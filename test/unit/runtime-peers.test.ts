/*
 * Runtime clients against bad peers. The peers are STAND-INS (a containerd-shaped gRPC server on node:http2
 * and raw unix sockets, in this process): a real containerd or dockerd cannot be made to send a malformed
 * trailer, a 100 MB reply or garbage. What the real containerd does with 500 large specs is measured in
 * test/integration/containerd-list.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import protobuf from 'protobufjs';
import winston from 'winston';
import { fieldsOf, RuntimeMetadata, trustsK8sLabels } from '../../src/pipeline/assemble/runtime';
import type { RuntimeEnrichConfig } from '../../src/pipeline/assemble/runtime/config';
import { ContainerdSource } from '../../src/pipeline/assemble/runtime/containerd';
import { DockerSource } from '../../src/pipeline/assemble/runtime/docker';
import { MessageReader, statusMessage } from '../../src/pipeline/assemble/runtime/grpc';
import { labelKeepSet } from '../../src/pipeline/assemble/runtime/labels';

const ID = (c: string) => c.repeat(64);
const K8S_LABELS = { 'io.kubernetes.pod.name': 'web-1', 'io.kubernetes.pod.namespace': 'shop', 'io.kubernetes.container.name': 'app' };

// containerd's Container as it goes on the wire, with the OCI spec (field 5) the agent does not decode
const PB = protobuf.parse(
  `syntax = "proto3";
   message Any { string type_url = 1; bytes value = 2; }
   message Container { string id = 1; map<string, string> labels = 2; string image = 3; Any spec = 5; }
   message ListContainersResponse { repeated Container containers = 1; }
   message GetContainerResponse { Container container = 1; }`,
  { keepCase: true },
).root;
const ListRes = PB.lookupType('ListContainersResponse');
const GetRes = PB.lookupType('GetContainerResponse');

function grpcFrame(msg: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  Buffer.from(msg).copy(b, 5);
  return b;
}

function tmpSock(name: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-peer-')), name);
}

function memLogger(): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = winston.createLogger({ level: 'debug', transports: [new winston.transports.Console({ silent: true })] });
  logger.on('data', (i: { message: string }) => lines.push(i.message));
  return { logger, lines };
}

function cfg(over: Partial<RuntimeEnrichConfig>): RuntimeEnrichConfig {
  return {
    enabled: true,
    runtimes: 'containerd',
    docker_socket: '/nonexistent/docker.sock',
    containerd_socket: '/nonexistent/containerd.sock',
    containerd_namespaces: 'k8s.io',
    crio_socket: '/nonexistent/crio.sock',
    lookup_timeout_ms: 200,
    request_timeout_ms: 2000,
    grace_ms: 1000,
    max_containers: 1000,
    labels: '',
    ...over,
  };
}

type Answer = (stream: http2.ServerHttp2Stream, method: string, namespace: string) => void;

/** A containerd-shaped gRPC peer (stand-in): Subscribe stays open and silent; the rest is `answer`'s. */
async function standInContainerd(answer: Answer): Promise<{ socket: string; calls: string[]; close: () => Promise<void> }> {
  const socket = tmpSock('containerd.sock');
  const calls: string[] = [];
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => (sessions.add(s), s.on('close', () => sessions.delete(s))));
  server.on('stream', (stream, headers) => {
    const method = String(headers[':path']);
    calls.push(method);
    stream.on('error', () => undefined);
    stream.resume(); // the request body is not read
    if (method.endsWith('/Subscribe')) return void stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    answer(stream, method, String(headers['containerd-namespace'] ?? ''));
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return {
    socket,
    calls,
    close: async () => {
      for (const s of sessions) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

function reply(stream: http2.ServerHttp2Stream, body: Buffer, trailers: Record<string, string> = { 'grpc-status': '0' }): void {
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers(trailers));
  stream.end(body);
}

function bigList(n: number, specBytes: number): Buffer {
  const spec = Buffer.alloc(specBytes, 'x');
  const containers = Array.from({ length: n }, (_, i) => ({
    id: i.toString(16).padStart(64, '0'),
    image: 'registry.local/app:1',
    labels: { ...K8S_LABELS, 'io.kubernetes.pod.uid': `uid-${i}`, 'app.kubernetes.io/version': 'v'.repeat(200), unrelated: `x${i}` },
    spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Spec', value: spec },
  }));
  return grpcFrame(ListRes.encode(ListRes.create({ containers })).finish());
}

test('grpc reader: linear in the reply size (10 MB in 16 kB chunks), and refuses a message past its cap at the prefix', () => {
  const body = bigList(500, 20_000);
  const chunks: Buffer[] = [];
  for (let o = 0; o < body.length; o += 16_384) chunks.push(body.subarray(o, o + 16_384));
  const r = new MessageReader(64 << 20);
  const t0 = process.hrtime.bigint();
  const msgs = chunks.flatMap((c) => r.push(c));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(`# reader: ${(body.length / 1e6).toFixed(1)} MB in ${chunks.length} chunks reassembled in ${ms.toFixed(1)} ms`);
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0]!.length, body.length - 5);
  assert.ok(ms < 200, `${ms} ms`);
  const capped = new MessageReader(1 << 20);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(100 << 20, 1);
  assert.throws(() => capped.push(head), /reply over 1048576 bytes/);
});

test('grpc-message: a malformed escape is shown raw, a long one bounded, control characters masked', () => {
  assert.equal(statusMessage('not%20found'), 'not found');
  assert.equal(statusMessage('bad %E0%A4%A trailer %'), 'bad %E0%A4%A trailer %');
  assert.equal(statusMessage('%'.repeat(100_000)).length, 256);
  assert.equal(statusMessage('a%0Ab'), 'a?b');
  assert.equal(statusMessage(undefined), '');
});

test('containerd stand-in with 1,000 containers of 20 kB specs: the list completes in < 2 s, only kept labels held', async () => {
  const body = bigList(1000, 20_000);
  const peer = await standInContainerd((s, m) => (m.endsWith('/List') ? reply(s, body) : reply(s, Buffer.alloc(0), { 'grpc-status': '5' })));
  const { logger, lines } = memLogger();
  const rt = new RuntimeMetadata(cfg({ containerd_socket: peer.socket, labels: 'io.kubernetes.pod.uid' }), logger);
  try {
    const t0 = Date.now();
    const st = await rt.start();
    const ms = Date.now() - t0;
    console.log(`# containerd stand-in: list of 1,000 containers, ${(body.length / 1e6).toFixed(1)} MB, in ${ms} ms`);
    assert.equal(st[0]!.containers, 1000, JSON.stringify(st) + lines.join('\n'));
    assert.ok(ms < 2000, `list took ${ms} ms`);
    const id = (7).toString(16).padStart(64, '0');
    assert.deepEqual(rt.cache.get(id)!.labels, { ...K8S_LABELS, 'io.kubernetes.pod.uid': 'uid-7' }, 'unrelated labels dropped as the reply is read');
    assert.deepEqual(await rt.annotate({ container_id: id, pod_uid: '' }), {
      container_image: 'registry.local/app:1',
      pod_name: 'web-1',
      workload_kind: 'StatefulSet',
      workload_name: 'web',
      workload_source: 'name',
      pod_namespace: 'shop',
      k8s_container: 'app',
      labels: { 'io.kubernetes.pod.uid': 'uid-7' },
    }, 'namespace k8s.io: its io.kubernetes.* labels are believed');
  } finally {
    rt.stop();
    await peer.close();
  }
});

/** One bad peer per case: the agent's runtime side starts, warns once, keeps running, and a lookup answers {} in its bound. */
async function survives(what: string, answer: Answer, expect: RegExp): Promise<void> {
  const peer = await standInContainerd(answer);
  const { logger, lines } = memLogger();
  const rt = new RuntimeMetadata(cfg({ containerd_socket: peer.socket, request_timeout_ms: 1500, lookup_timeout_ms: 300 }), logger);
  const heap0 = process.memoryUsage().rss;
  try {
    const st = await rt.start();
    assert.equal(st[0]!.reachable, false, what);
    assert.match(st[0]!.error ?? '', expect, what);
    const t0 = Date.now();
    assert.deepEqual(await rt.annotate({ container_id: ID('e'), pod_uid: '' }), {}, `${what}: names absent`);
    assert.ok(Date.now() - t0 < 600, `${what}: lookup ${Date.now() - t0} ms`);
    // the failed list is retried on its own (0.5 s, 1 s, …) while the event stream stays up
    await new Promise((r) => setTimeout(r, 1700));
    const lists = peer.calls.filter((m) => m.endsWith('/List')).length;
    assert.ok(lists >= 3, `${what}: ${lists} lists in 1.7 s`);
    assert.equal(lines.filter((l) => /runtime containerd/.test(l)).length, 1, `${what}: one warning\n${lines.join('\n')}`);
    assert.match(lines[0]!, /does not answer/);
    console.log(`# ${what}: ${lists} list attempts, warning: ${lines[0]!.slice(0, 160)}; rss +${((process.memoryUsage().rss - heap0) / 1e6).toFixed(0)} MB`);
  } finally {
    rt.stop();
    await peer.close();
  }
}

test('containerd stand-in sending a malformed grpc-message trailer: no crash, one warning, names absent', async () => {
  await survives('bad trailer', (s) => reply(s, Buffer.alloc(0), { 'grpc-status': '13', 'grpc-message': 'boom %E0%A4%A %' }), /grpc-status 13 boom %E0%A4%A %/);
});

test('containerd stand-in sending a 100 MB reply: refused at its length prefix, no crash, one warning', async () => {
  const huge = Buffer.alloc((100 << 20) + 5, 0);
  huge.writeUInt32BE(100 << 20, 1);
  await survives('100 MB reply', (s) => reply(s, huge), /reply over 67108864 bytes/);
});

test('containerd stand-in sending garbage in a gRPC reply: no crash, one warning', async () => {
  const junk = Buffer.from([0, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  await survives('garbage message', (s) => reply(s, junk), /.+/);
});

test('a socket sending garbage instead of HTTP/2 (containerd and docker): no crash, one warning each, names absent', async () => {
  const socket = tmpSock('garbage.sock');
  const server = net.createServer((c) => {
    c.on('error', () => undefined);
    c.end(Buffer.from('\x00\xff garbage \r\n\r\n HTTP/9 ???\n'.repeat(50)));
  });
  await new Promise<void>((r) => server.listen(socket, r));
  try {
    for (const runtimes of ['containerd', 'docker']) {
      const { logger, lines } = memLogger();
      const rt = new RuntimeMetadata(cfg({ runtimes, containerd_socket: socket, docker_socket: socket, request_timeout_ms: 800, lookup_timeout_ms: 200 }), logger);
      try {
        const st = await rt.start();
        assert.equal(st[0]!.reachable, false, runtimes);
        assert.deepEqual(await rt.annotate({ container_id: ID('f'), pod_uid: '' }), {});
        await new Promise((r) => setTimeout(r, 1200));
        assert.equal(lines.filter((l) => new RegExp(`runtime ${runtimes}`).test(l)).length, 1, `${runtimes}: one warning\n${lines.join('\n')}`);
      } finally {
        rt.stop();
      }
    }
  } finally {
    server.close();
  }
});

test('docker stand-in: a failed list is retried while the event stream stays up; image labels do not name a pod', async () => {
  // a Docker Engine API stand-in: /events stays open; the first /containers/json fails, the next answers
  const socket = tmpSock('docker.sock');
  let lists = 0;
  const server = http.createServer((req, res) => {
    if (req.url!.startsWith('/events')) return void res.writeHead(200, { 'content-type': 'application/json' }).flushHeaders();
    if (req.url!.startsWith('/containers/json')) {
      if (++lists === 1) return void res.writeHead(500).end();
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify([{ Id: ID('d'), Names: ['/web'], Image: 'nginx:1', Labels: { ...K8S_LABELS, team: 'infra', junk: 'j' } }]));
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(socket, r));
  const { logger } = memLogger();
  const rt = new RuntimeMetadata(cfg({ runtimes: 'docker', docker_socket: socket, labels: 'team,io.kubernetes.pod.name' }), logger);
  try {
    await rt.start();
    for (let i = 0; i < 40 && !rt.cache.get(ID('d')); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(rt.cache.get(ID('d')), `listed again after the failure (${lists} lists)`);
    assert.deepEqual(rt.cache.get(ID('d'))!.labels, { ...K8S_LABELS, team: 'infra' }, 'only kept labels held');
    // plain docker (no kubepods cgroup): an image can spell io.kubernetes.*; not believed
    assert.deepEqual(await rt.annotate({ container_id: ID('d'), pod_uid: '' }), { container_name: 'web', container_image: 'nginx:1', labels: { team: 'infra' } });
    // the kernel's cgroup path put the victim in a kubepods pod (cri-dockerd): believed
    assert.deepEqual(await rt.annotate({ container_id: ID('d'), pod_uid: '0b1c2d3e-aaaa-bbbb-cccc-0123456789ab' }), {
      container_name: 'web',
      container_image: 'nginx:1',
      pod_name: 'web-1',
      workload_kind: 'StatefulSet',
      workload_name: 'web',
      workload_source: 'name',
      pod_namespace: 'shop',
      k8s_container: 'app',
      labels: { team: 'infra', 'io.kubernetes.pod.name': 'web-1' },
    });
  } finally {
    rt.stop();
    server.close();
  }
});

test('io.kubernetes.* trust: containerd namespace k8s.io or CRI-O (runtime says so), or a kubepods cgroup (kernel says so)', () => {
  const m = { name: '', image: '', labels: { ...K8S_LABELS } };
  assert.equal(trustsK8sLabels(m, { pod_uid: '' }), false);
  assert.equal(trustsK8sLabels({ ...m, k8s: true }, { pod_uid: '' }), true);
  assert.equal(trustsK8sLabels(m, { pod_uid: '0b1c2d3e-aaaa-bbbb-cccc-0123456789ab' }), true);
  assert.deepEqual(fieldsOf(m, ['io.kubernetes.pod.name'], false), {});
  assert.equal(labelKeepSet(['team']).has('team'), true);
});

test('containerd source: a namespace other than k8s.io does not vouch for Kubernetes', async () => {
  const body = grpcFrame(GetRes.encode(GetRes.create({ container: { id: 'plain', image: 'img', labels: { ...K8S_LABELS, 'nerdctl/name': 'n' } } })).finish());
  const peer = await standInContainerd((s) => reply(s, body));
  try {
    const src = new ContainerdSource(peer.socket, ['default'], 1000);
    const meta = await src.inspect('plain', new AbortController().signal);
    assert.equal(meta?.k8s, false);
    assert.equal(meta?.name, 'n');
    src.stop();
    const k8s = new ContainerdSource(peer.socket, ['k8s.io'], 1000);
    assert.equal((await k8s.inspect('plain', new AbortController().signal))?.k8s, true);
    k8s.stop();
  } finally {
    await peer.close();
  }
});

test('docker source: labels of any shape from the peer are reduced to kept strings', async () => {
  const socket = tmpSock('docker.sock');
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ Name: '/x', Config: { Image: 'i'.repeat(5000), Labels: { team: 7, 'io.kubernetes.pod.name': 'y'.repeat(2000), 'io.kubernetes.container.name': 'c', other: 'o' } } }));
  });
  await new Promise<void>((r) => server.listen(socket, r));
  try {
    const m = await new DockerSource(socket, 1000, labelKeepSet(['team'])).inspect(ID('a'), new AbortController().signal);
    assert.deepEqual(m, { name: 'x', image: '', labels: { 'io.kubernetes.container.name': 'c' } });
  } finally {
    server.close();
  }
});

test('containerd spec linux.cgroupsPath: a victim in that cgroup gets the container, its image and init; the index follows eviction', async () => {
  const spec = (p: unknown) => ({ type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Spec', value: Buffer.from(JSON.stringify({ linux: { cgroupsPath: p }, annotations: { cgroupsPath: '/default/other' } })) });
  const containers = [
    { id: 'plain-1', image: 'img:1', labels: K8S_LABELS, spec: spec('/default/plain-1') },
    { id: 'systemd-1', image: 'img:2', spec: spec('system.slice:containerd:systemd-1') },
    { id: 'bad-1', image: 'img:3', spec: { type_url: 'x', value: Buffer.from('{not json') } },
  ];
  const body = grpcFrame(ListRes.encode(ListRes.create({ containers })).finish());
  const peer = await standInContainerd((s, m) => (m.endsWith('/List') ? reply(s, body) : reply(s, Buffer.alloc(0), { 'grpc-status': '5' })));
  const { logger } = memLogger();
  const rt = new RuntimeMetadata(cfg({ containerd_socket: peer.socket, containerd_namespaces: 'default', max_containers: 3 }), logger);
  try {
    assert.equal((await rt.start())[0]!.containers, 3);
    assert.deepEqual(await rt.annotate({ container_id: '', victim_cgroup: '/default/plain-1', victim_ns_pid: 1, pod_uid: '' }), {
      container_id: 'plain-1',
      container_runtime: 'containerd',
      victim_is_container_init: true,
      container_image: 'img:1',
    }, 'namespace default: io.kubernetes.* not believed; the annotation spelling a path is not the spec field');
    assert.equal((await rt.annotate({ container_id: '', victim_cgroup: '/default/plain-1', victim_ns_pid: 7, pod_uid: '' })).victim_is_container_init, false);
    assert.deepEqual(await rt.annotate({ container_id: '', victim_cgroup: '/default/other', victim_ns_pid: 1, pod_uid: '' }), {});
    assert.deepEqual(await rt.annotate({ container_id: '', victim_cgroup: '/system.slice/containerd/systemd-1', victim_ns_pid: 1, pod_uid: '' }), {});
    // evicted (cache of 3, three more put): the path names nothing any more
    for (const c of ['x', 'y', 'z']) rt.cache.put(ID(c), { name: c, image: '', labels: {} });
    assert.deepEqual(await rt.annotate({ container_id: '', victim_cgroup: '/default/plain-1', victim_ns_pid: 1, pod_uid: '' }), {});
  } finally {
    rt.stop();
    await peer.close();
  }
});
