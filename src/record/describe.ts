import type { OomRecord } from './record';

/* Sentences about a record that more than one sink writes (the console block; later the Kubernetes Event note). */

const mib = (b: number) => `${Math.round(b / 1048576)}Mi`;

/**
 * One phrase an operator reads: which limit was hit and how big it was, and what a memory.oom.group kill did,
 * e.g. `container "app" limit 512Mi hit; container killed whole (memory.oom.group)`. Empty without a scope.
 */
export function describeScope(r: OomRecord): string {
  const scope = r.oom_scope;
  if (!scope) return '';
  const limit = r.memcg_limit_bytes ?? r.memory_at_kill?.limit_bytes ?? null;
  const size = limit === null ? '' : ` ${mib(limit)}`;
  let hit: string;
  switch (scope) {
    case 'container':
      hit = `container${r.k8s_container ? ` "${r.k8s_container}"` : ''} limit${size} hit`;
      break;
    case 'pod':
      hit = `pod${r.pod_name ? ` "${r.pod_name}"` : ''} limit${size} hit (pod-level resources)`;
      break;
    case 'qos':
      hit = `${r.k8s_qos ? `${r.k8s_qos} ` : ''}QoS tier limit${size} hit (every pod of that class on the node)`;
      break;
    case 'node':
      hit = `node allocatable limit${size} hit (kubepods: all pods of the node)`;
      break;
    case 'system':
      hit = r.constraint === 'global' ? 'no cgroup limit: the host ran out of memory' : `no cgroup limit: the memory a ${r.constraint} allows ran out`;
      break;
    default:
      hit = `cgroup limit${size} hit outside Kubernetes pods`;
  }
  if (r.oom_group_kill) hit += `; ${r.container_id ? 'container' : 'cgroup'} killed whole (memory.oom.group)`;
  return hit;
}
