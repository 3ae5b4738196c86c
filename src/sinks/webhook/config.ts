import type convict from 'convict';

/** `sinks.webhook.*`: one HTTP POST per lane batch (see config/default.yaml for each key). */
export interface WebhookSinkConfig {
  enabled: boolean;
  /** Where batches are POSTed; for Alertmanager: `http://alertmanager:9093/api/v2/alerts`. */
  url: string;
  format: WebhookFormat;
  /** File holding a bearer token (read at each request; trailing newline removed). */
  bearer_token_file: string;
  request_timeout_ms: number;
  alertmanager: {
    /** `endsAt` = kill time + this; an OOM kill is an event, the alert resolves by itself. */
    resolve_after_ms: number;
    severity: string;
    /** Static labels on every alert: `name=value,name=value`. */
    labels: string;
    /** `generatorURL` of each alert; '' = none. */
    generator_url: string;
  };
}

export type WebhookFormat = 'json' | 'alertmanager';
export const WEBHOOK_FORMATS: readonly WebhookFormat[] = ['json', 'alertmanager'];

const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** `name=value,name=value` → pairs; messages never quote a value. */
export function parseWebhookLabels(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (text.trim() === '') return out;
  for (const item of text.split(',')) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Error('must be name=value pairs separated by commas');
    const name = item.slice(0, eq).trim();
    if (!LABEL_NAME_RE.test(name)) throw new Error(`label name ${JSON.stringify(name)} is not [a-zA-Z_][a-zA-Z0-9_]*`);
    out.push([name, item.slice(eq + 1).trim()]);
  }
  return out;
}

function webhookUrl(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string');
  if (x === '') return; // checked when the sink is enabled
  let u: URL;
  try {
    u = new URL(x);
  } catch {
    throw new Error('must be an http:// or https:// URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('must be an http:// or https:// URL');
  if (u.username || u.password) throw new Error('must not carry credentials: use bearer_token_file');
}

function noControl(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string');
  if (/[\u0000-\u001f\u007f]/.test(x)) throw new Error('must not contain control characters');
}

function positiveInt(x: unknown): void {
  if (!(typeof x === 'number' && Number.isSafeInteger(x) && x > 0)) throw new Error('must be an integer > 0');
}

function labels(x: unknown): void {
  noControl(x);
  parseWebhookLabels(x as string);
}

export const webhookConfigSchema: convict.Schema<WebhookSinkConfig> = {
  enabled: {
    doc: 'POST records to an HTTP endpoint (alerting).',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_WEBHOOK_ENABLED',
  },
  url: {
    doc: "http(s) URL each batch is POSTed to (Alertmanager: http://HOST:9093/api/v2/alerts); required when enabled.",
    format: webhookUrl,
    default: '',
    env: 'OOMTRAIL_SINKS_WEBHOOK_URL',
  },
  format: {
    doc: 'Body: json ({"records":[...]}, the records byte for byte) or alertmanager (Alertmanager v2 alerts array).',
    format: [...WEBHOOK_FORMATS],
    default: 'json',
    env: 'OOMTRAIL_SINKS_WEBHOOK_FORMAT',
  },
  bearer_token_file: {
    doc: "File holding a bearer token sent as Authorization: Bearer (checked at start, read at each request; never logged); '' = none.",
    format: noControl,
    default: '',
    sensitive: true,
    env: 'OOMTRAIL_SINKS_WEBHOOK_BEARER_TOKEN_FILE',
  },
  request_timeout_ms: {
    doc: 'Timeout of one POST (milliseconds); a timed-out POST is retried.',
    format: positiveInt,
    default: 5000,
    env: 'OOMTRAIL_SINKS_WEBHOOK_REQUEST_TIMEOUT_MS',
  },
  alertmanager: {
    resolve_after_ms: {
      doc: 'Alertmanager format: endsAt = kill time + this many milliseconds (the alert resolves by itself).',
      format: positiveInt,
      default: 3600000,
      env: 'OOMTRAIL_SINKS_WEBHOOK_ALERTMANAGER_RESOLVE_AFTER_MS',
    },
    severity: {
      doc: 'Alertmanager format: value of the severity label.',
      format: noControl,
      default: 'warning',
      env: 'OOMTRAIL_SINKS_WEBHOOK_ALERTMANAGER_SEVERITY',
    },
    labels: {
      doc: 'Alertmanager format: static labels on every alert, name=value pairs separated by commas.',
      format: labels,
      default: '',
      env: 'OOMTRAIL_SINKS_WEBHOOK_ALERTMANAGER_LABELS',
    },
    generator_url: {
      doc: "Alertmanager format: generatorURL of every alert (e.g. a Grafana dashboard link); '' = none.",
      format: noControl,
      default: '',
      env: 'OOMTRAIL_SINKS_WEBHOOK_ALERTMANAGER_GENERATOR_URL',
    },
  },
};

/** Cross-key checks. */
export function checkWebhookConfig(config: WebhookSinkConfig): string[] {
  const problems: string[] = [];
  if (config.enabled && !config.url) problems.push('sinks.webhook.url is required when sinks.webhook.enabled is true');
  return problems;
}
