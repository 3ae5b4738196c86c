import { httpUrl, natural, noControl, nonEmptyString, positive } from '../../config/formats';
import type { ConfigSchema } from '../sink';

/** `sinks.clickhouse.*`. Every key has an env var `OOMTRAIL_SINKS_CLICKHOUSE_<KEY>` (`tls.ca_file` → `..._TLS_CA_FILE`). */
export interface ClickHouseSinkConfig {
  enabled: boolean;
  url: string;
  database: string;
  table: string;
  username: string;
  password: string;
  password_file: string;
  tls: { ca_file: string; cert_file: string; key_file: string };
  compression: boolean;
  request_timeout_ms: number;
  async_insert: boolean;
  create_schema: boolean;
  ttl_days: number;
  keep_alive_idle_ms: number;
  config_error_retry_ms: number;
}

/** Database and table names: plain identifiers, so DDL and INSERTs never need escaping beyond backticks. */
export const IDENTIFIER_RE = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function identifier(x: unknown): void {
  if (typeof x !== 'string' || !IDENTIFIER_RE.test(x)) {
    throw new Error('must be an identifier: a letter or _, then letters, digits or _ (at most 64)');
  }
}

/** http(s)://host[:port][/path], without credentials (they belong in username/password, which are never logged). */
export const clickhouseUrl = httpUrl({
  credentials: 'username and password (or password_file)',
  example: 'http://127.0.0.1:8123 or https://ch.example:8443',
  noQuery: true,
});

export const clickhouseConfigSchema: ConfigSchema<ClickHouseSinkConfig> = {
  enabled: {
    doc: 'Send records to ClickHouse.',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_ENABLED',
  },
  url: {
    doc: 'ClickHouse HTTP(S) endpoint, e.g. http://127.0.0.1:8123 or https://ch.example:8443 (no credentials in it).',
    format: clickhouseUrl,
    default: 'http://127.0.0.1:8123',
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_URL',
  },
  database: {
    doc: 'Database of the table (created when create_schema is on).',
    format: identifier,
    default: 'oomtrail',
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_DATABASE',
  },
  table: {
    doc: 'Table the records are inserted into, one row per record.',
    format: identifier,
    default: 'oom_kills',
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_TABLE',
  },
  username: {
    doc: 'ClickHouse user.',
    format: nonEmptyString,
    default: 'default',
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_USERNAME',
  },
  password: {
    doc: 'Password of the user (never logged); prefer password_file.',
    format: String,
    default: '',
    sensitive: true,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD',
  },
  password_file: {
    doc: "File holding the password (one trailing newline is ignored); read at start and again after an authentication failure. '' = use password.",
    format: noControl,
    default: '',
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE',
  },
  tls: {
    ca_file: {
      doc: "PEM CA bundle that signed the server's certificate (https:// URLs); '' = the system CAs.",
      format: noControl,
      default: '',
      env: 'OOMTRAIL_SINKS_CLICKHOUSE_TLS_CA_FILE',
    },
    cert_file: {
      doc: "PEM client certificate for mutual TLS (needs key_file and ca_file); '' = none.",
      format: noControl,
      default: '',
      env: 'OOMTRAIL_SINKS_CLICKHOUSE_TLS_CERT_FILE',
    },
    key_file: {
      doc: "PEM private key of cert_file; '' = none.",
      format: noControl,
      default: '',
      env: 'OOMTRAIL_SINKS_CLICKHOUSE_TLS_KEY_FILE',
    },
  },
  compression: {
    doc: 'gzip the insert bodies (JSON rows compress ~10x).',
    format: Boolean,
    default: true,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_COMPRESSION',
  },
  request_timeout_ms: {
    doc: 'Timeout of one HTTP request to ClickHouse (milliseconds); a timed-out insert is retried (deduplicated).',
    format: positive,
    default: 30000,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_REQUEST_TIMEOUT_MS',
  },
  async_insert: {
    doc: 'Use server-side async inserts (async_insert=1, wait_for_async_insert=1): for large fleets of agents; duplicates are then removed only by ReplacingMergeTree (query with FINAL).',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_ASYNC_INSERT',
  },
  create_schema: {
    doc: 'Create the database, the table and its migrations table, and apply newer schema versions, before the first insert.',
    format: Boolean,
    default: true,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_CREATE_SCHEMA',
  },
  ttl_days: {
    doc: 'Rows are dropped (whole monthly parts, ttl_only_drop_parts) this many days after their time; 0 = keep forever. Applies when the table is created.',
    format: natural,
    default: 365,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_TTL_DAYS',
  },
  keep_alive_idle_ms: {
    doc: "Idle keep-alive sockets are closed after this long (milliseconds); kept below the server's keep_alive_timeout (lowered automatically if the server announces less); 0 = no keep-alive.",
    format: natural,
    default: 2000,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_KEEP_ALIVE_IDLE_MS',
  },
  config_error_retry_ms: {
    doc: 'Retry delay after errors only an operator can fix (authentication, permissions, missing table, TLS): records stay spooled, one attempt per this many milliseconds.',
    format: positive,
    default: 60000,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_CONFIG_ERROR_RETRY_MS',
  },
};
