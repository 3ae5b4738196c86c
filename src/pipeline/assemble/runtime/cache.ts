import type { ContainerMeta, MetaSink } from './types';

interface Entry {
  meta: ContainerMeta;
  /** when the runtime said the container was removed; null while it exists */
  removedAt: number | null;
}

/**
 * Container id → runtime metadata. Bounded: past `maxEntries`, removed containers go first (oldest
 * removal first), then the least recently written. A removed container is kept for `graceMs`: the runtime
 * often removes a killed container (`--rm`, a pod restart) before the kill's record is built.
 */
export class MetaCache implements MetaSink {
  private readonly entries = new Map<string, Entry>();
  private readonly waiters = new Map<string, Set<(m: ContainerMeta) => void>>();
  /** cgroup path the runtime gave a container → its id (the last one put with that path) */
  private readonly byCgroupPath = new Map<string, string>();

  constructor(
    private readonly maxEntries: number,
    private readonly graceMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(id: string): ContainerMeta | null {
    const e = this.entries.get(id);
    if (!e) return null;
    if (e.removedAt !== null && this.now() - e.removedAt > this.graceMs) {
      this.drop(id);
      return null;
    }
    return e.meta;
  }

  put(id: string, incoming: ContainerMeta): void {
    // Two runtimes can know one container: docker's containers are also in containerd's `moby` namespace,
    // where docker 20.10 leaves no name, image or labels. What one knows is not erased by the other's blanks.
    const old = this.entries.get(id);
    const meta = old
      ? {
          name: incoming.name || old.meta.name,
          image: incoming.image || old.meta.image,
          labels: { ...old.meta.labels, ...incoming.labels },
          ...(incoming.k8s || old.meta.k8s ? { k8s: true } : {}),
          ...(incoming.cgroup || old.meta.cgroup ? { cgroup: incoming.cgroup || old.meta.cgroup } : {}),
        }
      : incoming;
    if (meta.cgroup) this.byCgroupPath.set(meta.cgroup, id);
    this.entries.delete(id); // re-insert: Map order is write order, the eviction order
    this.entries.set(id, { meta, removedAt: null });
    const ws = this.waiters.get(id);
    if (ws) {
      this.waiters.delete(id);
      for (const w of ws) w(meta);
    }
    if (this.entries.size > this.maxEntries) this.evict();
  }

  /** The container whose runtime-given cgroup is `path` (kept like any entry: through the grace period). */
  byCgroup(path: string): { id: string; meta: ContainerMeta } | null {
    const id = this.byCgroupPath.get(path);
    if (id === undefined) return null;
    const meta = this.get(id);
    if (!meta || meta.cgroup !== path) {
      this.byCgroupPath.delete(path);
      return null;
    }
    return { id, meta };
  }

  removed(id: string): void {
    const e = this.entries.get(id);
    if (e && e.removedAt === null) e.removedAt = this.now();
  }

  /** Resolves when `id` is put; the returned function cancels. */
  waitFor(id: string, cb: (m: ContainerMeta) => void): () => void {
    let ws = this.waiters.get(id);
    if (!ws) this.waiters.set(id, (ws = new Set()));
    ws.add(cb);
    return () => {
      ws!.delete(cb);
      if (ws!.size === 0 && this.waiters.get(id) === ws) this.waiters.delete(id);
    };
  }

  /** Forgets `id`, and its cgroup path with it (the path index never outgrows the entries). */
  private drop(id: string): void {
    const e = this.entries.get(id);
    this.entries.delete(id);
    if (e?.meta.cgroup && this.byCgroupPath.get(e.meta.cgroup) === id) this.byCgroupPath.delete(e.meta.cgroup);
  }

  private evict(): void {
    const t = this.now();
    for (const [id, e] of this.entries) if (e.removedAt !== null && t - e.removedAt > this.graceMs) this.drop(id);
    if (this.entries.size <= this.maxEntries) return;
    for (const [id, e] of this.entries) {
      if (this.entries.size <= this.maxEntries) return;
      if (e.removedAt !== null) this.drop(id);
    }
    for (const id of this.entries.keys()) {
      if (this.entries.size <= this.maxEntries) return;
      this.drop(id);
    }
  }
}
