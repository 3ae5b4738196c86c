import type { ContainerRuntime } from '../container';

/** What a runtime says about one container: the names operators use. */
export interface ContainerMeta {
  /** the runtime's container name ('' when it has none, e.g. containerd without nerdctl) */
  name: string;
  /** image reference as the container was created from it ('' unknown) */
  image: string;
  /** only the labels the agent uses (see labels.ts): the rest are dropped as the reply is read */
  labels: Record<string, string>;
  /**
   * The runtime itself places the container in Kubernetes (containerd namespace `k8s.io`, CRI-O): only then,
   * or when the kernel's cgroup path puts the victim in a kubepods pod, are `io.kubernetes.*` labels believed.
   */
  k8s?: boolean;
  /** the cgroup path the runtime gave the container (containerd's OCI spec `linux.cgroupsPath`), when absolute */
  cgroup?: string;
}

/** Where a source puts what it learns; `removed` starts the grace period, it does not drop the entry. */
export interface MetaSink {
  put(id: string, meta: ContainerMeta): void;
  removed(id: string): void;
}

/** What `oomtrail check` and the start-up line say about one runtime. */
export interface RuntimeStatus {
  runtime: ContainerRuntime;
  socket: string;
  found: boolean;
  reachable: boolean;
  /** containers the runtime listed when last asked (null when never listed) */
  containers: number | null;
  error?: string;
}

/**
 * One container runtime's API. A source keeps the cache filled before kills happen (a list at start, then
 * its event stream) and answers a direct lookup for a container the stream has not told about yet.
 */
export interface RuntimeSource {
  readonly runtime: ContainerRuntime;
  readonly socket: string;
  /** Lists, then follows events into `sink`, reconnecting until `stop()`. Resolves after the first list (or failure). */
  start(sink: MetaSink): Promise<RuntimeStatus>;
  /** One container, asked directly; null when unknown. Must give up by `signal`. */
  inspect(id: string, signal: AbortSignal): Promise<ContainerMeta | null>;
  /** Is the socket there and does the API answer within `timeoutMs`? */
  probe(timeoutMs: number): Promise<RuntimeStatus>;
  stop(): void;
}
