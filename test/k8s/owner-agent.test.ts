/*
 * The real agent (`oomtrail run`) with enrich.kubernetes.owner_lookup on, against a real kube-apiserver 1.37 + etcd
 * (the DaemonSet manifest's RBAC, a TokenRequest token in a kubeconfig) and a real containerd (Debian's 1.6, started
 * here): containers labelled as kubelet's CRI plugin labels them, in a kubepods-style cgroup (cgroupfs driver) whose
 * pod uid is the one the API server gave the Pod, are OOM-killed for real. The Pod `api-v2-kq7zt` belongs to
 * Deployment `api` through ReplicaSet `api-v2` (a name without a pod-template-hash: the pod-name heuristic reads
 * DaemonSet `api-v2`). The records, and the per-workload counter, must name Deployment `api` from the API; a kill
 * under another uid (the pod re-created since) must not take the owner of the pod now under that name.
 * Not in `npm test`: `npm run test:kubernetes`. Needs root (BPF, cgroups). Never skipped.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { CACHE_ROOT } from '../servers/common';
import { ensureImage, IMAGE, startContainerd, type Containerd } from '../servers/containerd/engine';
import { REPO, startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { httpGet, metricsBase, Scrape } from '../helpers/metrics';
import { startKubeApiServer, type KubeApiServer } from '../servers/kubernetes/server';
import type { OomRecord } from '../../src/record/record';

const MANIFEST = path.join(REPO, 'deploy/kubernetes/daemonset.yaml');
// the image store persists between runs (shared with test/e2e/runtime-containerd.e2e.test.ts)
const ROOT = path.join(CACHE_ROOT, 'containerd', 'runtime-test-root');
const CNS = 'k8s.io';
const NS = 'payments';
const POD = 'api-v2-kq7zt';
const MEMCG = '/sys/fs/cgroup/memory';

describe('the agent names the workload from the API (real OOM kills, real containerd, real kube-apiserver)', { timeout: 300_000 }, () => {
  let kube: KubeApiServer;
  let c: Containerd;
  let agent: RunningAgent;
  let dir = '';
  let uid = '';
  const ids: string[] = [];
  const cgroups: string[] = [];

  before(async () => {
    kube = await startKubeApiServer();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-k8sagent-'));
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const docs = yaml.loadAll(fs.readFileSync(MANIFEST, 'utf8')) as any[];
    for (const kind of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']) for (const o of docs.filter((d) => d.kind === kind)) await kube.create(o);
    const sa = docs.find((d) => d.kind === 'ServiceAccount');
    fs.writeFileSync(path.join(dir, 'ca.crt'), kube.ca);
    const kubeconfig = path.join(dir, 'agent.kubeconfig');
    fs.writeFileSync(
      kubeconfig,
      yaml.dump({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'test', cluster: { server: kube.url, 'certificate-authority': 'ca.crt' } }],
        users: [{ name: 'oomtrail', user: { token: await kube.serviceAccountToken(sa.metadata.namespace, sa.metadata.name, 600) } }],
        contexts: [{ name: 'oomtrail', context: { cluster: 'test', user: 'oomtrail' } }],
        'current-context': 'oomtrail',
      }),
      { mode: 0o600 },
    );
    await kube.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    await kube.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: NS } });
    const template = { metadata: { labels: { app: 'api' } }, spec: { containers: [{ name: 'worker', image: 'registry.example.com/api:1' }] } };
    const ref = (o: { apiVersion: string; kind: string; metadata: { name: string; uid: string } }) => ({ apiVersion: o.apiVersion, kind: o.kind, name: o.metadata.name, uid: o.metadata.uid, controller: true });
    const deploy = await kube.create({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'api', namespace: NS }, spec: { selector: { matchLabels: { app: 'api' } }, template } });
    const rs = await kube.create({ apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'api-v2', namespace: NS, ownerReferences: [ref(deploy)] }, spec: { selector: { matchLabels: { app: 'api' } }, template } });
    const pod = await kube.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: POD, namespace: NS, labels: { app: 'api' }, ownerReferences: [ref(rs)] }, spec: template.spec });
    uid = pod.metadata.uid;

    c = await startContainerd(ROOT);
    await ensureImage(c, CNS, ROOT + '-image');
    agent = await startAgent(
      [
        'enrich:',
        '  runtime:',
        '    runtimes: containerd',
        `    containerd_socket: ${JSON.stringify(c.socket)}`,
        `    containerd_namespaces: ${CNS}`,
        '  kubernetes:',
        '    owner_lookup: on',
        `    kubeconfig: ${JSON.stringify(kubeconfig)}`,
        'metrics:',
        '  listen: 127.0.0.1:0',
      ].join('\n'),
    );
  });

  after(async () => {
    await agent?.stop();
    if (c) {
      for (const id of ids) {
        await c.ctr(['task', 'kill', '-s', 'KILL', id], { namespace: CNS }).catch(() => undefined);
        await sleep(100);
        await c.ctr(['task', 'rm', '-f', id], { namespace: CNS }).catch(() => undefined);
        await c.ctr(['containers', 'rm', id], { namespace: CNS }).catch(() => undefined);
      }
      await c.stop();
    }
    // the kubepods-style parents runc made (deepest first); each controller's
    for (const cg of cgroups.reverse()) {
      for (const ctl of fs.readdirSync('/sys/fs/cgroup')) {
        try {
          fs.rmdirSync(path.join('/sys/fs/cgroup', ctl, cg));
        } catch {
          /* absent in this controller, or still in use by something else */
        }
      }
    }
    await kube?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A container of pod POD (CRI labels) in the kubepods cgroup of `podUid`, limited to 32 MiB: its id. */
  async function run(podUid: string, cmd: string[]): Promise<string> {
    const id = crypto.randomBytes(32).toString('hex');
    ids.push(id);
    const parent = `/kubepods/burstable/pod${podUid}`;
    for (const p of ['/kubepods', '/kubepods/burstable', parent, `${parent}/${id}`]) if (!cgroups.includes(p)) cgroups.push(p);
    await c.ctr(
      [
        'run', '-d', '--memory-limit', String(32 << 20), '--cgroup', `${parent}/${id}`,
        '--label', `io.kubernetes.pod.name=${POD}`, '--label', `io.kubernetes.pod.namespace=${NS}`, '--label', 'io.kubernetes.container.name=worker',
        '--label', `io.kubernetes.pod.uid=${podUid}`,
        IMAGE, id, ...cmd,
      ],
      { namespace: CNS },
    );
    assert.ok(fs.existsSync(path.join(MEMCG, parent, id)), `runc made ${parent}/${id}`);
    return id;
  }

  const recordOf = async (id: string, what: string): Promise<OomRecord> => {
    const rs = await agent.waitFor((r) => r.some((x) => x.container_id === id), 30_000, what);
    return rs.find((x) => x.container_id === id)!;
  };

  test('a child killed in the pod: Deployment "api" from the API (the name alone says DaemonSet "api-v2"), counted per workload', async () => {
    const id = await run(uid, ['bash', '-c', 'tail /dev/zero; exec sleep 600']);
    const r = await recordOf(id, 'the child kill');
    assert.deepEqual([r.pod_uid, r.pod_name, r.pod_namespace, r.k8s_container, r.victim_comm, r.victim_is_container_init], [uid, POD, NS, 'worker', 'tail', false]);
    assert.equal(r.oom_scope, 'container');
    assert.deepEqual([r.workload_kind, r.workload_name, r.workload_source], ['Deployment', 'api', 'api']);
    const s = new Scrape((await httpGet(`${metricsBase(agent)}/metrics`)).body);
    assert.equal(s.get('oomtrail_oom_kills_total', { namespace: NS, workload: 'api', container: 'worker', victim: 'child', scope: 'container' }), 1, s.all('oomtrail_oom_kills_total').join('\n'));
    assert.doesNotMatch(agent.stderr(), /warn owner lookup/);
  });

  test('an init killed under another uid (the pod re-created since): not the current pod\'s owner; the name\'s guess', async () => {
    const other = crypto.randomUUID();
    const id = await run(other, ['tail', '/dev/zero']);
    const r = await recordOf(id, 'the init kill under another uid');
    assert.deepEqual([r.pod_uid, r.pod_name, r.victim_is_container_init], [other, POD, true]);
    assert.deepEqual([r.workload_kind, r.workload_name, r.workload_source], ['DaemonSet', 'api-v2', 'name']);
    assert.match(agent.stderr(), /owner lookup: pod payments\/api-v2-kq7zt now has another uid/);
  });
});
