import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KafkaJSConnectionError, KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import { classifyKafkaError } from '../../src/sinks/kafka/errors';
import { chunkBySize, encodeMessage } from '../../src/sinks/kafka/encoder';
import { parseBrokers } from '../../src/sinks/kafka/config';
import { retrySettings } from '../../src/sinks/kafka/retry';
import { encodeRecordJson } from '../../src/record/json';
import type { OomRecord } from '../../src/record/record';

/** A broker error as kafkajs builds it from the error code in a response. */
function protocol(type: string, retriable: boolean): KafkaJSProtocolError {
  return new KafkaJSProtocolError({ message: `${type} message`, type, code: 1, retriable } as never);
}

/** As kafkajs's retrier throws after its retries: retries exceeded, the last error as its cause. */
function exhausted(inner: Error): Error {
  return new KafkaJSNumberOfRetriesExceeded(inner, { retryCount: 8, retryTime: 30000, cause: inner } as never);
}

/** As kafkajs's retrier throws a non-retriable error at once. */
function bailed(inner: Error): Error {
  return new (KafkaJSNonRetriableError as unknown as new (e: Error, o: { cause: Error }) => Error)(inner, { cause: inner });
}

test('retryable: network, LEADER_NOT_AVAILABLE, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT', () => {
  const conn = classifyKafkaError(exhausted(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092', { code: 'ECONNREFUSED' } as never)));
  assert.equal(conn.class, 'transient');
  assert.match(conn.reason, /ECONNREFUSED/);
  for (const t of ['LEADER_NOT_AVAILABLE', 'NOT_ENOUGH_REPLICAS', 'NOT_ENOUGH_REPLICAS_AFTER_APPEND', 'REQUEST_TIMED_OUT', 'NOT_LEADER_OR_FOLLOWER']) {
    const c = classifyKafkaError(exhausted(protocol(t, true)));
    assert.equal(c.class, 'transient', t);
    assert.equal(c.type, t);
    assert.match(c.reason, new RegExp(`^${t}: `));
  }
});

test("rejected: MESSAGE_TOO_LARGE, INVALID_TOPIC_EXCEPTION, with the broker's error name", () => {
  for (const t of ['MESSAGE_TOO_LARGE', 'INVALID_TOPIC_EXCEPTION', 'RECORD_LIST_TOO_LARGE']) {
    const c = classifyKafkaError(bailed(protocol(t, false)));
    assert.equal(c.class, 'data', t);
    assert.equal(c.type, t);
    assert.match(c.reason, new RegExp(`^${t}: `));
  }
});

test('authorization failures (ACLs) are the operator\'s: records stay spooled, never dead-lettered', () => {
  // as kafkajs throws them: a non-retriable protocol error at once, or wrapped after retries
  for (const t of ['TOPIC_AUTHORIZATION_FAILED', 'CLUSTER_AUTHORIZATION_FAILED', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED']) {
    for (const err of [protocol(t, false), bailed(protocol(t, false)), exhausted(protocol(t, false))]) {
      const c = classifyKafkaError(err);
      assert.equal(c.class, 'operator', t);
      assert.equal(c.type, t);
    }
  }
});

test('operator (missing topic, SASL) and producer-state errors; unknown errors retry', () => {
  assert.equal(classifyKafkaError(exhausted(protocol('UNKNOWN_TOPIC_OR_PARTITION', true))).class, 'operator');
  assert.equal(classifyKafkaError(protocol('SASL_AUTHENTICATION_FAILED', false)).class, 'operator');
  assert.equal(classifyKafkaError(exhausted(protocol('OUT_OF_ORDER_SEQUENCE_NUMBER', false))).class, 'producer');
  assert.equal(classifyKafkaError(new Error('something odd')).class, 'transient');
  assert.equal(classifyKafkaError('a string').class, 'transient');
});

test('message: value = encodeRecordJson bytes, headers event_id/kind/schema_version, key as configured', () => {
  const r = { schema_version: 2, event_id: 'abc', host: 'h1', oom_cgroup: '/kubepods/x', victim_comm: 'é☃"\n' } as unknown as OomRecord;
  const m = encodeMessage(r, 'host');
  assert.deepEqual(m.value, Buffer.from(encodeRecordJson(r), 'utf8'));
  assert.deepEqual(m.headers, { event_id: 'abc', kind: 'oom_kill', schema_version: '2' });
  assert.equal(m.key.toString(), 'h1');
  assert.equal(encodeMessage(r, 'oom_cgroup').key.toString(), '/kubepods/x');
  assert.equal(encodeMessage(r, 'event_id').key.toString(), 'abc');
  assert.equal(encodeMessage({ ...r, kind: 'memory_pressure' } as OomRecord, 'host').headers.kind, 'memory_pressure');
});

test('chunks, brokers and explicit retry settings', () => {
  assert.deepEqual(chunkBySize([5, 5, 5, 20, 1], (x) => x, 10), [[5, 5], [5], [20], [1]]);
  assert.deepEqual(parseBrokers(' a:1, [::1]:9093 ,b.example:9092'), ['a:1', '[::1]:9093', 'b.example:9092']);
  assert.throws(() => parseBrokers(''), /at least one broker/);
  assert.throws(() => parseBrokers('nohost'), /not host:port/);
  assert.deepEqual(retrySettings(8), { retries: 8, initialRetryTime: 300, maxRetryTime: 30_000, multiplier: 2, factor: 0.2 });
});
