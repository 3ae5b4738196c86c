import fs from 'node:fs';
import { getJson } from './http';
import { boundedName, DEFAULT_KEEP, keepLabels } from './labels';
import type { ContainerMeta, MetaSink, RuntimeSource, RuntimeStatus } from './types';

/** CRI-O's `GET /containers/<id>` answer (its pkg/types ContainerInfo), the fields used here. */
interface CrioContainerInfo {
  name?: string;
  image?: string;
  labels?: Record<string, string> | null;
}

/**
 * CRI-O's HTTP info API on its socket (the same socket as its CRI gRPC). It has no list and no event
 * stream, so CRI-O containers are asked for one by one when a record needs them (bounded like every
 * lookup); CRI-O keeps an exited container until kubelet removes it, and the answer is then cached.
 */
export class CrioSource implements RuntimeSource {
  readonly runtime = 'cri-o' as const;

  constructor(
    readonly socket: string,
    private readonly requestTimeoutMs: number,
    private readonly keep: ReadonlySet<string> = DEFAULT_KEEP,
  ) {}

  private status(reachable: boolean, error?: string): RuntimeStatus {
    return { runtime: 'cri-o', socket: this.socket, found: fs.existsSync(this.socket), reachable, containers: null, ...(error ? { error } : {}) };
  }

  async start(_sink: MetaSink): Promise<RuntimeStatus> {
    return await this.probe(this.requestTimeoutMs);
  }

  async inspect(id: string, signal: AbortSignal): Promise<ContainerMeta | null> {
    const d = (await getJson(this.socket, `/containers/${encodeURIComponent(id)}`, this.requestTimeoutMs, signal)) as CrioContainerInfo | null;
    if (!d) return null;
    // CRI-O is a Kubernetes runtime only (its containers are kubelet's): its io.kubernetes.* labels are the CRI's
    return { name: boundedName(d.name), image: boundedName(d.image), labels: keepLabels(d.labels, this.keep), k8s: true };
  }

  async probe(timeoutMs: number): Promise<RuntimeStatus> {
    if (!fs.existsSync(this.socket)) return this.status(false);
    try {
      await getJson(this.socket, '/info', timeoutMs);
      return this.status(true);
    } catch (e) {
      return this.status(false, (e as Error).message);
    }
  }

  stop(): void {}
}
