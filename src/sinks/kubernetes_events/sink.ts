import type { Logger } from '../../observe/logger';
import type { OomRecord } from '../../record/record';
import type { HealthStatus, RejectedRecord, Sink, WriteResult } from '../sink';
import { classifyKubeStatus, forbiddenLine, type Verb } from './classify';
import type { KubeAnswer, KubeApi } from '../../host/kubeapi';
import { eventBody, eventName, NODE_EVENT_NAMESPACE, regardingOf, seriesKey, seriesPatch, type Regarding } from './encode';
import type { KubernetesEventsSinkConfig } from './config';

/** Series and rate-limit state kept for this many pods/keys at most (least recently used dropped first). */
export const SERIES_CACHE_MAX = 4096;
/**
 * A 403 this soon after the API server was unreachable (connection error, timeout, 5xx) is retried, not
 * dead-lettered: a kube-apiserver that just came back answers 403 until its RBAC informers have synced (seen on
 * 1.37: the manifest's binding is unknown for a moment after /readyz turns ok).
 */
export const RBAC_WARMUP_MS = 60_000;
/** Event ids remembered per series: a batch the lane resends after a partial failure is not counted twice. */
const SEEN_MAX = 64;

interface SeriesEntry {
  namespace: string;
  name: string;
  /** occurrences so far (1 = the create) */
  count: number;
  /** the count the API server has (what the last create or patch wrote) */
  sent: number;
  lastMs: number;
  /** the latest repeat's time (the series' lastObservedTime) */
  lastTime: string;
  seen: string[];
  /** a catch-up patch scheduled for when the pod's bucket has a token again */
  timer?: NodeJS.Timeout;
}

/** A token bucket: `burst` at once, one more every `refillMs`. */
export class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly burst: number,
    private readonly refillMs: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }
  take(now: number): boolean {
    const add = Math.floor((now - this.at) / this.refillMs);
    if (add > 0) {
      this.tokens = Math.min(this.burst, this.tokens + add);
      this.at += add * this.refillMs;
    }
    if (this.tokens >= this.burst) this.at = now;
    if (this.tokens <= 0) return false;
    this.tokens--;
    return true;
  }
  /** Gives back the token of a write that did not reach the API (retried): an outage must not use up the burst. */
  refund(): void {
    this.tokens = Math.min(this.burst, this.tokens + 1);
  }
}

/** A Map bounded by insertion order, refreshed on use. */
class Lru<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(k: string): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    while (this.map.size > this.max) this.map.delete(this.map.keys().next().value as string);
  }
  delete(k: string): void {
    this.map.delete(k);
  }
  get size(): number {
    return this.map.size;
  }
  entries(): IterableIterator<[string, V]> {
    return this.map.entries();
  }
}

/**
 * The kubernetes_events sink: one events.k8s.io/v1 Event per kill in a pod (regarding the Pod), per global OOM
 * (regarding the Node); other kills are not Kubernetes objects' business and are skipped (delivered). Repeats —
 * the same pod, container, comm, init or child, and reason within series_window_ms — update the first Event's series by a merge
 * patch, as client-go's recorder does, so 20 kills of a crash-looping worker are one Event with count 20. A per-pod
 * token bucket bounds API writes; a repeat beyond it is counted and written by one patch when the bucket refills, a
 * new Event beyond it dropped.
 */
export class KubernetesEventsSink implements Sink {
  readonly name = 'kubernetes_events';
  private readonly series = new Lru<SeriesEntry>(SERIES_CACHE_MAX);
  private readonly buckets = new Lru<TokenBucket>(SERIES_CACHE_MAX);
  private readonly forbiddenLogged = new Set<string>();
  private unreachableAt: number | null = null;
  private writing = false;
  private closed = false;
  /** catch-up patches in flight (one per series at most) */
  private readonly catching = new Set<Promise<void>>();
  /** per pod: when a dropped Event was last logged as a warning (at most one per refill period) */
  private readonly limitedWarned = new Lru<number>(SERIES_CACHE_MAX);

  constructor(
    private readonly config: KubernetesEventsSinkConfig,
    readonly nodeName: string,
    private readonly logger: Logger,
    private readonly api: KubeApi,
    private readonly now: () => number = Date.now,
  ) {}

  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    if (this.catching.size > 0) await Promise.all(this.catching);
    this.writing = true;
    try {
      return await this.writeBatch(batch);
    } finally {
      this.writing = false;
    }
  }

  private async writeBatch(batch: readonly OomRecord[]): Promise<WriteResult> {
    const rejected: RejectedRecord[] = [];
    for (const record of batch) {
      const regarding = regardingOf(record, this.nodeName);
      if (!regarding) continue;
      const result = await this.one(record, regarding);
      // the lane resends the batch: records already applied are recognised by their event id
      if (result.status === 'retryable') return result;
      if (result.status === 'rejected') rejected.push({ record, reason: result.reason });
    }
    if (rejected.length > 0 && rejected.length === batch.length) return { status: 'rejected', reason: rejected[0]!.reason };
    return rejected.length > 0 ? { status: 'delivered', rejectedRecords: rejected } : { status: 'delivered' };
  }

  /** The pod's bucket when it allows a write now (its token taken), else null. */
  private allow(regarding: Regarding): TokenBucket | null {
    const k = `${regarding.kind}/${regarding.namespace ?? ''}/${regarding.name}`;
    let b = this.buckets.get(k);
    if (!b) this.buckets.set(k, (b = new TokenBucket(this.config.rate_limit.burst, this.config.rate_limit.refill_ms, this.now())));
    return b.take(this.now()) ? b : null;
  }

  private async one(r: OomRecord, regarding: Regarding): Promise<WriteResult> {
    const key = seriesKey(regarding, r, this.config.reason);
    const t = Date.parse(r.time);
    const at = Number.isNaN(t) ? this.now() : t;
    const entry = this.series.get(key);
    if (entry?.seen.includes(r.event_id)) return { status: 'delivered' };
    if (entry && Math.abs(at - entry.lastMs) <= this.config.series_window_ms) {
      entry.count++;
      if (at >= entry.lastMs) entry.lastTime = r.time;
      entry.lastMs = Math.max(entry.lastMs, at);
      remember(entry, r.event_id);
      const bucket = this.allow(regarding);
      if (!bucket) {
        this.logger.debug(`kubernetes_events: ${regarding.namespace}/${regarding.name}: rate limited, repeat ${entry.count} counted, patched when the bucket refills`);
        this.scheduleCatchUp(key, regarding);
        return { status: 'delivered' };
      }
      const patch = seriesPatch(entry.count, entry.lastTime, new Date(this.now()));
      const sending = entry.count;
      const res = await this.request('patch', entry.namespace, `events ${entry.namespace}/${entry.name}`, () => this.api.patchEvent(entry.namespace, entry.name, patch));
      if (res.answer?.status === 404) {
        // the Event expired (the API server's event TTL, 1 h by default): start a new one
        this.series.delete(key);
        return this.create(r, regarding, key, at, false);
      }
      if (res.result.status === 'retryable') {
        bucket.refund();
        entry.count--;
        entry.seen = entry.seen.filter((id) => id !== r.event_id);
      } else if (res.result.status === 'delivered') entry.sent = Math.max(entry.sent, sending);
      return res.result;
    }
    return this.create(r, regarding, key, at, true);
  }

  private async create(r: OomRecord, regarding: Regarding, key: string, at: number, limit: boolean): Promise<WriteResult> {
    const bucket = limit ? this.allow(regarding) : null;
    if (limit && !bucket) {
      const who = `${regarding.namespace ?? ''}/${regarding.name}`;
      const last = this.limitedWarned.get(who);
      const warn = last === undefined || this.now() - last >= this.config.rate_limit.refill_ms;
      if (warn) this.limitedWarned.set(who, this.now());
      this.logger.log(warn ? 'warn' : 'debug', `kubernetes_events: ${who}: rate limited (sinks.kubernetes_events.rate_limit), Event for event_id ${r.event_id} not sent`);
      return { status: 'delivered' };
    }
    const body = eventBody(r, regarding, { reason: this.config.reason, nodeName: this.nodeName }, new Date(this.now()));
    const namespace = regarding.namespace ?? NODE_EVENT_NAMESPACE;
    const res = await this.request('create', namespace, `events ${namespace}`, () => this.api.createEvent(namespace, body));
    if (res.result.status === 'retryable') bucket?.refund();
    if (res.result.status !== 'delivered') return res.result;
    this.series.set(key, { namespace, name: eventName(regarding, r), count: 1, sent: 1, lastMs: at, lastTime: r.time, seen: [r.event_id] });
    return { status: 'delivered' };
  }

  private async request(verb: Verb, namespace: string, what: string, send: () => Promise<KubeAnswer>): Promise<{ result: WriteResult; answer?: KubeAnswer }> {
    let answer: KubeAnswer;
    try {
      answer = await send();
    } catch (err) {
      // KubeTransportError: no answer (refused, reset, timeout)
      this.unreachableAt = this.now();
      return { result: { status: 'retryable', reason: `${verb} ${what}: ${(err as Error).message}` } };
    }
    // 409 on create: an Event of that name exists. The name comes from this kill's event id, so it is this kill's
    // Event, created by an earlier try whose answer was lost: recorded, not a second occurrence.
    if (answer.status === 409 && verb === 'create') return { result: { status: 'delivered' }, answer };
    const result = classifyKubeStatus(answer.status, answer.text, answer.retryAfter);
    if (answer.status >= 500) this.unreachableAt = this.now();
    if (answer.status === 403 && this.unreachableAt !== null && this.now() - this.unreachableAt < RBAC_WARMUP_MS) {
      return { result: { status: 'retryable', reason: `${(result as { reason: string }).reason} (the API server was unreachable ${this.now() - this.unreachableAt} ms ago: its RBAC cache may be warming up)`, afterMs: 1000 }, answer };
    }
    if (answer.status === 403) {
      const k = `${verb} ${namespace}`;
      if (!this.forbiddenLogged.has(k)) {
        this.forbiddenLogged.add(k);
        this.logger.error(forbiddenLine(verb, namespace));
      }
    }
    return { result, answer };
  }

  /**
   * Repeats beyond the rate limit are only counted; without a later kill nothing would write them. One patch per
   * series is scheduled for when the pod's bucket refills (client-go's recorder likewise writes a series on its
   * own schedule), so 20 quick kills end as count 20 even with a burst of 5.
   */
  private scheduleCatchUp(key: string, regarding: Regarding, delayMs = this.config.rate_limit.refill_ms): void {
    const entry = this.series.get(key);
    if (!entry || entry.timer || this.closed) return;
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      const p: Promise<void> = this.catchUp(key, regarding).finally(() => this.catching.delete(p));
      this.catching.add(p);
    }, delayMs);
    entry.timer.unref();
  }

  private async catchUp(key: string, regarding: Regarding): Promise<void> {
    const entry = this.series.get(key);
    if (!entry || entry.count <= entry.sent || this.closed) return;
    // a write in progress patches this series itself (or schedules again): never two patches of one Event at once
    if (this.writing) return this.scheduleCatchUp(key, regarding, 100);
    const bucket = this.allow(regarding);
    if (!bucket) return this.scheduleCatchUp(key, regarding);
    const sending = entry.count;
    const patch = seriesPatch(sending, entry.lastTime, new Date(this.now()));
    const res = await this.request('patch', entry.namespace, `events ${entry.namespace}/${entry.name}`, () => this.api.patchEvent(entry.namespace, entry.name, patch));
    if (res.result.status === 'delivered') entry.sent = Math.max(entry.sent, sending);
    else if (res.result.status === 'retryable') {
      bucket.refund();
      this.scheduleCatchUp(key, regarding);
    }
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {
    this.closed = true;
    for (const [, entry] of this.series.entries()) if (entry.timer) clearTimeout(entry.timer);
    await Promise.all(this.catching);
  }

  /** Healthy when the API server serves events.k8s.io/v1 to this identity (discovery: any authenticated client). */
  async healthcheck(): Promise<HealthStatus> {
    try {
      const a = await this.api.eventsApiResources();
      return a.status >= 200 && a.status < 300 ? { healthy: true } : { healthy: false, detail: `HTTP ${a.status}` };
    } catch (err) {
      return { healthy: false, detail: (err as Error).message };
    }
  }
}

function remember(entry: SeriesEntry, id: string): void {
  entry.seen.push(id);
  if (entry.seen.length > SEEN_MAX) entry.seen.shift();
}
