/*
 * Issue 30's acceptance for the kubernetes_events sink, with real parts end to end: the agent (`oomtrail run`, this
 * tree's dist/) names real OOM kills in a real containerd container and posts the Events to a real kube-apiserver
 * 1.37 + etcd (test/servers/kubernetes), which the test reads back as the admin.
 * - The API side as test/k8s/events.test.ts sets it up: the DaemonSet manifest's RBAC applied as written, a
 *   TokenRequest token of its ServiceAccount in the kubeconfig the agent is given, a Namespace, ReplicaSet and Pod.
 * - The node side: Debian's containerd (test/servers/containerd), containers in namespace k8s.io labelled as the CRI
 *   plugin labels them, with the Pod object's real uid, in the cgroup kubelet's cgroupfs driver gives a burstable
 *   pod's container (`/kubepods/burstable/pod<uid>/<id>`), a 32Mi memory limit on the container.
 * - The kernel is the oracle: pid and comm of each note are the kernel's "Killed process" line's, and the OOM memcg
 *   of its constraint line is that pod's container cgroup.
 * No kubelet: nothing reconciles the Pod with the containers; the agent needs only the labels and the cgroup.
 * In `npm test`'s last run with the other test/k8s files (OOMTRAIL_K8S=0 leaves them out); alone: `npm run
 * test:kubernetes`. ~45 s, 30 of them the outage. Never skipped: no API server or containerd → before() throws.
 * Makes real OOM kills: run it alone under `flock /tmp/oomtrail-host.lock`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { kernelReportFor, KmsgReader, waitForOomLogWindow, type KernelKillReport } from '../helpers/kmsg';
import { CACHE_ROOT } from '../servers/common';
import { enrichYaml, ensureImage, IMAGE, removeContainers, startContainerd, type Containerd } from '../servers/containerd/engine';
import { startKubeApiServer, type KubeApiServer } from '../servers/kubernetes/server';
import { AGENT_SA, applyManifestRbac, createWorkloadNamespace, eventsRegarding, serviceAccountWithoutEvents, writeKubeconfig } from './fixtures';
import { forbiddenLine } from '../../src/sinks/kubernetes_events/classify';
import type { OomRecord } from '../../src/record/record';

// the image store is runtime-containerd.e2e's (kept with the test caches): imported once, never again
const ROOT = path.join(CACHE_ROOT, 'containerd', 'runtime-test-root');
/** the CRI plugin's containerd namespace */
const CRI_NS = 'k8s.io';
const NS = 'shop';
const NODE = 'node-1';
const LIMIT = 32 << 20;
const CGROUP_MOUNTS = '/sys/fs/cgroup';
/** kubelet's cgroupfs-driver levels above a burstable pod (v1: in every hierarchy runc writes) */
const QOS_DIRS = ['kubepods', 'kubepods/burstable'];

let kube: KubeApiServer | undefined;
let c: Containerd | undefined;
let agent: RunningAgent | undefined;
let kmsg: KmsgReader;
let dir = '';
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let pod: any;
const ids: string[] = [];
/** the hierarchies' QoS-level directories that were there before this file (not ours to remove) */
const existed = new Set<string>();

/** v1: each controller's mount (and the named systemd one, cgroup2's `unified`); v2: the one root */
const hierarchies = () =>
  fs.existsSync(path.join(CGROUP_MOUNTS, 'cgroup.procs'))
    ? [CGROUP_MOUNTS]
    : fs.readdirSync(CGROUP_MOUNTS).map((h) => path.join(CGROUP_MOUNTS, h)).filter((h) => fs.existsSync(path.join(h, 'cgroup.procs')));
const podCgroup = () => `/kubepods/burstable/pod${pod.metadata.uid}`;

/** The agent with the sink on, given `kubeconfig` (the systemd-host path), and runtime enrichment on our containerd. */
function startAgentWith(kubeconfig: string): Promise<RunningAgent> {
  return startAgent(
    enrichYaml(c!, [CRI_NS], 'io.kubernetes.pod.uid'),
    {
      OOMTRAIL_SINKS_KUBERNETES_EVENTS_ENABLED: 'true',
      OOMTRAIL_SINKS_KUBERNETES_EVENTS_KUBECONFIG: kubeconfig,
      OOMTRAIL_SINKS_KUBERNETES_EVENTS_NODE_NAME: NODE,
      // this file makes 2 + 2 + 20 + 2 API writes for the pod: with a burst of 100 the bucket never runs dry (the
      // rate limit has its own unit tests; here every kill must reach the API)
      OOMTRAIL_SINKS_KUBERNETES_EVENTS_RATE_LIMIT_BURST: '100',
      // the outage: retried at least every 2 s, so the Events follow the API server's return within seconds
      OOMTRAIL_PIPELINE_RETRY_MAX_MS: '2000',
    },
  );
}

/** A container of the Pod, as the CRI plugin makes one: its labels, the pod's cgroup, the memory limit; its id. */
async function runInPod(cmd: string[]): Promise<string> {
  const id = crypto.randomBytes(32).toString('hex');
  ids.push(id);
  const labels = {
    'io.kubernetes.pod.name': pod.metadata.name,
    'io.kubernetes.pod.namespace': NS,
    'io.kubernetes.pod.uid': pod.metadata.uid,
    'io.kubernetes.container.name': 'app',
  };
  await c!.ctr(
    ['run', '-d', '--memory-limit', String(LIMIT), '--cgroup', `${podCgroup()}/${id}`, ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]), IMAGE, id, ...cmd],
    { namespace: CRI_NS },
  );
  return id;
}

/** `n` records of container `id`, in kill order. */
async function recordsOf(id: string, n: number, what: string): Promise<OomRecord[]> {
  const rs = await agent!.waitFor((r) => r.filter((x) => x.container_id === id).length >= n, 30_000, what);
  const mine = rs.filter((x) => x.container_id === id).sort((a, b) => a.time.localeCompare(b.time));
  assert.equal(mine.length, n, `${what}: ${mine.length} records`);
  return mine;
}

/** The kernel's "Killed process" line of `pid` (it follows the BPF hook by a few ms). */
async function kernelKill(pid: number): Promise<{ killed: KernelKillReport; oomMemcg: string | null }> {
  let report = kernelReportFor(kmsg.records, pid);
  for (let i = 0; i < 30 && !report.killed; i++) {
    await sleep(100);
    kmsg.drain();
    report = kernelReportFor(kmsg.records, pid);
  }
  assert.ok(report.killed, `kernel "Killed process ${pid}" line not found`);
  return { killed: report.killed, oomMemcg: report.constraint?.oomMemcg ?? null };
}

const podEvents = () => eventsRegarding(kube!, NS, pod.metadata.uid);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Ev = any;
const eventOf = (events: Ev[], r: OomRecord): Ev | undefined => events.find((e) => e.metadata.annotations?.['oomtrail.io/event-id'] === r.event_id);

/** Polls the Events regarding the Pod until `done` holds (or `timeoutMs`); the last list. */
async function waitForEvents(done: (events: Ev[]) => boolean, timeoutMs: number): Promise<Ev[]> {
  const end = Date.now() + timeoutMs;
  let events: Ev[] = [];
  while (Date.now() < end) {
    events = await podEvents();
    if (done(events)) break;
    await sleep(200);
  }
  return events;
}

const mib = (b: number) => `${Math.round(b / 1048576)}Mi`;
const micro = (t: string) => t.replace(/\.(\d{6})\d*Z$/, '.$1Z');

/**
 * The note of a kill in container "app" of a 32Mi limit: who the kernel says was killed, and the dominant usage
 * the agent measured (the kernel prints no cause). Asked only of kills whose OOM report the kernel printed
 * (waitForOomLogWindow first): a kill past dump_header's rate limit (10 per 5 s) gets no stats flush, and the
 * agent's memory_at_kill is then the memcg's last periodic flush (a new container: anon 0, cause `unknown`).
 */
function expectedNote(k: KernelKillReport, r: OomRecord, init: boolean): string {
  assert.equal(r.cause, 'anon', `a /dev/zero hog is anon: ${JSON.stringify(r.memory_at_kill)}`);
  const usage = `anon ${mib(r.memory_at_kill!.anon_bytes!)} (cause anon)`;
  return `${k.comm} (pid ${k.pid}, ${init ? 'container init' : 'child'}) killed: container "app" limit 32Mi hit, ${usage}; ${init ? 'the container exits (OOMKilled)' : 'container kept running'}`;
}

/** What every Event of a kill in the Pod says besides its note. */
function assertPodEvent(e: Ev): void {
  assert.deepEqual(e.regarding, { apiVersion: 'v1', kind: 'Pod', namespace: NS, name: pod.metadata.name, uid: pod.metadata.uid });
  assert.equal(e.type, 'Warning');
  assert.equal(e.reason, 'OOMKill');
  assert.equal(e.action, 'Killed');
  assert.equal(e.reportingController, 'oomtrail');
  assert.equal(e.reportingInstance, NODE);
}

/** The record of a kill in the Pod's container `id`, as the agent must have named it. */
function assertPodRecord(r: OomRecord, id: string, init: boolean): void {
  assert.equal(r.oom_cgroup, `${podCgroup()}/${id}`);
  assert.equal(r.oom_scope, 'container');
  assert.equal(r.container_runtime, 'containerd');
  assert.equal(r.pod_uid, pod.metadata.uid);
  assert.equal(r.pod_name, pod.metadata.name);
  assert.equal(r.pod_namespace, NS);
  assert.equal(r.k8s_container, 'app');
  assert.deepEqual(r.labels, { 'io.kubernetes.pod.uid': pod.metadata.uid });
  assert.equal(r.memcg_limit_bytes, LIMIT);
  assert.equal(r.victim_is_container_init, init);
}

before(async () => {
  const t0 = Date.now();
  kmsg = new KmsgReader();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-k8sctr-'));
  for (const h of hierarchies()) for (const q of QOS_DIRS) if (fs.existsSync(path.join(h, q))) existed.add(path.join(h, q));
  // the two servers start side by side; one that failed does not leave the other running (after() stops it)
  const [k, ctrd] = await Promise.allSettled([startKubeApiServer(), startContainerd(ROOT)]);
  if (k.status === 'fulfilled') kube = k.value;
  if (ctrd.status === 'fulfilled') c = ctrd.value;
  if (k.status === 'rejected') throw k.reason;
  if (ctrd.status === 'rejected') throw ctrd.reason;
  await ensureImage(c!, CRI_NS, ROOT + '-image');
  await applyManifestRbac(kube!);
  pod = await createWorkloadNamespace(kube!, NS);
  const token = await kube!.serviceAccountToken(AGENT_SA.metadata.namespace, AGENT_SA.metadata.name, 3600);
  agent = await startAgentWith(writeKubeconfig(kube!, dir, 'oomtrail', token));
  process.stderr.write(`[containerd-events] API server, containerd and agent ready in ${Date.now() - t0} ms\n`);
});

after(async () => {
  await agent?.stop().catch((e) => process.stderr.write(`${e}\n`));
  if (c) {
    await removeContainers(c, ids, [CRI_NS]);
    await c.stop();
  }
  await kube?.destroy();
  // runc removed the containers' cgroups; the pod's and the QoS levels it made on the way are ours
  if (pod) {
    for (const h of hierarchies()) {
      for (const d of [podCgroup().slice(1), ...[...QOS_DIRS].reverse()]) {
        const p = path.join(h, d);
        if (!existed.has(p) && fs.existsSync(p)) {
          try {
            fs.rmdirSync(p);
          } catch (e) {
            process.stderr.write(`[containerd-events] cannot remove ${p}: ${(e as Error).message}\n`);
          }
        }
      }
    }
  }
  kmsg?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('kubernetes_events: real OOM kills in a containerd container of a Pod, Events read back from a real kube-apiserver', { timeout: 300_000 }, () => {
  test('a kill at container init and a child kill: two Events regarding the Pod, notes as the kernel names the victims', async () => {
    // both constraint lines printed (dump_header is rate limited): the kernel's own OOM memcg for each
    await waitForOomLogWindow(kmsg, 2);
    const initId = await runInPod(['tail', '/dev/zero']);
    const [init] = await recordsOf(initId, 1, 'the init kill');
    // a second container of the Pod (a restart: new id, same labels): its PID 1 survives a child's kill
    const childId = await runInPod(['bash', '-c', 'dd if=/dev/zero of=/dev/null bs=64M; exec sleep 600']);
    const [child] = await recordsOf(childId, 1, 'the child kill');
    assertPodRecord(init!, initId, true);
    assertPodRecord(child!, childId, false);
    const kInit = await kernelKill(init!.victim_pid);
    const kChild = await kernelKill(child!.victim_pid);
    assert.deepEqual([kInit.killed.comm, kChild.killed.comm], ['tail', 'dd']);
    assert.equal(kInit.oomMemcg, `${podCgroup()}/${initId}`, 'the kernel\'s oom_memcg');
    assert.equal(kChild.oomMemcg, `${podCgroup()}/${childId}`, 'the kernel\'s oom_memcg');
    assert.match(await c!.ctr(['task', 'ls'], { namespace: CRI_NS }), new RegExp(`${childId}\\s+\\d+\\s+RUNNING`), 'the child\'s container kept running');

    const events = await waitForEvents((es) => !!eventOf(es, init!) && !!eventOf(es, child!), 15_000);
    assert.equal(events.length, 2, JSON.stringify(events, null, 1));
    for (const e of events) assertPodEvent(e);
    assert.equal(eventOf(events, init!).note, expectedNote(kInit.killed, init!, true));
    assert.equal(eventOf(events, child!).note, expectedNote(kChild.killed, child!, false));
    for (const e of events) assert.equal(e.series, undefined, 'a first occurrence has no series');
    assert.equal(eventOf(events, init!).eventTime, micro(init!.time));
  });

  test('the same program killed at init, then as a child: two Events, the child\'s not hidden in the init\'s series', async () => {
    const before = (await podEvents()).length;
    await waitForOomLogWindow(kmsg, 2);
    // one binary (comm "server") as PID 1 of one container, then as a child in the restarted container
    const initId = await runInPod(['bash', '-c', 'ln -s /usr/bin/tail /tmp/server; exec /tmp/server /dev/zero']);
    const [init] = await recordsOf(initId, 1, 'the server init kill');
    const childId = await runInPod(['bash', '-c', 'ln -s /usr/bin/tail /tmp/server; /tmp/server /dev/zero; exec sleep 600']);
    const [child] = await recordsOf(childId, 1, 'the server child kill');
    assertPodRecord(init!, initId, true);
    assertPodRecord(child!, childId, false);
    const events = await waitForEvents((es) => !!eventOf(es, init!) && !!eventOf(es, child!), 10_000);
    const server = events.filter((e) => /^server /.test(e.note));
    assert.equal(server.length, 2, JSON.stringify(server, null, 1));
    assert.equal(events.length, before + 2);
    assert.equal(eventOf(events, init!).note, expectedNote((await kernelKill(init!.victim_pid)).killed, init!, true));
    assert.equal(eventOf(events, child!).note, expectedNote((await kernelKill(child!.victim_pid)).killed, child!, false));
    for (const e of server) assert.equal(e.series, undefined);
  });

  test('20 repeated child kills: one Event, series.count 20', async () => {
    const before = (await podEvents()).length;
    await waitForOomLogWindow(kmsg, 1);
    // a worker the container's shell restarts after each kill; its own name (comm), so its repeats are one series
    const id = await runInPod(['bash', '-c', 'ln -s /bin/dd /tmp/worker; for i in $(seq 20); do /tmp/worker if=/dev/zero of=/dev/null bs=64M; done; exec sleep 600']);
    const rs = await recordsOf(id, 20, '20 worker kills');
    for (const r of rs) assertPodRecord(r, id, false);
    const first = await kernelKill(rs[0]!.victim_pid);
    for (const r of rs.slice(1)) assert.equal((await kernelKill(r.victim_pid)).killed.comm, 'worker');
    const isWorker = (e: Ev) => /^worker /.test(e.note);
    const events = await waitForEvents((es) => es.filter(isWorker).some((e) => e.series?.count === 20), 20_000);
    const workers = events.filter(isWorker);
    assert.equal(workers.length, 1, JSON.stringify(workers, null, 1));
    assert.equal(events.length, before + 1);
    const e = workers[0];
    assertPodEvent(e);
    assert.equal(e.series?.count, 20, JSON.stringify(e));
    assert.equal(e.series.lastObservedTime, micro(rs[19]!.time));
    // the Event is the first kill's; the series counts the others
    assert.equal(e.metadata.annotations['oomtrail.io/event-id'], rs[0]!.event_id);
    assert.equal(e.note, expectedNote(first.killed, rs[0]!, false));
  });

  test('kube-apiserver stopped for 30 s during kills: the records are written meanwhile, the Events arrive after', async () => {
    const before = (await podEvents()).length;
    await kube!.stopApiServer();
    const t0 = Date.now();
    let back = 0;
    try {
      // after test 2's 20 kills: wait until the kernel prints these two reports (see expectedNote)
      await waitForOomLogWindow(kmsg, 2);
      const initId = await runInPod(['bash', '-c', 'ln -s /usr/bin/tail /tmp/lateinit; exec /tmp/lateinit /dev/zero']);
      const childId = await runInPod(['bash', '-c', 'ln -s /bin/dd /tmp/latechild; /tmp/latechild if=/dev/zero of=/dev/null bs=64M; exec sleep 600']);
      const [init] = await recordsOf(initId, 1, 'the init kill during the outage');
      const [child] = await recordsOf(childId, 1, 'the child kill during the outage');
      // the file sink is not held up by the other lane
      assert.ok(Date.now() - t0 < 20_000, `records written ${Date.now() - t0} ms into the outage`);
      assertPodRecord(init!, initId, true);
      assertPodRecord(child!, childId, false);
      await sleep(Math.max(0, Number(process.env.OOMTRAIL_K8S_OUTAGE_MS ?? 30_000) - (Date.now() - t0)));
      const restart = Date.now();
      await kube!.runApiServer();
      back = Date.now();
      const events = await waitForEvents((es) => !!eventOf(es, init!) && !!eventOf(es, child!), 30_000);
      const late = Date.now() - back;
      assert.ok(eventOf(events, init!) && eventOf(events, child!), `no Events ${late} ms after the API server came back; agent log:\n${agent!.stderr().slice(-3000)}`);
      process.stderr.write(`[containerd-events] Events of the outage's kills read back ${late} ms after the API server was ready again\n`);
      assert.equal(events.length, before + 2);
      assert.equal(eventOf(events, init!).note, expectedNote((await kernelKill(init!.victim_pid)).killed, init!, true));
      assert.equal(eventOf(events, child!).note, expectedNote((await kernelKill(child!.victim_pid)).killed, child!, false));
      for (const e of events) assertPodEvent(e);
      // stored by the API server that was started again (creationTimestamp: whole seconds)
      for (const r of [init!, child!]) assert.ok(Date.parse(eventOf(events, r).metadata.creationTimestamp) >= Math.floor(restart / 1000) * 1000, JSON.stringify(eventOf(events, r).metadata));
      assert.equal(fs.existsSync(path.join(agent!.dir, 'spool', 'kubernetes_events.dead-letter.jsonl')), false, 'nothing dead-lettered');
    } finally {
      const a = kube!.apiserver;
      if (!back && (!a || a.exitCode !== null || a.signalCode !== null)) await kube!.runApiServer().catch(() => undefined);
    }
  });

  test('a ClusterRole without create on events: rejected, one log line naming the permission, dead letters, the file sink still writes', async () => {
    await agent!.stop();
    const token = await serviceAccountWithoutEvents(kube!);
    agent = await startAgentWith(writeKubeconfig(kube!, dir, 'no-events', token));
    const before = (await podEvents()).length;
    const id = await runInPod(['bash', '-c', 'ln -s /bin/dd /tmp/denied1; ln -s /bin/dd /tmp/denied2; for w in denied1 denied2; do /tmp/$w if=/dev/zero of=/dev/null bs=64M; done; exec sleep 600']);
    const rs = await recordsOf(id, 2, 'two kills with the trimmed ClusterRole');
    assert.deepEqual(rs.map((r) => r.victim_comm), ['denied1', 'denied2']);
    for (const r of rs) assertPodRecord(r, id, false);
    const deadLetters = path.join(agent.dir, 'spool', 'kubernetes_events.dead-letter.jsonl');
    const dead = () => (fs.existsSync(deadLetters) ? fs.readFileSync(deadLetters, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
    const end = Date.now() + 20_000;
    while (dead().length < 2 && Date.now() < end) await sleep(100);
    const letters = dead();
    assert.equal(letters.length, 2, `dead letters: ${JSON.stringify(letters)}; agent log:\n${agent.stderr().slice(-3000)}`);
    assert.deepEqual(letters.map((l) => l.record.event_id), rs.map((r) => r.event_id));
    for (const l of letters) {
      assert.equal(l.sink, 'kubernetes_events');
      assert.match(l.reason, /^HTTP 403: .*forbidden/i);
    }
    // the same refusal twice: said once
    const line = forbiddenLine('create', NS);
    assert.equal(agent.stderr().split('\n').filter((l) => l.includes(line)).length, 1, agent.stderr().slice(-3000));
    // and the lane's dead-letter warning once too (the same reason again within a minute is a debug line)
    assert.equal(agent.stderr().split('\n').filter((l) => l.includes('lane: sink rejected batch')).length, 1, agent.stderr().slice(-3000));
    assert.ok(!agent.stderr().includes(token), 'the token is never logged');
    assert.equal((await podEvents()).length, before);
  });
});
