/*
 * The owner lookup (src/pipeline/assemble/owner.ts) against a real kube-apiserver 1.37 + etcd (test/servers/kubernetes),
 * through host/kubeapi.ts (client-node) with a TokenRequest token of the DaemonSet manifest's ServiceAccount, bound
 * by the manifest's own ClusterRole (applied as written: a ClusterRole without get on pods, replicasets or jobs fails
 * here). The admin makes each workload's objects with the owner references its controller would set (no
 * controller-manager or kubelet runs): Deployment → ReplicaSet → Pod, CronJob → Job → Pod, StatefulSet → Pod,
 * DaemonSet → Pod, a bare Pod, and pods whose names the heuristic reads wrong. Requests are counted by a wrapper
 * around the real KubeApi.
 * Stand-in, named: in the assembler test the container runtime is a fake source handing over kubelet's CRI labels
 * (the real runtimes are tested in test/e2e/runtime-*.e2e.test.ts).
 * Not in `npm test`: `npm run test:kubernetes`. Never skipped: if the API server cannot be had, before() throws.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startKubeApiServer, type KubeApiServer } from '../servers/kubernetes/server';
import { AGENT_SA, applyManifestRbac, MANIFEST_DOCS, writeKubeconfig as writeKubeconfigFile } from './fixtures';
import { openKubeApi, type KubeApi } from '../../src/host/kubeapi';
import { OwnerLookup, probeOwnerLookup, withOwnerLookup } from '../../src/pipeline/assemble/owner';
import { loadConfig } from '../../src/config/load';
import { workloadOf } from '../../src/pipeline/assemble/workload';
import { RecordAssembler } from '../../src/pipeline/assemble/assemble';
import { RuntimeMetadata } from '../../src/pipeline/assemble/runtime';
import { runtimeConfigSchema, type RuntimeEnrichConfig } from '../../src/pipeline/assemble/runtime/config';
import type { RuntimeSource } from '../../src/pipeline/assemble/runtime/types';
import type { RawOomEvent } from '../../src/collectors/oomkill/event';
import { silentLogger } from '../../src/observe/logger';
import convict from 'convict';

const NS = 'shop';

let kube: KubeApiServer;
let dir = '';
const sa = AGENT_SA;
const role = MANIFEST_DOCS.find((d) => d.kind === 'ClusterRole');
/** pod name → uid, as the API server assigned it */
const uids = new Map<string, string>();
let agentKubeconfig = '';

/** A kubeconfig file holding `token` for the test API server (or another server). */
function writeKubeconfig(name: string, token: string, server = kube.url): string {
  return writeKubeconfigFile(kube, dir, name, token, server);
}

/** The real KubeApi, its reads counted. */
function counted(api: KubeApi): { api: KubeApi; reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    api: {
      server: api.server,
      createEvent: (...a) => api.createEvent(...a),
      patchEvent: (...a) => api.patchEvent(...a),
      eventsApiResources: () => api.eventsApiResources(),
      read: (kind, ns, name) => {
        reads.push(`${kind}/${name}`);
        return api.read(kind, ns, name);
      },
    },
  };
}

function capture() {
  const lines: string[] = [];
  return { lines, logger: { warn: (m: string) => lines.push(`warn: ${m}`), info: (m: string) => lines.push(`info: ${m}`) } as never };
}

function lookupWith(kubeconfig: string, opts: { timeoutMs?: number } = {}) {
  const { api, reads } = counted(openKubeApi({ kubeconfig, timeoutMs: opts.timeoutMs ?? 5000 }));
  const { lines, logger } = capture();
  return { owners: new OwnerLookup(api, logger), reads, lines };
}

const template = (app: string, restart = 'Always') => ({
  metadata: { labels: { app } },
  spec: { restartPolicy: restart, containers: [{ name: 'app', image: `registry.example.com/${app}:1` }] },
});
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const ref = (o: any) => ({ apiVersion: o.apiVersion, kind: o.kind, name: o.metadata.name, uid: o.metadata.uid, controller: true, blockOwnerDeletion: true });

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function pod(name: string, owner?: any, app = 'x'): Promise<any> {
  const p = await kube.create({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels: { app }, ...(owner ? { ownerReferences: [ref(owner)] } : {}) },
    spec: template(app).spec,
  });
  uids.set(name, p.metadata.uid);
  return p;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function post(apiPath: string, obj: any): Promise<any> {
  const r = await kube.request('POST', apiPath, { body: obj });
  assert.equal(r.status, 201, r.text);
  return r.body;
}

before(async () => {
  kube = await startKubeApiServer();
  process.stderr.write(`[kubernetes] etcd + kube-apiserver ready in ${kube.readyMs} ms\n`);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-k8sowner-'));
  await applyManifestRbac(kube);
  agentKubeconfig = writeKubeconfig('oomtrail', await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600));
  await kube.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  await kube.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: NS } });
  const sel = (app: string) => ({ matchLabels: { app } });

  // Deployment web → ReplicaSet web-5d4f8c7b9 (its pod-template-hash) → Pod
  const web = await kube.create({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web', namespace: NS }, spec: { selector: sel('web'), template: template('web') } });
  const webRs = await kube.create({ apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'web-5d4f8c7b9', namespace: NS, ownerReferences: [ref(web)] }, spec: { selector: sel('web'), template: template('web') } });
  await pod('web-5d4f8c7b9-x2x7q', webRs, 'web');
  // Deployment shop-api whose ReplicaSet name has no hash shape (made by hand or another tool): the heuristic reads DaemonSet
  const api = await kube.create({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'shop-api', namespace: NS }, spec: { selector: sel('api'), template: template('api') } });
  const apiRs = await kube.create({ apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'shop-api-v2', namespace: NS, ownerReferences: [ref(api)] }, spec: { selector: sel('api'), template: template('api') } });
  await pod('shop-api-v2-kq7zt', apiRs, 'api');
  // CronJob nightly → Job nightly-29412345 → Pod
  const cron = await post(`/apis/batch/v1/namespaces/${NS}/cronjobs`, {
    apiVersion: 'batch/v1',
    kind: 'CronJob',
    metadata: { name: 'nightly', namespace: NS },
    spec: { schedule: '0 3 * * *', jobTemplate: { spec: { template: template('nightly', 'Never') } } },
  });
  const job = await kube.create({ apiVersion: 'batch/v1', kind: 'Job', metadata: { name: 'nightly-29412345', namespace: NS, ownerReferences: [ref(cron)] }, spec: { template: template('nightly', 'Never') } });
  await pod('nightly-29412345-7hq2n', job, 'nightly');
  // StatefulSet db → Pod db-0; DaemonSet agent → Pod agent-x7k2p
  const db = await post(`/apis/apps/v1/namespaces/${NS}/statefulsets`, { apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: NS }, spec: { selector: sel('db'), serviceName: 'db', template: template('db') } });
  await pod('db-0', db, 'db');
  const ds = await kube.create({ apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'agent', namespace: NS }, spec: { selector: sel('agent'), template: template('agent') } });
  await pod('agent-x7k2p', ds, 'agent');
  // a bare Pod, and one named like a StatefulSet's pod
  await pod('debug');
  await pod('tools-1');
});

after(async () => {
  await kube?.destroy();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('owner lookup on a real kube-apiserver, with the manifest\'s RBAC', () => {
  const CASES: Array<[string, string, string, string, string[]]> = [
    ['Deployment → ReplicaSet → Pod', 'web-5d4f8c7b9-x2x7q', 'Deployment', 'web', ['Pod/web-5d4f8c7b9-x2x7q', 'ReplicaSet/web-5d4f8c7b9']],
    ['CronJob → Job → Pod', 'nightly-29412345-7hq2n', 'CronJob', 'nightly', ['Pod/nightly-29412345-7hq2n', 'Job/nightly-29412345']],
    ['StatefulSet → Pod (no second read)', 'db-0', 'StatefulSet', 'db', ['Pod/db-0']],
    ['DaemonSet → Pod', 'agent-x7k2p', 'DaemonSet', 'agent', ['Pod/agent-x7k2p']],
    ['bare Pod', 'debug', 'Pod', 'debug', ['Pod/debug']],
  ];
  for (const [what, name, kind, wl, reads] of CASES) {
    test(what, async () => {
      const l = lookupWith(agentKubeconfig);
      const t0 = process.hrtime.bigint();
      assert.deepEqual(await l.owners.fields(NS, name, uids.get(name)!, 5000), { workload_kind: kind, workload_name: wl, workload_source: 'api' });
      const cold = Number(process.hrtime.bigint() - t0) / 1e6;
      const t1 = process.hrtime.bigint();
      assert.deepEqual(await l.owners.fields(NS, name, uids.get(name)!, 5000), { workload_kind: kind, workload_name: wl, workload_source: 'api' });
      const warm = Number(process.hrtime.bigint() - t1) / 1e6;
      assert.deepEqual(l.reads, reads, 'the second lookup is a cache hit: no request');
      assert.deepEqual(l.lines, []);
      process.stderr.write(`[owner] ${what}: ${reads.length} GET(s) ${cold.toFixed(1)} ms, cached ${warm.toFixed(3)} ms\n`);
    });
  }

  test('pods the heuristic reads wrong, the API reads right', async () => {
    const l = lookupWith(agentKubeconfig);
    assert.deepEqual(workloadOf('shop-api-v2-kq7zt'), { workload_kind: 'DaemonSet', workload_name: 'shop-api-v2' });
    assert.deepEqual(await l.owners.fields(NS, 'shop-api-v2-kq7zt', uids.get('shop-api-v2-kq7zt')!, 5000), { workload_kind: 'Deployment', workload_name: 'shop-api', workload_source: 'api' });
    assert.deepEqual(workloadOf('tools-1'), { workload_kind: 'StatefulSet', workload_name: 'tools' });
    assert.deepEqual(await l.owners.fields(NS, 'tools-1', uids.get('tools-1')!, 5000), { workload_kind: 'Pod', workload_name: 'tools-1', workload_source: 'api' });
  });

  test('a record through the assembler, wired as the agent is: runtime names (CRI labels), then the API owner replaces the guess', async () => {
    const name = 'shop-api-v2-kq7zt';
    const uid = uids.get(name)!;
    const cid = 'c'.repeat(64);
    const sock = path.join(dir, 'fake.sock');
    fs.writeFileSync(sock, '');
    // stand-in runtime: kubelet's CRI labels for the container, as containerd's k8s.io namespace holds them
    const source: RuntimeSource = {
      runtime: 'containerd',
      socket: sock,
      async start(sink) {
        sink.put(cid, { name: 'app', image: 'registry.example.com/api:1', k8s: true, labels: { 'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': NS, 'io.kubernetes.container.name': 'app' } });
        return { runtime: 'containerd', socket: sock, found: true, reachable: true, containers: 1 };
      },
      inspect: async () => null,
      probe: async () => ({ runtime: 'containerd', socket: sock, found: true, reachable: true, containers: 1 }),
      stop() {},
    };
    const cfg = convict(runtimeConfigSchema as never).getProperties() as RuntimeEnrichConfig;
    const runtime = new RuntimeMetadata(cfg, silentLogger(), [source]);
    await runtime.start();
    // the agent's wiring (cli/main.ts): auto + the kubernetes_events sink enabled = the lookup, with the sink's kubeconfig
    const etc = fs.mkdtempSync(path.join(dir, 'etc-'));
    const env = { OOMTRAIL_SINKS_KUBERNETES_EVENTS_KUBECONFIG: agentKubeconfig, OOMTRAIL_PIPELINE_SPOOL_DIR: path.join(dir, 'spool') };
    const withSink = loadConfig({ etcDir: etc, env: { ...env, OOMTRAIL_SINKS_KUBERNETES_EVENTS_ENABLED: 'true' } }).config;
    const withoutSink = loadConfig({ etcDir: etc, env }).config;
    const log = capture();
    const looked = withOwnerLookup(withSink, log.logger, runtime);
    assert.equal(withOwnerLookup(withoutSink, log.logger, runtime), runtime, 'auto without the sink: no lookup');
    assert.deepEqual(log.lines, [`info: owner lookup: workload_kind/workload_name from ${kube.url} (${agentKubeconfig}); from the pod name when it does not answer within 1000 ms`]);
    const clock = { bootNowNs: () => 2_000_000_000n, bootToRealtimeNs: (b: bigint) => b + 1_700_000_000_000_000_000n, printkNowUs: () => 0, printkToRealtimeNs: (p: bigint) => p };
    const facts = { host: 'node-1', bootId: 'b', kernelRelease: '6.12.0', pageSize: 4096, cgroupVersion: 2 as const, agentVersion: 't' };
    const cg = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replace(/-/g, '_')}.slice/cri-containerd-${cid}.scope`;
    const ev = {
      bootNs: 1_000_000_000n, totalVmPages: 1, anonRssPages: 1, fileRssPages: 0, shmemRssPages: 0, pgtablesBytes: 0, gfpMask: 0xcc0, order: 0,
      domainPages: 1, memcgLimitPages: 1, memcgUsagePages: 1, victimPid: 42, victimTid: 42, victimUid: 0, triggerPid: 42, triggerTid: 42,
      oomScoreAdj: 0, hook: 'fentry', constraint: 'memcg', constraintInferred: false, victimComm: 'api', triggerComm: 'api',
      victimCgroup: { id: 1n, path: cg, truncated: false }, oomCgroup: { id: 1n, path: cg, truncated: false },
    } as RawOomEvent;
    for (const [names, kind, wl, source] of [
      [runtime, 'DaemonSet', 'shop-api-v2', 'name'], // the old path: the pod name's guess
      [looked, 'Deployment', 'shop-api', 'api'],
    ] as const) {
      const a = new RecordAssembler({ facts, clock, runtime: names });
      const rec = await a.complete(ev, a.kill(ev), { wait: false });
      assert.deepEqual([rec.pod_uid, rec.pod_name, rec.pod_namespace, rec.k8s_container], [uid, name, NS, 'app']);
      assert.deepEqual([rec.workload_kind, rec.workload_name, rec.workload_source], [kind, wl, source]);
    }
    runtime.stop();
  });

  test('uid mismatch: a pod re-created under the same name does not lend its owner', async () => {
    const old = await pod('worker-0', await post(`/apis/apps/v1/namespaces/${NS}/statefulsets`, { apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'worker', namespace: NS }, spec: { selector: { matchLabels: { app: 'w' } }, serviceName: 'w', template: template('w') } }), 'w');
    // unscheduled (no nodeName): deleted at once, no kubelet needed
    const del = await kube.request('DELETE', `/api/v1/namespaces/${NS}/pods/worker-0`);
    assert.equal(del.status, 200, del.text);
    const again = await pod('worker-0', await kube.create({ apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'other', namespace: NS }, spec: { selector: { matchLabels: { app: 'o' } }, template: template('o') } }), 'o');
    assert.notEqual(again.metadata.uid, old.metadata.uid);
    const l = lookupWith(agentKubeconfig);
    // the record of the old pod: the name's guess, not the new pod's owner
    assert.deepEqual(await l.owners.fields(NS, 'worker-0', old.metadata.uid, 5000), { workload_kind: 'StatefulSet', workload_name: 'worker', workload_source: 'name' });
    assert.deepEqual(await l.owners.fields(NS, 'worker-0', again.metadata.uid, 5000), { workload_kind: 'DaemonSet', workload_name: 'other', workload_source: 'api' });
    assert.equal(l.lines.length, 1, l.lines.join('\n'));
    assert.match(l.lines[0]!, /^info: owner lookup: pod shop\/worker-0 now has another uid/);
  });

  test('a pod gone (404): the heuristic, one info line', async () => {
    const l = lookupWith(agentKubeconfig);
    assert.deepEqual(await l.owners.fields(NS, 'gone-7d9f5c6b8d-q2w4x', '', 5000), { workload_kind: 'Deployment', workload_name: 'gone', workload_source: 'name' });
    assert.deepEqual(l.lines, ['info: owner lookup: Pod shop/gone-7d9f5c6b8d-q2w4x is gone (HTTP 404); that record\'s workload comes from the pod name (logged once)']);
  });

  test('a ClusterRole without get replicasets: 403 → the heuristic, one warning naming the missing rule', async () => {
    // the manifest's ClusterRole less its replicasets rule, bound to another ServiceAccount
    const limited = {
      ...role,
      metadata: { name: 'oomtrail-no-rs' },
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      rules: role.rules.filter((r: any) => !r.resources.includes('replicasets')),
    };
    assert.equal(limited.rules.length, role.rules.length - 1);
    await kube.create(limited);
    await kube.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'limited', namespace: sa.metadata.namespace } });
    await kube.create({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'oomtrail-no-rs' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'oomtrail-no-rs' },
      subjects: [{ kind: 'ServiceAccount', name: 'limited', namespace: sa.metadata.namespace }],
    });
    const limitedKubeconfig = writeKubeconfig('limited', await kube.serviceAccountToken(sa.metadata.namespace, 'limited', 600));
    // `oomtrail check` tells it before any kill: the manifest's role may get all three, this one not replicasets
    const cfg = (kubeconfig: string) => loadConfig({ etcDir: dir, env: { OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'on', OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: kubeconfig } }).config;
    assert.deepEqual((await probeOwnerLookup(cfg(agentKubeconfig), NS)).permissions!.map((p) => [p.kind, p.allowed]), [['Pod', true], ['ReplicaSet', true], ['Job', true]]);
    assert.deepEqual((await probeOwnerLookup(cfg(limitedKubeconfig), NS)).permissions!.map((p) => [p.kind, p.allowed]), [['Pod', true], ['ReplicaSet', false], ['Job', true]]);
    const l = lookupWith(limitedKubeconfig);
    assert.deepEqual(await l.owners.fields(NS, 'web-5d4f8c7b9-x2x7q', uids.get('web-5d4f8c7b9-x2x7q')!, 5000), { workload_kind: 'Deployment', workload_name: 'web', workload_source: 'name' });
    assert.deepEqual(await l.owners.fields(NS, 'shop-api-v2-kq7zt', uids.get('shop-api-v2-kq7zt')!, 5000), { workload_kind: 'DaemonSet', workload_name: 'shop-api-v2', workload_source: 'name' });
    // what it may still read resolves
    assert.deepEqual(await l.owners.fields(NS, 'db-0', uids.get('db-0')!, 5000), { workload_kind: 'StatefulSet', workload_name: 'db', workload_source: 'api' });
    assert.equal(l.lines.length, 1, l.lines.join('\n'));
    assert.equal(
      l.lines[0],
      'warn: owner lookup: get ReplicaSet is forbidden (HTTP 403): the ClusterRole bound to the agent\'s identity needs {apiGroups: ["apps"], resources: ["replicasets"], verbs: ["get"]}; workload_kind/workload_name come from the pod name meanwhile',
    );
  });

  test('API unreachable (connection refused) and silent (no answer): the heuristic, in time, one warning each', async () => {
    // a port nothing listens on
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = lookupWith(writeKubeconfig('refused', 'x', `https://127.0.0.1:${port}`));
    assert.deepEqual(await refused.owners.fields(NS, 'db-0', '', 5000), { workload_kind: 'StatefulSet', workload_name: 'db', workload_source: 'name' });
    await refused.owners.fields(NS, 'debug', '', 5000);
    assert.equal(refused.lines.length, 1, refused.lines.join('\n'));
    assert.match(refused.lines[0]!, /^warn: owner lookup: the API server https:\/\/127\.0\.0\.1:\d+ did not answer \(ECONNREFUSED\)/);
    // a server that accepts and never answers: the record's bound holds, the request's timeout ends the lookup
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const s = lookupWith(writeKubeconfig('silent', 'x', `https://127.0.0.1:${(silent.address() as net.AddressInfo).port}`), { timeoutMs: 600 });
      const t0 = Date.now();
      assert.deepEqual(await s.owners.fields(NS, 'db-0', '', 200), { workload_kind: 'StatefulSet', workload_name: 'db', workload_source: 'name' });
      const ms = Date.now() - t0;
      assert.ok(ms >= 190 && ms < 500, `bounded by 200 ms: ${ms} ms`);
      assert.match(s.lines[0]!, /^warn: owner lookup: no answer within 200 ms/);
      const r = await s.owners.resolve(NS, 'db-0', '');
      assert.deepEqual(r.ok ? r : { ok: r.ok, cause: r.cause }, { ok: false, cause: 'unreachable' });
      assert.match(s.lines[1]!, /did not answer \(ETIMEDOUT\)/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});
