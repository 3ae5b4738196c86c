/*
 * The kubernetes_events sink against a real kube-apiserver 1.37 + etcd (test/servers/kubernetes): the DaemonSet
 * manifest's RBAC applied as written, a TokenRequest token for its ServiceAccount in a kubeconfig the sink is
 * configured with (the systemd-host path: sinks.kubernetes_events.kubeconfig), a Namespace, ReplicaSet and Pod made
 * by the admin; records shaped as the pipeline makes them for kills in that pod (the pod's real uid in a kubepods
 * cgroup path, oom_scope and workload from the pipeline's own functions, runtime enrichment's pod fields) are written
 * through the sink, and the Events are read back from the API as the admin.
 * Stand-in, named: the records are built here, not from real OOM kills; that keeps the sink's own cases (a global
 * OOM's Node Event, in-cluster token rotation, the systemd cgroup driver's path) quick and exact. The same
 * acceptance with the real agent, real OOM kills in a real containerd container and these Events read back is
 * test/k8s/containerd-events.test.ts. In `npm test`'s last run (OOMTRAIL_K8S=0 leaves it out); alone: `npm run
 * test:kubernetes`. Never skipped: if the API server cannot be had, before() throws.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { baseRecord } from '../helpers/records';
import { startKubeApiServer, type KubeApiServer } from '../servers/kubernetes/server';
import { AGENT_SA as sa, applyManifestRbac, createWorkloadNamespace, eventsRegarding, serviceAccountWithoutEvents, writeKubeconfig as kubeconfigFile } from './fixtures';
import type { OomRecord } from '../../src/record/record';
import { oomScope } from '../../src/pipeline/assemble/scope';
import { workloadOf } from '../../src/pipeline/assemble/workload';
import { definition } from '../../src/sinks/kubernetes_events/definition';
import { kubernetesEventsConfigSchema, type KubernetesEventsSinkConfig } from '../../src/sinks/kubernetes_events/config';
import { forbiddenLine } from '../../src/sinks/kubernetes_events/classify';
import { openKubeApi } from '../../src/host/kubeapi';
import { KubernetesEventsSink } from '../../src/sinks/kubernetes_events/sink';
import { definition as fileDefinition } from '../../src/sinks/file/definition';
import { Lane } from '../../src/pipeline/lane';
import { Router } from '../../src/pipeline/router';
import { silentLogger, type Logger } from '../../src/observe/logger';
import type { Sink } from '../../src/sinks/sink';
import convict from 'convict';

const NS = 'shop';
const Mi = 1048576;

let kube: KubeApiServer;
let dir = '';
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let pod: any;
const writeKubeconfig = (name: string, token: string): string => kubeconfigFile(kube, dir, name, token);

function capture(): { lines: string[]; logger: Logger } {
  const lines: string[] = [];
  const logger = silentLogger();
  const put = (level: string, m: string, meta?: unknown) => lines.push(`${level}: ${m}${meta === undefined ? '' : ` ${JSON.stringify(meta)}`}`);
  for (const level of ['error', 'warn', 'info', 'debug'] as const) (logger as unknown as Record<string, unknown>)[level] = (m: string, meta?: unknown) => put(level, m, meta);
  (logger as unknown as Record<string, unknown>).log = put;
  return { lines, logger };
}

function sinkWith(kubeconfig: string, logger: Logger = silentLogger(), over: Partial<KubernetesEventsSinkConfig> = {}): Sink {
  const config = { ...(convict(kubernetesEventsConfigSchema as never).getProperties() as KubernetesEventsSinkConfig), enabled: true, kubeconfig, node_name: 'node-1', ...over };
  return definition.create(config, { logger });
}

let seq = 0;
/** A kill in container "app" of the pod, as assembled: kubepods cgroup of the pod's uid, scope and workload derived. */
function podKill(over: Partial<OomRecord>): OomRecord {
  seq++;
  const uid = pod.metadata.uid as string;
  const cid = `${seq.toString(16)}`.padStart(64, 'c');
  const oom_cgroup = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replace(/-/g, '_')}.slice/cri-containerd-${cid}.scope`;
  const r = baseRecord({
    event_id: crypto.createHash('sha256').update(`k8s-events-${seq}-${process.pid}`).digest('hex').slice(0, 32),
    time: new Date(Date.now() + seq).toISOString().replace(/Z$/, '123456Z'),
    host: 'node-1',
    cgroup_version: 2,
    constraint: 'memcg',
    oom_cgroup,
    victim_cgroup: oom_cgroup,
    container_id: cid,
    container_runtime: 'containerd',
    pod_uid: uid,
    k8s_qos: 'burstable',
    pod_name: pod.metadata.name,
    pod_namespace: NS,
    k8s_container: 'app',
    memcg_limit_bytes: 512 * Mi,
    memcg_usage_bytes: 512 * Mi,
    cause: 'anon',
    memory_at_kill: {
      source: 'bpf', scope: 'memcg', usage_bytes: 512 * Mi, limit_bytes: 512 * Mi, failcnt: 1, anon_bytes: 480 * Mi,
      file_bytes: 20 * Mi, shmem_bytes: 0, file_mapped_bytes: null, file_dirty_bytes: null, file_writeback_bytes: null,
      kernel_bytes: 12 * Mi, slab_bytes: null, sock_bytes: null, pagetables_bytes: null, swap_bytes: 0,
    },
    ...over,
  });
  const scope = oomScope(r);
  return { ...r, ...(scope ? { oom_scope: scope } : {}), ...workloadOf(r.pod_name, r.pod_uid) };
}

const podEvents = () => eventsRegarding(kube, NS, pod.metadata.uid);

before(async () => {
  kube = await startKubeApiServer();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-k8sev-'));
  await applyManifestRbac(kube);
  pod = await createWorkloadNamespace(kube, NS);
});

after(async () => {
  await kube?.destroy();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('kubernetes_events sink on a real kube-apiserver, with the manifest\'s RBAC', () => {
  test('a container-init kill and a child kill: two Events regarding the Pod, with their notes', async () => {
    const token = await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600);
    const sink = sinkWith(writeKubeconfig('oomtrail', token));
    assert.deepEqual(await sink.healthcheck(), { healthy: true });
    const init = podKill({ victim_comm: 'java', victim_pid: 31337, victim_is_container_init: true });
    const child = podKill({ victim_comm: 'python3', victim_pid: 4242, victim_is_container_init: false });
    assert.equal(init.oom_scope, 'container');
    assert.deepEqual(await sink.write([init, child]), { status: 'delivered' });
    const events = await podEvents();
    assert.equal(events.length, 2, JSON.stringify(events, null, 1));
    const byNote = events.map((e) => e.note).sort();
    assert.deepEqual(byNote, [
      'java (pid 31337, container init) killed: container "app" limit 512Mi hit, anon 480Mi (cause anon); the container exits (OOMKilled)',
      'python3 (pid 4242, child) killed: container "app" limit 512Mi hit, anon 480Mi (cause anon); container kept running',
    ]);
    for (const e of events) {
      assert.deepEqual(e.regarding, { kind: 'Pod', namespace: NS, name: pod.metadata.name, uid: pod.metadata.uid, apiVersion: 'v1' });
      assert.equal(e.type, 'Warning');
      assert.equal(e.reason, 'OOMKill');
      assert.equal(e.action, 'Killed');
      assert.equal(e.reportingController, 'oomtrail');
      assert.equal(e.reportingInstance, 'node-1');
      assert.equal(e.series, undefined);
    }
  });

  test('20 repeated child kills: one Event whose series.count is 20', async () => {
    const token = await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600);
    const sink = sinkWith(writeKubeconfig('oomtrail', token));
    const before = (await podEvents()).length;
    let last: OomRecord | undefined;
    for (let i = 0; i < 20; i++) {
      last = podKill({ victim_comm: 'worker', victim_pid: 5000 + i, victim_is_container_init: false });
      assert.deepEqual(await sink.write([last]), { status: 'delivered' });
    }
    const events = (await podEvents()).filter((e) => e.note.startsWith('worker '));
    assert.equal(events.length, 1, JSON.stringify(events, null, 1));
    assert.equal((await podEvents()).length, before + 1);
    assert.equal(events[0].series.count, 20);
    assert.equal(events[0].series.lastObservedTime, last!.time.replace(/\.(\d{6})\d*Z$/, '.$1Z'));
    // the note is the first kill's
    assert.match(events[0].note, /^worker \(pid 5000, child\) killed: /);
  });

  test('20 repeated child kills with a burst of 5: 5 writes at once, then one catch-up patch makes series.count 20', async () => {
    const token = await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600);
    const sink = sinkWith(writeKubeconfig('oomtrail', token), silentLogger(), { rate_limit: { burst: 5, refill_ms: 1000 } });
    let last: OomRecord | undefined;
    for (let i = 0; i < 20; i++) {
      last = podKill({ victim_comm: 'limited', victim_pid: 6000 + i, victim_is_container_init: false });
      assert.deepEqual(await sink.write([last]), { status: 'delivered' });
    }
    const mine = async () => (await podEvents()).filter((e) => e.note.startsWith('limited '));
    // the create and 4 patches within the burst
    assert.equal((await mine())[0].series.count, 5);
    const end = Date.now() + 5000;
    while ((await mine())[0].series.count !== 20 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    const events = await mine();
    assert.equal(events.length, 1);
    assert.equal(events[0].series.count, 20, 'the repeats beyond the burst reach the Event once the bucket refills');
    assert.equal(events[0].series.lastObservedTime, last!.time.replace(/\.(\d{6})\d*Z$/, '.$1Z'));
    await sink.close();
  });

  test('a global OOM: an Event regarding the Node', async () => {
    const token = await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600);
    const sink = sinkWith(writeKubeconfig('oomtrail', token));
    const g = baseRecord({ event_id: 'f'.repeat(32), constraint: 'global', oom_cgroup: '/', oom_scope: 'system', victim_comm: 'kswapd-hog', memcg_limit_bytes: null });
    assert.deepEqual(await sink.write([g]), { status: 'delivered' });
    const r = await kube.request('GET', '/apis/events.k8s.io/v1/namespaces/default/events');
    assert.equal(r.status, 200, r.text);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const node = (r.body.items as any[]).filter((e) => e.regarding?.kind === 'Node');
    assert.equal(node.length, 1, r.text);
    assert.equal(node[0].regarding.name, 'node-1');
    assert.match(node[0].note, /^kswapd-hog \(pid 4242\) killed: no cgroup limit: the host ran out of memory/);
  });

  test('a ClusterRole without create on events: rejected, one log line naming the permission', async () => {
    const token = await serviceAccountWithoutEvents(kube);
    const { lines, logger } = capture();
    const sink = sinkWith(writeKubeconfig('no-events', token), logger);
    const before = (await podEvents()).length;
    const r1 = await sink.write([podKill({ victim_comm: 'denied', victim_is_container_init: false })]);
    assert.equal(r1.status, 'rejected', JSON.stringify(r1));
    assert.match((r1 as { reason: string }).reason, /^HTTP 403: .*forbidden/i);
    const r2 = await sink.write([podKill({ victim_comm: 'denied2', victim_is_container_init: false })]);
    assert.equal(r2.status, 'rejected');
    assert.deepEqual(lines, [`error: ${forbiddenLine('create', NS)}`]);
    assert.ok(!lines.join('\n').includes(token));
    assert.equal((await podEvents()).length, before);

    // through the pipeline's lanes: the refused record is dead-lettered, the file sink beside it still writes
    const spoolDir = fs.mkdtempSync(path.join(dir, 'spool-'));
    const fileConfig = { ...(convict(fileDefinition.schema as never).getProperties() as object), enabled: true, path: path.join(spoolDir, 'events.jsonl') };
    const lane = (sink: Sink) =>
      new Lane({ sink, spoolDir, fsync: 'never', maxSpoolBytes: 0, batch: { maxEvents: 1, maxBytes: 1 << 20, maxAgeMs: 1 }, retry: { initialMs: 20, maxMs: 50 }, logger: silentLogger() });
    const events = lane(sinkWith(writeKubeconfig('no-events', token), logger));
    const router = new Router([events, lane(fileDefinition.create(fileConfig as never, { logger: silentLogger() }))], silentLogger());
    await router.open();
    const k = podKill({ victim_comm: 'denied3', victim_is_container_init: false });
    try {
      await router.route(k);
      const end = Date.now() + 10_000;
      const has = (f: string) => fs.existsSync(f) && fs.readFileSync(f, 'utf8').includes(k.event_id);
      while (!(has(events.deadLetterPath) && has(fileConfig.path)) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.ok(has(events.deadLetterPath), `no dead letter for ${k.event_id} in ${events.deadLetterPath}`);
      assert.match(fs.readFileSync(events.deadLetterPath, 'utf8'), /HTTP 403/);
      assert.ok(has(fileConfig.path), 'the file sink did not write the record');
    } finally {
      await router.close(100);
    }
    // a new sink instance (the agent restarted): its own one line
    assert.deepEqual(lines, [`error: ${forbiddenLine('create', NS)}`, `error: ${forbiddenLine('create', NS)}`]);
    assert.equal((await podEvents()).length, before);
  });

  test('in-cluster: KUBERNETES_SERVICE_HOST/PORT, ca.crt, and the token file read again after a 401 (rotation)', async () => {
    const saDir = fs.mkdtempSync(path.join(dir, 'serviceaccount-'));
    fs.writeFileSync(path.join(saDir, 'ca.crt'), kube.ca);
    fs.writeFileSync(path.join(saDir, 'token'), 'not-a-valid-token');
    const config = { ...(convict(kubernetesEventsConfigSchema as never).getProperties() as KubernetesEventsSinkConfig), enabled: true };
    const conn = openKubeApi({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(kube.port) }, inClusterDir: saDir, timeoutMs: config.request_timeout_ms });
    const sink = new KubernetesEventsSink(config, 'node-1', silentLogger(), conn);
    const kill = podKill({ victim_comm: 'rotated', victim_is_container_init: false });
    // a stale token: 401, kept for a retry (kubelet is about to write the new one)
    const r1 = await sink.write([kill]);
    assert.equal(r1.status, 'retryable', JSON.stringify(r1));
    assert.equal((r1 as { reason: string }).reason, 'HTTP 401: Unauthorized');
    fs.writeFileSync(path.join(saDir, 'token.new'), await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600));
    fs.renameSync(path.join(saDir, 'token.new'), path.join(saDir, 'token'));
    assert.deepEqual(await sink.write([kill]), { status: 'delivered' });
    assert.equal((await podEvents()).filter((e) => e.note.startsWith('rotated ')).length, 1);
  });

  // the issue's 30 s outage with real kills is containerd-events.test.ts's; here the lane's side of it, in 5 s
  test('kube-apiserver stopped for 5 s during kills: the lane keeps them and the Events arrive after', async () => {
    const token = await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 3600);
    const spoolDir = fs.mkdtempSync(path.join(dir, 'spool-outage-'));
    const { lines, logger } = capture();
    const lane = new Lane({
      sink: sinkWith(writeKubeconfig('oomtrail', token), logger),
      spoolDir,
      fsync: 'never',
      maxSpoolBytes: 0,
      batch: { maxEvents: 10, maxBytes: 1 << 20, maxAgeMs: 1 },
      retry: { initialMs: 200, maxMs: 2000 },
      logger,
    });
    const router = new Router([lane], silentLogger());
    await router.open();
    const outage = (await podEvents()).length;
    try {
      await kube.stopApiServer();
      const t0 = Date.now();
      await router.route(podKill({ victim_comm: 'outage-init', victim_is_container_init: true }));
      await router.route(podKill({ victim_comm: 'outage-child', victim_is_container_init: false }));
      while (lane.lastFailureReason === null && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
      assert.match(String(lane.lastFailureReason), /ECONNREFUSED/);
      await new Promise((r) => setTimeout(r, Math.max(0, Number(process.env.OOMTRAIL_K8S_OUTAGE_MS ?? 5_000) - (Date.now() - t0))));
      await kube.runApiServer();
      const end = Date.now() + 20_000;
      let got: string[] = [];
      while (Date.now() < end) {
        got = (await podEvents()).map((e) => e.note as string).filter((n) => n.startsWith('outage-'));
        if (got.length >= 2) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.deepEqual(got.map((n) => n.split(' ')[0]).sort(), ['outage-child', 'outage-init'], `lane: ${lane.lastFailureReason}; dead letters: ${fs.existsSync(lane.deadLetterPath) ? fs.readFileSync(lane.deadLetterPath, 'utf8').slice(0, 500) : 'none'}; log: ${lines.slice(-5).join(' | ')}`);
      assert.equal((await podEvents()).length, outage + 2);
      assert.equal(fs.existsSync(lane.deadLetterPath), false);
    } finally {
      if (!kube.apiserver || kube.apiserver.exitCode !== null || kube.apiserver.signalCode !== null) await kube.runApiServer().catch(() => undefined);
      await router.close(100);
    }
  });
});
