/**
 * kafkajs failure → what the lane should do with the batch.
 *
 * | class     | examples (the broker's error name)                                                   | WriteResult           |
 * |-----------|--------------------------------------------------------------------------------------|-----------------------|
 * | transient | connection refused/reset/closed, request timeouts, LEADER_NOT_AVAILABLE,            | retryable (lane       |
 * |           | NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT,       | backoff)              |
 * |           | NETWORK_EXCEPTION, COORDINATOR_*, KAFKA_STORAGE_ERROR, anything unknown              |                       |
 * | producer  | OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH            | retryable, with a new |
 * |           | (the idempotent producer's state is gone: a new producer id is needed)               | producer              |
 * | operator  | UNKNOWN_TOPIC_OR_PARTITION (missing topic), SASL authentication failures,            | retryable, afterMs =  |
 * |           | TOPIC_/CLUSTER_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED (ACLs), TLS certificate errors | config_error_retry_ms |
 * | data      | MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE,                                            | rejected, with the    |
 * |           | INVALID_TOPIC_EXCEPTION, INVALID_RECORD, CORRUPT_MESSAGE, UNSUPPORTED_FOR_MESSAGE_FORMAT | broker's error name |
 *
 * An authorization failure is the operator's to fix (an ACL), not the records' fault: like ClickHouse's and Loki's
 * auth errors it keeps the records spooled and retries slowly, with one error line.
 *
 * kafkajs wraps the broker's error: KafkaJSNumberOfRetriesExceeded / KafkaJSNonRetriableError carry it in
 * `originalError` (or `cause`), KafkaJSAggregateError in `errors`; the innermost KafkaJSProtocolError's `type` is
 * the broker's error name.
 */

export type KafkaFailureClass = 'transient' | 'producer' | 'operator' | 'data';

export interface KafkaClassified {
  class: KafkaFailureClass;
  /** The broker's error name (KafkaJSProtocolError.type), when one is known. */
  type?: string;
  /** One line: `MESSAGE_TOO_LARGE: The request included a message larger than …` or `network: Connection error …`. */
  reason: string;
}

const DATA = new Set([
  'MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_TOPIC_EXCEPTION', 'INVALID_RECORD',
  'CORRUPT_MESSAGE', 'UNSUPPORTED_FOR_MESSAGE_FORMAT', 'INVALID_REQUIRED_ACKS', 'POLICY_VIOLATION', 'UNSUPPORTED_COMPRESSION_TYPE',
]);
const PRODUCER = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'INVALID_PRODUCER_ID_MAPPING']);
const OPERATOR = new Set([
  'UNKNOWN_TOPIC_OR_PARTITION', 'TOPIC_AUTHORIZATION_FAILED', 'CLUSTER_AUTHORIZATION_FAILED', 'SASL_AUTHENTICATION_FAILED', 'UNSUPPORTED_SASL_MECHANISM',
  'ILLEGAL_SASL_STATE', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
]);
const TLS_CODES = /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_CERT_ALTNAME_INVALID|ERR_SSL_|EPROTO$)/;

interface Errish {
  name?: unknown;
  message?: unknown;
  type?: unknown;
  code?: unknown;
  originalError?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/** Every error in the chain, outermost first (bounded: kafkajs nests a few levels). */
export function errorChain(err: unknown): Errish[] {
  const out: Errish[] = [];
  const queue: unknown[] = [err];
  while (queue.length > 0 && out.length < 32) {
    const e = queue.shift();
    if (!e || typeof e !== 'object' || out.includes(e as Errish)) continue;
    const x = e as Errish;
    out.push(x);
    if (x.originalError) queue.push(x.originalError);
    if (x.cause) queue.push(x.cause);
    if (Array.isArray(x.errors)) queue.push(...x.errors);
  }
  return out;
}

function oneLine(s: string): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > 300 ? t.slice(0, 297) + '...' : t;
}

/** A thrown kafkajs error (or anything else) → class, the broker's error name, a one-line reason. */
export function classifyKafkaError(err: unknown): KafkaClassified {
  const chain = errorChain(err);
  const outer = chain[0];
  const outerMsg = oneLine(String(outer?.message ?? err));
  // the most decisive broker error name in the chain: data > operator > producer > any
  const types = chain.filter((e) => e.name === 'KafkaJSProtocolError' || typeof e.type === 'string').map((e) => ({ type: String(e.type), msg: oneLine(String(e.message ?? '')) }));
  const pick = (set: Set<string>): { type: string; msg: string } | undefined => types.find((t) => set.has(t.type));
  const data = pick(DATA);
  if (data) return { class: 'data', type: data.type, reason: `${data.type}: ${data.msg}` };
  const op = pick(OPERATOR);
  if (op) return { class: 'operator', type: op.type, reason: `${op.type}: ${op.msg}` };
  if (chain.some((e) => e.name === 'KafkaJSSASLAuthenticationError')) return { class: 'operator', type: 'SASL_AUTHENTICATION_FAILED', reason: `SASL_AUTHENTICATION_FAILED: ${outerMsg}` };
  const tls = chain.find((e) => typeof e.code === 'string' && TLS_CODES.test(e.code));
  if (tls) return { class: 'operator', reason: `TLS: ${String(tls.code)}: ${oneLine(String(tls.message ?? ''))}` };
  const prod = pick(PRODUCER);
  if (prod) return { class: 'producer', type: prod.type, reason: `${prod.type}: ${prod.msg}` };
  const any = types[0];
  if (any) return { class: 'transient', type: any.type, reason: `${any.type}: ${any.msg}` };
  const conn = chain.find((e) => e.name === 'KafkaJSConnectionError' || e.name === 'KafkaJSConnectionClosedError' || typeof e.code === 'string');
  if (conn) return { class: 'transient', reason: `network: ${oneLine(String(conn.message ?? ''))}${typeof conn.code === 'string' ? ` (${conn.code})` : ''}` };
  if (chain.some((e) => e.name === 'KafkaJSRequestTimeoutError' || e.name === 'KafkaJSTimeout')) return { class: 'transient', type: 'REQUEST_TIMED_OUT', reason: `timeout: ${outerMsg}` };
  // unknown: retry, never lose records on a guess
  return { class: 'transient', reason: `${typeof outer?.name === 'string' ? outer.name + ': ' : ''}${outerMsg}` };
}
