import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { MetricsError, MetricsRegistry, PipelineMetrics, parseListen, startMetricsServer, type HealthReport, type KillLabelSource } from '../../src/observe/metrics';

function get(port: number, p: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('renders Prometheus text with HELP, TYPE, labels and escaping', async () => {
  const r = new MetricsRegistry();
  const c = r.counter('oomtrail_test_total', 'A help line with \\ and\nnewline.', ['a', 'b']);
  c.inc({ a: 'x', b: 'quote " back \\ nl \n end' });
  c.inc({ a: 'x', b: 'quote " back \\ nl \n end' }, 2);
  c.inc({ a: 'y' });
  const g = r.gauge('oomtrail_plain', 'Unlabelled.');
  r.gauge('oomtrail_frac', 'Float.').set({}, 0.25);
  assert.equal(
    await r.render(),
    [
      '# HELP oomtrail_test_total A help line with \\\\ and\\nnewline.',
      '# TYPE oomtrail_test_total counter',
      'oomtrail_test_total{a="x",b="quote \\" back \\\\ nl \\n end"} 3',
      'oomtrail_test_total{a="y",b=""} 1',
      '',
      '# HELP oomtrail_plain Unlabelled.',
      '# TYPE oomtrail_plain gauge',
      'oomtrail_plain 0',
      '',
      '# HELP oomtrail_frac Float.',
      '# TYPE oomtrail_frac gauge',
      'oomtrail_frac 0.25',
      '',
    ].join('\n'),
  );
  g.set({}, Infinity);
  assert.match(await r.render(), /^oomtrail_plain \+Inf$/m);
});

test('typed errors for bad names, labels and values; re-registration is idempotent', () => {
  const r = new MetricsRegistry();
  assert.throws(() => r.counter('bad-name', 'x'), (e: unknown) => e instanceof MetricsError && e.code === 'METRICS_NAME');
  const c = r.counter('ok_total', 'x', ['sink']);
  assert.equal(r.counter('ok_total', 'x', ['sink']), c);
  assert.throws(() => r.gauge('ok_total', 'x', ['sink']), MetricsError);
  assert.throws(() => c.inc({ nope: '1' }), (e: unknown) => e instanceof MetricsError && e.code === 'METRICS_LABELS');
  assert.throws(() => c.inc({ sink: 'a' }, -1), (e: unknown) => e instanceof MetricsError && e.code === 'METRICS_VALUE');
});

const kill = (over: Partial<KillLabelSource> = {}): KillLabelSource => ({ hook: 'fentry', victim_cgroup: '/a', oom_cgroup: '/a', ...over });

test('oom_kills_by_cgroup_total caps distinct cgroups and counts the overflow under __other__', async () => {
  const m = new PipelineMetrics(new MetricsRegistry(), { maxCgroups: 3 });
  for (let i = 0; i < 6; i++) m.recordCapture(kill({ victim_cgroup: `/pod${i}` }));
  m.recordCapture(kill({ victim_cgroup: '/pod0' }));
  m.recordCapture(kill({ hook: 'tracepoint', victim_cgroup: '/pod5' }));
  m.recordCapture(kill({ victim_cgroup: '', oom_cgroup: '/pod0' }));
  assert.equal(m.oomKillsByCgroup.seriesCount, 4);
  assert.equal(m.oomKillsByCgroup.get({ cgroup: '/pod0' }), 3, 'the OOM cgroup when the victim\'s is unknown');
  assert.equal(m.oomKillsByCgroup.get({ cgroup: '__other__' }), 4);
  assert.equal(m.eventsCaptured.get({ hook: 'fentry' }), 8);
  const text = await m.registry.render();
  for (const name of [
    'events_captured_total',
    'sink_delivered_total',
    'sink_retried_total',
    'sink_rejected_total',
    'dropped_total',
    'queue_depth',
    'spool_records',
    'spool_bytes',
    'sink_last_success_timestamp_seconds',
    'oom_kills_total',
    'oom_kills_by_cgroup_total',
  ]) {
    assert.match(text, new RegExp(`^# TYPE oomtrail_${name} `, 'm'));
  }
  assert.match(text, /^oomtrail_oom_kills_by_cgroup_total\{cgroup="__other__"\} 4$/m);
});

test('oom_kills_total: one series per workload whatever pod or container id; label sets capped, overflow under __other__', async () => {
  const m = new PipelineMetrics(new MetricsRegistry(), { maxWorkloads: 3 });
  const web = { pod_namespace: 'shop', workload_name: 'web', k8s_container: 'app', container_id: 'c'.repeat(64), oom_scope: 'container' };
  // three re-created pods of one Deployment (new cgroups, new ids): one series
  for (let i = 0; i < 3; i++) m.recordCapture(kill({ ...web, victim_cgroup: `/kubepods/pod${i}/x`, victim_is_container_init: i !== 2 }));
  assert.equal(m.oomKills.get({ namespace: 'shop', workload: 'web', container: 'app', victim: 'init', scope: 'container' }), 2);
  assert.equal(m.oomKills.get({ namespace: 'shop', workload: 'web', container: 'app', victim: 'child', scope: 'container' }), 1);
  // a host process: no namespace, workload or container; a global OOM
  m.recordCapture(kill({ victim_is_container_init: false, oom_scope: 'system' }));
  assert.equal(m.oomKills.get({ namespace: '', workload: '', container: '', victim: '', scope: 'system' }), 1, 'not in a container: neither init nor child');
  // the cap: 3 label sets; every further one counts under __other__
  for (let i = 0; i < 5; i++) m.recordCapture(kill({ ...web, workload_name: `job${i}`, victim_is_container_init: true }));
  assert.equal(m.oomKills.seriesCount, 4);
  const other = { namespace: '__other__', workload: '__other__', container: '__other__', victim: '__other__', scope: '__other__' };
  assert.equal(m.oomKills.get(other), 5);
  // a value longer than any Kubernetes name counts under __other__ (bounded memory per label set)
  const m2 = new PipelineMetrics(new MetricsRegistry());
  m2.recordCapture(kill({ ...web, workload_name: 'w'.repeat(254), victim_is_container_init: true }));
  assert.equal(m2.oomKills.get({ namespace: 'shop', workload: '__other__', container: 'app', victim: 'init', scope: 'container' }), 1);
  // a docker container outside Kubernetes: its own name
  m2.recordCapture(kill({ container_name: 'api', container_id: 'd'.repeat(64), victim_is_container_init: false, oom_scope: 'other' }));
  assert.equal(m2.oomKills.get({ namespace: '', workload: '', container: 'api', victim: 'child', scope: 'other' }), 1);
  assert.match(await m2.registry.render(), /^oomtrail_oom_kills_total\{namespace="shop",workload="__other__",container="app",victim="init",scope="container"\} 1$/m);
});

test('parseListen', () => {
  assert.deepEqual(parseListen('127.0.0.1:9100'), { host: '127.0.0.1', port: 9100 });
  assert.deepEqual(parseListen(':9100'), { host: undefined, port: 9100 });
  assert.deepEqual(parseListen('[::1]:9100'), { host: '::1', port: 9100 });
  for (const bad of ['9100', 'host:', 'host:70000', 'a:b:1']) {
    assert.throws(() => parseListen(bad), (e: unknown) => e instanceof MetricsError && e.code === 'METRICS_LISTEN', bad);
  }
});

test('metrics server: /metrics, /healthz 200/503, 404, 405, off when listen is empty', async () => {
  assert.equal(await startMetricsServer('', new MetricsRegistry()), null);
  const r = new MetricsRegistry();
  const depth = r.gauge('oomtrail_queue_depth', 'q');
  let sampled = 0;
  r.onCollect(() => depth.set({}, ++sampled));
  let health: HealthReport = { healthy: true };
  const srv = await startMetricsServer('127.0.0.1:0', r, () => health);
  assert.ok(srv && srv.port > 0);
  try {
    const m = await get(srv.port, '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.type, /^text\/plain; version=0\.0\.4/);
    assert.match(m.body, /^oomtrail_queue_depth 1$/m);
    // prom-client's standard process and Node metrics, as on every Node target
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
      assert.match(m.body, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }
    assert.doesNotMatch(await new MetricsRegistry().render(), /process_|nodejs_/, 'without an endpoint no default metrics (their sampler would wake an idle agent)');
    assert.deepEqual(await get(srv.port, '/healthz'), { status: 200, type: 'text/plain; charset=utf-8', body: 'ok\n' });
    health = { healthy: false, reason: 'sink loki failing for 400s: http 503' };
    const h = await get(srv.port, '/healthz?verbose=1');
    assert.equal(h.status, 503);
    assert.equal(h.body, 'sink loki failing for 400s: http 503\n');
    assert.equal((await get(srv.port, '/nope')).status, 404);
    assert.equal((await get(srv.port, '/metrics', 'POST')).status, 405);
    const taken = startMetricsServer(`127.0.0.1:${srv.port}`, r);
    await assert.rejects(taken, (e: unknown) => e instanceof MetricsError && e.code === 'METRICS_LISTEN');
  } finally {
    await srv.close();
  }
});
