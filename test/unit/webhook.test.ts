/* Webhook sink pure logic: status classification, Retry-After, both body formats, config checks. Runtime: < 0.1 s. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import convict from 'convict';
import { WebhookSink, classifyWebhookStatus, parseRetryAfterMs } from '../../src/sinks/webhook/sink';
import { checkWebhookConfig, parseWebhookLabels, webhookConfigSchema, type WebhookSinkConfig } from '../../src/sinks/webhook/config';
import { encodeRecordJson } from '../../src/record/json';
import type { OomRecord } from '../../src/record/record';

function config(over: Partial<WebhookSinkConfig> = {}): WebhookSinkConfig {
  const c = convict(webhookConfigSchema).getProperties() as WebhookSinkConfig;
  return { ...c, enabled: true, url: 'http://127.0.0.1:1/x', ...over };
}

const REC = {
  schema_version: 1, event_id: 'abc123', time: '2026-11-23T06:18:44.684962678Z', host: 'h1', victim_pid: 42,
  victim_comm: 'java', constraint: 'memcg', oom_cgroup: '/docker/ff', victim_cgroup: '/docker/ff',
  container_id: 'f'.repeat(64), pod_uid: '', victim_anon_rss_kb: 100, victim_file_rss_kb: 20, victim_shmem_rss_kb: 0,
  memcg_limit_bytes: 67108864,
} as unknown as OomRecord;

describe('webhook: classification', () => {
  test('2xx delivered, 5xx/408/429 retryable, other 4xx rejected', () => {
    assert.equal(classifyWebhookStatus(200, '').status, 'delivered');
    assert.equal(classifyWebhookStatus(204, '').status, 'delivered');
    for (const s of [500, 502, 503, 504, 408, 429]) assert.equal(classifyWebhookStatus(s, 'x').status, 'retryable', String(s));
    for (const s of [400, 401, 403, 404, 413, 422]) assert.equal(classifyWebhookStatus(s, 'x').status, 'rejected', String(s));
    assert.deepEqual(classifyWebhookStatus(503, 'busy', '7'), { status: 'retryable', reason: 'HTTP 503: busy', afterMs: 7000 });
  });
  test('Retry-After: seconds and HTTP dates', () => {
    assert.equal(parseRetryAfterMs('3'), 3000);
    assert.equal(parseRetryAfterMs(new Date(10_000).toUTCString(), 4_000), 6000);
    assert.equal(parseRetryAfterMs('soon'), undefined);
    assert.equal(parseRetryAfterMs(null), undefined);
  });
  test('a refused connection is retryable', async () => {
    const r = await new WebhookSink(config()).write([REC]);
    assert.equal(r.status, 'retryable');
  });
});

describe('webhook: bodies', () => {
  test('json: records byte for byte', () => {
    assert.equal(new WebhookSink(config()).body([REC, REC]), `{"records":[${encodeRecordJson(REC)},${encodeRecordJson(REC)}]}`);
  });
  test('alertmanager: one v2 alert per record, string labels, empty ones left out', () => {
    const sink = new WebhookSink(config({ format: 'alertmanager', alertmanager: { resolve_after_ms: 60_000, severity: 'page', labels: 'cluster=c1', generator_url: 'http://g/d' } }));
    const [a] = JSON.parse(sink.body([REC])) as Array<Record<string, any>>;
    assert.deepEqual(a.labels, {
      cluster: 'c1', alertname: 'OOMKill', severity: 'page', host: 'h1', constraint: 'memcg', container_id: 'f'.repeat(64),
      victim_comm: 'java', oom_cgroup: '/docker/ff', event_id: 'abc123',
    });
    assert.equal(a.startsAt, '2026-11-23T06:18:44.684Z');
    assert.equal(a.endsAt, '2026-11-23T06:19:44.684Z');
    assert.equal(a.generatorURL, 'http://g/d');
    assert.match(a.annotations.summary, /java \(pid 42\) in container ffffffffffff/);
    assert.equal(a.annotations.record, encodeRecordJson(REC));
  });
});

describe('webhook: config', () => {
  test('url required when enabled; credentials in the url refused; labels parsed', () => {
    assert.deepEqual(checkWebhookConfig(config({ url: '' })), ['sinks.webhook.url is required when sinks.webhook.enabled is true']);
    assert.deepEqual(checkWebhookConfig(config({ enabled: false, url: '' })), []);
    const c = convict(webhookConfigSchema);
    c.load({ url: 'http://u:p@h/x' });
    assert.throws(() => c.validate({ allowed: 'strict' }), /credentials/);
    assert.deepEqual(parseWebhookLabels(' a=1 , b=2'), [['a', '1'], ['b', '2']]);
    assert.throws(() => parseWebhookLabels('1a=2'), /label name/);
  });
});
