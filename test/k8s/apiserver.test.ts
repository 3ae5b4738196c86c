/*
 * The DaemonSet manifest's RBAC against a real kube-apiserver 1.37 + etcd (built by test/servers/kubernetes/setup.sh):
 * the ServiceAccount, ClusterRole and ClusterRoleBinding are read from deploy/kubernetes/daemonset.yaml and applied
 * as they are; a token minted for that ServiceAccount (TokenRequest API) must be able to do what the agent will do
 * (create and patch events.k8s.io Events, get pods, replicasets and jobs) and nothing else we check (list secrets,
 * list/watch pods, core/v1 events, delete). So a wrong ClusterRole in the manifest fails this test.
 * In `npm test`'s last run (OOMTRAIL_K8S=0 leaves it out); alone: `npm run test:kubernetes`. Never skipped: if the
 * API server cannot be built or started, before() throws and every test fails.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startKubeApiServer, type KubeApiServer } from '../servers/kubernetes/server';
import { AGENT_SA as sa, applyManifestRbac, createWorkloadNamespace } from './fixtures';

const NS = 'shop';

let kube: KubeApiServer;
let saToken = '';
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let pod: any;


/** what the agent's token may do, asked of the API server itself (SelfSubjectAccessReview) */
async function allowed(attrs: Record<string, string>): Promise<boolean> {
  const r = await kube.request('POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
    token: saToken,
    body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: attrs } },
  });
  assert.equal(r.status, 201, r.text);
  return r.body.status.allowed === true;
}

before(async () => {
  kube = await startKubeApiServer();
  process.stderr.write(`[kubernetes] etcd + kube-apiserver ready in ${kube.readyMs} ms\n`);
  // the manifest's namespace and RBAC objects, exactly as written there
  await applyManifestRbac(kube);
  saToken = await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600);
  pod = await createWorkloadNamespace(kube, NS);
  await kube.create({
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: 'nightly-29123', namespace: NS },
    spec: { template: { spec: { restartPolicy: 'Never', containers: [{ name: 'job', image: 'registry.example.com/job:1' }] } } },
  });
});

after(async () => {
  await kube?.destroy();
});

describe('deploy/kubernetes/daemonset.yaml RBAC on a real kube-apiserver', () => {
  test('the API server is the version built, with RBAC on', async () => {
    const r = await kube.request('GET', '/version');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.gitVersion, `v${process.env.KUBERNETES_VERSION ?? '1.37.2'}`);
    // no credential: anonymous may read /version but not the API
    const anon = await kube.request('GET', `/api/v1/namespaces/${NS}/pods`, { token: 'not-a-token' });
    assert.equal(anon.status, 401, anon.text);
  });

  test('the ServiceAccount token is the ServiceAccount, signed by the test key', async () => {
    const r = await kube.request('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
      token: saToken,
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.status.userInfo.username, `system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}`);
  });

  test('creates an events.k8s.io/v1 Event regarding the Pod, and patches its series', async () => {
    const name = `${pod.metadata.name}.${crypto.randomBytes(6).toString('hex')}`;
    const now = new Date().toISOString().replace(/Z$/, '000Z'); // MicroTime: RFC 3339 with microseconds
    const event = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace: NS },
      eventTime: now,
      type: 'Warning',
      reason: 'OOMKill',
      action: 'Killed',
      reportingController: 'oomtrail',
      reportingInstance: 'node-1',
      regarding: { apiVersion: 'v1', kind: 'Pod', namespace: NS, name: pod.metadata.name, uid: pod.metadata.uid },
      note: 'python3 (pid 4242, child) killed: container "app" limit 512Mi hit, anon 480Mi (cause anon); container kept running',
    };
    const created = await kube.request('POST', `/apis/events.k8s.io/v1/namespaces/${NS}/events`, { token: saToken, body: event });
    assert.equal(created.status, 201, created.text);
    const patched = await kube.request('PATCH', `/apis/events.k8s.io/v1/namespaces/${NS}/events/${name}`, {
      token: saToken,
      contentType: 'application/merge-patch+json',
      body: { series: { count: 2, lastObservedTime: now } },
    });
    assert.equal(patched.status, 200, patched.text);
    // read back as the admin (the agent may not read events)
    const got = await kube.request('GET', `/apis/events.k8s.io/v1/namespaces/${NS}/events/${name}`);
    assert.equal(got.status, 200, got.text);
    assert.equal(got.body.regarding.uid, pod.metadata.uid);
    assert.equal(got.body.series.count, 2);
    assert.equal(got.body.note, event.note);
  });

  test('gets the pod and its owners (ReplicaSet, Job)', async () => {
    const p = await kube.request('GET', `/api/v1/namespaces/${NS}/pods/${pod.metadata.name}`, { token: saToken });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.body.metadata.uid, pod.metadata.uid);
    const rs = await kube.request('GET', `/apis/apps/v1/namespaces/${NS}/replicasets/${p.body.metadata.ownerReferences[0].name}`, { token: saToken });
    assert.equal(rs.status, 200, rs.text);
    const job = await kube.request('GET', `/apis/batch/v1/namespaces/${NS}/jobs/nightly-29123`, { token: saToken });
    assert.equal(job.status, 200, job.text);
  });

  test('listing secrets is forbidden (403)', async () => {
    const r = await kube.request('GET', `/api/v1/namespaces/${NS}/secrets`, { token: saToken });
    assert.equal(r.status, 403, r.text);
    assert.equal(r.body.reason, 'Forbidden');
    const all = await kube.request('GET', '/api/v1/secrets', { token: saToken });
    assert.equal(all.status, 403, all.text);
  });

  test('nothing beyond what the agent needs: no list/watch, no core events, no writes to workloads', async () => {
    const list = await kube.request('GET', `/api/v1/namespaces/${NS}/pods`, { token: saToken });
    assert.equal(list.status, 403, list.text);
    const denied: Array<Record<string, string>> = [
      { verb: 'get', resource: 'secrets', namespace: NS },
      { verb: 'list', resource: 'pods', namespace: NS },
      { verb: 'watch', resource: 'pods' },
      { verb: 'delete', resource: 'pods', namespace: NS },
      { verb: 'create', resource: 'events', namespace: NS }, // core/v1 events: the agent writes events.k8s.io
      { verb: 'get', group: 'events.k8s.io', resource: 'events', namespace: NS },
      { verb: 'delete', group: 'events.k8s.io', resource: 'events', namespace: NS },
      { verb: 'update', group: 'apps', resource: 'replicasets', namespace: NS },
      { verb: 'get', group: 'apps', resource: 'deployments', namespace: NS },
      { verb: 'create', group: 'batch', resource: 'jobs', namespace: NS },
      { verb: 'get', resource: 'nodes' },
    ];
    for (const attrs of denied) assert.equal(await allowed(attrs), false, JSON.stringify(attrs));
    // and the check itself can say yes
    assert.equal(await allowed({ verb: 'patch', group: 'events.k8s.io', resource: 'events', namespace: NS }), true);
  });

  // what the sink's outage test will do: the API gone (connection refused), then back with the same data and keys
  test('kube-apiserver stopped and started again: refused meanwhile, then the same objects and the same token work', async () => {
    await kube.stopApiServer();
    await assert.rejects(kube.request('GET', '/readyz'), /ECONNREFUSED/);
    const t0 = Date.now();
    await kube.runApiServer();
    process.stderr.write(`[kubernetes] kube-apiserver ready again in ${Date.now() - t0} ms\n`);
    const p = await kube.request('GET', `/api/v1/namespaces/${NS}/pods/${pod.metadata.name}`, { token: saToken });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.body.metadata.uid, pod.metadata.uid);
  });
});
