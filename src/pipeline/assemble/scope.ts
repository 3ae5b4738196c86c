/**
 * Which limit was hit: the OOM cgroup's place in a Kubernetes node's kubepods hierarchy (`oom_scope`).
 * Pure string work on the path the kernel names (oom_control's memcg, the `oom_memcg=` of its log line).
 */
import type { OomRecord } from '../../record/record';
import { BARE_ID, KUBEPODS_ROOT, matchContainerSegment, POD_CGROUPFS, POD_SYSTEMD, QOS_CGROUPFS, QOS_SYSTEMD } from './container';

export type OomScope = NonNullable<OomRecord['oom_scope']>;
export const OOM_SCOPES: readonly OomScope[] = ['container', 'pod', 'qos', 'node', 'system', 'other'];

/** The kernel's cgroup paths fit in PATH_MAX; anything longer was not printed by it and is not parsed. */
export const MAX_SCOPE_PATH = 4096;

type Level = 'outside' | 'node' | 'qos' | 'pod' | 'container' | 'stray';

/**
 * A memcg path → its place under kubepods. Both drivers (cgroupfs `/kubepods[/burstable|/besteffort]/pod<uid>/<id>`,
 * systemd `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope`, docker-
 * and crio- scopes), v1 and v2 (the same names), under a `--cgroup-root` prefix or a node container (kind).
 *
 * - `node`: the kubepods cgroup itself (node allocatable); `qos`: `burstable`/`besteffort`; `pod`: the pod cgroup
 *   (pod-level resources, KEP-2837); `container`: a container of a pod, or any cgroup inside one.
 * - `other`: outside kubepods, or under kubepods but not a level kubelet makes (a conmon scope, a stray directory).
 * Every segment is matched whole against kubelet's fixed shapes (UIDs, 64-hex ids): a name only looks like a level
 * if it is exactly that level's name, and a `/` cannot be inside a name. Once inside a Kubernetes node, a kubepods
 * name further down (a container making its own cgroups) does not start a new node: it stays in the container that
 * holds it, so no tenant can make its own limit read as pod, QoS or node. (A kubepods level directly under another,
 * docker-desktop's `/kubepods/kubepods`, is the same node.) pod_uid keeps container.ts's innermost-pod rule.
 */
export function cgroupScope(path: string): 'container' | 'pod' | 'qos' | 'node' | 'other' {
  if (typeof path !== 'string' || path.length > MAX_SCOPE_PATH) return 'other';
  let level: Level = 'outside';
  for (const seg of path.split('/')) {
    if (seg === '') continue;
    if (KUBEPODS_ROOT.test(seg) && (level === 'outside' || level === 'node')) {
      level = 'node';
      continue;
    }
    if (level === 'node' && (QOS_CGROUPFS.test(seg) || QOS_SYSTEMD.test(seg))) level = 'qos';
    // a guaranteed pod sits right under kubepods, the others under their QoS level
    else if (level === 'node' || level === 'qos') level = POD_CGROUPFS.test(seg) || POD_SYSTEMD.test(seg) ? 'pod' : 'stray';
    else if (level === 'pod') level = matchContainerSegment(seg) || BARE_ID.test(seg) ? 'container' : 'stray';
    // outside kubepods, inside a container (its own sub-cgroups) or a stray: stays where it is
  }
  return level === 'outside' || level === 'stray' ? 'other' : level;
}

/**
 * The record's `oom_scope`: `system` when no memcg limit was hit (global OOM, cpuset or mempolicy: the host's memory
 * or the nodes a task may use), else the OOM cgroup's place (cgroupScope). Null when the OOM cgroup is unknown (a
 * kill recovered from the kernel log whose `oom-kill:` line was rate limited).
 */
export function oomScope(r: Pick<OomRecord, 'constraint' | 'oom_cgroup'>): OomScope | null {
  if (r.constraint === 'global' || r.constraint === 'cpuset' || r.constraint === 'mempolicy') return 'system';
  if (r.oom_cgroup === '') return null;
  if (r.oom_cgroup === '/') return 'system';
  return cgroupScope(r.oom_cgroup);
}
