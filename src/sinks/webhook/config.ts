import { httpUrl, noControl, positive } from '../../config/formats';
import type { KeyProblem } from '../../config/errors';
import type { ConfigSchema } from '../sink';

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

const webhookUrl = httpUrl({ credentials: 'bearer_token_file', allowEmpty: true });

function labels(x: unknown): void {
  noControl(x);
  parseWebhookLabels(x as string);
}

export const webhookConfigSchema: ConfigSchema<WebhookSinkConfig> = {
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
    format: positive,
    default: 5000,
    env: 'OOMTRAIL_SINKS_WEBHOOK_REQUEST_TIMEOUT_MS',
  },
  alertmanager: {
    resolve_after_ms: {
      doc: 'Alertmanager format: endsAt = kill time + this many milliseconds (the alert resolves by itself).',
      format: positive,
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

/** Cross-key checks (no I/O). */
export function checkWebhookConfig(config: WebhookSinkConfig): KeyProblem[] {
  const problems: KeyProblem[] = [];
  if (config.enabled && !config.url) problems.push({ key: 'sinks.webhook.url', message: 'is required when sinks.webhook.enabled is true' });
  return problems;
}
