/*
 * Objects the Kubernetes tests make as the admin: a Deployment's ReplicaSet and its Pod, as kube-controller-manager
 * would (no controller or kubelet runs here; the objects only have to exist, with the owner chain an agent follows).
 */
import type { KubeApiServer } from '../servers/kubernetes/server';

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
