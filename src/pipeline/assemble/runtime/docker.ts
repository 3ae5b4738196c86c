import fs from 'node:fs';
import { getJson, streamJsonLines } from './http';
import type { ContainerMeta, MetaSink, RuntimeSource, RuntimeStatus } from './types';
import { EventFollower } from './follow';

interface ListItem {
  Id?: string;
  Names?: string[];
  Image?: string;
  Labels?: Record<string, string> | null;
}
interface InspectDoc {
  Id?: string;
  Name?: string;
  Config?: { Image?: string; Labels?: Record<string, string> | null };
}
interface EventDoc {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}


/**
 * Docker Engine API over its unix socket (also cri-dockerd's Kubernetes containers, whose pod and
 * container names are `io.kubernetes.*` labels). The event stream opens before the list, so a container
 * created in between is in one or the other.
 */
export class DockerSource implements RuntimeSource {
  readonly runtime = 'docker' as const;
  private readonly follower = new EventFollower();
  private closeStream: (() => void) | null = null;
  private lastCount: number | null = null;

  constructor(
    readonly socket: string,
    private readonly requestTimeoutMs: number,
  ) {}

  async start(sink: MetaSink): Promise<RuntimeStatus> {
    return this.follower.follow(
      (report, connected) => {
        const s = streamJsonLines(
          this.socket,
          '/events?filters=' + encodeURIComponent(JSON.stringify({ type: ['container'] })),
          () => {
            connected();
            this.list(sink)
              .then((n) => report(this.status(true, n)))
              .catch((e: Error) => report(this.status(true, null, e.message)));
          },
          (doc) => this.onEvent(doc as EventDoc, sink),
          this.requestTimeoutMs,
        );
        this.closeStream = s.close;
        return s;
      },
      (why) => this.status(false, null, why),
    );
  }

  private status(reachable: boolean, containers: number | null, error?: string): RuntimeStatus {
    return { runtime: 'docker', socket: this.socket, found: fs.existsSync(this.socket), reachable, containers, ...(error ? { error } : {}) };
  }

  private async list(sink: MetaSink): Promise<number> {
    const items = (await getJson(this.socket, '/containers/json?all=1', this.requestTimeoutMs)) as ListItem[] | null;
    if (!Array.isArray(items)) return 0;
    for (const c of items) {
      if (!c.Id) continue;
      sink.put(c.Id, { name: (c.Names?.[0] ?? '').replace(/^\//, ''), image: c.Image ?? '', labels: c.Labels ?? {} });
    }
    this.lastCount = items.length;
    return items.length;
  }

  private onEvent(ev: EventDoc, sink: MetaSink): void {
    const id = ev.Actor?.ID;
    if (ev.Type !== 'container' || !id) return;
    if (ev.Action === 'create') {
      // the attributes mix labels with `name` and `image`: good enough at once, then exact from inspect
      const { name = '', image = '', ...labels } = ev.Actor?.Attributes ?? {};
      sink.put(id, { name, image, labels });
      const ac = new AbortController();
      this.inspect(id, ac.signal)
        .then((m) => m && sink.put(id, m))
        .catch(() => undefined);
    } else if (ev.Action === 'rename') {
      this.inspect(id, new AbortController().signal)
        .then((m) => m && sink.put(id, m))
        .catch(() => undefined);
    } else if (ev.Action === 'destroy') {
      sink.removed(id);
    }
  }

  async inspect(id: string, signal: AbortSignal): Promise<ContainerMeta | null> {
    const d = (await getJson(this.socket, `/containers/${encodeURIComponent(id)}/json`, this.requestTimeoutMs, signal)) as InspectDoc | null;
    if (!d) return null;
    return { name: (d.Name ?? '').replace(/^\//, ''), image: d.Config?.Image ?? '', labels: d.Config?.Labels ?? {} };
  }

  async probe(timeoutMs: number): Promise<RuntimeStatus> {
    if (!fs.existsSync(this.socket)) return { runtime: 'docker', socket: this.socket, found: false, reachable: false, containers: null };
    try {
      const items = (await getJson(this.socket, '/containers/json?all=1', timeoutMs)) as unknown[];
      return this.status(true, Array.isArray(items) ? items.length : null);
    } catch (e) {
      return this.status(false, null, (e as Error).message);
    }
  }

  get containers(): number | null {
    return this.lastCount;
  }

  stop(): void {
    this.follower.stop();
    this.closeStream?.();
  }
}
