import { natural, noControl, nonEmptyString, oneOf, positive } from '../../config/formats';
import type { KeyProblem } from '../../config/errors';
import type { ConfigSchema } from '../sink';
import { StartProblems } from '../secret';

/** `sinks.kafka.*`: see docs/kafka.md (message contract, delivery guarantees) and config/default.yaml for each key. */
export interface KafkaSinkConfig {
  enabled: boolean;
  /** Bootstrap brokers, `host:port` separated by commas. */
  brokers: string;
  topic: string;
  client_id: string;
  /** Message key: partitions (and compaction) follow it. */
  key: KafkaKey;
  compression: KafkaCompression;
  acks: KafkaAcks;
  sasl: {
    mechanism: KafkaSaslMechanism;
    username: string;
    /** File holding the password (one trailing newline ignored); read at start. Never logged. */
    password_file: string;
  };
  tls: {
    enabled: boolean;
    ca_file: string;
    cert_file: string;
    key_file: string;
    insecure_skip_verify: boolean;
  };
  /** Largest produce request (uncompressed value + key + headers); a larger batch is sent as several requests. */
  message_max_bytes: number;
  request_timeout_ms: number;
  /** kafkajs's own retries of one send before the lane's retry/spool takes over. */
  retries: number;
  create_topic: boolean;
  /** Retry delay after errors only an operator can fix (missing topic, authentication, authorization of the cluster). */
  config_error_retry_ms: number;
}

export type KafkaKey = 'host' | 'oom_cgroup' | 'event_id';
export const KAFKA_KEYS: readonly KafkaKey[] = ['host', 'oom_cgroup', 'event_id'];
/** kafkajs ships gzip only; snappy/lz4/zstd need codec packages that do not install here (docs/kafka.md). */
export type KafkaCompression = 'gzip' | 'none';
export const KAFKA_COMPRESSIONS: readonly KafkaCompression[] = ['gzip', 'none'];
export type KafkaAcks = 'all';
export const KAFKA_ACKS: readonly KafkaAcks[] = ['all'];
export type KafkaSaslMechanism = 'none' | 'plain' | 'scram-sha-256' | 'scram-sha-512';
export const KAFKA_SASL_MECHANISMS: readonly KafkaSaslMechanism[] = ['none', 'plain', 'scram-sha-256', 'scram-sha-512'];

/** Kafka's legal topic names. */
export const TOPIC_RE = /^[A-Za-z0-9._-]{1,249}$/;
const BROKER_RE = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/;

/** `host:port[,host:port…]` → the list; throws a message naming what is wrong (never a secret: brokers are not). */
export function parseBrokers(x: string): string[] {
  const list = x.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (list.length === 0) throw new Error('must list at least one broker as host:port (comma-separated)');
  for (const b of list) {
    // user:password@host would put a password into every log line that quotes the broker
    if (b.includes('@')) throw new Error('must not carry credentials (user:password@): use sinks.kafka.sasl.*');
    const m = BROKER_RE.exec(b);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new Error(`${JSON.stringify(b.slice(0, 100))} is not host:port`);
  }
  return list;
}

function brokers(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string of host:port separated by commas');
  parseBrokers(x);
}

function topic(x: unknown): void {
  if (typeof x !== 'string' || !TOPIC_RE.test(x) || x === '.' || x === '..') {
    throw new Error('must be a Kafka topic name: 1-249 of letters, digits, ".", "_" and "-"');
  }
}

export const kafkaConfigSchema: ConfigSchema<KafkaSinkConfig> = {
  enabled: { doc: 'Publish records to Kafka.', format: Boolean, default: false, env: 'OOMTRAIL_SINKS_KAFKA_ENABLED' },
  brokers: {
    doc: 'Bootstrap brokers: host:port, comma-separated.',
    format: brokers,
    default: '127.0.0.1:9092',
    env: 'OOMTRAIL_SINKS_KAFKA_BROKERS',
  },
  topic: { doc: 'Topic the records are published to.', format: topic, default: 'oomtrail.records', env: 'OOMTRAIL_SINKS_KAFKA_TOPIC' },
  client_id: { doc: 'Kafka client id (broker logs, quotas).', format: nonEmptyString, default: 'oomtrail', env: 'OOMTRAIL_SINKS_KAFKA_CLIENT_ID' },
  key: {
    doc: 'Message key: host, oom_cgroup or event_id.',
    format: oneOf(KAFKA_KEYS),
    default: 'host',
    env: 'OOMTRAIL_SINKS_KAFKA_KEY',
  },
  compression: {
    doc: 'Compression of the record batches: gzip or none.',
    format: oneOf(KAFKA_COMPRESSIONS),
    default: 'gzip',
    env: 'OOMTRAIL_SINKS_KAFKA_COMPRESSION',
  },
  acks: {
    doc: 'Acknowledgement required from the brokers: all (every in-sync replica; required by the idempotent producer).',
    format: oneOf(KAFKA_ACKS),
    default: 'all',
    env: 'OOMTRAIL_SINKS_KAFKA_ACKS',
  },
  sasl: {
    mechanism: {
      doc: 'SASL mechanism: none, plain, scram-sha-256 or scram-sha-512.',
      format: oneOf(KAFKA_SASL_MECHANISMS),
      default: 'none',
      env: 'OOMTRAIL_SINKS_KAFKA_SASL_MECHANISM',
    },
    username: { doc: 'SASL user.', format: noControl, default: '', env: 'OOMTRAIL_SINKS_KAFKA_SASL_USERNAME' },
    password_file: {
      doc: 'File holding the SASL password (one trailing newline ignored), read at start. Never logged.',
      format: noControl,
      default: '',
      env: 'OOMTRAIL_SINKS_KAFKA_SASL_PASSWORD_FILE',
    },
  },
  tls: {
    enabled: { doc: 'Connect to the brokers over TLS.', format: Boolean, default: false, env: 'OOMTRAIL_SINKS_KAFKA_TLS_ENABLED' },
    ca_file: { doc: "PEM CA bundle of the brokers' certificates; '' = the system CAs.", format: noControl, default: '', env: 'OOMTRAIL_SINKS_KAFKA_TLS_CA_FILE' },
    cert_file: { doc: "PEM client certificate (mutual TLS); '' = none.", format: noControl, default: '', env: 'OOMTRAIL_SINKS_KAFKA_TLS_CERT_FILE' },
    key_file: { doc: "PEM private key of cert_file; '' = none.", format: noControl, default: '', env: 'OOMTRAIL_SINKS_KAFKA_TLS_KEY_FILE' },
    insecure_skip_verify: {
      doc: "Do not verify the brokers' certificates (testing only).",
      format: Boolean,
      default: false,
      env: 'OOMTRAIL_SINKS_KAFKA_TLS_INSECURE_SKIP_VERIFY',
    },
  },
  message_max_bytes: {
    doc: "Largest produce request in uncompressed bytes (keep <= the broker's message.max.bytes); larger batches are split, a larger single record is dead-lettered.",
    format: positive,
    default: 1000000,
    env: 'OOMTRAIL_SINKS_KAFKA_MESSAGE_MAX_BYTES',
  },
  request_timeout_ms: {
    doc: 'Timeout of one request to a broker (milliseconds).',
    format: positive,
    default: 30000,
    env: 'OOMTRAIL_SINKS_KAFKA_REQUEST_TIMEOUT_MS',
  },
  retries: {
    doc: "kafkajs's retries of one send (exponential, 300 ms to 30 s) before the lane's retry and spool take over.",
    format: natural,
    default: 8,
    env: 'OOMTRAIL_SINKS_KAFKA_RETRIES',
  },
  create_topic: {
    doc: 'Create the topic (broker defaults for partitions and replication) when it does not exist.',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_KAFKA_CREATE_TOPIC',
  },
  config_error_retry_ms: {
    doc: 'Retry delay after errors only an operator can fix (missing topic, SASL authentication): records stay spooled.',
    format: positive,
    default: 30000,
    env: 'OOMTRAIL_SINKS_KAFKA_CONFIG_ERROR_RETRY_MS',
  },
};

/** Cross-key checks (no I/O). Messages never hold a secret. */
export function checkKafkaConfig(c: KafkaSinkConfig): KeyProblem[] {
  const p = new StartProblems('sinks.kafka');
  try {
    parseBrokers(c.brokers);
  } catch (err) {
    p.add('brokers', (err as Error).message);
  }
  if (c.sasl.mechanism !== 'none') {
    if (c.sasl.username.trim() === '') p.add('sasl.username', `is required with sasl.mechanism ${c.sasl.mechanism}`, ['sasl.mechanism']);
    if (c.sasl.password_file === '') p.add('sasl.password_file', `is required with sasl.mechanism ${c.sasl.mechanism}`, ['sasl.mechanism']);
  }
  const { ca_file, cert_file, key_file } = c.tls;
  if ((ca_file || cert_file || key_file) && !c.tls.enabled) p.add('tls.enabled', 'tls files are set but tls.enabled is false', ['tls.ca_file', 'tls.cert_file', 'tls.key_file']);
  if ((cert_file === '') !== (key_file === '')) p.add('tls.cert_file', 'cert_file and key_file go together', ['tls.key_file']);
  return p.problems;
}

/**
 * Reads the SASL password file and the TLS files (each a bounded regular file, the TLS ones parsed as PEM),
 * recording every problem in `start`. Used by the client at start and by the pre-flight before the BPF attach.
 */
export function readKafkaFiles(c: KafkaSinkConfig, start: StartProblems): { password?: string; ca?: Buffer; cert?: Buffer; key?: Buffer } {
  const out: { password?: string; ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  if (c.sasl.mechanism !== 'none' && c.sasl.password_file !== '') {
    const password = start.secret('sasl.password_file', c.sasl.password_file);
    if (password !== undefined) out.password = password;
  }
  if (c.tls.ca_file) {
    const ca = start.file('tls.ca_file', c.tls.ca_file, false, 'ca');
    if (ca) out.ca = ca;
  }
  if (c.tls.cert_file && c.tls.key_file) {
    const { cert, key } = start.certAndKey('tls.cert_file', c.tls.cert_file, 'tls.key_file', c.tls.key_file);
    if (cert) out.cert = cert;
    if (key) out.key = key;
  }
  return out;
}

/** The sink's checks and files, for the pre-flight: no client library loaded, nothing connected. */
export function preflightKafka(c: KafkaSinkConfig): KeyProblem[] {
  const start = new StartProblems('sinks.kafka');
  start.addAll(checkKafkaConfig(c));
  readKafkaFiles(c, start);
  return start.problems;
}
