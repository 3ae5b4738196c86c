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
    assert.deepEqual(checkWebhookConfig(config({ url: '' })), [{ key: 'sinks.webhook.url', message: 'is required when sinks.webhook.enabled is true' }]);
    assert.deepEqual(checkWebhookConfig(config({ enabled: false, url: '' })), []);
    const c = convict(webhookConfigSchema);
    c.load({ url: 'http://u:p@h/x' });
    assert.throws(() => c.validate({ allowed: 'strict' }), /credentials/);
    assert.deepEqual(parseWebhookLabels(' a=1 , b=2'), [['a', '1'], ['b', '2']]);
    assert.throws(() => parseWebhookLabels('1a=2'), /label name/);
  });
});

describe('webhook: no token from the URL in reasons, logs or /healthz', () => {
  // Slack/Teams-style: the path is the credential
  const TOKEN = 'T0SECRET/B0SECRET/xoxbSECRETSECRETTOKEN';

  test('a receiver that echoes the path, a refused connection and /healthz never show the token', async () => {
    const http = await import('node:http');
    const server = http.createServer((req, res) => {
      res.writeHead(503, { 'retry-after': '0' });
      res.end(`no_service for ${req.url}`); // echoes the whole path, as some receivers do
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    try {
      const sink = new WebhookSink(config({ url: `http://127.0.0.1:${port}/services/${TOKEN}` }));
      const answered = await sink.write([REC]);
      assert.equal(answered.status, 'retryable');
      const reason = (answered as { reason: string }).reason;
      assert.match(reason, /^HTTP 503/);
      for (const part of TOKEN.split('/')) assert.ok(!reason.includes(part), `reason ${JSON.stringify(reason)} leaks ${part}`);

      const refused = await new WebhookSink(config({ url: `http://127.0.0.1:1/services/${TOKEN}` })).write([REC]);
      const why = (refused as { reason: string }).reason;
      assert.match(why, /^POST http:\/\/127\.0\.0\.1:1\/…: /);
      assert.ok(!why.includes('SECRET') && !why.includes('services'), why);

      // the lane's failure reason is what /healthz serves
      const { Lane } = await import('../../src/pipeline/lane');
      const { Router } = await import('../../src/pipeline/router');
      const { MetricsRegistry, startMetricsServer } = await import('../../src/observe/metrics');
      const { silentLogger } = await import('../../src/observe/logger');
      const fs = await import('node:fs');
      const os = await import('node:os');
      const path = await import('node:path');
      const lane = new Lane({
        sink: sink,
        spoolDir: fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-webhook-')),
        fsync: 'never',
        maxSpoolBytes: 0,
        batch: { maxEvents: 1, maxBytes: 1 << 20, maxAgeMs: 1 },
        retry: { initialMs: 20, maxMs: 50 },
        logger: silentLogger(),
      });
      const router = new Router([lane], silentLogger());
      await router.open();
      const metrics = await startMetricsServer('127.0.0.1:0', new MetricsRegistry(), () => router.health(0));
      try {
        await lane.accept(REC);
        const end = Date.now() + 5000;
        while (lane.lastFailureReason === null && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
        const res = await fetch(`http://127.0.0.1:${metrics!.port}/healthz`);
        const body = await res.text();
        assert.equal(res.status, 503, body);
        assert.match(body, /webhook/);
        assert.ok(!body.includes('SECRET'), `/healthz leaks the token: ${body}`);
      } finally {
        await metrics!.close();
        await router.close(100);
      }
    } finally {
      server.close();
    }
  });

  test('a config error about a URL with a password or a token prints neither (ClickHouse, Loki, webhook)', async () => {
    const { loadConfig, ConfigError } = await import('../../src/config/load');
    const cases: Record<string, string>[] = [
      { OOMTRAIL_SINKS_CLICKHOUSE_URL: 'http://default:hunter2pw@ch:8123' },
      { OOMTRAIL_SINKS_LOKI_URL: 'https://u:hunter2pw@loki:3100' },
      { OOMTRAIL_SINKS_WEBHOOK_URL: 'https://u:hunter2pw@hooks.example/x' },
      { OOMTRAIL_SINKS_WEBHOOK_URL: `hooks.example/services/${TOKEN}` }, // no scheme: not a URL at all
      { OOMTRAIL_SINKS_WEBHOOK_URL: `ftp://hooks.example/services/${TOKEN}` },
    ];
    for (const env of cases) {
      let err: unknown;
      try {
        loadConfig({ etcDir: '/nonexistent-oomtrail-etc', env });
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof ConfigError, JSON.stringify(env));
      const name = Object.keys(env)[0]!;
      assert.ok(err.message.includes(name), err.message);
      assert.ok(!err.message.includes('hunter2pw') && !err.message.includes('SECRET'), err.message);
    }
  });
});
