/**
 * Which container labels the agent keeps. A node can run 20,000 containers with dozens of labels each; only
 * the few a record can use are held (the rest are dropped as each runtime reply is read), each value bounded.
 */

export const K8S_POD = 'io.kubernetes.pod.name';
export const K8S_NS = 'io.kubernetes.pod.namespace';
export const K8S_CONTAINER = 'io.kubernetes.container.name';
/** containerd has no container name of its own; nerdctl keeps one in a label */
export const NERDCTL_NAME = 'nerdctl/name';

/** A label value longer than this is not a name anyone reads (Kubernetes names are ≤ 253): dropped. */
export const LABEL_VALUE_MAX = 1024;

/** The labels kept: the record's own name sources plus the configured allowlist. */
export function labelKeepSet(allow: readonly string[]): ReadonlySet<string> {
  return new Set([K8S_POD, K8S_NS, K8S_CONTAINER, NERDCTL_NAME, ...allow]);
}

export const DEFAULT_KEEP: ReadonlySet<string> = labelKeepSet([]);

/** The kept labels of a runtime's label map (any shape a peer sends: non-objects and non-strings are ignored). */
export function keepLabels(labels: unknown, keep: ReadonlySet<string>): Record<string, string> {
  const out: Record<string, string> = {};
  if (!labels || typeof labels !== 'object') return out;
  const l = labels as Record<string, unknown>;
  for (const k of keep) {
    if (!Object.prototype.hasOwnProperty.call(l, k)) continue;
    const v = l[k];
    if (typeof v === 'string' && v.length <= LABEL_VALUE_MAX) out[k] = v;
  }
  return out;
}

/** A name or image reference from a peer: kept when it is a string of sane length, '' otherwise. */
export function boundedName(v: unknown): string {
  return typeof v === 'string' && v.length <= LABEL_VALUE_MAX ? v : '';
}
