import fs from 'node:fs';
import type { Logger } from 'winston';
import type { OomRecord } from '../../../record/record';
import { MetaCache } from './cache';
import { splitList, type RuntimeEnrichConfig } from './config';
import { CrioSource } from './crio';
import { DockerSource } from './docker';
import { workloadOf } from '../workload';
import { K8S_CONTAINER, K8S_NS, K8S_POD, labelKeepSet } from './labels';
import type { ContainerMeta, RuntimeSource, RuntimeStatus } from './types';

export type RuntimeFields = Pick<OomRecord, 'container_name' | 'container_image' | 'pod_name' | 'pod_namespace' | 'k8s_container' | 'workload_kind' | 'workload_name' | 'workload_source' | 'labels'> &
  Partial<Pick<OomRecord, 'container_id' | 'container_runtime' | 'victim_is_container_init'>>;

/** The longest the agent's start waits for the runtimes' first lists (healthy ones answer in ~0.1 s). */
const START_WAIT_MAX_MS = 2000;
const K8S_PREFIX = 'io.kubernetes.';

/**
 * Whether a container's `io.kubernetes.*` labels may name its pod. Anyone who builds an image can set them,
 * so they are believed only with proof the container is kubelet's: its runtime says so (containerd namespace
 * `k8s.io`, CRI-O) or the kernel's cgroup path puts the victim inside a kubepods pod cgroup (`pod_uid`,
 * parsed from the path; the way cri-dockerd's docker containers are told from plain `docker run`).
 */
export function trustsK8sLabels(meta: ContainerMeta, record: { pod_uid?: string }): boolean {
  return meta.k8s === true || !!record.pod_uid;
}

/** The record fields one container's metadata gives; labels only those allowed; io.kubernetes.* only when `k8s`. */
export function fieldsOf(meta: ContainerMeta, allow: readonly string[], k8s: boolean, podUid = ''): RuntimeFields {
  const l = meta.labels;
  // unknown stays absent, never '': a record reads the same from every sink (ClickHouse's '' default is "absent")
  const out: RuntimeFields = {};
  if (meta.name) out.container_name = meta.name;
  if (meta.image) out.container_image = meta.image;
  if (k8s && l[K8S_POD]) {
    out.pod_name = l[K8S_POD];
    const guess = workloadOf(l[K8S_POD], podUid);
    // the API's owner, when asked (enrich.kubernetes), replaces this guess later in assembly
    if (guess.workload_kind) Object.assign(out, guess, { workload_source: 'name' });
  }
  if (k8s && l[K8S_NS]) out.pod_namespace = l[K8S_NS];
  if (k8s && l[K8S_CONTAINER]) out.k8s_container = l[K8S_CONTAINER];
  const picked: Record<string, string> = {};
  for (const k of allow) if (typeof l[k] === 'string' && (k8s || !k.startsWith(K8S_PREFIX))) picked[k] = l[k];
  if (Object.keys(picked).length) out.labels = picked;
  return out;
}

/** A runtime whose socket was not there when the sources were made: reported, never asked. */
class AbsentSource implements RuntimeSource {
  constructor(
    readonly runtime: RuntimeSource['runtime'],
    readonly socket: string,
  ) {}
  private status(): RuntimeStatus {
    return { runtime: this.runtime, socket: this.socket, found: false, reachable: false, containers: null };
  }
  async start(): Promise<RuntimeStatus> {
    return this.status();
  }
  async inspect(): Promise<null> {
    return null;
  }
  async probe(): Promise<RuntimeStatus> {
    return this.status();
  }
  stop(): void {}
}

/**
 * A socket at `p`. Not merely something: the DaemonSet mounts each runtime's socket as a file, and on a
 * node without that runtime the container runtime puts an empty directory there instead.
 */
function isSocket(p: string): boolean {
  try {
    return fs.statSync(p).isSocket();
  } catch {
    return false;
  }
}

/** Something other than a socket where the socket should be: the runtime is not on this node. */
const notSocket = (p: string) => fs.existsSync(p) && !isSocket(p);

/** One source per configured runtime; each is used only when its socket exists (checked at start). */
export function defaultSources(cfg: RuntimeEnrichConfig): RuntimeSource[] {
  const out: RuntimeSource[] = [];
  const keep = labelKeepSet(splitList(cfg.labels));
  for (const r of splitList(cfg.runtimes)) {
    if (r === 'docker') out.push(notSocket(cfg.docker_socket) ? new AbsentSource('docker', cfg.docker_socket) : new DockerSource(cfg.docker_socket, cfg.request_timeout_ms, keep));
    if (r === 'cri-o') out.push(notSocket(cfg.crio_socket) ? new AbsentSource('cri-o', cfg.crio_socket) : new CrioSource(cfg.crio_socket, cfg.request_timeout_ms, keep));
    if (r === 'containerd') {
      // protobufjs costs megabytes of heap: loaded only where a containerd socket is there to use it
      if (!isSocket(cfg.containerd_socket)) out.push(new AbsentSource('containerd', cfg.containerd_socket));
      else {
        const { ContainerdSource } = require('./containerd') as typeof import('./containerd');
        out.push(new ContainerdSource(cfg.containerd_socket, splitList(cfg.containerd_namespaces), cfg.request_timeout_ms, keep));
      }
    }
  }
  return out;
}

/**
 * Container runtime metadata for records: a cache filled by the runtimes' lists and event streams before
 * kills happen. `annotate` never fails and never takes longer than `lookup_timeout_ms`.
 */
export class RuntimeMetadata {
  readonly cache: MetaCache;
  private readonly allow: string[];
  private active: RuntimeSource[] = [];
  private statuses: RuntimeStatus[] = [];

  constructor(
    private readonly cfg: RuntimeEnrichConfig,
    private readonly logger: Logger,
    private readonly sources: RuntimeSource[] = defaultSources(cfg),
  ) {
    this.cache = new MetaCache(cfg.max_containers, cfg.grace_ms);
    this.allow = splitList(cfg.labels);
  }

  /**
   * Starts every runtime whose socket exists; a missing or silent one is reported here, once. Waits for the
   * first lists at most `request_timeout_ms`, and never more than 2 s (a runtime that hangs must not hold the
   * agent's start); one answering later is logged when it does.
   */
  async start(): Promise<RuntimeStatus[]> {
    const log = (st: RuntimeStatus) => {
      if (!st.found) this.logger.info(`runtime ${st.runtime}: no socket at ${st.socket}; not used`);
      else if (!st.reachable) this.logger.warn(`runtime ${st.runtime}: ${st.socket} does not answer (${st.error ?? 'unknown'}); retrying in the background, records lack its names meanwhile`);
      else if (st.containers === null) this.logger.info(`runtime ${st.runtime}: ${st.socket} answers; containers are looked up as records need them`);
      else this.logger.info(`runtime ${st.runtime}: ${st.containers} containers known from ${st.socket}`);
    };
    const each = this.sources.map(async (s): Promise<RuntimeStatus> => {
      if (!fs.existsSync(s.socket)) return { runtime: s.runtime, socket: s.socket, found: false, reachable: false, containers: null };
      this.active.push(s);
      return await s.start(this.cache);
    });
    const waitMs = Math.min(this.cfg.request_timeout_ms, START_WAIT_MAX_MS);
    const pending = (s: RuntimeSource): RuntimeStatus => ({ runtime: s.runtime, socket: s.socket, found: true, reachable: false, containers: null, error: `no answer in ${waitMs} ms` });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<null>((r) => (timer = setTimeout(() => r(null), waitMs)));
    this.statuses = await Promise.all(
      each.map(async (p, i) => {
        const st = (await Promise.race([p, bound])) ?? pending(this.sources[i]!);
        log(st);
        // one that answers later says so once; one that gave up was reported just now
        if (st.error === pending(this.sources[i]!).error) void p.then((late) => late.reachable && log(late));
        return st;
      }),
    );
    clearTimeout(timer);
    return this.statuses;
  }

  status(): RuntimeStatus[] {
    return this.statuses;
  }

  /** The runtime fields for `record`'s container: {} when it has none or no runtime knew it in time. */
  async annotate(record: Pick<OomRecord, 'container_id'> & Partial<Pick<OomRecord, 'pod_uid' | 'victim_cgroup' | 'victim_ns_pid'>>): Promise<RuntimeFields> {
    const id = record.container_id;
    if (!id) return this.byCgroup(record);
    const hit = this.cache.get(id);
    if (hit) return fieldsOf(hit, this.allow, trustsK8sLabels(hit, record), record.pod_uid);
    if (this.active.length === 0 || this.cfg.lookup_timeout_ms === 0) return {};
    const meta = await this.lookupMiss(id, this.cfg.lookup_timeout_ms);
    return meta ? fieldsOf(meta, this.allow, trustsK8sLabels(meta, record), record.pod_uid) : {};
  }

  /**
   * A victim whose cgroup path no pattern names (a plain `ctr run`: `/<namespace>/<id>`, any id): the container
   * whose runtime gave it exactly that cgroup (containerd's spec `linux.cgroupsPath`, from the cache). The ns
   * pid then tells the init: the kernel read it in the victim's own pid namespace, and a container's cgroup
   * holds no host pid 1.
   */
  private byCgroup(record: Partial<Pick<OomRecord, 'pod_uid' | 'victim_cgroup' | 'victim_ns_pid'>>): RuntimeFields {
    if (!record.victim_cgroup) return {};
    const hit = this.cache.byCgroup(record.victim_cgroup);
    if (!hit) return {};
    return {
      container_id: hit.id,
      container_runtime: 'containerd',
      ...(record.victim_ns_pid != null ? { victim_is_container_init: record.victim_ns_pid === 1 } : {}),
      ...fieldsOf(hit.meta, this.allow, trustsK8sLabels(hit.meta, record), record.pod_uid),
    };
  }

  /** A container the streams have not told about yet: the first of (stream delivers, a runtime answers, the bound). */
  private lookupMiss(id: string, boundMs: number): Promise<ContainerMeta | null> {
    return new Promise((resolve) => {
      const ac = new AbortController();
      let pending = this.active.length;
      let done = false;
      const finish = (m: ContainerMeta | null) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        cancel();
        ac.abort();
        resolve(m);
      };
      const timer = setTimeout(() => finish(null), boundMs);
      const cancel = this.cache.waitFor(id, (m) => finish(m));
      for (const s of this.active) {
        s.inspect(id, ac.signal)
          .then((m) => {
            if (m) {
              this.cache.put(id, m);
              finish(m);
            } else if (--pending === 0) finish(null);
          })
          .catch(() => {
            if (--pending === 0) finish(null);
          });
      }
    });
  }

  stop(): void {
    for (const s of this.active) s.stop();
  }
}

/** For `oomtrail check`: each configured runtime, whether its socket exists and whether it answers. */
export async function probeRuntimes(cfg: RuntimeEnrichConfig, sources: RuntimeSource[] = defaultSources(cfg)): Promise<RuntimeStatus[]> {
  return await Promise.all(
    sources.map((s) =>
      s.probe(cfg.request_timeout_ms).catch((e: Error) => ({ runtime: s.runtime, socket: s.socket, found: fs.existsSync(s.socket), reachable: false, containers: null, error: e.message })),
    ),
  );
}
