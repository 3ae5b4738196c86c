import { redactUrl } from '../../config/formats';
import { readSecretFileAsync } from '../secret';
import type { OomRecord } from '../../record/record';
import { encodeRecordJson } from '../../record/json';
import type { HealthStatus, Sink, WriteResult } from '../sink';
import { parseWebhookLabels, type WebhookSinkConfig } from './config';

/**
 * The webhook sink: one POST per lane batch, so an OOM kill can page someone within seconds.
 *  - `json`: `{"records":[<record>,...]}`, each record exactly its JSON encoding (the file/Loki line bytes).
 *  - `alertmanager`: the Alertmanager v2 `POST /api/v2/alerts` body: one alert per record, labelled by
 *    `alertname="OOMKill"`, host, constraint, container/pod and `event_id` (so two kills are two alerts and a
 *    retried delivery is the same alert), `startsAt` = kill time, `endsAt` = kill time + resolve_after_ms.
 * Status classification (the lane retries and dead-letters): 2xx delivered; 5xx, 408, 429, timeouts and
 * network errors retryable (Retry-After honoured); any other status rejected (the receiver will never take
 * that body, so resending it would only repeat the page or the error).
 */
export class WebhookSink implements Sink {
  readonly name = 'webhook';
  private readonly staticLabels: Array<[string, string]>;

  constructor(private readonly config: WebhookSinkConfig) {
    this.staticLabels = parseWebhookLabels(config.alertmanager.labels);
  }

  body(batch: readonly OomRecord[]): string {
    if (this.config.format === 'alertmanager') return JSON.stringify(batch.map((r) => this.alert(r)));
    return `{"records":[${batch.map(encodeRecordJson).join(',')}]}`;
  }

  /** One Alertmanager v2 postable alert. Label values are strings; empty labels are left out (Alertmanager drops them). */
  alert(r: OomRecord): Record<string, unknown> {
    const labels: Record<string, string> = {};
    for (const [k, v] of this.staticLabels) labels[k] = v;
    const set = (k: string, v: unknown) => {
      if (v !== null && v !== undefined && String(v) !== '') labels[k] = String(v);
    };
    set('alertname', 'OOMKill');
    set('severity', this.config.alertmanager.severity);
    set('host', r.host);
    set('constraint', r.constraint);
    set('container_id', r.container_id);
    set('pod_uid', r.pod_uid);
    set('victim_comm', r.victim_comm);
    set('oom_cgroup', r.oom_cgroup);
    set('event_id', r.event_id);
    const start = new Date(r.time.replace(/\.(\d{3})\d*Z$/, '.$1Z'));
    const startsAt = Number.isNaN(start.getTime()) ? new Date() : start;
    const endsAt = new Date(startsAt.getTime() + this.config.alertmanager.resolve_after_ms);
    const rssKb = (r.victim_anon_rss_kb ?? 0) + (r.victim_file_rss_kb ?? 0) + (r.victim_shmem_rss_kb ?? 0);
    const where = r.container_id ? `container ${r.container_id.slice(0, 12)}` : `cgroup ${r.victim_cgroup || '/'}`;
    const alert: Record<string, unknown> = {
      labels,
      annotations: {
        summary: `OOM kill on ${r.host}: ${r.victim_comm} (pid ${r.victim_pid}) in ${where}`,
        description:
          `${r.constraint} OOM: killed ${r.victim_comm} pid ${r.victim_pid}, RSS ${rssKb} kB` +
          (r.memcg_limit_bytes ? `, memcg limit ${r.memcg_limit_bytes} bytes` : '') +
          ` (oom_cgroup ${r.oom_cgroup || '/'}, event ${r.event_id})`,
        record: encodeRecordJson(r),
      },
      startsAt: startsAt.toISOString(),
      endsAt: endsAt.toISOString(),
    };
    if (this.config.alertmanager.generator_url) alert.generatorURL = this.config.alertmanager.generator_url;
    return alert;
  }

  private async headers(): Promise<Record<string, string>> {
    const h: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'oomtrail' };
    if (this.config.bearer_token_file) {
      const token = await readSecretFileAsync(this.config.bearer_token_file);
      h.authorization = `Bearer ${token}`;
    }
    return h;
  }

  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    if (batch.length === 0) return { status: 'delivered' };
    let headers: Record<string, string>;
    try {
      headers = await this.headers();
    } catch (err) {
      // an operator can fix the file: keep the records spooled and retry
      return { status: 'retryable', reason: `bearer_token_file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
    }
    let res: Response;
    let text = '';
    try {
      res = await fetch(this.config.url, {
        method: 'POST',
        headers,
        body: this.body(batch),
        signal: AbortSignal.timeout(this.config.request_timeout_ms),
      });
      text = await res.text().catch(() => '');
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const why = e.name === 'TimeoutError' ? `timeout after ${this.config.request_timeout_ms} ms` : (e.cause?.code ?? e.message);
      return { status: 'retryable', reason: this.scrub(`POST ${redactUrl(this.config.url)}: ${why}`) };
    }
    const result = classifyWebhookStatus(res.status, text, res.headers.get('retry-after'));
    // the receiver's answer may echo the URL's path (its token); reasons reach logs and /healthz
    return result.status === 'delivered' ? result : { ...result, reason: this.scrub(result.reason) };
  }

  /** Removes the URL and every part of its path or query that could be a token from `text`. */
  private scrub(text: string): string {
    const u = new URL(this.config.url);
    const parts = [this.config.url, u.href, `${u.pathname}${u.search}`, ...u.pathname.split('/'), ...u.search.slice(1).split(/[&=]/)];
    const secrets = [...new Set(parts.filter((p) => p.length >= 4))].sort((a, b) => b.length - a.length);
    let out = text;
    for (const secret of secrets) out = out.split(secret).join('…');
    return out;
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}

  /** Healthy when the endpoint answers at all (any HTTP status): webhooks rarely have a health route. */
  async healthcheck(): Promise<HealthStatus> {
    try {
      const res = await fetch(this.config.url, { method: 'HEAD', signal: AbortSignal.timeout(this.config.request_timeout_ms) });
      await res.arrayBuffer().catch(() => undefined);
      return res.status >= 500 ? { healthy: false, detail: `HTTP ${res.status}` } : { healthy: true };
    } catch (err) {
      return { healthy: false, detail: this.scrub((err as Error & { cause?: { code?: string } }).cause?.code ?? (err as Error).message) };
    }
  }
}

/** Retry-After: seconds or an HTTP date → milliseconds (undefined when absent or unparsable). */
export function parseRetryAfterMs(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export function classifyWebhookStatus(status: number, body: string, retryAfter?: string | null): WriteResult {
  if (status >= 200 && status < 300) return { status: 'delivered' };
  const reason = `HTTP ${status}${body ? `: ${body.slice(0, 300).replace(/\s+/g, ' ').trim()}` : ''}`;
  if (status >= 500 || status === 408 || status === 429) {
    const afterMs = parseRetryAfterMs(retryAfter);
    return afterMs === undefined ? { status: 'retryable', reason } : { status: 'retryable', reason, afterMs };
  }
  return { status: 'rejected', reason };
}
