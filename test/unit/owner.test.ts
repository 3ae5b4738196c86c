/*
 * The owner lookup's resolution logic (src/pipeline/assemble/owner.ts) against a stand-in KubeApi (named: objects
 * in a map, answering as host/kubeapi.ts does — status, object, KubeTransportError). The real API server's side is
 * test/k8s/owner.test.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../../src/config/errors';
import { loadConfig } from '../../src/config/load';
import { preflight } from '../../src/cli/preflight';
import { ownerKubeconfig, ownerLookupEnabled } from '../../src/pipeline/assemble/kubernetes-config';
import { KubeTransportError, type KubeAnswer, type KubeApi, type OwnerReadKind } from '../../src/host/kubeapi';
import { OwnerLookup, probeOwnerLookup, withOwners } from '../../src/pipeline/assemble/owner';
import type { OomRecord } from '../../src/record/record';

const NS = 'shop';

interface Obj {
  metadata: { name: string; uid: string; ownerReferences?: unknown[]; annotations?: Record<string, string> };
}

class FakeApi implements KubeApi {
  readonly server = 'https://api.test:6443';
  readonly objects = new Map<string, Obj>();
  readonly status = new Map<string, number>();
  readonly calls: string[] = [];
  delayMs = 0;
  down = false;
  add(kind: OwnerReadKind, name: string, uid: string, owner?: { apiVersion: string; kind: string; name: string; uid?: string; controller?: boolean }, annotations?: Record<string, string>): void {
    const metadata: Obj['metadata'] = { name, uid };
    if (owner) metadata.ownerReferences = [{ uid: `${owner.name}-uid`, controller: true, ...owner }];
    if (annotations) metadata.annotations = annotations;
    this.objects.set(`${kind}/${NS}/${name}`, { metadata });
  }
  async read(kind: OwnerReadKind, namespace: string, name: string): Promise<KubeAnswer> {
    const key = `${kind}/${namespace}/${name}`;
    this.calls.push(key);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.down) throw new KubeTransportError('connect ECONNREFUSED', 'ECONNREFUSED');
    const st = this.status.get(kind);
    if (st) return { status: st, text: '{"kind":"Status"}', retryAfter: null };
    const o = this.objects.get(key);
    return o ? { status: 200, text: '', retryAfter: null, object: o } : { status: 404, text: '{"kind":"Status","reason":"NotFound"}', retryAfter: null };
  }
  createEvent(): Promise<KubeAnswer> {
    throw new Error('not used');
  }
  patchEvent(): Promise<KubeAnswer> {
    throw new Error('not used');
  }
  eventsApiResources(): Promise<KubeAnswer> {
    throw new Error('not used');
  }
}

function logs() {
  const lines: string[] = [];
  return { lines, logger: { warn: (m: string) => lines.push(`warn: ${m}`), info: (m: string) => lines.push(`info: ${m}`) } as never };
}

const RS = { apiVersion: 'apps/v1', kind: 'ReplicaSet' };
const JOB = { apiVersion: 'batch/v1', kind: 'Job' };

function cluster(): FakeApi {
  const api = new FakeApi();
  api.add('Pod', 'web-5d4f8c7b9-x2x7q', 'u-web', { ...RS, name: 'web-5d4f8c7b9', uid: 'rs-web' });
  api.add('ReplicaSet', 'web-5d4f8c7b9', 'rs-web', { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web' });
  api.add('Pod', 'nightly-29123456-abcde', 'u-cron', { ...JOB, name: 'nightly-29123456', uid: 'job-n' });
  api.add('Job', 'nightly-29123456', 'job-n', { apiVersion: 'batch/v1', kind: 'CronJob', name: 'nightly' });
  api.add('Pod', 'db-0', 'u-db', { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db' });
  api.add('Pod', 'agent-x7k2p', 'u-ds', { apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'agent' });
  api.add('Pod', 'debug', 'u-debug');
  // a bare pod named like a StatefulSet's: the heuristic reads StatefulSet "tools"
  api.add('Pod', 'tools-1', 'u-tools');
  // a ReplicaSet nobody owns, and a one-off Job
  api.add('Pod', 'lone-7d9f5c6b8d-q2w4e', 'u-lone', { ...RS, name: 'lone-7d9f5c6b8d', uid: 'rs-lone' });
  api.add('ReplicaSet', 'lone-7d9f5c6b8d', 'rs-lone');
  api.add('Pod', 'migrate-kq7zt', 'u-mig', { ...JOB, name: 'migrate', uid: 'job-m' });
  api.add('Job', 'migrate', 'job-m');
  // Argo Rollouts owns ReplicaSets; KubeVirt owns its launcher pods directly
  api.add('Pod', 'canary-6f4b9c7d5f-9zkxw', 'u-ro', { ...RS, name: 'canary-6f4b9c7d5f', uid: 'rs-ro' });
  api.add('ReplicaSet', 'canary-6f4b9c7d5f', 'rs-ro', { apiVersion: 'argoproj.io/v1alpha1', kind: 'Rollout', name: 'canary' });
  api.add('Pod', 'virt-launcher-vm1-abcde', 'u-vm', { apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', name: 'vm1' });
  // a static pod's mirror: owned by the Node, its uid the API's, the static uid in the annotation
  api.add('Pod', 'etcd-node-1', 'u-mirror', { apiVersion: 'v1', kind: 'Node', name: 'node-1' }, { 'kubernetes.io/config.mirror': 'ab'.repeat(16) });
  return api;
}

const CASES: Array<[string, string, string, string, string, number]> = [
  ['Deployment → ReplicaSet → Pod', 'web-5d4f8c7b9-x2x7q', 'u-web', 'Deployment', 'web', 2],
  ['CronJob → Job → Pod', 'nightly-29123456-abcde', 'u-cron', 'CronJob', 'nightly', 2],
  ['StatefulSet → Pod: no second request', 'db-0', 'u-db', 'StatefulSet', 'db', 1],
  ['DaemonSet → Pod', 'agent-x7k2p', 'u-ds', 'DaemonSet', 'agent', 1],
  ['bare Pod', 'debug', 'u-debug', 'Pod', 'debug', 1],
  ['bare Pod named like a StatefulSet pod', 'tools-1', 'u-tools', 'Pod', 'tools-1', 1],
  ['ReplicaSet without a Deployment', 'lone-7d9f5c6b8d-q2w4e', 'u-lone', 'ReplicaSet', 'lone-7d9f5c6b8d', 2],
  ['Job without a CronJob', 'migrate-kq7zt', 'u-mig', 'Job', 'migrate', 2],
  ['a CRD owning the ReplicaSet (Rollout)', 'canary-6f4b9c7d5f-9zkxw', 'u-ro', 'Rollout', 'canary', 2],
  ['a CRD owning the Pod', 'virt-launcher-vm1-abcde', 'u-vm', 'VirtualMachineInstance', 'vm1', 1],
  ['static pod: mirror owned by the Node, uid the static one', 'etcd-node-1', 'ab'.repeat(16), 'Pod', 'etcd-node-1', 1],
  ['uid unknown: the pod of that name', 'web-5d4f8c7b9-x2x7q', '', 'Deployment', 'web', 2],
];

for (const [what, pod, uid, kind, name, requests] of CASES) {
  test(`owner: ${what}`, async () => {
    const api = cluster();
    const { lines, logger } = logs();
    const owners = new OwnerLookup(api, logger);
    assert.deepEqual(await owners.fields(NS, pod, uid, 1000), { workload_kind: kind, workload_name: name, workload_source: 'api' });
    assert.equal(api.calls.length, requests, api.calls.join(' '));
    assert.ok(api.calls.every((c) => /^(Pod|ReplicaSet|Job)\//.test(c)), 'only pods, replicasets and jobs are read');
    assert.deepEqual(lines, []);
  });
}

test('owner: the heuristic is wrong where the API is right (bare pod "tools-1", a Rollout, a lone ReplicaSet)', async () => {
  const { workloadOf } = await import('../../src/pipeline/assemble/workload');
  assert.deepEqual(workloadOf('tools-1'), { workload_kind: 'StatefulSet', workload_name: 'tools' });
  assert.deepEqual(workloadOf('canary-6f4b9c7d5f-9zkxw'), { workload_kind: 'Deployment', workload_name: 'canary' });
  const owners = new OwnerLookup(cluster(), logs().logger);
  assert.equal((await owners.fields(NS, 'tools-1', 'u-tools', 1000)).workload_kind, 'Pod');
  assert.equal((await owners.fields(NS, 'canary-6f4b9c7d5f-9zkxw', 'u-ro', 1000)).workload_kind, 'Rollout');
});

test('owner: a second lookup of the same pod is served from the cache (no request) until the TTL', async () => {
  const api = cluster();
  let now = 1_000_000;
  const owners = new OwnerLookup(api, logs().logger, { ttlMs: 60_000, now: () => now });
  await owners.resolve(NS, 'web-5d4f8c7b9-x2x7q', 'u-web');
  assert.equal(api.calls.length, 2);
  assert.deepEqual(await owners.resolve(NS, 'web-5d4f8c7b9-x2x7q', 'u-web'), { ok: true, kind: 'Deployment', name: 'web' });
  assert.equal(api.calls.length, 2, 'cache hit: no request');
  assert.equal(owners.requests, 2);
  now += 60_001;
  await owners.resolve(NS, 'web-5d4f8c7b9-x2x7q', 'u-web');
  assert.equal(api.calls.length, 4, 'expired: asked again');
});

test('owner: concurrent lookups of one pod share one request chain', async () => {
  const api = cluster();
  api.delayMs = 20;
  const owners = new OwnerLookup(api, logs().logger);
  const all = await Promise.all(Array.from({ length: 50 }, () => owners.fields(NS, 'web-5d4f8c7b9-x2x7q', 'u-web', 1000)));
  assert.ok(all.every((f) => f.workload_kind === 'Deployment' && f.workload_source === 'api'));
  assert.deepEqual(api.calls, [`Pod/${NS}/web-5d4f8c7b9-x2x7q`, `ReplicaSet/${NS}/web-5d4f8c7b9`]);
});

test('owner: the cache is bounded, least recently used evicted', async () => {
  const api = new FakeApi();
  for (let i = 0; i < 10; i++) api.add('Pod', `p${i}`, `u${i}`);
  const owners = new OwnerLookup(api, logs().logger, { maxPods: 4 });
  for (let i = 0; i < 4; i++) await owners.resolve(NS, `p${i}`, `u${i}`);
  await owners.resolve(NS, 'p0', 'u0'); // p0 used again: p1 is now the oldest
  for (let i = 4; i < 10; i++) await owners.resolve(NS, `p${i}`, `u${i}`);
  assert.equal(owners.size, 4);
  const before = api.calls.length;
  for (let i = 6; i < 10; i++) await owners.resolve(NS, `p${i}`, `u${i}`);
  assert.equal(api.calls.length, before, 'the 4 most recent are cached');
  await owners.resolve(NS, 'p1', 'u1');
  assert.equal(api.calls.length, before + 1, 'an evicted one is asked again');
});

test('owner: 403 on replicasets → the pod-name heuristic and ONE warning naming the missing rule', async () => {
  const api = cluster();
  api.status.set('ReplicaSet', 403);
  const { lines, logger } = logs();
  const owners = new OwnerLookup(api, logger);
  assert.deepEqual(await owners.fields(NS, 'web-5d4f8c7b9-x2x7q', 'u-web', 1000), { workload_kind: 'Deployment', workload_name: 'web', workload_source: 'name' });
  assert.deepEqual(await owners.fields(NS, 'canary-6f4b9c7d5f-9zkxw', 'u-ro', 1000), { workload_kind: 'Deployment', workload_name: 'canary', workload_source: 'name' });
  // pods are allowed: a StatefulSet's pod still resolves
  assert.deepEqual(await owners.fields(NS, 'tools-1', 'u-tools', 1000), { workload_kind: 'Pod', workload_name: 'tools-1', workload_source: 'api' });
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0]!, /^warn: owner lookup: get ReplicaSet is forbidden \(HTTP 403\).*\{apiGroups: \["apps"\], resources: \["replicasets"\], verbs: \["get"\]\}/);
  // another missing permission is another cause: its own line
  api.status.set('Pod', 403);
  await owners.fields(NS, 'db-0', 'u-db', 1000);
  await owners.fields(NS, 'debug', 'u-debug', 1000);
  assert.equal(lines.length, 2, lines.join('\n'));
  assert.match(lines[1]!, /resources: \["pods"\]/);
});

test('owner: failures are cached briefly, then asked again', async () => {
  const api = cluster();
  api.status.set('Pod', 403);
  let now = 0;
  const owners = new OwnerLookup(api, logs().logger, { errorTtlMs: 5000, now: () => now });
  await owners.resolve(NS, 'debug', 'u-debug');
  await owners.resolve(NS, 'debug', 'u-debug');
  assert.equal(api.calls.length, 1);
  api.status.delete('Pod');
  now += 5001;
  assert.deepEqual(await owners.resolve(NS, 'debug', 'u-debug'), { ok: true, kind: 'Pod', name: 'debug' });
});

test('owner: API unreachable → heuristic, one warning; 404 (pod gone) → heuristic, logged once at info', async () => {
  const api = cluster();
  api.down = true;
  const { lines, logger } = logs();
  const owners = new OwnerLookup(api, logger);
  assert.deepEqual(await owners.fields(NS, 'db-0', 'u-db', 1000), { workload_kind: 'StatefulSet', workload_name: 'db', workload_source: 'name' });
  await owners.fields(NS, 'debug', 'u-debug', 1000);
  api.down = false;
  assert.deepEqual(await owners.fields(NS, 'gone-0', 'u-gone', 1000), { workload_kind: 'StatefulSet', workload_name: 'gone', workload_source: 'name' });
  await owners.fields(NS, 'gone-1', 'u-gone1', 1000);
  assert.equal(lines.length, 2, lines.join('\n'));
  assert.match(lines[0]!, /^warn: owner lookup: the API server https:\/\/api\.test:6443 did not answer \(ECONNREFUSED\)/);
  assert.match(lines[1]!, /^info: owner lookup: Pod shop\/gone-0 is gone \(HTTP 404\)/);
});

test('owner: a pod re-created under the same name does not lend its owner (uid mismatch)', async () => {
  const api = cluster();
  const owners = new OwnerLookup(api, logs().logger);
  // the record's pod (uid u-old) was a bare pod named like a StatefulSet's; the name now belongs to another pod
  assert.deepEqual(await owners.fields(NS, 'db-0', 'u-old', 1000), { workload_kind: 'StatefulSet', workload_name: 'db', workload_source: 'name' });
  api.add('Pod', 'web-5d4f8c7b9-x2x7q', 'u-new', { apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'other' });
  assert.equal((await owners.fields(NS, 'web-5d4f8c7b9-x2x7q', 'u-web', 1000)).workload_source, 'name');
  assert.equal((await owners.fields(NS, 'web-5d4f8c7b9-x2x7q', 'u-new', 1000)).workload_name, 'other');
  // a cached owner is cached for its uid only
  const api2 = cluster();
  const o2 = new OwnerLookup(api2, logs().logger);
  await o2.resolve(NS, 'db-0', 'u-db');
  assert.equal((await o2.resolve(NS, 'db-0', 'u-other')).ok, false);
});

test('owner: a ReplicaSet re-created under the owner reference\'s name is not the pod\'s owner', async () => {
  const api = cluster();
  api.add('ReplicaSet', 'web-5d4f8c7b9', 'rs-web-2', { apiVersion: 'apps/v1', kind: 'Deployment', name: 'impostor' });
  const owners = new OwnerLookup(api, logs().logger);
  assert.deepEqual(await owners.fields(NS, 'web-5d4f8c7b9-x2x7q', 'u-web', 1000), { workload_kind: 'Deployment', workload_name: 'web', workload_source: 'name' });
});

test('owner: a record never waits past its bound; the lookup goes on and fills the cache', async () => {
  const api = cluster();
  api.delayMs = 300;
  const { lines, logger } = logs();
  const owners = new OwnerLookup(api, logger);
  const t0 = Date.now();
  assert.deepEqual(await owners.fields(NS, 'tools-1', 'u-tools', 50), { workload_kind: 'StatefulSet', workload_name: 'tools', workload_source: 'name' });
  const ms = Date.now() - t0;
  assert.ok(ms >= 45 && ms < 250, `${ms} ms`);
  assert.match(lines[0]!, /no answer within 50 ms/);
  await new Promise((r) => setTimeout(r, 400));
  assert.deepEqual(await owners.fields(NS, 'tools-1', 'u-tools', 0), { workload_kind: 'Pod', workload_name: 'tools-1', workload_source: 'api' });
  assert.equal(api.calls.length, 1);
});

test('owner: while the API is silent, records of other pods do not each wait the bound; an answer ends that', async () => {
  const api = cluster();
  api.delayMs = 300;
  const owners = new OwnerLookup(api, logs().logger, { errorTtlMs: 10_000 });
  const t0 = Date.now();
  await owners.fields(NS, 'db-0', 'u-db', 100);
  const first = Date.now() - t0;
  assert.ok(first >= 95, `the first record waits its bound: ${first} ms`);
  const t1 = Date.now();
  for (const [pod, uid] of [['agent-x7k2p', 'u-ds'], ['debug', 'u-debug'], ['tools-1', 'u-tools']]) {
    assert.equal((await owners.fields(NS, pod!, uid!, 100)).workload_source, 'name');
  }
  const next = Date.now() - t1;
  assert.ok(next < 60, `the next three do not wait: ${next} ms`);
  // the answers arrive: records wait (and get the API's owner) again
  await new Promise((r) => setTimeout(r, 400));
  api.delayMs = 0;
  assert.deepEqual(await owners.fields(NS, 'nightly-29123456-abcde', 'u-cron', 100), { workload_kind: 'CronJob', workload_name: 'nightly', workload_source: 'api' });
  // unreachable: the same (without waiting for the bound first)
  const down = cluster();
  down.down = true;
  const o2 = new OwnerLookup(down, logs().logger);
  await o2.fields(NS, 'db-0', 'u-db', 1000);
  down.delayMs = 300;
  const t2 = Date.now();
  await o2.fields(NS, 'debug', 'u-debug', 1000);
  assert.ok(Date.now() - t2 < 60, `${Date.now() - t2} ms`);
});

test('owner: hostile names are never sent and never returned', async () => {
  const api = cluster();
  const owners = new OwnerLookup(api, logs().logger);
  for (const [ns, pod] of [
    ['shop', 'a'.repeat(254)],
    ['shop', 'Web-0'],
    ['shop', '../../secrets/x'],
    ['Shop', 'web-0'],
    ['s'.repeat(64), 'web-0'],
    ['shop', 'web-0\n'],
  ]) {
    assert.equal((await owners.resolve(ns!, pod!, '')).ok, false, `${ns}/${pod}`);
  }
  assert.equal((await owners.resolve(NS, 'web-0', 'not a uid')).ok, false);
  assert.deepEqual(api.calls, []);
  // an owner reference the API would never hold (an operator wrote it through a proxy, a corrupted object)
  for (const ref of [
    { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'x'.repeat(254) },
    { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'has space' },
    { apiVersion: 'apps/v1', kind: 'not a kind', name: 'x' },
    { apiVersion: 'apps/v1', kind: 'K'.repeat(64), name: 'x' },
  ]) {
    const a = new FakeApi();
    a.add('Pod', 'odd-0', 'u', ref);
    const o = new OwnerLookup(a, logs().logger);
    assert.deepEqual(await o.fields(NS, 'odd-0', 'u', 1000), { workload_kind: 'StatefulSet', workload_name: 'odd', workload_source: 'name' }, JSON.stringify(ref).slice(0, 80));
  }
});

test('owner: lookups in flight are bounded; beyond them records take the heuristic at once', async () => {
  const api = new FakeApi();
  api.delayMs = 100;
  for (let i = 0; i < 6; i++) api.add('Pod', `p-${i}`, `u${i}`);
  const owners = new OwnerLookup(api, logs().logger, { maxInFlight: 4 });
  const r = await Promise.all(Array.from({ length: 6 }, (_, i) => owners.resolve(NS, `p-${i}`, `u${i}`)));
  assert.deepEqual(r.map((x) => x.ok), [true, true, true, true, false, false]);
  assert.equal(api.calls.length, 4);
  // "busy" is not cached: asked once a slot is free
  assert.equal((await owners.resolve(NS, 'p-5', 'u5')).ok, true);
});

test('withOwners: the API owner replaces the runtime names\' guess; records without a pod pass as they are', async () => {
  const api = cluster();
  const owners = new OwnerLookup(api, logs().logger);
  const names: Partial<OomRecord> = { pod_name: 'tools-1', pod_namespace: NS, k8s_container: 'app', workload_kind: 'StatefulSet', workload_name: 'tools', workload_source: 'name' };
  const inner = { annotate: async () => names };
  const out = await withOwners(inner, owners, 1000).annotate({ pod_uid: 'u-tools' } as OomRecord);
  assert.deepEqual(out, { ...names, workload_kind: 'Pod', workload_name: 'tools-1', workload_source: 'api' });
  const none = await withOwners({ annotate: async () => ({ container_name: 'x' }) }, owners, 1000).annotate({ pod_uid: '' } as OomRecord);
  assert.deepEqual(none, { container_name: 'x' });
  assert.equal(api.calls.length, 1);
});

describe('enrich.kubernetes configuration', () => {
  const etc = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-owner-cfg-'));
  after(() => fs.rmSync(etc, { recursive: true, force: true }));
  const load = (env: Record<string, string>) => loadConfig({ etcDir: etc, env: { OOMTRAIL_PIPELINE_SPOOL_DIR: path.join(etc, 'spool'), OOMTRAIL_METRICS_LISTEN: '', ...env } });

  test('auto: on with the kubernetes_events sink only; on; off', () => {
    const k = load({}).config.enrich.kubernetes;
    assert.deepEqual(k, { owner_lookup: 'auto', kubeconfig: '', lookup_timeout_ms: 1000, request_timeout_ms: 5000, cache_ttl_ms: 600000, max_pods: 4096 });
    assert.equal(ownerLookupEnabled(k, false), false);
    assert.equal(ownerLookupEnabled(k, true), true);
    assert.equal(ownerLookupEnabled({ ...k, owner_lookup: 'on' }, false), true);
    assert.equal(ownerLookupEnabled({ ...k, owner_lookup: 'off' }, true), false);
    assert.equal(ownerKubeconfig(k, '/etc/oomtrail/kubeconfig'), '/etc/oomtrail/kubeconfig', "'' follows the sink's");
    assert.equal(ownerKubeconfig({ ...k, kubeconfig: '/k' }, '/etc/oomtrail/kubeconfig'), '/k');
  });

  test('bad values: a ConfigError (exit 78) naming the key', () => {
    for (const [env, key] of [
      [{ OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'maybe' }, 'enrich.kubernetes.owner_lookup'],
      [{ OOMTRAIL_ENRICH_KUBERNETES_LOOKUP_TIMEOUT_MS: '-1' }, 'enrich.kubernetes.lookup_timeout_ms'],
      [{ OOMTRAIL_ENRICH_KUBERNETES_MAX_PODS: '0' }, 'enrich.kubernetes.max_pods'],
      [{ OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: '/a\nb' }, 'enrich.kubernetes.kubeconfig'],
      // pod names come only from the runtimes
      [{ OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'on', OOMTRAIL_ENRICH_RUNTIME_ENABLED: 'false' }, 'enrich.kubernetes.owner_lookup'],
    ] as const) {
      assert.throws(() => load(env), (e: unknown) => e instanceof ConfigError && e.key === key && e.exitCode === 78 && e.message.includes(key), JSON.stringify(env));
    }
  });

  test('pre-flight: an unusable kubeconfig (or no cluster) names enrich.kubernetes.kubeconfig; the sink\'s own is left to the sink', async () => {
    const missing = path.join(etc, 'nope.kubeconfig');
    const { config, originOf } = load({ OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'on', OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: missing });
    const mine = (await preflight(config, originOf)).problems.filter((p) => p.key?.startsWith('enrich.'));
    assert.equal(mine.length, 1, JSON.stringify(mine));
    assert.equal(mine[0]!.message, `env OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: enrich.kubernetes.kubeconfig: cannot read ${missing}: ENOENT`);
    const off = load({ OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'off', OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: missing });
    assert.deepEqual((await preflight(off.config, off.originOf)).problems.filter((p) => p.key?.startsWith('enrich.')), []);
    const auto = load({ OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: missing });
    assert.deepEqual((await preflight(auto.config, auto.originOf)).problems.filter((p) => p.key?.startsWith('enrich.')), [], 'auto without the sink: not used, not read');
  });

  test('oomtrail check: off and why; on: get allowed (404 of a probe name) or FORBIDDEN per kind, no answer said so', async () => {
    assert.deepEqual(await probeOwnerLookup(load({}).config), { enabled: false, detail: 'off (auto, the kubernetes_events sink is disabled): from the pod name' });
    assert.deepEqual(await probeOwnerLookup(load({ OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'off' }).config), { enabled: false, detail: 'off (enrich.kubernetes.owner_lookup: off): from the pod name' });
    const on = load({ OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'on', OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: '/etc/k' }).config;
    const api = cluster();
    api.status.set('ReplicaSet', 403);
    let opened: unknown;
    const st = await probeOwnerLookup(on, 'default', ((o: unknown) => ((opened = o), api)) as never);
    assert.deepEqual(opened, { kubeconfig: '/etc/k', timeoutMs: 5000 });
    assert.deepEqual(st, {
      enabled: true,
      detail: 'from https://api.test:6443 (/etc/k)',
      server: 'https://api.test:6443',
      permissions: [
        { kind: 'Pod', allowed: true, detail: 'get allowed' },
        { kind: 'ReplicaSet', allowed: false, detail: 'get FORBIDDEN: the ClusterRole needs {apiGroups: ["apps"], resources: ["replicasets"], verbs: ["get"]}' },
        { kind: 'Job', allowed: true, detail: 'get allowed' },
      ],
    });
    api.down = true;
    assert.deepEqual((await probeOwnerLookup(on, 'default', (() => api) as never)).permissions!.map((p) => [p.allowed, p.detail]), Array(3).fill([null, 'no answer (ECONNREFUSED)']));
    assert.equal((await probeOwnerLookup(on, 'default', (() => { throw Object.assign(new Error('x'), { code: 'ENOENT', path: '/etc/k' }); }) as never)).detail, 'enrich.kubernetes.kubeconfig: cannot read /etc/k: ENOENT');
  });

  test('with the lookup off (the default without the sink), the pre-flight loads no Kubernetes client', () => {
    const out = execFileSync(
      process.execPath,
      [
        '-e',
        `const { loadConfig } = require(${JSON.stringify(path.resolve(__dirname, '../../src/config/load.js'))});
         const { preflight } = require(${JSON.stringify(path.resolve(__dirname, '../../src/cli/preflight.js'))});
         const { config, originOf } = loadConfig({ etcDir: ${JSON.stringify(etc)}, env: { OOMTRAIL_PIPELINE_SPOOL_DIR: ${JSON.stringify(path.join(etc, 'spool2'))}, OOMTRAIL_METRICS_LISTEN: '' } });
         preflight(config, originOf).then(() => {
           console.log(JSON.stringify(Object.keys(require.cache).filter((f) => /@kubernetes[\\/]client-node/.test(f)).length));
         });`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(out.trim(), '0');
  });

  test('with the sink and the lookup on, the pre-flight checks their kubeconfigs without loading the client (it loads after the BPF objects)', () => {
    fs.writeFileSync(path.join(etc, 'ca-pf.crt'), 'CA');
    const kc = path.join(etc, 'pf.kubeconfig');
    fs.writeFileSync(kc, 'apiVersion: v1\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority: ca-pf.crt}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n');
    const out = execFileSync(
      process.execPath,
      [
        '-e',
        `const { loadConfig } = require(${JSON.stringify(path.resolve(__dirname, '../../src/config/load.js'))});
         const { preflight } = require(${JSON.stringify(path.resolve(__dirname, '../../src/cli/preflight.js'))});
         const { config, originOf } = loadConfig({ etcDir: ${JSON.stringify(etc)}, env: { OOMTRAIL_PIPELINE_SPOOL_DIR: ${JSON.stringify(path.join(etc, 'spool3'))}, OOMTRAIL_METRICS_LISTEN: '',
           OOMTRAIL_SINKS_KUBERNETES_EVENTS_ENABLED: 'true', OOMTRAIL_SINKS_KUBERNETES_EVENTS_KUBECONFIG: ${JSON.stringify(kc)},
           OOMTRAIL_ENRICH_KUBERNETES_OWNER_LOOKUP: 'on', OOMTRAIL_ENRICH_KUBERNETES_KUBECONFIG: ${JSON.stringify(kc)} } });
         preflight(config, originOf).then((r) => {
           console.log(JSON.stringify({ problems: r.problems.map((p) => p.message), loaded: Object.keys(require.cache).filter((f) => /@kubernetes[\\/]client-node/.test(f)).length }));
         });`,
      ],
      { encoding: 'utf8' },
    );
    assert.deepEqual(JSON.parse(out.trim()), { problems: [], loaded: 0 });
  });
});
