import { describeScope } from '../../record/describe';
import type { OomRecord } from '../../record/record';

/*
 * Pure parts of the kubernetes_events sink: what a kill is about (its Pod, the Node, or nothing), the one-line note
 * an operator reads in `kubectl describe pod`, the events.k8s.io/v1 Event body, and the series patch of a repeat.
 */

/** The object an Event is about (events.k8s.io/v1 `regarding`). */
export interface Regarding {
  apiVersion: 'v1';
  kind: 'Pod' | 'Node';
  name: string;
  namespace?: string;
  uid?: string;
}

/** Events about cluster-scoped objects (the Node) live in `default`, as client-go's recorder puts them. */
export const NODE_EVENT_NAMESPACE = 'default';

/** A DNS-1123 subdomain (pod, namespace and node names are): anything else from a runtime's labels is not trusted. */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const UID = /^[0-9a-fA-F-]{1,64}$/;

/**
 * What the Event is about: the victim's Pod when runtime enrichment named it (namespace, name, uid); the Node for a
 * global OOM (no memcg limit: the host ran out) or the node-allocatable limit of kubepods; null otherwise (a kill in
 * a cgroup outside pods: Kubernetes has no object for it, so nothing is sent).
 */
export function regardingOf(r: OomRecord, nodeName: string): Regarding | null {
  if (r.pod_name && r.pod_namespace && r.pod_uid && DNS_SUBDOMAIN.test(r.pod_name) && DNS_SUBDOMAIN.test(r.pod_namespace) && UID.test(r.pod_uid)) {
    return { apiVersion: 'v1', kind: 'Pod', namespace: r.pod_namespace, name: r.pod_name, uid: r.pod_uid };
  }
  const global = r.oom_scope === 'system' || r.oom_scope === 'node' || (r.oom_scope === undefined && (r.constraint === 'global' || r.oom_cgroup === '/'));
  if (global && nodeName) return { apiVersion: 'v1', kind: 'Node', name: nodeName };
  return null;
}

const mib = (b: number) => `${Math.round(b / 1048576)}Mi`;

/** Printable ASCII only, bounded: comm and container names come from the tenant. */
const clean = (s: string, max: number) => s.replace(/[^\x20-\x7e]/g, '?').slice(0, max);

/** The bytes of the dominant consumer (`cause`), named as the note says it: `anon 480Mi`. */
function usagePhrase(r: OomRecord): string {
  const m = r.memory_at_kill;
  const cause = r.cause ?? null;
  const pick: Record<string, [string, number | null | undefined]> = {
    anon: ['anon', m?.anon_bytes],
    page_cache: ['page cache', m?.file_bytes],
    shmem: ['shmem', m?.shmem_bytes],
    kernel: ['kernel', m?.kernel_bytes],
    swap: ['swap', m?.swap_bytes],
    mixed: ['usage', m?.usage_bytes],
  };
  if (cause === 'unknown') {
    // the breakdown does not account for usage: no part of it is named
    const usage = m?.usage_bytes ?? r.memcg_usage_bytes;
    const why = 'breakdown not flushed by the kernel';
    return usage === null || usage === undefined ? `cause unknown (${why})` : `usage ${mib(usage)} (cause unknown: ${why})`;
  }
  if (cause && pick[cause]) {
    const [word, bytes] = pick[cause]!;
    return bytes === null || bytes === undefined ? `cause ${cause}` : `${word} ${mib(bytes)} (cause ${cause})`;
  }
  const usage = m?.usage_bytes ?? r.memcg_usage_bytes;
  return usage === null || usage === undefined ? '' : `usage ${mib(usage)}`;
}

/** Longest note the API takes (events.k8s.io/v1 validation: 1 kB). */
export const NOTE_MAX = 1024;

/**
 * The one line `kubectl describe pod` shows, e.g.
 * `python3 (pid 4242, child) killed: container "app" limit 512Mi hit, anon 480Mi (cause anon); container kept running`.
 */
export function eventNote(r: OomRecord): string {
  const role = r.victim_is_container_init === true ? ', container init' : r.victim_is_container_init === false ? ', child' : '';
  const who = `${clean(r.victim_comm || '?', 16)} (pid ${r.victim_pid}${role})`;
  // the group-kill outcome is said once, at the end
  const limit = describeScope({ ...r, oom_group_kill: false }) || `${r.constraint} OOM`;
  const usage = usagePhrase(r);
  let outcome = '';
  if (r.oom_group_kill) outcome = `${r.container_id ? 'container' : 'cgroup'} killed whole (memory.oom.group${r.oom_group_kill_size ? `, ${r.oom_group_kill_size} processes` : ''})`;
  else if (r.victim_is_container_init === true) outcome = 'the container exits (OOMKilled)';
  else if (r.victim_is_container_init === false) outcome = 'container kept running';
  const note = `${who} killed: ${clean(limit, 600)}${usage ? `, ${usage}` : ''}${outcome ? `; ${outcome}` : ''}`;
  return note.length > NOTE_MAX ? `${note.slice(0, NOTE_MAX - 1)}…` : note;
}

/**
 * events.k8s.io MicroTime: RFC 3339 with exactly 6 fractional digits. The record's time has up to 9;
 * an unparsable one becomes `fallback` (the write's time), never a rejected Event.
 */
export function microTime(time: string, fallback: Date = new Date()): string {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z$/.exec(time);
  if (m && !Number.isNaN(Date.parse(`${m[1]}Z`))) return `${m[1]}.${(m[2] ?? '').padEnd(6, '0').slice(0, 6)}Z`;
  return fallback.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/**
 * Which kills are one Event (their repeats a series): the same object, container, comm, role (init or child) and
 * reason, as client-go's recorder groups isomorphic events (its key holds the note: a child's kill folded into its
 * init's series would read as the container exiting).
 */
export function seriesKey(regarding: Regarding, r: OomRecord, reason: string): string {
  return JSON.stringify([regarding.kind, regarding.namespace ?? '', regarding.name, regarding.uid ?? '', r.k8s_container ?? '', r.victim_comm, r.victim_is_container_init ?? null, reason]);
}

/**
 * The Event's name: `<object>.<first kill's event id>`, the whole id (a prefix of it would let two kills share
 * a name, and the second would read as the first one's retried create). Deterministic: a retried create answers 409.
 */
export function eventName(regarding: Regarding, r: OomRecord): string {
  const suffix = `.${r.event_id.toLowerCase().replace(/[^0-9a-f]/g, '').slice(0, 64) || '0'}`;
  return `${regarding.name.slice(0, 253 - suffix.length).replace(/[.-]+$/, '')}${suffix}`;
}

export interface EventIdentity {
  reason: string;
  nodeName: string;
}

/** The events.k8s.io/v1 Event of a kill (no series: the first occurrence). */
export function eventBody(r: OomRecord, regarding: Regarding, id: EventIdentity, now: Date = new Date()): Record<string, unknown> {
  return {
    apiVersion: 'events.k8s.io/v1',
    kind: 'Event',
    metadata: {
      name: eventName(regarding, r),
      namespace: regarding.namespace ?? NODE_EVENT_NAMESPACE,
      labels: { 'app.kubernetes.io/managed-by': 'oomtrail' },
      annotations: { 'oomtrail.io/event-id': r.event_id },
    },
    eventTime: microTime(r.time, now),
    reportingController: 'oomtrail',
    reportingInstance: id.nodeName.slice(0, 128),
    action: 'Killed',
    reason: id.reason,
    regarding,
    note: eventNote(r),
    type: 'Warning',
  };
}

/** JSON merge patch of a repeat: series {count, lastObservedTime} (count 2 at the first repeat, as client-go). */
export function seriesPatch(count: number, lastTime: string, now: Date = new Date()): Record<string, unknown> {
  return { series: { count, lastObservedTime: microTime(lastTime, now) } };
}
