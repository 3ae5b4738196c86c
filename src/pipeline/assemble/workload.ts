/**
 * A pod's workload guessed from its name alone (`workload_kind`, `workload_name`), for records whose pod the
 * agent knows only by the runtime's `io.kubernetes.pod.name` label: the fallback of the API's owner references
 * (./owner.ts), and all there is when owner lookup is off. This is what the names the controllers generate give
 * away. Limits (README "Workload: `workload_kind`, `workload_name`"):
 * - a bare Pod (or another controller) named like a controller's pod reads as that controller (`web-1` →
 *   StatefulSet `web`); a ReplicaSet made without a Deployment reads as Deployment;
 * - `<name>-<5 random>` is a DaemonSet's pod, a non-indexed Job's, or any `generateName` pod: read as DaemonSet;
 * - static (mirror) pods, `<name>-<node>`, are told by their UID (32 hex, a hash of the manifest, from the cgroup
 *   path): Pod with the whole name; without that UID a node name ending in `-<n>` reads as StatefulSet;
 * - names of other controllers (Argo Rollouts, KubeVirt, operators) read as whatever shape they happen to match;
 * - names the API cut before the random suffix (generateName keeps 58 characters) read wrong.
 */
/** The kinds a pod name can give away (the API may name others: a ReplicaSet without a Deployment, a CRD's kind). */
export type WorkloadKind = 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'Job' | 'CronJob' | 'Pod';

/** Kubernetes' rand.String alphabet (no vowels, no 0/1/3): generateName suffixes and the pod-template-hash. */
const RAND = '[bcdfghjklmnpqrstvwxz2456789]';
/** pod-template-hash: the uint32 hash's decimal digits through that alphabet ('0'..'9' → 4-9,b,c,d,f): 10 chars,
 *  fewer for small hashes (6+ for 99.99% of them). Shorter ones are not taken: they would read indexed Jobs. */
const TEMPLATE_HASH = '[4-9bcdf]{6,10}';
/** A DNS-1123 subdomain (what the API allows as a pod name), at most 253 characters: nothing else is parsed. */
const POD_NAME_RE = /^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/;

const SHAPES: ReadonlyArray<{ kind: WorkloadKind; re: RegExp }> = [
  // CronJob → Job `<cronjob>-<scheduled time in minutes since the epoch>` → pod `-<5 random>`
  { kind: 'CronJob', re: new RegExp(`^(.+)-\\d{8}-${RAND}{5}$`) },
  // Deployment → ReplicaSet `<deploy>-<pod-template-hash>` → pod `-<5 random>`
  { kind: 'Deployment', re: new RegExp(`^(.+)-${TEMPLATE_HASH}-${RAND}{5}$`) },
  // an indexed Job's pod: `<job>-<index>-<5 random>`
  { kind: 'Job', re: new RegExp(`^(.+)-(?:0|[1-9]\\d{0,8})-${RAND}{5}$`) },
  { kind: 'StatefulSet', re: /^(.+)-(?:0|[1-9]\d{0,8})$/ },
  { kind: 'DaemonSet', re: new RegExp(`^(.+)-${RAND}{5}$`) },
];

/** A static pod's UID: kubelet hashes the manifest (md5, hex) instead of asking the API for one. */
const STATIC_POD_UID = /^[0-9a-f]{32}$/;

/**
 * `{workload_kind, workload_name}` for a pod name (and its UID when known: a static pod's is told apart); {} when
 * there is no name or it is not a valid pod name.
 */
export function workloadOf(podName: string | undefined, podUid = ''): { workload_kind?: WorkloadKind; workload_name?: string } {
  if (typeof podName !== 'string' || !POD_NAME_RE.test(podName)) return {};
  // its owner is the Node: no controller's name is in it
  if (STATIC_POD_UID.test(podUid)) return { workload_kind: 'Pod', workload_name: podName };
  for (const { kind, re } of SHAPES) {
    const m = re.exec(podName);
    // the controller's own name is a DNS name too: it cannot end in '-' or '.'
    if (m && /[a-z0-9]$/.test(m[1]!)) return { workload_kind: kind, workload_name: m[1]! };
  }
  return { workload_kind: 'Pod', workload_name: podName };
}
