/**
 * cgroup path → container identity. Pure string work: no I/O, no runtime API calls.
 *
 * The input is a cgroup path relative to the hierarchy root, exactly as the kernel prints it
 * (`/proc/<pid>/cgroup`, the memcg path of an OOM): the same shapes appear on cgroup v1 (memory controller)
 * and v2, so one table serves both.
 */

export interface ContainerInfo {
  /** 64 lowercase hex characters, or '' when the cgroup is not (inside) a recognised container. */
  container_id: string;
  /** `docker | containerd | cri-o | podman`, or '' exactly when `container_id` is ''. */
  container_runtime: string;
  /** Kubernetes pod UID in canonical form (dashed UUID, or 32 hex for static pods), or ''. */
  pod_uid: string;
  /** `guaranteed | burstable | besteffort`, or ''. */
  k8s_qos: string;
}

export type ContainerRuntime = 'docker' | 'containerd' | 'cri-o' | 'podman';
export type K8sQos = 'guaranteed' | 'burstable' | 'besteffort';

const ID = '([0-9a-f]{64})';
/** Dashed UUID (cgroupfs driver), or 32 hex (static/mirror pods hash their manifest into the UID). */
const UID_DASHED = '([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})';
/** The systemd driver escapes '-' (a slice hierarchy separator) as '_'. */
const UID_SYSTEMD = '([0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}|[0-9a-f]{32})';
/** A `--cgroup-root` turned into a slice prefix, e.g. kind's `kubelet-kubepods.slice`. */
const SLICE_PREFIX = '(?:[a-z0-9_]+-)*';

/**
 * A segment that names a container by itself, wherever it sits. Order does not matter: the shapes are
 * disjoint. Monitors are deliberately absent: `crio-conmon-<id>.scope` and `libpod-conmon-<id>.scope` hold
 * conmon, a host-side supervisor that is not inside the container (it does not share its namespaces or its
 * memory limit), so they never match (`conmon-` is not hex) and a conmon victim gets no container id — only
 * the pod around it, when there is one.
 */
const CONTAINER_SEGMENTS: ReadonlyArray<{ runtime: ContainerRuntime; re: RegExp }> = [
  { runtime: 'docker', re: new RegExp(`^docker-${ID}\\.scope$`) }, // systemd driver
  { runtime: 'containerd', re: new RegExp(`^cri-containerd-${ID}\\.scope$`) }, // CRI, systemd driver
  { runtime: 'containerd', re: new RegExp(`^nerdctl-${ID}\\.scope$`) }, // nerdctl, systemd driver
  { runtime: 'cri-o', re: new RegExp(`^crio-${ID}(?:\\.scope)?$`) }, // systemd (.scope) and cgroupfs
  { runtime: 'podman', re: new RegExp(`^libpod-${ID}(?:\\.scope)?$`) }, // systemd (.scope) and cgroupfs
];

/** `<parent>/<id>`: a bare id names a container only under a parent that says whose it is. */
export const BARE_ID = new RegExp(`^${ID}$`);
/** cgroupfs docker (`/docker/<id>`, also nested for docker-in-docker). */
const DOCKER_PARENT = 'docker';
/** containerd's well-known namespaces, cgroupfs driver (`ctr run`, nerdctl): only as the first segment. */
const CONTAINERD_NAMESPACES: ReadonlySet<string> = new Set(['default', 'k8s.io']);

/** Kubernetes: the node-level pods cgroup, the QoS level, and the pod level, for both drivers. */
export const KUBEPODS_ROOT = new RegExp(`^(?:kubepods|${SLICE_PREFIX}kubepods\\.slice)$`);
export const QOS_CGROUPFS = /^(burstable|besteffort)$/;
export const QOS_SYSTEMD = new RegExp(`^${SLICE_PREFIX}kubepods-(burstable|besteffort)\\.slice$`);
export const POD_CGROUPFS = new RegExp(`^pod${UID_DASHED}$`);
export const POD_SYSTEMD = new RegExp(`^${SLICE_PREFIX}kubepods-(?:(burstable|besteffort)-)?pod${UID_SYSTEMD}\\.slice$`);

const NONE: ContainerInfo = Object.freeze({ container_id: '', container_runtime: '', pod_uid: '', k8s_qos: '' });

type Level = 'none' | 'kubepods' | 'qos' | 'pod' | 'container';

/**
 * Identify the container (and Kubernetes pod) a cgroup belongs to.
 *
 * Recognised, on cgroup v1 and v2, cgroupfs and systemd drivers:
 * - docker: `/docker/<id>`, `…/docker-<id>.scope`
 * - containerd: `…/cri-containerd-<id>.scope`, a bare `<id>` directly under a cgroupfs pod
 *   (`/kubepods/burstable/pod<uid>/<id>`), `…/nerdctl-<id>.scope`, and `/default/<id>` or `/k8s.io/<id>`
 *   (containerd namespaces, only at the top of the path)
 * - cri-o: `…/crio-<id>.scope`, `…/crio-<id>` (cgroupfs)
 * - podman: `…/libpod-<id>.scope`, `…/libpod-<id>.scope/container`, `/libpod_parent/libpod-<id>`
 * - kubepods for all QoS classes: `/kubepods[/burstable|/besteffort]/pod<uid>`,
 *   `/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_with_underscores>.slice`, also under a
 *   `--cgroup-root` prefix (`/kubelet/kubepods/…`, `/kubelet.slice/kubelet-kubepods.slice/…`). A pod without a
 *   QoS level is `guaranteed`; the systemd `_` in the UID is given back as `-`.
 *
 * Rules:
 * - Ids are exactly 64 lowercase hex; anything else (63/65 chars, upper case, `.mount` units) is not a container.
 * - Nesting: the innermost container wins (`/docker/<a>/docker/<b>` → `<b>`; a sub-cgroup inside a container,
 *   like podman's `/container` leaf or a systemd inside it, keeps the container). A kubepods level found below a
 *   container (kind, docker-desktop, mesos) starts a new scope: the outer node container is dropped, so the
 *   container and the pod in a result always belong together.
 * - A pod-level cgroup (or a sibling that is not a container, e.g. CRI-O's `crio-conmon-<id>.scope`) gives
 *   `pod_uid` + `k8s_qos` with an empty container. A QoS-level cgroup gives only `k8s_qos`.
 * - conmon (`crio-conmon-…`, `libpod-conmon-…`) is not the container: see CONTAINER_SEGMENTS.
 * - A bare id under a cgroupfs pod is reported as containerd; cri-dockerd produces the same shape, which the
 *   path alone cannot tell apart.
 * - Everything else (`/system.slice/foo.service`, `/user.slice/…`, `/init.scope`, `/`) → all fields ''.
 */
export function parseContainer(cgroupPath: string): ContainerInfo {
  if (typeof cgroupPath !== 'string' || cgroupPath === '') return { ...NONE };
  const segments = cgroupPath.split('/').filter((s) => s !== '');

  let level: Level = 'none';
  let qos = '';
  let pod = '';
  let id = '';
  let runtime = '';

  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    const parent = i > 0 ? segments[i - 1]! : '';
    let m: RegExpExecArray | null;

    if (KUBEPODS_ROOT.test(seg)) {
      // A (possibly nested) Kubernetes node starts here: whatever enclosed it is not this pod's container.
      level = 'kubepods';
      qos = pod = id = runtime = '';
      continue;
    }
    if (level === 'kubepods' && ((m = QOS_CGROUPFS.exec(seg)) || (m = QOS_SYSTEMD.exec(seg)))) {
      level = 'qos';
      qos = m[1]!;
      continue;
    }
    if (level === 'kubepods' || level === 'qos') {
      if ((m = POD_CGROUPFS.exec(seg))) {
        level = 'pod';
        pod = m[1]!;
        if (!qos) qos = 'guaranteed';
        continue;
      }
      if ((m = POD_SYSTEMD.exec(seg))) {
        level = 'pod';
        pod = m[2]!.replace(/_/g, '-');
        qos = m[1] ?? (qos || 'guaranteed');
        continue;
      }
    }

    const named = matchContainerSegment(seg);
    if (named) {
      [id, runtime] = named;
      level = 'container';
      continue;
    }
    if ((m = BARE_ID.exec(seg))) {
      const bare = bareIdRuntime(parent, i, level);
      if (bare) {
        id = m[1]!;
        runtime = bare;
        level = 'container';
      }
    }
    // Any other segment (a sub-cgroup, a slice, a conmon scope) leaves what was found so far as it is.
  }

  return { container_id: id, container_runtime: id ? runtime : '', pod_uid: pod, k8s_qos: qos };
}

export function matchContainerSegment(seg: string): [string, ContainerRuntime] | null {
  for (const { runtime, re } of CONTAINER_SEGMENTS) {
    const m = re.exec(seg);
    if (m) return [m[1]!, runtime];
  }
  return null;
}

/** Who owns a bare `<id>` segment, judged by its parent; '' when nobody we know. */
function bareIdRuntime(parent: string, index: number, level: Level): ContainerRuntime | '' {
  if (level === 'pod') return 'containerd';
  if (parent === DOCKER_PARENT) return 'docker';
  if (index === 1 && CONTAINERD_NAMESPACES.has(parent)) return 'containerd';
  return '';
}
