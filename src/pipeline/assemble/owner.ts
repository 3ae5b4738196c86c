/**
 * A pod's top owner (`workload_kind`, `workload_name`) from the Kubernetes API, the pod-name heuristic
 * (`workloadOf`) as the fallback. Only `get` on pods, replicasets and jobs: a Deployment's or a CronJob's kind and
 * name are in its child's controller reference, so the agent never reads them (nor needs the right to).
 *   Pod ─controller→ ReplicaSet ─controller→ Deployment      (no Deployment: the ReplicaSet)
 *   Pod ─controller→ Job ─controller→ CronJob                (no CronJob: the Job)
 *   Pod ─controller→ StatefulSet | DaemonSet | anything else (a CRD's kind, as its reference names it)
 *   Pod without a controller, or owned by its Node (a static pod's mirror) → Pod
 * Answers are cached per pod (and uid), bounded in count, one request chain per pod at a time; a record never
 * waits for one longer than its bound, and a failure (403, 404, timeout, unreachable) gives the heuristic and one
 * log line per cause.
 */
import type { Logger } from 'winston';
import type { OomRecord } from '../../record/record';
import { checkKubeApiConfig, kubeApiProblem, KubeTransportError, openKubeApi, type KubeAnswer, type KubeApi, type OwnerReadKind } from '../../host/kubeapi';
import type { RuntimeNames } from './assemble';
import type { AppConfig } from '../../config/schema';
import { ConfigError } from '../../config/errors';
import { ownerKubeconfig, ownerLookupEnabled, ownerLookupOffReason } from './kubernetes-config';
import { workloadOf } from './workload';

export type WorkloadSource = NonNullable<OomRecord['workload_source']>;
export type OwnerFields = Pick<OomRecord, 'workload_kind' | 'workload_name' | 'workload_source'>;

/** Why the API gave no owner; each is logged once. */
export type OwnerFailure = 'forbidden' | 'unauthorized' | 'not_found' | 'uid_mismatch' | 'unreachable' | 'http_error' | 'invalid' | 'busy';

export type OwnerResult = { ok: true; kind: string; name: string } | { ok: false; cause: OwnerFailure; detail: string };

export interface OwnerLookupOptions {
  /** how long an owner found stays cached (a pod's controller does not change; its ReplicaSet's owner rarely) */
  ttlMs: number;
  /** how long a failure stays cached (404, 403, unreachable): the API is not asked again for that pod meanwhile */
  errorTtlMs: number;
  /** most pods cached (least recently used evicted) */
  maxPods: number;
  /** most lookups in flight at once; beyond it a record takes the heuristic */
  maxInFlight: number;
  now?: () => number;
}

export const DEFAULT_OWNER_OPTIONS: OwnerLookupOptions = { ttlMs: 600_000, errorTtlMs: 30_000, maxPods: 4096, maxInFlight: 32 };

/** DNS-1123 subdomain, ≤ 253: a pod's (and any owner's) name as the API allows it. */
const NAME_RE = /^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/;
/** DNS-1123 label, ≤ 63: a namespace. */
const NAMESPACE_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** A Kind: CamelCase (a CRD's kind is validated the same way by the API). */
const KIND_RE = /^[A-Z][A-Za-z0-9]{0,62}$/;
/** A uid as the API writes it (RFC 4122 text), or a static pod's (md5 hex, from the cgroup path): bounded, no separators. */
const UID_RE = /^[0-9a-z-]{1,64}$/;
/** kubelet marks a static pod's mirror with the static pod's own uid: the one its cgroup path carries */
const MIRROR_ANNOTATION = 'kubernetes.io/config.mirror';

interface OwnerRef {
  apiVersion?: unknown;
  kind?: unknown;
  name?: unknown;
  uid?: unknown;
  controller?: unknown;
}
interface ObjectMeta {
  name?: unknown;
  uid?: unknown;
  ownerReferences?: unknown;
  annotations?: unknown;
}

/** The RBAC rule a 403 on `kind` says is missing, as a ClusterRole would spell it. */
function permissionOf(kind: OwnerReadKind): string {
  const [group, resource] = kind === 'Pod' ? ['', 'pods'] : kind === 'ReplicaSet' ? ['apps', 'replicasets'] : ['batch', 'jobs'];
  return `{apiGroups: ["${group}"], resources: ["${resource}"], verbs: ["get"]}`;
}

function metaOf(object: unknown): ObjectMeta | null {
  const m = (object as { metadata?: unknown } | null)?.metadata;
  return m && typeof m === 'object' ? (m as ObjectMeta) : null;
}

/** The controller reference (at most one has controller: true); null when none; 'invalid' when it is malformed. */
function controllerOf(meta: ObjectMeta): { apiVersion: string; kind: string; name: string; uid: string } | null | 'invalid' {
  const refs = meta.ownerReferences;
  if (refs === undefined || refs === null) return null;
  if (!Array.isArray(refs)) return 'invalid';
  const ref = (refs as OwnerRef[]).find((r) => r && typeof r === 'object' && r.controller === true);
  if (!ref) return null;
  const { apiVersion, kind, name, uid } = ref;
  if (typeof kind !== 'string' || !KIND_RE.test(kind) || typeof name !== 'string' || !NAME_RE.test(name)) return 'invalid';
  return { apiVersion: typeof apiVersion === 'string' ? apiVersion : '', kind, name, uid: typeof uid === 'string' ? uid : '' };
}

class Failure extends Error {
  constructor(
    readonly why: OwnerFailure,
    readonly detail: string,
  ) {
    super(detail);
  }
}

interface Entry {
  result: OwnerResult;
  expires: number;
}

export class OwnerLookup {
  private readonly cache = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<OwnerResult>>();
  private readonly warned = new Set<string>();
  private readonly opts: OwnerLookupOptions;
  private readonly now: () => number;
  /** API requests made: a cache hit makes none */
  requests = 0;
  /** until then (ms) records do not wait for a lookup: the last one ran into its bound, or the API did not answer */
  private slowUntil = 0;

  constructor(
    private readonly api: KubeApi,
    private readonly logger: Pick<Logger, 'warn' | 'info'>,
    opts: Partial<OwnerLookupOptions> = {},
  ) {
    this.opts = { ...DEFAULT_OWNER_OPTIONS, ...opts };
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.cache.size;
  }

  /**
   * The top owner of pod `namespace/name`; `uid` (the record's pod_uid, '' when unknown) must be the Pod's, or
   * its mirror's static uid: a pod re-created under the same name is another pod. Never rejects.
   */
  resolve(namespace: string, name: string, uid = ''): Promise<OwnerResult> {
    if (!NAMESPACE_RE.test(namespace) || !NAME_RE.test(name) || (uid !== '' && !UID_RE.test(uid))) {
      return Promise.resolve(this.fail(new Failure('invalid', 'a namespace, pod name or uid that is no valid one')));
    }
    const key = `${namespace}/${name}/${uid}`;
    const hit = this.cache.get(key);
    if (hit && hit.expires > this.now()) {
      // least recently used last
      this.cache.delete(key);
      this.cache.set(key, hit);
      return Promise.resolve(hit.result);
    }
    if (hit) this.cache.delete(key);
    const pending = this.inFlight.get(key);
    if (pending) return pending;
    if (this.inFlight.size >= this.opts.maxInFlight) {
      return Promise.resolve(this.fail(new Failure('busy', `${this.opts.maxInFlight} lookups already in flight`)));
    }
    const p = this.chain(namespace, name, uid)
      .then((owner): OwnerResult => ({ ok: true, ...owner }))
      .catch((err: unknown) => this.fail(err instanceof Failure ? err : new Failure('http_error', String((err as Error)?.message ?? err).slice(0, 200))))
      .then((result) => {
        this.inFlight.delete(key);
        // an answer (any HTTP status) says the API is there again; no answer keeps records from waiting
        if (result.ok || (result.cause !== 'unreachable' && result.cause !== 'busy')) this.slowUntil = 0;
        else if (result.cause === 'unreachable') this.slowUntil = this.now() + this.opts.errorTtlMs;
        if (result.ok || result.cause !== 'busy') this.put(key, result);
        return result;
      });
    this.inFlight.set(key, p);
    return p;
  }

  /**
   * The workload fields for a record's pod: the API's owner within `boundMs`, else the pod-name heuristic. A lookup
   * still running at the bound goes on and fills the cache for the pod's next record.
   */
  async fields(namespace: string, name: string, uid: string, boundMs: number): Promise<OwnerFields> {
    // records are assembled one after another: while the API is silent or unreachable, each new pod's record would
    // wait the whole bound, so they take cached owners only until an answer comes
    const wait = this.now() < this.slowUntil ? 0 : boundMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<null>((r) => (timer = setTimeout(() => r(null), wait)));
    const result = await Promise.race([this.resolve(namespace, name, uid), bound]);
    clearTimeout(timer);
    if (result?.ok) return { workload_kind: result.kind, workload_name: result.name, workload_source: 'api' };
    if (result === null && wait > 0) this.slowUntil = this.now() + this.opts.errorTtlMs;
    // 0: cached owners only, by choice; the lookup still runs and fills the cache
    if (result === null && wait > 0) this.warnOnce('deadline', `owner lookup: no answer within ${boundMs} ms (enrich.kubernetes.lookup_timeout_ms); records take the workload from the pod name until the API answers`);
    const guess = workloadOf(name, uid);
    return guess.workload_kind ? { ...guess, workload_source: 'name' } : {};
  }

  private put(key: string, result: OwnerResult): void {
    this.cache.set(key, { result, expires: this.now() + (result.ok ? this.opts.ttlMs : this.opts.errorTtlMs) });
    while (this.cache.size > this.opts.maxPods) this.cache.delete(this.cache.keys().next().value!);
  }

  private fail(f: Failure): OwnerResult {
    if (f.why !== 'not_found' && f.why !== 'uid_mismatch') this.warnOnce(f.why === 'forbidden' ? `forbidden ${f.detail}` : f.why, `owner lookup: ${f.detail}; workload_kind/workload_name come from the pod name meanwhile`);
    else this.infoOnce(f.why, `owner lookup: ${f.detail}; that record's workload comes from the pod name (logged once)`);
    return { ok: false, cause: f.why, detail: f.detail };
  }

  private warnOnce(cause: string, line: string): void {
    if (this.warned.has(cause)) return;
    this.warned.add(cause);
    this.logger.warn(line);
  }

  private infoOnce(cause: string, line: string): void {
    if (this.warned.has(cause)) return;
    this.warned.add(cause);
    this.logger.info(line);
  }

  /** One GET; a non-2xx is a Failure naming what failed. */
  private async read(kind: OwnerReadKind, namespace: string, name: string): Promise<ObjectMeta> {
    let a: KubeAnswer;
    this.requests++;
    try {
      a = await this.api.read(kind, namespace, name);
    } catch (err) {
      if (err instanceof KubeTransportError) throw new Failure('unreachable', `the API server ${this.api.server} did not answer (${err.code})`);
      throw err;
    }
    if (a.status >= 200 && a.status < 300) {
      const meta = metaOf(a.object);
      if (!meta) throw new Failure('invalid', `get ${kind} gave no metadata`);
      return meta;
    }
    if (a.status === 403) throw new Failure('forbidden', `get ${kind} is forbidden (HTTP 403): the ClusterRole bound to the agent's identity needs ${permissionOf(kind)}`);
    if (a.status === 401) throw new Failure('unauthorized', `the API server refused the agent's credentials (HTTP 401)`);
    if (a.status === 404) throw new Failure('not_found', `${kind} ${namespace}/${name} is gone (HTTP 404)`);
    throw new Failure('http_error', `get ${kind} answered HTTP ${a.status}`);
  }

  private async chain(namespace: string, podName: string, uid: string): Promise<{ kind: string; name: string }> {
    const pod = await this.read('Pod', namespace, podName);
    if (uid !== '') {
      const mirror = (pod.annotations as Record<string, unknown> | undefined)?.[MIRROR_ANNOTATION];
      if (pod.uid !== uid && mirror !== uid) throw new Failure('uid_mismatch', `pod ${namespace}/${podName} now has another uid (re-created since the kill)`);
    }
    const ref = controllerOf(pod);
    if (ref === 'invalid') throw new Failure('invalid', 'a controller reference that is no valid kind and name');
    // no controller, or the Node (a static pod's mirror): the pod is its own workload
    if (ref === null || (ref.kind === 'Node' && ref.apiVersion === 'v1')) return { kind: 'Pod', name: podName };
    const step = ref.kind === 'ReplicaSet' && ref.apiVersion.startsWith('apps/') ? 'ReplicaSet' : ref.kind === 'Job' && ref.apiVersion.startsWith('batch/') ? 'Job' : null;
    if (!step) return { kind: ref.kind, name: ref.name };
    const parent = await this.read(step, namespace, ref.name);
    // a ReplicaSet or Job of that name re-created since: not the pod's owner any more
    if (ref.uid && parent.uid !== ref.uid) throw new Failure('not_found', `${step} ${namespace}/${ref.name} was re-created since the pod was made`);
    const top = controllerOf(parent);
    if (top === 'invalid') throw new Failure('invalid', 'a controller reference that is no valid kind and name');
    return top === null ? { kind: ref.kind, name: ref.name } : { kind: top.kind, name: top.name };
  }
}

/**
 * The API for the owner lookup, its files read now (kubeconfig, or the service account's token and CA): the API or
 * one line saying what is wrong, for a configuration error naming enrich.kubernetes.kubeconfig.
 */
export function openOwnerApi(kubeconfig: string, requestTimeoutMs: number, open: typeof openKubeApi = openKubeApi): { api: KubeApi } | { problem: string } {
  try {
    return { api: open({ kubeconfig, timeoutMs: requestTimeoutMs }) };
  } catch (err) {
    return { problem: kubeApiProblem(err, kubeconfig) };
  }
}

/** The same checks as openOwnerApi without loading client-node (the pre-flight, before the BPF objects load). */
export function checkOwnerApi(kubeconfig: string): { problem: string } | null {
  try {
    checkKubeApiConfig({ kubeconfig });
    return null;
  } catch (err) {
    return { problem: kubeApiProblem(err, kubeconfig) };
  }
}

/**
 * Runtime names, then the owner of the pod they name: the API's (within `boundMs`) in place of the name's guess.
 * A record without a pod name and namespace is passed as it is.
 */
export function withOwners(inner: RuntimeNames, owners: OwnerLookup, boundMs: number): RuntimeNames {
  return {
    async annotate(record: OomRecord): Promise<Partial<OomRecord>> {
      const names = await inner.annotate(record);
      const ns = names.pod_namespace ?? record.pod_namespace;
      const pod = names.pod_name ?? record.pod_name;
      if (!ns || !pod) return names;
      const owner = await owners.fields(ns, pod, record.pod_uid || '', boundMs);
      return { ...names, ...owner };
    },
  };
}

/**
 * The runtimes' names, and with enrich.kubernetes.owner_lookup on (auto: with the kubernetes_events sink) each pod's
 * owner from the API in place of the pod name's guess. The pre-flight has read the kubeconfig already; should it
 * have changed since, a ConfigError (exit 78) names the key.
 */
export function withOwnerLookup(config: Pick<AppConfig, 'enrich' | 'sinks'>, logger: Pick<Logger, 'warn' | 'info'>, runtime: RuntimeNames): RuntimeNames {
  const k = config.enrich.kubernetes;
  const sink = config.sinks.kubernetes_events;
  if (!ownerLookupEnabled(k, sink.enabled)) return runtime;
  const kubeconfig = ownerKubeconfig(k, sink.kubeconfig);
  const r = openOwnerApi(kubeconfig, k.request_timeout_ms);
  if ('problem' in r) throw new ConfigError([{ code: 'CONFIG_INVALID', key: 'enrich.kubernetes.kubeconfig', message: `enrich.kubernetes.kubeconfig: ${r.problem}` }]);
  const owners = new OwnerLookup(r.api, logger, { ttlMs: k.cache_ttl_ms, errorTtlMs: Math.min(30_000, k.cache_ttl_ms), maxPods: k.max_pods });
  logger.info(`owner lookup: workload_kind/workload_name from ${r.api.server} (${kubeconfig || 'in-cluster service account'}); from the pod name when it does not answer within ${k.lookup_timeout_ms} ms`);
  return withOwners(runtime, owners, k.lookup_timeout_ms);
}

/** What `oomtrail check` says about the owner lookup. */
export interface OwnerLookupStatus {
  enabled: boolean;
  /** why (not) */
  detail: string;
  server?: string;
  /** `get` on each kind the lookup reads: true allowed, false forbidden (403), null unknown (no answer, 401, …) */
  permissions?: Array<{ kind: OwnerReadKind; allowed: boolean | null; detail: string }>;
}

/** A name no object is expected to have: RBAC is decided before the object is looked up, so 404 = allowed. */
const PROBE_NAME = 'oomtrail-permission-probe';

/**
 * Whether the lookup runs and may read what it needs: a GET of a (most likely absent) Pod, ReplicaSet and Job in
 * `namespace`. 404 or 200 = allowed, 403 = forbidden; nothing else is asked of the API.
 */
export async function probeOwnerLookup(config: Pick<AppConfig, 'enrich' | 'sinks'>, namespace = 'default', open: typeof openKubeApi = openKubeApi): Promise<OwnerLookupStatus> {
  const k = config.enrich.kubernetes;
  const sink = config.sinks.kubernetes_events;
  const off = ownerLookupOffReason(k, sink.enabled, config.enrich.runtime.enabled);
  if (off) return { enabled: false, detail: off };
  const kubeconfig = ownerKubeconfig(k, sink.kubeconfig);
  const r = openOwnerApi(kubeconfig, k.request_timeout_ms, open);
  if ('problem' in r) return { enabled: true, detail: `enrich.kubernetes.kubeconfig: ${r.problem}` };
  const permissions = await Promise.all(
    (['Pod', 'ReplicaSet', 'Job'] as const).map(async (kind) => {
      try {
        const a = await r.api.read(kind, namespace, PROBE_NAME);
        if (a.status === 404 || (a.status >= 200 && a.status < 300)) return { kind, allowed: true, detail: 'get allowed' };
        if (a.status === 403) return { kind, allowed: false, detail: `get FORBIDDEN: the ClusterRole needs ${permissionOf(kind)}` };
        return { kind, allowed: null, detail: `HTTP ${a.status}` };
      } catch (err) {
        return { kind, allowed: null, detail: err instanceof KubeTransportError ? `no answer (${err.code})` : String((err as Error)?.message ?? err).slice(0, 200) };
      }
    }),
  );
  return { enabled: true, detail: `from ${r.api.server} (${kubeconfig || 'in-cluster service account'})`, server: r.api.server, permissions };
}
