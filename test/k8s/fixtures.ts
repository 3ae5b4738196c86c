/*
 * What the Kubernetes tests share: the DaemonSet manifest's RBAC applied as written, a workload namespace with a
 * Deployment's ReplicaSet and its Pod made as the admin, as kube-controller-manager would (no controller or kubelet
 * runs here; the objects only have to exist, with the owner chain an agent follows), a kubeconfig holding a
 * ServiceAccount's token, and the Events regarding a Pod read back as the admin.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { REPO } from '../helpers/agent';
import type { KubeApiServer } from '../servers/kubernetes/server';

export const MANIFEST = path.join(REPO, 'deploy/kubernetes/daemonset.yaml');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const MANIFEST_DOCS = yaml.loadAll(fs.readFileSync(MANIFEST, 'utf8')) as any[];
/** The manifest's ServiceAccount (the agent's identity). */
export const AGENT_SA = MANIFEST_DOCS.find((d) => d.kind === 'ServiceAccount');

/** The manifest's Namespace, ServiceAccount, ClusterRole and ClusterRoleBinding, exactly as written there. */
export async function applyManifestRbac(kube: KubeApiServer): Promise<void> {
  for (const kind of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']) {
    const objs = MANIFEST_DOCS.filter((d) => d.kind === kind);
    assert.ok(objs.length > 0, `${MANIFEST} has no ${kind}`);
    for (const o of objs) await kube.create(o);
  }
}

/**
 * A workload namespace and its "default" ServiceAccount (what the absent controller-manager would create; the
 * ServiceAccount admission plugin needs it for any pod), then createWebPod in it; the Pod.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function createWorkloadNamespace(kube: KubeApiServer, namespace: string): Promise<any> {
  await kube.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
  await kube.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace } });
  return createWebPod(kube, namespace);
}

/** ReplicaSet web-5d4f8c7b9 and its Pod web-5d4f8c7b9-x2x7q (container "app", on node-1) in `namespace`; the Pod. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function createWebPod(kube: KubeApiServer, namespace: string): Promise<any> {
  const template = { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'app', image: 'registry.example.com/web:1' }] } };
  const rs = await kube.create({
    apiVersion: 'apps/v1',
    kind: 'ReplicaSet',
    metadata: { name: 'web-5d4f8c7b9', namespace },
    spec: { replicas: 1, selector: { matchLabels: { app: 'web' } }, template },
  });
  return kube.create({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'web-5d4f8c7b9-x2x7q',
      namespace,
      labels: { app: 'web' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rs.metadata.name, uid: rs.metadata.uid, controller: true }],
    },
    spec: { ...template.spec, nodeName: 'node-1' },
  });
}

/**
 * ServiceAccount oomtrail/no-events bound to a copy of the manifest's ClusterRole without its events.k8s.io rule
 * (an operator who trimmed it); a token of it.
 */
export async function serviceAccountWithoutEvents(kube: KubeApiServer): Promise<string> {
  const role = MANIFEST_DOCS.find((d) => d.kind === 'ClusterRole');
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const rules = role.rules.filter((r: any) => !r.apiGroups.includes('events.k8s.io'));
  assert.equal(rules.length, role.rules.length - 1);
  await kube.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'no-events', namespace: 'oomtrail' } });
  await kube.create({ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'oomtrail-no-events' }, rules });
  await kube.create({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'oomtrail-no-events' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'oomtrail-no-events' },
    subjects: [{ kind: 'ServiceAccount', name: 'no-events', namespace: 'oomtrail' }],
  });
  return kube.serviceAccountToken('oomtrail', 'no-events', 3600);
}

/**
 * A kubeconfig file in `dir` holding `token` for the test API server, or another `server` (CA by relative path, as
 * kubeadm's can be).
 */
export function writeKubeconfig(kube: KubeApiServer, dir: string, name: string, token: string, server = kube.url): string {
  fs.writeFileSync(path.join(dir, 'ca.crt'), kube.ca);
  const file = path.join(dir, `${name}.kubeconfig`);
  fs.writeFileSync(
    file,
    yaml.dump({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: { server, 'certificate-authority': 'ca.crt' } }],
      users: [{ name, user: { token } }],
      contexts: [{ name, context: { cluster: 'test', user: name } }],
      'current-context': name,
    }),
    { mode: 0o600 },
  );
  return file;
}

/** The events.k8s.io/v1 Events in `namespace` regarding the object of `uid`, read as the admin. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function eventsRegarding(kube: KubeApiServer, namespace: string, uid: string): Promise<any[]> {
  const r = await kube.request('GET', `/apis/events.k8s.io/v1/namespaces/${namespace}/events`);
  assert.equal(r.status, 200, r.text);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return (r.body.items as any[]).filter((e) => e.regarding?.uid === uid);
}
