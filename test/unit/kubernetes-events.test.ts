import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import convict from 'convict';
import { baseRecord } from '../helpers/records';
import type { OomRecord } from '../../src/record/record';
import { silentLogger } from '../../src/observe/logger';
import { ConfigError } from '../../src/config/errors';
import { kubernetesEventsConfigSchema, type KubernetesEventsSinkConfig } from '../../src/sinks/kubernetes_events/config';
import { eventBody, eventName, eventNote, microTime, regardingOf, seriesPatch } from '../../src/sinks/kubernetes_events/encode';
import { classifyKubeStatus, forbiddenLine } from '../../src/sinks/kubernetes_events/classify';
import { KubernetesEventsSink, TokenBucket } from '../../src/sinks/kubernetes_events/sink';
import { openKubeApi, type KubeAnswer, type KubeApi } from '../../src/host/kubeapi';
import { definition } from '../../src/sinks/kubernetes_events/definition';

const Mi = 1048576;
const config = (over: Partial<KubernetesEventsSinkConfig> = {}): KubernetesEventsSinkConfig => ({
  ...(convict(kubernetesEventsConfigSchema as never).getProperties() as KubernetesEventsSinkConfig),
  enabled: true,
  ...over,
});

/** A child killed in container "app" of pod shop/web-…: the pipeline's shape after runtime enrichment. */
function podKill(over: Partial<OomRecord> = {}): OomRecord {
  return baseRecord({
    victim_comm: 'python3',
    victim_pid: 4242,
    victim_is_container_init: false,
    cgroup_version: 2,
    oom_cgroup: '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope',
    container_id: 'abc'.padEnd(64, '0'),
    container_runtime: 'containerd',
    pod_uid: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0',
    pod_name: 'web-5d4f8c7b9-x2x7q',
    pod_namespace: 'shop',
    k8s_container: 'app',
    k8s_qos: 'burstable',
    oom_scope: 'container',
    memcg_limit_bytes: 512 * Mi,
    cause: 'anon',
    memory_at_kill: {
      source: 'bpf', scope: 'memcg', usage_bytes: 512 * Mi, limit_bytes: 512 * Mi, failcnt: 3, anon_bytes: 480 * Mi,
      file_bytes: 20 * Mi, shmem_bytes: 0, file_mapped_bytes: null, file_dirty_bytes: null, file_writeback_bytes: null,
      kernel_bytes: 12 * Mi, slab_bytes: null, sock_bytes: null, pagetables_bytes: null, swap_bytes: 0,
    },
    ...over,
  });
}

describe('kubernetes_events: the note', () => {
  test('a child kill: process, pid, role, the limit, the dominant usage, the outcome', () => {
    assert.equal(eventNote(podKill()), 'python3 (pid 4242, child) killed: container "app" limit 512Mi hit, anon 480Mi (cause anon); container kept running');
    // a breakdown that does not account for usage (unflushed stats) names no part
    assert.equal(
      eventNote(podKill({ cause: 'unknown' })),
      'python3 (pid 4242, child) killed: container "app" limit 512Mi hit, usage 512Mi (cause unknown: breakdown not flushed by the kernel); container kept running',
    );
    assert.match(eventNote(podKill({ cause: 'unknown', memory_at_kill: null, memcg_usage_bytes: null })), /hit, cause unknown \(breakdown not flushed by the kernel\); container/);
  });
  test('container init; page cache; pod-level limit', () => {
    assert.equal(
      eventNote(podKill({ victim_is_container_init: true, victim_comm: 'java', victim_pid: 7, cause: 'page_cache', oom_scope: 'pod' })),
      'java (pid 7, container init) killed: pod "web-5d4f8c7b9-x2x7q" limit 512Mi hit (pod-level resources), page cache 20Mi (cause page_cache); the container exits (OOMKilled)',
    );
  });
  test('a memory.oom.group sweep says so once, at the end', () => {
    assert.equal(
      eventNote(podKill({ oom_group_kill: true, oom_group_kill_size: 3 })),
      'python3 (pid 4242, child) killed: container "app" limit 512Mi hit, anon 480Mi (cause anon); container killed whole (memory.oom.group, 3 processes)',
    );
  });
  test('global OOM without a breakdown; unknown role', () => {
    const r = baseRecord({ constraint: 'global', oom_cgroup: '/', oom_scope: 'system', memcg_limit_bytes: null, memcg_usage_bytes: null, victim_is_container_init: null, victim_comm: 'dd' });
    assert.equal(eventNote(r), 'dd (pid 4242) killed: no cgroup limit: the host ran out of memory');
  });
  test('tenant-made comm is printable and bounded; the note is ≤ 1024', () => {
    const n = eventNote(podKill({ victim_comm: 'x\u001b[31m\nevil', k8s_container: 'c'.repeat(5000) }));
    assert.ok(!/[\x00-\x1f]/.test(n), n);
    assert.ok(n.length <= 1024, String(n.length));
  });
});

describe('kubernetes_events: the Event', () => {
  test('regarding the Pod, Warning, reason, action Killed, reporting controller and instance, MicroTime', () => {
    const r = podKill();
    const body = eventBody(r, regardingOf(r, 'node-1')!, { reason: 'OOMKill', nodeName: 'node-1' });
    assert.deepEqual(body, {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: {
        name: `web-5d4f8c7b9-x2x7q.${r.event_id}`,
        namespace: 'shop',
        labels: { 'app.kubernetes.io/managed-by': 'oomtrail' },
        annotations: { 'oomtrail.io/event-id': r.event_id },
      },
      eventTime: '2026-11-23T06:41:00.123456Z',
      reportingController: 'oomtrail',
      reportingInstance: 'node-1',
      action: 'Killed',
      reason: 'OOMKill',
      regarding: { apiVersion: 'v1', kind: 'Pod', namespace: 'shop', name: 'web-5d4f8c7b9-x2x7q', uid: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' },
      note: eventNote(r),
      type: 'Warning',
    });
  });
  test('global OOM and node-allocatable → the Node; a non-pod cgroup kill → nothing; a bad pod name → not a Pod', () => {
    const global = baseRecord({ constraint: 'global', oom_cgroup: '/', oom_scope: 'system' });
    assert.deepEqual(regardingOf(global, 'node-1'), { apiVersion: 'v1', kind: 'Node', name: 'node-1' });
    assert.equal(eventBody(global, regardingOf(global, 'node-1')!, { reason: 'OOMKill', nodeName: 'node-1' }).metadata && (eventBody(global, regardingOf(global, 'node-1')!, { reason: 'OOMKill', nodeName: 'node-1' }).metadata as { namespace: string }).namespace, 'default');
    assert.equal(regardingOf(baseRecord({ oom_scope: 'node' }), 'n')?.kind, 'Node');
    assert.equal(regardingOf(baseRecord({ oom_scope: 'other' }), 'n'), null);
    assert.equal(regardingOf(podKill({ pod_name: 'Web/../x' }), 'n'), null);
  });
  test('MicroTime: 6 digits; name bounded to 253', () => {
    assert.equal(microTime('2026-11-23T06:41:00Z'), '2026-11-23T06:41:00.000000Z');
    assert.equal(microTime('2026-11-23T06:41:00.1Z'), '2026-11-23T06:41:00.100000Z');
    assert.equal(microTime('garbage', new Date('2026-01-01T00:00:00.5Z')), '2026-01-01T00:00:00.500000Z');
    const r = podKill({ pod_name: 'a'.repeat(253) });
    assert.ok(eventName(regardingOf(r, 'n')!, r).length <= 253);
    assert.deepEqual(seriesPatch(2, r.time), { series: { count: 2, lastObservedTime: '2026-11-23T06:41:00.123456Z' } });
  });
});

describe('kubernetes_events: classification', () => {
  test('2xx delivered; 429/5xx/401 retryable (Retry-After); 403/404/422 rejected', () => {
    assert.deepEqual(classifyKubeStatus(201, '{}'), { status: 'delivered' });
    assert.deepEqual(classifyKubeStatus(429, '{"message":"too many"}', '3'), { status: 'retryable', reason: 'HTTP 429: too many', afterMs: 3000 });
    assert.equal(classifyKubeStatus(503, '').status, 'retryable');
    assert.equal(classifyKubeStatus(401, '').status, 'retryable');
    for (const s of [403, 404, 422, 400]) assert.equal(classifyKubeStatus(s, '{"kind":"Status","message":"no"}').status, 'rejected', String(s));
    assert.match(forbiddenLine('create', 'shop'), /may not create events\.k8s\.io\/events in namespace shop/);
  });
});

type RawCall = (method: string, p: string, body: unknown, contentType?: string) => Promise<KubeAnswer>;
/** The sink's KubeApi as HTTP requests (method, path, body), the way the API server sees them. */
function apiOf(raw: RawCall): KubeApi {
  const events = (ns: string, name?: string) => `/apis/events.k8s.io/v1/namespaces/${ns}/events${name ? `/${name}` : ''}`;
  return {
    server: 'https://fake',
    createEvent: (ns, body) => raw('POST', events(ns), body, 'application/json'),
    patchEvent: (ns, name, patch) => raw('PATCH', events(ns, name), patch, 'application/merge-patch+json'),
    eventsApiResources: () => raw('GET', '/apis/events.k8s.io/v1', undefined),
    read: (kind, ns, name) => raw('GET', `/${kind}/${ns}/${name}`, undefined),
  };
}

/** A fake API: records calls, answers from `answer`. */
function fakeApi(answer: (method: string, p: string, body: unknown) => { status: number; text?: string }) {
  const calls: Array<{ method: string; path: string; body: unknown; contentType?: string }> = [];
  const call = apiOf(async (method, p, body, contentType) => {
    calls.push({ method, path: p, body, contentType });
    const a = answer(method, p, body);
    return { status: a.status, text: a.text ?? '{}', retryAfter: null };
  });
  return { calls, call };
}

const logs = () => {
  const lines: string[] = [];
  const logger = silentLogger();
  for (const level of ['error', 'warn', 'info', 'debug'] as const) (logger as unknown as Record<string, unknown>)[level] = (m: string) => lines.push(`${level}: ${m}`);
  (logger as unknown as Record<string, unknown>).log = (level: string, m: string) => lines.push(`${level}: ${m}`);
  return { lines, logger };
};

const kill = (i: number, over: Partial<OomRecord> = {}) =>
  podKill({ event_id: i.toString(16).padStart(32, 'a'), time: new Date(Date.parse('2026-11-23T06:41:00Z') + i * 1000).toISOString(), ...over });

describe('kubernetes_events: series and rate limit (client-go recorder shape)', () => {
  test('20 repeats: one create, then merge patches with count 2..20; a resent record is not counted twice', async () => {
    const api = fakeApi((m) => ({ status: m === 'POST' ? 201 : 200 }));
    const sink = new KubernetesEventsSink(config(), 'node-1', silentLogger(), api.call);
    for (let i = 0; i < 20; i++) assert.deepEqual(await sink.write([kill(i)]), { status: 'delivered' });
    assert.deepEqual(await sink.write([kill(19)]), { status: 'delivered' });
    assert.equal(api.calls.length, 20);
    assert.equal(api.calls[0]!.method, 'POST');
    assert.equal(api.calls[0]!.path, '/apis/events.k8s.io/v1/namespaces/shop/events');
    const last = api.calls[19]!;
    assert.equal(last.method, 'PATCH');
    assert.equal(last.contentType, 'application/merge-patch+json');
    assert.equal(last.path, `/apis/events.k8s.io/v1/namespaces/shop/events/web-5d4f8c7b9-x2x7q.${kill(0).event_id}`);
    assert.deepEqual((last.body as { series: { count: number } }).series.count, 20);
  });
  test('another comm, container or role (init/child), or outside the window, is a new Event', async () => {
    const api = fakeApi((m) => ({ status: m === 'POST' ? 201 : 200 }));
    const sink = new KubernetesEventsSink(config({ series_window_ms: 60_000 }), 'n', silentLogger(), api.call);
    await sink.write([kill(0), kill(1, { victim_comm: 'node' }), kill(2, { k8s_container: 'side' }), kill(3, { victim_is_container_init: true }), kill(200)]);
    assert.deepEqual(api.calls.map((c) => c.method), ['POST', 'POST', 'POST', 'POST', 'POST']);
  });
  test('rate limit: beyond the burst, repeats are counted into the next patch; new Events dropped and logged', async () => {
    let now = 1_000_000;
    const api = fakeApi((m) => ({ status: m === 'POST' ? 201 : 200 }));
    const { lines, logger } = logs();
    const sink = new KubernetesEventsSink(config({ rate_limit: { burst: 3, refill_ms: 10_000 } }), 'n', logger, api.call, () => now);
    for (let i = 0; i < 10; i++) await sink.write([kill(i)]);
    assert.equal(api.calls.length, 3);
    await sink.write([kill(10, { victim_comm: 'other' })]);
    assert.equal(api.calls.length, 3);
    await sink.write([kill(10, { victim_comm: 'other2' })]);
    // one warning per pod per refill period; the rest at debug
    assert.equal(lines.filter((l) => l.startsWith('warn: ') && l.includes('rate limited')).length, 1);
    assert.equal(lines.filter((l) => l.startsWith('debug: ') && l.includes('not sent')).length, 1);
    now += 10_000;
    await sink.write([kill(11)]);
    assert.equal(api.calls.length, 4);
    assert.equal((api.calls[3]!.body as { series: { count: number } }).series.count, 11);
  });
  test('token bucket refills one per period, up to burst', () => {
    const b = new TokenBucket(2, 100, 0);
    assert.deepEqual([b.take(0), b.take(0), b.take(0), b.take(99), b.take(100), b.take(100)], [true, true, false, false, true, false]);
    assert.deepEqual([b.take(10_000), b.take(10_000), b.take(10_000)], [true, true, false]);
  });
  test('two kills whose event ids share a prefix are two Events', () => {
    const a = podKill({ event_id: '0'.repeat(31) + '1' });
    const b = podKill({ event_id: '0'.repeat(31) + '2' });
    assert.notEqual(eventName(regardingOf(a, 'n')!, a), eventName(regardingOf(b, 'n')!, b));
  });
  test('409 on create: this kill\'s Event exists (an earlier try) → delivered, repeats patch it', async () => {
    const api = fakeApi((m) => ({ status: m === 'POST' ? 409 : 200 }));
    const sink = new KubernetesEventsSink(config(), 'n', silentLogger(), api.call);
    assert.deepEqual(await sink.write([kill(0), kill(1)]), { status: 'delivered' });
    assert.deepEqual(api.calls.map((c) => c.method), ['POST', 'PATCH']);
  });
  test('404 on patch (the Event expired) → a new Event', async () => {
    const api = fakeApi((m) => ({ status: m === 'POST' ? 201 : 404 }));
    const sink = new KubernetesEventsSink(config(), 'n', silentLogger(), api.call);
    assert.deepEqual(await sink.write([kill(0), kill(1)]), { status: 'delivered' });
    assert.deepEqual(api.calls.map((c) => c.method), ['POST', 'PATCH', 'POST']);
  });
  test('403: rejected, one log line naming the permission; 5xx and network errors retryable; non-pod kills skipped', async () => {
    const { lines, logger } = logs();
    const sink = new KubernetesEventsSink(config(), 'n', logger, fakeApi(() => ({ status: 403, text: '{"message":"forbidden"}' })).call);
    const r = await sink.write([kill(0)]);
    assert.equal(r.status, 'rejected');
    await sink.write([kill(1, { victim_comm: 'x' })]);
    assert.deepEqual(lines, [`error: ${forbiddenLine('create', 'shop')}`]);
    const s5 = new KubernetesEventsSink(config(), 'n', silentLogger(), fakeApi(() => ({ status: 503 })).call);
    assert.equal((await s5.write([kill(0)])).status, 'retryable');
    const down = new KubernetesEventsSink(config(), 'n', silentLogger(), apiOf(async () => {
      throw new Error('ECONNREFUSED');
    }));
    assert.equal((await down.write([kill(0)])).status, 'retryable');
    const none = fakeApi(() => ({ status: 500 }));
    const skip = new KubernetesEventsSink(config(), 'n', silentLogger(), none.call);
    assert.deepEqual(await skip.write([baseRecord({ oom_scope: 'other' })]), { status: 'delivered' });
    assert.equal(none.calls.length, 0);
  });
  test('a 403 within a minute of the API server being unreachable is retried (RBAC cache warming), later dead-lettered', async () => {
    let now = 0;
    let answer = 0;
    const { lines, logger } = logs();
    const sink = new KubernetesEventsSink(config(), 'n', logger, apiOf(async () => {
      if (answer === 0) throw new Error('ECONNREFUSED');
      return { status: answer, text: '{"message":"forbidden"}', retryAfter: null };
    }), () => now);
    assert.equal((await sink.write([kill(0)])).status, 'retryable');
    answer = 403;
    now = 59_000;
    const warm = await sink.write([kill(0)]);
    assert.equal(warm.status, 'retryable');
    assert.match((warm as { reason: string }).reason, /^HTTP 403: forbidden \(the API server was unreachable 59000 ms ago/);
    assert.deepEqual(lines, []);
    now = 60_000;
    assert.equal((await sink.write([kill(0)])).status, 'rejected');
    assert.deepEqual(lines, [`error: ${forbiddenLine('create', 'shop')}`]);
  });
  test('writes that did not reach the API (retried) do not use up the rate limit', async () => {
    let down = true;
    const api = fakeApi((m) => ({ status: down ? 503 : m === 'POST' ? 201 : 200 }));
    const sink = new KubernetesEventsSink(config({ rate_limit: { burst: 2, refill_ms: 3_600_000 } }), 'n', silentLogger(), api.call, () => 0);
    for (let i = 0; i < 10; i++) assert.equal((await sink.write([kill(0)])).status, 'retryable');
    down = false;
    assert.deepEqual(await sink.write([kill(0), kill(1)]), { status: 'delivered' });
    assert.deepEqual(api.calls.slice(10).map((c) => c.method), ['POST', 'PATCH']);
  });
  test('repeats beyond the rate limit reach the Event by one catch-up patch when the bucket refills', async () => {
    const api = fakeApi((m) => ({ status: m === 'POST' ? 201 : 200 }));
    const sink = new KubernetesEventsSink(config({ rate_limit: { burst: 3, refill_ms: 60 } }), 'n', silentLogger(), api.call);
    for (let i = 0; i < 20; i++) assert.deepEqual(await sink.write([kill(i)]), { status: 'delivered' });
    // create + 2 patches within the burst; 17 repeats only counted
    assert.deepEqual(api.calls.map((c) => c.method), ['POST', 'PATCH', 'PATCH']);
    const end = Date.now() + 2000;
    while (api.calls.length < 4 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200));
    // one more patch, with every repeat, and the last kill's time; nothing after it
    assert.deepEqual(api.calls.map((c) => c.method), ['POST', 'PATCH', 'PATCH', 'PATCH']);
    assert.deepEqual(api.calls[3]!.body, seriesPatch(20, kill(19).time));
    await sink.close();
  });
  test('close() cancels a scheduled catch-up patch', async () => {
    const api = fakeApi((m) => ({ status: m === 'POST' ? 201 : 200 }));
    const sink = new KubernetesEventsSink(config({ rate_limit: { burst: 1, refill_ms: 50 } }), 'n', silentLogger(), api.call);
    for (let i = 0; i < 3; i++) await sink.write([kill(i)]);
    await sink.close();
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(api.calls.map((c) => c.method), ['POST']);
  });
  test('a retryable patch does not count the repeat: the resend counts it once', async () => {
    let fail = true;
    const api = fakeApi((m) => ({ status: m === 'POST' ? 201 : fail ? 503 : 200 }));
    const sink = new KubernetesEventsSink(config(), 'n', silentLogger(), api.call);
    await sink.write([kill(0)]);
    assert.equal((await sink.write([kill(1)])).status, 'retryable');
    fail = false;
    await sink.write([kill(1)]);
    assert.equal((api.calls.at(-1)!.body as { series: { count: number } }).series.count, 2);
  });
});

describe('kubernetes_events: configuration', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-k8sev-'));
  test('no kubeconfig and not in a cluster, or an unusable kubeconfig: ConfigError naming the key, exit 78', () => {
    const saved = process.env.KUBERNETES_SERVICE_HOST;
    delete process.env.KUBERNETES_SERVICE_HOST;
    try {
      for (const kc of ['', path.join(tmp, 'missing'), (fs.writeFileSync(path.join(tmp, 'http'), 'apiVersion: v1\nclusters: [{name: c, cluster: {server: "http://x"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n'), path.join(tmp, 'http')),
        (fs.writeFileSync(path.join(tmp, 'nocreds'), 'apiVersion: v1\nclusters: [{name: c, cluster: {server: "https://x"}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n'), path.join(tmp, 'nocreds')),
        (fs.writeFileSync(path.join(tmp, 'notoken'), 'apiVersion: v1\nclusters: [{name: c, cluster: {server: "https://x"}}]\nusers: [{name: u, user: {tokenFile: gone}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n'), path.join(tmp, 'notoken')),
        (fs.writeFileSync(path.join(tmp, 'noca'), 'apiVersion: v1\nclusters: [{name: c, cluster: {server: "https://x", certificate-authority: nope.crt}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n'), path.join(tmp, 'noca')),
        (fs.writeFileSync(path.join(tmp, 'list'), '[1, 2]\n'), path.join(tmp, 'list'))]) {
        assert.throws(
          () => definition.create(config({ kubeconfig: kc }), { logger: silentLogger() }),
          (e: unknown) => e instanceof ConfigError && e.key === 'sinks.kubernetes_events.kubeconfig' && e.exitCode === 78,
          kc,
        );
      }
    } finally {
      if (saved !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved;
    }
  });
  test('a kubeconfig with a token, relative CA path: the connection', () => {
    fs.writeFileSync(path.join(tmp, 'ca.crt'), 'CA');
    const kc = path.join(tmp, 'kc');
    fs.writeFileSync(kc, 'apiVersion: v1\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:6443/", certificate-authority: ca.crt}}]\nusers: [{name: u, user: {token: s3cret}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n');
    const c = openKubeApi({ kubeconfig: kc, timeoutMs: 1000 });
    assert.equal(c.server, 'https://127.0.0.1:6443');
  });
  test('reason must be a CamelCase word', () => {
    const c = convict(kubernetesEventsConfigSchema as never);
    c.load({ reason: 'OOM Kill' });
    assert.throws(() => c.validate({ allowed: 'strict' }), /reason/);
  });
});
