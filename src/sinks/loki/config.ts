import { httpUrl, noControl, positive } from '../../config/formats';
import type { KeyProblem } from '../../config/errors';
import type { ConfigSchema } from '../sink';
import { StartProblems } from '../secret';

/** `sinks.loki.*`: see docs/loki.md for the stream design and config/default.yaml for each key. */
export interface LokiSinkConfig {
  enabled: boolean;
  /** Base URL of Loki (or of a gateway in front of it): `<url>/loki/api/v1/push`, `<url>/ready`. */
  url: string;
  /** `X-Scope-OrgID`; '' = no header (single-tenant Loki, auth_enabled: false). */
  tenant_id: string;
  basic_auth_user: string;
  /** File holding the basic-auth password (read at each request, trailing newline removed). */
  basic_auth_password_file: string;
  /** File holding a bearer token (read at each request). */
  bearer_token_file: string;
  tls: {
    ca_file: string;
    cert_file: string;
    key_file: string;
    insecure_skip_verify: boolean;
  };
  /** Static labels added to every stream: `name=value,name=value`. */
  labels: string;
  encoding: LokiEncoding;
  /** Largest push request (uncompressed entry bytes); a lane batch is split into requests of at most this size. */
  batch_max_bytes: number;
  request_timeout_ms: number;
  /** The server's limits (Loki's defaults). The sink stays below them by dropping optional pieces, counted. */
  limits: {
    max_label_names_per_series: number;
    max_label_value_length: number;
    max_line_size: number;
    max_structured_metadata_size: number;
    max_structured_metadata_entries: number;
  };
}

export type LokiEncoding = 'protobuf' | 'json';
export const LOKI_ENCODINGS: readonly LokiEncoding[] = ['protobuf', 'json'];

/** Label names the sink sets itself; static labels may not reuse them. */
export const RESERVED_LABELS: readonly string[] = ['job', 'host', 'constraint', 'kind', 'service_name'];
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * Parses `name=value,name=value` (whitespace around items trimmed; a value may not contain `,`).
 * Throws messages that never quote a value.
 */
export function parseStaticLabels(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (text.trim() === '') return out;
  const seen = new Set<string>();
  for (const item of text.split(',')) {
    const part = item.trim();
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error('must be name=value pairs separated by commas');
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (!LABEL_NAME_RE.test(name)) throw new Error(`label name ${JSON.stringify(name)} must match [a-zA-Z_][a-zA-Z0-9_]*`);
    if (name.startsWith('__')) throw new Error(`label name ${JSON.stringify(name)} is reserved (starts with __)`);
    if (RESERVED_LABELS.includes(name)) throw new Error(`label name ${JSON.stringify(name)} is set by the sink itself`);
    if (seen.has(name)) throw new Error(`label name ${JSON.stringify(name)} appears twice`);
    if (value === '') throw new Error(`label ${name} has an empty value (Loki drops empty labels)`);
    if (/[\u0000-\u001f\u007f]/.test(value)) throw new Error(`label ${name} value must not contain control characters`);
    seen.add(name);
    out.push([name, value]);
  }
  return out;
}

function staticLabels(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string');
  parseStaticLabels(x);
}

const lokiUrl = httpUrl({ credentials: 'basic_auth_user and basic_auth_password_file', noQuery: true });

export const lokiConfigSchema: ConfigSchema<LokiSinkConfig> = {
  enabled: {
    doc: 'Send records to Loki.',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_LOKI_ENABLED',
  },
  url: {
    doc: 'Base URL of Loki: records are pushed to <url>/loki/api/v1/push, health is GET <url>/ready.',
    format: lokiUrl,
    default: 'http://127.0.0.1:3100',
    env: 'OOMTRAIL_SINKS_LOKI_URL',
  },
  tenant_id: {
    doc: "Tenant sent as X-Scope-OrgID; '' = no header (Loki with auth_enabled: false).",
    format: noControl,
    default: '',
    env: 'OOMTRAIL_SINKS_LOKI_TENANT_ID',
  },
  basic_auth_user: {
    doc: "HTTP basic auth user; '' = no basic auth. The password comes from basic_auth_password_file.",
    format: noControl,
    default: '',
    env: 'OOMTRAIL_SINKS_LOKI_BASIC_AUTH_USER',
  },
  basic_auth_password_file: {
    doc: 'File holding the basic auth password (read at each request; never logged).',
    format: noControl,
    default: '',
    sensitive: true,
    env: 'OOMTRAIL_SINKS_LOKI_BASIC_AUTH_PASSWORD_FILE',
  },
  bearer_token_file: {
    doc: "File holding a bearer token sent as Authorization: Bearer (read at each request; never logged); '' = none.",
    format: noControl,
    default: '',
    sensitive: true,
    env: 'OOMTRAIL_SINKS_LOKI_BEARER_TOKEN_FILE',
  },
  tls: {
    ca_file: {
      doc: "PEM CA bundle to verify Loki's certificate (https URLs); '' = the system CAs.",
      format: noControl,
      default: '',
      env: 'OOMTRAIL_SINKS_LOKI_TLS_CA_FILE',
    },
    cert_file: {
      doc: "PEM client certificate for mutual TLS; '' = none.",
      format: noControl,
      default: '',
      env: 'OOMTRAIL_SINKS_LOKI_TLS_CERT_FILE',
    },
    key_file: {
      doc: "PEM private key of cert_file; '' = none.",
      format: noControl,
      default: '',
      sensitive: true,
      env: 'OOMTRAIL_SINKS_LOKI_TLS_KEY_FILE',
    },
    insecure_skip_verify: {
      doc: "Do not verify Loki's certificate (testing only).",
      format: Boolean,
      default: false,
      env: 'OOMTRAIL_SINKS_LOKI_TLS_INSECURE_SKIP_VERIFY',
    },
  },
  labels: {
    doc: "Static labels on every stream, name=value pairs separated by commas (e.g. cluster=prod,env=staging); keep them low-cardinality.",
    format: staticLabels,
    default: '',
    env: 'OOMTRAIL_SINKS_LOKI_LABELS',
  },
  encoding: {
    doc: 'Push encoding: protobuf (snappy-compressed, Loki\'s native format) or json.',
    format: [...LOKI_ENCODINGS],
    default: 'protobuf',
    env: 'OOMTRAIL_SINKS_LOKI_ENCODING',
  },
  batch_max_bytes: {
    doc: 'Largest push request in uncompressed entry bytes; a larger lane batch is split into several requests.',
    format: positive,
    default: 1048576,
    env: 'OOMTRAIL_SINKS_LOKI_BATCH_MAX_BYTES',
  },
  request_timeout_ms: {
    doc: 'Timeout of one push or /ready request (milliseconds); a timed-out push is retried.',
    format: positive,
    default: 10000,
    env: 'OOMTRAIL_SINKS_LOKI_REQUEST_TIMEOUT_MS',
  },
  limits: {
    max_label_names_per_series: {
      doc: "Loki's limits_config.max_label_names_per_series: static labels beyond it are dropped (counted).",
      format: positive,
      default: 15,
      env: 'OOMTRAIL_SINKS_LOKI_LIMITS_MAX_LABEL_NAMES_PER_SERIES',
    },
    max_label_value_length: {
      doc: "Loki's limits_config.max_label_value_length (bytes): longer label values are truncated (counted).",
      format: positive,
      default: 2048,
      env: 'OOMTRAIL_SINKS_LOKI_LIMITS_MAX_LABEL_VALUE_LENGTH',
    },
    max_line_size: {
      doc: "Loki's limits_config.max_line_size (bytes): a longer line is dead-lettered without being sent.",
      format: positive,
      default: 262144,
      env: 'OOMTRAIL_SINKS_LOKI_LIMITS_MAX_LINE_SIZE',
    },
    max_structured_metadata_size: {
      doc: "Loki's limits_config.max_structured_metadata_size (bytes): optional metadata is dropped to fit (counted).",
      format: positive,
      default: 65536,
      env: 'OOMTRAIL_SINKS_LOKI_LIMITS_MAX_STRUCTURED_METADATA_SIZE',
    },
    max_structured_metadata_entries: {
      doc: "Loki's limits_config.max_structured_metadata_entries_count: optional metadata is dropped to fit (counted).",
      format: positive,
      default: 128,
      env: 'OOMTRAIL_SINKS_LOKI_LIMITS_MAX_STRUCTURED_METADATA_ENTRIES',
    },
  },
};

/** Cross-key checks the schema's per-key formats cannot do (no I/O). Messages never contain a secret. */
export function checkLokiConfig(config: LokiSinkConfig): KeyProblem[] {
  const p = new StartProblems('sinks.loki');
  const problem = p.add.bind(p);
  if (config.basic_auth_user && !config.basic_auth_password_file) problem('basic_auth_user', 'needs sinks.loki.basic_auth_password_file', ['basic_auth_password_file']);
  if (!config.basic_auth_user && config.basic_auth_password_file) problem('basic_auth_password_file', 'needs sinks.loki.basic_auth_user', ['basic_auth_user']);
  if (config.basic_auth_user && config.bearer_token_file) problem('bearer_token_file', 'set basic auth or a bearer token, not both', ['basic_auth_user']);
  if (Boolean(config.tls.cert_file) !== Boolean(config.tls.key_file)) problem('tls.cert_file', 'cert_file and key_file go together', ['tls.key_file']);
  const usesTls = config.tls.ca_file || config.tls.cert_file || config.tls.insecure_skip_verify;
  if (usesTls && !config.url.startsWith('https:')) problem('url', 'is not https:// but sinks.loki.tls.* is set', ['tls.ca_file', 'tls.cert_file', 'tls.insecure_skip_verify']);
  try {
    parseStaticLabels(config.labels);
  } catch (err) {
    problem('labels', (err as Error).message);
  }
  return p.problems;
}
