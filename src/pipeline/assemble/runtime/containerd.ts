import fs from 'node:fs';
import protobuf from 'protobufjs';
import { GrpcConn } from './grpc';
import type { ContainerMeta, MetaSink, RuntimeSource, RuntimeStatus } from './types';
import { EventFollower, LIST_RETRY_MAX_MS, LIST_RETRY_MIN_MS } from './follow';
import { boundedName, DEFAULT_KEEP, keepLabels, NERDCTL_NAME } from './labels';

// The subset of containerd's API (api/services/containers/v1, api/services/events/v1, api/events) the cache
// needs. Field numbers are containerd's; message names are ours (only method paths go on the wire).
const PROTO = `
syntax = "proto3";
package oomtrail.containerd;
message Container { string id = 1; map<string, string> labels = 2; string image = 3; Any spec = 5; }
message ListContainersRequest { repeated string filters = 1; }
message ListContainersResponse { repeated Container containers = 1; }
message GetContainerRequest { string id = 1; }
message GetContainerResponse { Container container = 1; }
message SubscribeRequest { repeated string filters = 1; }
message Any { string type_url = 1; bytes value = 2; }
message Envelope { string namespace = 2; string topic = 3; Any event = 4; }
message ContainerEvent { string id = 1; }
`;
const root = protobuf.parse(PROTO, { keepCase: true }).root;
const T = (n: string) => root.lookupType(`oomtrail.containerd.${n}`);
const ListReq = T('ListContainersRequest');
const ListRes = T('ListContainersResponse');
const GetReq = T('GetContainerRequest');
const GetRes = T('GetContainerResponse');
const SubReq = T('SubscribeRequest');
const Envelope = T('Envelope');
const ContainerEvent = T('ContainerEvent');

const LIST = '/containerd.services.containers.v1.Containers/List';
const GET = '/containerd.services.containers.v1.Containers/Get';
const SUBSCRIBE = '/containerd.services.events.v1.Events/Subscribe';
const NS_HEADER = 'containerd-namespace';

interface PbContainer {
  id?: string;
  labels?: Record<string, string>;
  image?: string;
  spec?: { value?: Uint8Array };
}

/** An OCI spec larger than this is not read for its cgroup (kubelet's are tens of kB). */
const SPEC_MAX_BYTES = 1 << 20;
const CGROUP_PATH_MAX = 4096;

/**
 * The cgroup the container's OCI spec puts it in (`linux.cgroupsPath`), when it is a plain absolute path (the
 * cgroupfs driver, e.g. `ctr run`'s `/<namespace>/<id>`); the systemd driver's `slice:prefix:name` is left to
 * the path patterns. runc creates the container's cgroup from exactly this, so it names the victim's cgroup.
 */
function cgroupOf(spec: PbContainer['spec']): string | undefined {
  const v = spec?.value;
  if (!v || v.length === 0 || v.length > SPEC_MAX_BYTES) return undefined;
  try {
    const p = (JSON.parse(Buffer.from(v.buffer, v.byteOffset, v.length).toString('utf8')) as { linux?: { cgroupsPath?: unknown } })?.linux?.cgroupsPath;
    return typeof p === 'string' && p.startsWith('/') && p.length <= CGROUP_PATH_MAX && !p.includes('\0') ? p.replace(/\/+$/, '') || undefined : undefined;
  } catch {
    return undefined;
  }
}

/** The namespace the CRI plugin (kubelet's containers) uses: the only one whose io.kubernetes.* labels are believed. */
export const K8S_NAMESPACE = 'k8s.io';

function toMeta(c: PbContainer, namespace: string, keep: ReadonlySet<string>): ContainerMeta {
  const labels = keepLabels(c.labels, keep);
  // containerd has no container name of its own; nerdctl keeps one in a label
  const cgroup = cgroupOf(c.spec);
  return { name: labels[NERDCTL_NAME] ?? '', image: boundedName(c.image), labels, k8s: namespace === K8S_NAMESPACE, ...(cgroup ? { cgroup } : {}) };
}

/**
 * containerd's gRPC API: Containers.List per namespace at start, then Events.Subscribe for
 * `/containers/create|update|delete` (a create is followed by a Get: the event carries no labels).
 * In Kubernetes (namespace k8s.io) the CRI plugin keeps the pod and container names in io.kubernetes.* labels.
 */
export class ContainerdSource implements RuntimeSource {
  readonly runtime = 'containerd' as const;
  private readonly conn: GrpcConn;
  private readonly follower = new EventFollower();
  private cancelStream: (() => void) | null = null;

  constructor(
    readonly socket: string,
    private readonly namespaces: string[],
    private readonly requestTimeoutMs: number,
    private readonly keep: ReadonlySet<string> = DEFAULT_KEEP,
    maxReplyBytes?: number,
  ) {
    this.conn = new GrpcConn(socket, maxReplyBytes);
  }

  private status(reachable: boolean, containers: number | null, error?: string): RuntimeStatus {
    return { runtime: 'containerd', socket: this.socket, found: fs.existsSync(this.socket), reachable, containers, ...(error ? { error } : {}) };
  }

  /** One namespace's containers, each reduced to what the cache keeps as its message is decoded. */
  async list(namespace: string, timeoutMs: number): Promise<Array<{ id: string; meta: ContainerMeta }>> {
    const out: Array<{ id: string; meta: ContainerMeta }> = [];
    await this.conn.call(LIST, ListReq.encode(ListReq.create({ filters: [] })).finish(), { [NS_HEADER]: namespace }, (m) => {
      const r = ListRes.toObject(ListRes.decode(m), { defaults: true }) as { containers: PbContainer[] };
      for (const c of r.containers) if (c.id) out.push({ id: c.id, meta: toMeta(c, namespace, this.keep) });
    }, { timeoutMs }).done;
    return out;
  }

  private async listAll(sink: MetaSink): Promise<number> {
    // all namespaces answer before any is put: a failed list is retried whole
    const lists = [];
    for (const ns of this.namespaces) lists.push(await this.list(ns, this.requestTimeoutMs));
    let n = 0;
    for (const l of lists) for (const { id, meta } of l) (sink.put(id, meta), n++);
    return n;
  }

  async start(sink: MetaSink): Promise<RuntimeStatus> {
    return this.follower.follow(
      (report, connected) => {
        // Subscribe answers its headers only with the first event: list after a short wait instead, so a
        // quiet containerd does not hold the start; events from then on are not lost (the stream is open)
        let listed = false;
        let ended = false;
        let retry: ReturnType<typeof setTimeout> | undefined;
        let backoff = LIST_RETRY_MIN_MS;
        // a failed list (timeout, oversized or garbled reply) is retried with backoff while the stream is up,
        // not only when it reconnects: the events alone never tell about containers created before them
        const attempt = () => {
          this.listAll(sink)
            .then((n) => {
              connected();
              report(this.status(true, n));
            })
            .catch((e: Error) => {
              report(this.status(false, null, e.message));
              if (ended || this.follower.stopped) return;
              retry = setTimeout(attempt, backoff);
              retry.unref();
              backoff = Math.min(backoff * 2, LIST_RETRY_MAX_MS);
            });
        };
        const listOnce = () => {
          if (listed) return;
          listed = true;
          attempt();
        };
        const call = this.conn.call(
          SUBSCRIBE,
          SubReq.encode(SubReq.create({ filters: ['topic~="/containers/"'] })).finish(),
          {},
          (m) => this.onEvent(m, sink),
          { timeoutMs: 0, onOpen: listOnce, stream: true },
        );
        this.cancelStream = call.cancel;
        const t = setTimeout(listOnce, 100);
        return {
          done: call.done.finally(() => {
            ended = true;
            clearTimeout(t);
            clearTimeout(retry);
          }),
        };
      },
      (why) => this.status(false, null, why),
    );
  }

  private onEvent(m: Buffer, sink: MetaSink): void {
    const env = Envelope.toObject(Envelope.decode(m), { defaults: true }) as { namespace: string; topic: string; event?: { value: Uint8Array } };
    if (!this.namespaces.includes(env.namespace) || !env.event) return;
    const { id } = ContainerEvent.toObject(ContainerEvent.decode(env.event.value), { defaults: true }) as { id: string };
    if (!id) return;
    if (env.topic === '/containers/create' || env.topic === '/containers/update') {
      this.get(env.namespace, id, this.requestTimeoutMs)
        .then((meta) => meta && sink.put(id, meta))
        .catch(() => undefined);
    } else if (env.topic === '/containers/delete') {
      sink.removed(id);
    }
  }

  private async get(namespace: string, id: string, timeoutMs: number, signal?: AbortSignal): Promise<ContainerMeta | null> {
    let found: PbContainer | null = null;
    try {
      await this.conn.call(GET, GetReq.encode(GetReq.create({ id })).finish(), { [NS_HEADER]: namespace }, (m) => {
        found = (GetRes.toObject(GetRes.decode(m), { defaults: true }) as { container?: PbContainer }).container ?? null;
      }, { timeoutMs, signal }).done;
    } catch (e) {
      if (/grpc-status 5 /.test((e as Error).message)) return null; // NOT_FOUND
      throw e;
    }
    return found ? toMeta(found, namespace, this.keep) : null;
  }

  async inspect(id: string, signal: AbortSignal): Promise<ContainerMeta | null> {
    const all = await Promise.all(this.namespaces.map((ns) => this.get(ns, id, this.requestTimeoutMs, signal).catch(() => null)));
    return all.find((m) => m !== null) ?? null;
  }

  async probe(timeoutMs: number): Promise<RuntimeStatus> {
    if (!fs.existsSync(this.socket)) return this.status(false, null);
    try {
      let n = 0;
      for (const ns of this.namespaces) n += (await this.list(ns, timeoutMs)).length;
      return this.status(true, n);
    } catch (e) {
      return this.status(false, null, (e as Error).message);
    } finally {
      if (this.follower.stopped || !this.cancelStream) this.conn.close();
    }
  }

  stop(): void {
    this.follower.stop();
    this.cancelStream?.();
    this.conn.close();
  }
}
