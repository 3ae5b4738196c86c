import fs from 'node:fs';
import { getJson, streamJsonLines } from './http';
import type { ContainerMeta, MetaSink, RuntimeSource, RuntimeStatus } from './types';
import { EventFollower, LIST_RETRY_MAX_MS, LIST_RETRY_MIN_MS } from './follow';
import { boundedName, DEFAULT_KEEP, keepLabels } from './labels';

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
    private readonly keep: ReadonlySet<string> = DEFAULT_KEEP,
  ) {}

  async start(sink: MetaSink): Promise<RuntimeStatus> {
    return this.follower.follow(
      (report, connected) => {
        let ended = false;
        let retry: ReturnType<typeof setTimeout> | undefined;
        let backoff = LIST_RETRY_MIN_MS;
        // a failed list is retried with backoff while the stream is up, not only when it reconnects
        const attempt = () => {
          this.list(sink)
            .then((n) => report(this.status(true, n)))
            .catch((e: Error) => {
              report(this.status(true, null, e.message));
              if (ended || this.follower.stopped) return;
              retry = setTimeout(attempt, backoff);
              retry.unref();
              backoff = Math.min(backoff * 2, LIST_RETRY_MAX_MS);
            });
        };
        const s = streamJsonLines(
          this.socket,
          '/events?filters=' + encodeURIComponent(JSON.stringify({ type: ['container'] })),
          () => {
            connected();
            attempt();
          },
          (doc) => this.onEvent(doc as EventDoc, sink),
          this.requestTimeoutMs,
        );
        this.closeStream = s.close;
        return {
          done: s.done.finally(() => {
            ended = true;
            clearTimeout(retry);
          }),
        };
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
      sink.put(c.Id, this.meta(c.Names?.[0], c.Image, c.Labels));
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
      sink.put(id, this.meta(name, image, labels));
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
    return this.meta(d.Name, d.Config?.Image, d.Config?.Labels);
  }

  /**
   * Docker never vouches for Kubernetes (`k8s` unset): any image's labels may spell io.kubernetes.*; they are
   * believed only when the kernel puts the victim in a kubepods cgroup (cri-dockerd's containers).
   */
  private meta(name: unknown, image: unknown, labels: unknown): ContainerMeta {
    return { name: boundedName(name).replace(/^\//, ''), image: boundedName(image), labels: keepLabels(labels, this.keep) };
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
