import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Labels = Readonly<Record<string, string>>;

export type MetricsErrorCode = 'METRICS_NAME' | 'METRICS_LABELS' | 'METRICS_VALUE' | 'METRICS_LISTEN';

export class MetricsError extends Error {
  constructor(
    readonly code: MetricsErrorCode,
    message: string,
    readonly retriable = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MetricsError';
  }
}

export interface MetricOptions {
  /**
   * Cap on distinct label sets. Past it, new label sets are counted under every label set to
   * `overflowValue`, so a runaway label (e.g. one cgroup per job) cannot grow memory or scrapes.
   */
  maxSeries?: number;
  overflowValue?: string;
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type PromClient = typeof import('prom-client');
type PromMetric = import('prom-client').Counter<string> | import('prom-client').Gauge<string>;

/**
 * One metric: its values live here (the cap on label sets and the synchronous `get` that the
 * health logic reads need them); prom-client renders them once an endpoint is attached.
 */
abstract class Metric<M extends PromMetric> {
  abstract readonly type: 'counter' | 'gauge';
  private readonly series = new Map<string, { labels: Record<string, string>; value: number }>();
  protected prom: M | null = null;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    private readonly opts: MetricOptions = {},
  ) {}

  /** Current value for a label set (0 when never touched). */
  get(labels: Labels = {}): number {
    return this.series.get(this.values(labels).join('\u0000'))?.value ?? 0;
  }

  /** Number of distinct label sets. */
  get seriesCount(): number {
    return this.series.size;
  }

  /** Hands the metric to prom-client, with every value so far. */
  attach(prom: M): void {
    this.prom = prom;
    for (const s of this.series.values()) this.publish(s.labels, 0, s.value);
  }

  protected update(labels: Labels, fn: (old: number) => number): void {
    let values = this.values(labels);
    let key = values.join('\u0000');
    if (!this.series.has(key) && this.series.size >= (this.opts.maxSeries ?? Infinity)) {
      values = values.map(() => this.opts.overflowValue ?? '__other__');
      key = values.join('\u0000');
    }
    let s = this.series.get(key);
    if (!s) {
      // every label always given, in declaration order: the exposition stays stable (`b=""` for unset)
      const full: Record<string, string> = {};
      this.labelNames.forEach((l, i) => (full[l] = values[i]));
      s = { labels: full, value: 0 };
      this.series.set(key, s);
    }
    const old = s.value;
    s.value = fn(old);
    if (this.prom) this.publish(s.labels, old, s.value);
  }

  protected abstract publish(labels: Record<string, string>, old: number, value: number): void;

  private values(labels: Labels): string[] {
    for (const k of Object.keys(labels)) {
      if (!this.labelNames.includes(k)) throw new MetricsError('METRICS_LABELS', `${this.name}: unknown label ${k}`);
    }
    return this.labelNames.map((l) => String(labels[l] ?? ''));
  }
}

export class Counter extends Metric<import('prom-client').Counter<string>> {
  readonly type = 'counter' as const;

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new MetricsError('METRICS_VALUE', `${this.name}: counter increment must be >= 0, got ${by}`);
    this.update(labels, (v) => v + by);
  }

  protected publish(labels: Record<string, string>, old: number, value: number): void {
    this.prom?.inc(labels, value - old);
  }
}

export class Gauge extends Metric<import('prom-client').Gauge<string>> {
  readonly type = 'gauge' as const;

  set(labels: Labels, value: number): void {
    this.update(labels, () => value);
  }

  inc(labels: Labels = {}, by = 1): void {
    this.update(labels, (v) => v + by);
  }

  dec(labels: Labels = {}, by = 1): void {
    this.update(labels, (v) => v - by);
  }

  protected publish(labels: Record<string, string>, _old: number, value: number): void {
    this.prom?.set(labels, value);
  }
}

/**
 * The agent's metrics, exposed through prom-client (with its standard `process_*` and `nodejs_*`
 * metrics). prom-client is loaded only when an endpoint is started: it pulls in ~90 modules
 * (~12 MB RSS measured), which an agent without `metrics.listen` (the default) should not carry.
 */
export class MetricsRegistry {
  private readonly metrics = new Map<string, Counter | Gauge>();
  private readonly collectors: (() => void)[] = [];
  private client: { lib: PromClient; registry: import('prom-client').Registry; defaults: boolean } | null = null;

  /** Registers (or returns the already registered, identical) counter. */
  counter(name: string, help: string, labelNames: readonly string[] = [], opts?: MetricOptions): Counter {
    return this.register(name, help, labelNames, 'counter', opts) as Counter;
  }

  /** Registers (or returns the already registered, identical) gauge. */
  gauge(name: string, help: string, labelNames: readonly string[] = [], opts?: MetricOptions): Gauge {
    return this.register(name, help, labelNames, 'gauge', opts) as Gauge;
  }

  /** Every registered metric, in registration order (docs/metrics.md is generated from it: scripts/gen-docs.ts). */
  list(): Array<{ name: string; type: 'counter' | 'gauge'; help: string; labelNames: readonly string[] }> {
    return [...this.metrics.values()].map((m) => ({ name: m.name, type: m.type, help: m.help, labelNames: m.labelNames }));
  }

  /** Runs before every render, to refresh gauges sampled from elsewhere (e.g. queue depth). */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /**
   * Loads prom-client, hands it every metric, and adds its default `process_*`/`nodejs_*` metrics.
   * Idempotent; `startMetricsServer` calls it, `render` too.
   */
  expose(opts: { defaultMetrics?: boolean } = {}): void {
    if (!this.client) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const lib = require('prom-client') as PromClient;
      this.client = { lib, registry: new lib.Registry(), defaults: false };
      for (const m of this.metrics.values()) this.attach(m);
    }
    if (opts.defaultMetrics && !this.client.defaults) {
      this.client.defaults = true;
      // 1 s precision: the default (10 ms) makes the event-loop monitor wake the process 100 times a second
      this.client.lib.collectDefaultMetrics({ register: this.client.registry, eventLoopMonitoringPrecision: 1000 });
    }
  }

  get contentType(): string {
    this.expose();
    return this.client!.registry.contentType;
  }

  async render(): Promise<string> {
    this.expose();
    for (const c of this.collectors) c();
    return this.client!.registry.metrics();
  }

  private attach(m: Counter | Gauge): void {
    const { lib, registry } = this.client!;
    const conf = { name: m.name, help: m.help, labelNames: [...m.labelNames], registers: [registry] };
    if (m instanceof Counter) m.attach(new lib.Counter(conf));
    else m.attach(new lib.Gauge(conf));
  }

  private register(name: string, help: string, labelNames: readonly string[], type: 'counter' | 'gauge', opts?: MetricOptions): Counter | Gauge {
    if (!NAME_RE.test(name)) throw new MetricsError('METRICS_NAME', `invalid metric name ${name}`);
    for (const l of labelNames) {
      if (!LABEL_RE.test(l) || l.startsWith('__')) throw new MetricsError('METRICS_LABELS', `invalid label name ${l}`);
    }
    const existing = this.metrics.get(name);
    if (existing) {
      if (existing.type !== type || existing.labelNames.join(',') !== labelNames.join(',')) {
        throw new MetricsError('METRICS_NAME', `metric ${name} already registered with another type or labels`);
      }
      return existing;
    }
    const m = type === 'counter' ? new Counter(name, help, labelNames, opts) : new Gauge(name, help, labelNames, opts);
    this.metrics.set(name, m);
    if (this.client) this.attach(m);
    return m;
  }
}

/** Default cap on distinct `cgroup` values of `oomtrail_oom_kills_by_cgroup_total`. */
export const MAX_CGROUP_SERIES = 1000;
/** Default cap on distinct label sets of `oomtrail_oom_kills_total` (namespace, workload, container, victim, scope). */
export const MAX_WORKLOAD_SERIES = 1000;
/** A label value longer than any Kubernetes name (DNS subdomain, 253) counts under the overflow value. */
const MAX_LABEL_VALUE = 253;
const OVERFLOW = '__other__';

/** The record fields the kill counters are labelled by. */
export interface KillLabelSource {
  hook: string;
  victim_cgroup: string;
  oom_cgroup: string;
  pod_namespace?: string;
  workload_name?: string;
  k8s_container?: string;
  container_name?: string;
  container_id?: string;
  victim_is_container_init?: boolean | null;
  oom_scope?: string;
}

/** The agent's metrics, by their exported names (prefix `oomtrail_`). */
export class PipelineMetrics {
  readonly eventsCaptured: Counter;
  readonly oomKills: Counter;
  readonly oomKillsByCgroup: Counter;
  readonly sinkDelivered: Counter;
  readonly sinkRetried: Counter;
  readonly sinkRejected: Counter;
  readonly dropped: Counter;
  readonly queueDepth: Gauge;
  readonly ringbufConsumeMaxPerEvent: Gauge;
  readonly ringbufEvents: Counter;
  readonly spoolRecords: Gauge;
  readonly spoolBytes: Gauge;
  readonly sinkLastSuccess: Gauge;
  readonly sinkBuffered: Gauge;
  readonly sinkHeld: Gauge;
  readonly sinkHeldTotal: Counter;
  readonly kernelOomKills: Counter;
  readonly missedKills: Counter;
  readonly kernelLinesRejected: Counter;
  readonly trailCgroups: Gauge;
  readonly trailFds: Gauge;
  readonly trailFdBudget: Gauge;

  constructor(readonly registry: MetricsRegistry, opts: { maxCgroups?: number; maxWorkloads?: number } = {}) {
    const r = registry;
    this.eventsCaptured = r.counter('oomtrail_events_captured_total', 'OOM kill events read from the kernel, by hook.', ['hook']);
    // keyed by what survives a container's re-creation (pod UIDs and container ids churn): one series per workload
    this.oomKills = r.counter(
      'oomtrail_oom_kills_total',
      'OOM kills by Kubernetes namespace, workload (the pod\'s top owner from the Kubernetes API, else guessed from the pod name), container, victim (init: the container\'s PID 1; child: another process) and oom_scope (which limit was hit); label sets capped, the rest count with every label "__other__".',
      ['namespace', 'workload', 'container', 'victim', 'scope'],
      { maxSeries: opts.maxWorkloads ?? MAX_WORKLOAD_SERIES, overflowValue: OVERFLOW },
    );
    // kept for hosts without Kubernetes, where the cgroup (a systemd unit, a docker container) is the only name
    this.oomKillsByCgroup = r.counter(
      'oomtrail_oom_kills_by_cgroup_total',
      'OOM kills by victim cgroup (distinct cgroups capped; the rest count under cgroup="__other__").',
      ['cgroup'],
      { maxSeries: opts.maxCgroups ?? MAX_CGROUP_SERIES, overflowValue: OVERFLOW },
    );
    this.sinkDelivered = r.counter('oomtrail_sink_delivered_total', 'Records acknowledged by the sink.', ['sink']);
    this.sinkRetried = r.counter('oomtrail_sink_retried_total', 'Batch writes answered retryable (each is retried, never dropped).', ['sink']);
    this.sinkRejected = r.counter('oomtrail_sink_rejected_total', 'Records the sink rejected; written to the dead-letter file.', ['sink']);
    this.dropped = r.counter('oomtrail_dropped_total', 'Records discarded, by pipeline stage and reason.', ['stage', 'reason']);
    this.queueDepth = r.gauge('oomtrail_queue_depth', 'Records waiting in the in-memory queue.');
    this.ringbufConsumeMaxPerEvent = r.gauge(
      'oomtrail_kernel_ringbuf_consume_max_seconds_per_event',
      'The longest one read of the kernel ring buffer of OOM events took, per event it returned (the read only copies events out; decode and enrichment run after it).',
    );
    this.ringbufEvents = r.counter(
      'oomtrail_kernel_ringbuf_events_total',
      'OOM events read from the kernel ring buffer, by layout: full (both cgroup paths, 8,568 bytes of ring) or header (344 bytes: both cgroups are those of the last full event, as for a memory.oom.group sweep\'s later members).',
      ['layout'],
    );
    this.spoolRecords = r.gauge('oomtrail_spool_records', 'Records in the sink spool not yet acknowledged.', ['sink']);
    this.spoolBytes = r.gauge('oomtrail_spool_bytes', 'Bytes of spool segment files on disk.', ['sink']);
    this.sinkLastSuccess = r.gauge('oomtrail_sink_last_success_timestamp_seconds', 'Unix time of the last delivered batch.', ['sink']);
    this.sinkBuffered = r.gauge(
      'oomtrail_sink_buffered_records',
      'Records read back from the spool and held in memory (open and in-flight batch); bounded by 2 x pipeline.batch.max_events.',
      ['sink'],
    );
    this.sinkHeld = r.gauge(
      'oomtrail_sink_held_records',
      'Records the spool could not take (disk full, quota, I/O error, read-only), held in memory until it takes writes again or the sink has them; bounded by pipeline.spool.hold_max_records / hold_max_bytes, lost if the agent exits first.',
      ['sink'],
    );
    this.sinkHeldTotal = r.counter('oomtrail_sink_held_total', 'Records the spool could not take and the lane held in memory instead (each is later spooled, delivered, or counted as dropped).', ['sink']);
    this.kernelOomKills = r.counter('oomtrail_kernel_oom_kills_total', "The kernel's own OOM kill count since boot (/proc/vmstat oom_kill).");
    this.kernelLinesRejected = r.counter(
      'oomtrail_kernel_lines_rejected_total',
      "Kernel-log lines about OOM kills not believed, by reason: not_kernel (written by a process), malformed (not the kernel's format start to end), ambiguous (names that read more than one way). Each reader counts a line it refuses.",
      ['reason'],
    );
    this.trailCgroups = r.gauge(
      'oomtrail_trail_cgroups',
      "Memory-limited cgroups the trail samples, by how: held (its files kept open) or by_path (opened, read and closed each step, past the descriptor budget).",
      ['mode'],
    );
    this.trailFds = r.gauge('oomtrail_trail_open_files', 'Descriptors the trail keeps open (cgroup files and PSI triggers); never above oomtrail_trail_open_files_budget.');
    this.trailFdBudget = r.gauge(
      'oomtrail_trail_open_files_budget',
      'Descriptors the trail may keep open: trail.max_open_files, at most the soft RLIMIT_NOFILE less a reserve of max(1024, half the limit) for the rest of the agent.',
    );
    this.missedKills = r.counter(
      'oomtrail_missed_kills_total',
      'Kernel OOM kills since the first agent start of this boot with no record (live or backfilled), once unexplained past collectors.oomkill.audit_grace_ms.',
    );
  }

  /**
   * Counts one captured kill: `events_captured_total{hook}`, `oom_kills_total{namespace, workload, container, victim,
   * scope}` and `oom_kills_by_cgroup_total{cgroup}` — the victim's cgroup (the workload that lost a process); the OOM
   * cgroup would put every global OOM under "/" and every child's kill under its limited ancestor.
   */
  recordCapture(r: KillLabelSource): void {
    this.eventsCaptured.inc({ hook: r.hook });
    const bound = (v: string | undefined) => (v === undefined ? '' : v.length > MAX_LABEL_VALUE ? OVERFLOW : v);
    this.oomKills.inc({
      namespace: bound(r.pod_namespace),
      workload: bound(r.workload_name),
      // kubelet's container name when the pod is known; else the runtime's (docker's own name)
      container: bound(r.k8s_container ?? (r.pod_namespace === undefined ? r.container_name : undefined)),
      victim: r.victim_is_container_init === true ? 'init' : r.victim_is_container_init === false && r.container_id ? 'child' : '',
      scope: r.oom_scope ?? '',
    });
    this.oomKillsByCgroup.inc({ cgroup: r.victim_cgroup || r.oom_cgroup });
  }
}

export interface HealthReport {
  healthy: boolean;
  /** Why it is unhealthy, e.g. `sink loki failing for 312s: http 503`. */
  reason?: string;
}

export type HealthFn = () => HealthReport | Promise<HealthReport>;

export interface MetricsServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Parses `host:port`, `[v6]:port` or `:port` (all interfaces). */
export function parseListen(listen: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new MetricsError('METRICS_LISTEN', `metrics.listen must be host:port, got ${JSON.stringify(listen)}`);
  }
  const host = m[1] ?? m[2];
  return { host: host ? host : undefined, port };
}

function listenReason(err: NodeJS.ErrnoException): string {
  const why: Record<string, string> = {
    EADDRINUSE: 'address already in use by another program',
    EADDRNOTAVAIL: 'not an address of this host',
    EACCES: 'permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE)',
    ENOTFOUND: 'host name not found',
    EAI_AGAIN: 'host name not resolvable now',
  };
  return err.code ? `${err.code}${why[err.code] ? ` (${why[err.code]})` : ''}` : err.message;
}

/**
 * Serves `GET /metrics` (Prometheus text) and `GET /healthz` (200 `ok`, or 503 with the reason).
 * Resolves `null` when `listen` is empty (metrics off).
 */
export async function startMetricsServer(
  listen: string,
  registry: MetricsRegistry,
  health: HealthFn = () => ({ healthy: true }),
): Promise<MetricsServer | null> {
  if (listen.trim() === '') return null;
  const { host, port } = parseListen(listen);
  registry.expose({ defaultMetrics: true });
  const server = http.createServer((req, res) => {
    void handle(req, res, registry, health);
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new MetricsError('METRICS_LISTEN', `cannot listen on ${listen}: ${listenReason(err)}`, false, { cause: err })),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    host: addr.address,
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  registry: MetricsRegistry,
  health: HealthFn,
): Promise<void> {
  const url = (req.url ?? '/').split('?')[0];
  const send = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  try {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return send(405, 'method not allowed\n');
    }
    if (url === '/metrics') return send(200, await registry.render(), registry.contentType);
    if (url === '/healthz') {
      const h = await health();
      return h.healthy ? send(200, 'ok\n') : send(503, `${h.reason ?? 'unhealthy'}\n`);
    }
    send(404, 'not found\n');
  } catch (err) {
    // A failing collector or health function must not take the endpoint down.
    if (!res.headersSent) send(url === '/healthz' ? 503 : 500, `error: ${(err as Error).message}\n`);
    else res.destroy();
  }
}
