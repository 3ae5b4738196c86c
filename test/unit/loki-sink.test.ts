/*
 * The sink's HTTP behaviour against a scripted stand-in (status handling, partial success bookkeeping, auth,
 * splitting). Loki's real behaviour is tested against the real Loki in test/integration/loki*.test.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import winston from 'winston';
import Transport from 'winston-transport';
import { LokiSink } from '../../src/sinks/loki/sink';
import type { LokiSinkConfig } from '../../src/sinks/loki/config';
import { ConfigError, loadConfig } from '../../src/config/load';
import { decodePush } from '../servers/loki/proxy';
import { lokiConfig, makeRecord } from '../servers/loki/records';
import type { OomRecord } from '../../src/record/record';

interface Req {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  ids: string[];
  labels: string[];
  bytes: number;
}
type Reply = { status: number; headers?: Record<string, string>; body?: string } | 'hang' | 'drop';

class Fake {
  readonly reqs: Req[] = [];
  script: (req: Req, n: number) => Reply = () => ({ status: 204 });
  private server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const push = req.url === '/loki/api/v1/push' ? decodePush(body, String(req.headers['content-type'])) : [];
      const r: Req = {
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        ids: push.flatMap((s) => s.lines.map((l) => (JSON.parse(l.line) as OomRecord).event_id)),
        labels: push.map((s) => s.labels),
        bytes: body.length,
      };
      this.reqs.push(r);
      const reply = this.script(r, this.reqs.length);
      if (reply === 'hang') return;
      if (reply === 'drop') return req.socket.destroy();
      res.writeHead(reply.status, reply.headers ?? {});
      res.end(reply.body ?? '');
    });
  });
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }
  close(): void {
    this.server.closeAllConnections();
    this.server.close();
  }
}

const fakes: Fake[] = [];
after(() => fakes.forEach((f) => f.close()));

async function setup(over: Partial<LokiSinkConfig> = {}, logger?: winston.Logger): Promise<{ fake: Fake; sink: LokiSink }> {
  const fake = new Fake();
  fakes.push(fake);
  const url = await fake.start();
  return { fake, sink: new LokiSink(lokiConfig(url, over), logger ? { logger } : {}) };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-loki-unit-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('loki sink (scripted server)', () => {
  test('2xx: delivered; one request per stream; protobuf+snappy by default, JSON on request', async () => {
    for (const encoding of ['protobuf', 'json'] as const) {
      const { fake, sink } = await setup({ encoding });
      const batch = [makeRecord(1), makeRecord(2, { constraint: 'global' }), makeRecord(3)];
      assert.deepEqual(await sink.write(batch), { status: 'delivered' });
      assert.equal(fake.reqs.length, 2, 'two streams, two requests');
      assert.equal(fake.reqs[0]!.headers['content-type'], encoding === 'json' ? 'application/json' : 'application/x-protobuf');
      assert.deepEqual(fake.reqs.flatMap((r) => r.ids).sort(), batch.map((r) => r.event_id).sort());
      assert.equal(sink.stats().entries_delivered, 3);
      await sink.close();
    }
  });

  test('a stream that fails is retried alone: the stream already written is never sent again', async () => {
    const { fake, sink } = await setup();
    fake.script = (r, n) => (n <= 2 && r.labels[0]!.includes('global') ? { status: 503, headers: { 'Retry-After': '3' }, body: 'ingester down' } : { status: 204 });
    const batch = Object.freeze([makeRecord(1), makeRecord(2, { constraint: 'global' })]);
    const first = await sink.write(batch);
    assert.equal(first.status, 'retryable');
    assert.equal(first.status === 'retryable' && first.afterMs, 3000, 'Retry-After honoured');
    assert.match(first.status === 'retryable' ? first.reason : '', /Loki HTTP 503: ingester down/);
    assert.deepEqual(await sink.write(batch), { status: 'delivered' });
    const memcg = fake.reqs.filter((r) => r.labels[0]!.includes('memcg')).length;
    assert.equal(memcg, 1, 'the memcg stream was written once');
    assert.equal(fake.reqs.length, 3);
  });

  test('400 partial: the named entry is reported rejected with Loki\'s reason, the others delivered, nothing resent', async () => {
    const { fake, sink } = await setup();
    const old = makeRecord(1, {}, 1_700_000_000_000_000_000n);
    const fresh = [makeRecord(2), makeRecord(3)];
    fake.script = () => ({
      status: 400,
      body: `entry for stream '{constraint="memcg", host="node-a", job="oomtrail", kind="oom_kill"}' has timestamp too old: 2023-11-14 22:13:20 +0000 UTC, oldest acceptable timestamp is: 2026-11-16 00:00:00 +0000 UTC`,
    });
    const res = await sink.write([fresh[0]!, old, fresh[1]!]);
    assert.equal(res.status, 'delivered');
    const rej = res.status === 'delivered' ? (res.rejectedRecords ?? []) : [];
    assert.deepEqual(rej.map((r) => r.record), [old]);
    assert.match(rej[0]!.reason, /^Loki HTTP 400: entry for stream .* has timestamp too old: 2023-11-14 22:13:20 \+0000 UTC/);
    assert.equal(fake.reqs.length, 1);
    assert.deepEqual(sink.stats().entries_delivered, 2);
  });

  test('a batch Loki refuses entirely (one reason) is `rejected`', async () => {
    const { fake, sink } = await setup();
    fake.script = () => ({ status: 400, body: 'error parsing labels: unexpected' });
    const res = await sink.write([makeRecord(1), makeRecord(2)]);
    assert.deepEqual(res, { status: 'rejected', reason: 'Loki HTTP 400: error parsing labels: unexpected' });
  });

  test('batch_max_bytes splits a stream into ordered requests; 413 halves the request size', async () => {
    const { fake, sink } = await setup({ batch_max_bytes: 4000 });
    const batch = Array.from({ length: 20 }, (_, i) => makeRecord(i));
    assert.deepEqual(await sink.write(batch), { status: 'delivered' });
    assert.ok(fake.reqs.length >= 4, `${fake.reqs.length} requests`);
    const sent = fake.reqs.flatMap((r) => r.ids);
    assert.deepEqual(sent, [...batch].sort((a, b) => (a.time < b.time ? -1 : 1)).map((r) => r.event_id), 'in time order, each once');

    const s2 = await setup();
    s2.fake.script = (r) => (r.ids.length > 5 ? { status: 413, body: 'request entity too large' } : { status: 204 });
    const b2 = Object.freeze(Array.from({ length: 40 }, (_, i) => makeRecord(i)));
    let res = await s2.sink.write(b2);
    for (let i = 0; i < 10 && res.status === 'retryable'; i++) res = await s2.sink.write(b2);
    assert.deepEqual(res, { status: 'delivered' });
    assert.equal(s2.fake.reqs.filter((r) => r.ids.length <= 5).flatMap((r) => r.ids).length, 40, 'each record delivered once');
  });

  test('network failures and timeouts are retryable', async () => {
    const { fake, sink } = await setup({ request_timeout_ms: 300 });
    fake.script = (_r, n) => (n === 1 ? 'drop' : 'hang');
    const batch = [makeRecord(1)];
    const a = await sink.write(batch);
    assert.equal(a.status, 'retryable');
    const t0 = Date.now();
    const b = await sink.write(batch);
    assert.equal(b.status, 'retryable');
    assert.match(b.status === 'retryable' ? b.reason : '', /no answer within 300 ms/);
    assert.ok(Date.now() - t0 < 5000);
    await sink.close();
    const refused = new LokiSink(lokiConfig('http://127.0.0.1:1'));
    const c = await refused.write(batch);
    assert.equal(c.status, 'retryable');
    assert.match(c.status === 'retryable' ? c.reason : '', /ECONNREFUSED/);
  });

  test('tenant, basic auth and bearer token from files; secrets never in a reason or a log line', async () => {
    const pw = path.join(tmp, 'pw');
    fs.writeFileSync(pw, 's3cret-pass\n');
    const tok = path.join(tmp, 'tok');
    fs.writeFileSync(tok, 'tok-VERYSECRET\n');
    const lines: string[] = [];
    const logger = winston.createLogger({
      transports: [new (class extends Transport {
        override log(info: unknown, cb: () => void): void {
          lines.push(JSON.stringify(info));
          cb();
        }
      })()],
    });
    const basic = await setup({ tenant_id: 'team-a', basic_auth_user: 'agent', basic_auth_password_file: pw }, logger);
    basic.fake.script = () => ({ status: 401, body: 'no' });
    const res = await basic.sink.write([makeRecord(1)]);
    assert.equal(res.status, 'retryable', '401 is a configuration problem: keep the records');
    const h = basic.fake.reqs[0]!.headers;
    assert.equal(h['x-scope-orgid'], 'team-a');
    assert.equal(h.authorization, 'Basic ' + Buffer.from('agent:s3cret-pass').toString('base64'));
    assert.ok(!JSON.stringify(res).includes('s3cret'));

    const bearer = await setup({ bearer_token_file: tok }, logger);
    await bearer.sink.write([makeRecord(2)]);
    assert.equal(bearer.fake.reqs[0]!.headers.authorization, 'Bearer tok-VERYSECRET');
    assert.equal((await bearer.sink.healthcheck()).healthy, false, '/ready answered 204, not 200 ready');

    const missing = await setup({ bearer_token_file: path.join(tmp, 'nope') }, logger);
    const m = await missing.sink.write([makeRecord(3)]);
    assert.equal(m.status, 'retryable');
    assert.match(m.status === 'retryable' ? m.reason : '', /cannot read sinks\.loki\.bearer_token_file \(ENOENT\)/);
    assert.ok(!JSON.stringify(m).includes(tmp), 'the secret file path is not shown either');
    assert.ok(!lines.join('\n').includes('s3cret') && !lines.join('\n').includes('VERYSECRET'));
  });

  test('healthcheck: GET /ready', async () => {
    const { fake, sink } = await setup();
    fake.script = (r) => (r.url === '/ready' ? { status: 200, body: 'ready\n' } : { status: 404 });
    assert.deepEqual(await sink.healthcheck(), { healthy: true });
    fake.script = () => ({ status: 503, body: 'Ingester not ready: waiting for 15s after being ready' });
    const h = await sink.healthcheck();
    assert.equal(h.healthy, false);
    assert.match(h.detail ?? '', /HTTP 503: Ingester not ready/);
  });

  test('configuration mistakes are refused at start', () => {
    const base = lokiConfig('http://127.0.0.1:3100');
    // the one ConfigError (exit 78), naming the key
    assert.throws(() => new LokiSink({ ...base, basic_auth_user: 'u' }), (e: unknown) => e instanceof ConfigError && e.key === 'sinks.loki.basic_auth_user');
    assert.throws(
      () => new LokiSink({ ...base, basic_auth_user: 'u', basic_auth_password_file: '/x', bearer_token_file: '/y' }),
      (e: unknown) => e instanceof ConfigError && e.key === 'sinks.loki.bearer_token_file',
    );
    assert.throws(() => new LokiSink({ ...base, tls: { ...base.tls, insecure_skip_verify: true } }), /not https/);
    assert.throws(() => new LokiSink({ ...base, labels: 'host=x' }), /set by the sink itself/);
  });
});

/** A self-signed certificate for 127.0.0.1 (CA and server at once; valid until 2126), made with openssl for this test. */
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBmDCCAT6gAwIBAgIUNER67xp5DVdlmEergsE659OZMckwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNb29tdHJhaWwtdGVzdDAgFw0yNjExMjMwNzA0MzRaGA8yMTI2
MTAzMDA3MDQzNFowGDEWMBQGA1UEAwwNb29tdHJhaWwtdGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABJxiLDVKlh+FupeluZyNgAT7iLnMalyr3AvxGM6uV3JU
yXCD7ieS8EikhBKwSQ/KX8kh3UB5q8bW+0XduP54oUGjZDBiMB0GA1UdDgQWBBTf
+rnG4N10//y2jRfctPnWoXzPijAfBgNVHSMEGDAWgBTf+rnG4N10//y2jRfctPnW
oXzPijAPBgNVHRMBAf8EBTADAQH/MA8GA1UdEQQIMAaHBH8AAAEwCgYIKoZIzj0E
AwIDSAAwRQIhAKvgFsSy6e6TVXDpXSyNgfTuFEdAk8R+9ZgCtze2O8CdAiBuFx96
3wckyJH81Tfu/HSp5cm2ouk81ceu4FCW5QqwHQ==
-----END CERTIFICATE-----
`;
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXGOMq3JAvvzkD/Et
HW8RWjvU5HcBS35hy9FJMAG9GRChRANCAAScYiw1SpYfhbqXpbmcjYAE+4i5zGpc
q9wL8RjOrldyVMlwg+4nkvBIpIQSsEkPyl/JId1AeavG1vtF3bj+eKFB
-----END PRIVATE KEY-----
`;

describe('loki sink TLS', () => {
  test('https: verified with ca_file, refused without it, accepted with insecure_skip_verify; client certificate sent (mTLS)', async () => {
    const caFile = path.join(tmp, 'ca.pem');
    const certFile = path.join(tmp, 'cert.pem');
    const keyFile = path.join(tmp, 'key.pem');
    fs.writeFileSync(caFile, TEST_CERT);
    fs.writeFileSync(certFile, TEST_CERT);
    fs.writeFileSync(keyFile, TEST_KEY);
    let clientCerts = 0;
    const server = https.createServer({ cert: TEST_CERT, key: TEST_KEY, ca: TEST_CERT, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      if ((req.socket as import('node:tls').TLSSocket).authorized) clientCerts++;
      req.resume();
      req.on('end', () => {
        res.writeHead(204);
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const tls = { ca_file: '', cert_file: '', key_file: '', insecure_skip_verify: false };
      const verified = new LokiSink(lokiConfig(url, { tls: { ...tls, ca_file: caFile } }));
      assert.deepEqual(await verified.write([makeRecord(1)]), { status: 'delivered' });
      await verified.close();
      const unknownCa = new LokiSink(lokiConfig(url));
      const r = await unknownCa.write([makeRecord(2)]);
      assert.equal(r.status, 'retryable');
      assert.match(r.status === 'retryable' ? r.reason : '', /self.signed certificate/i);
      await unknownCa.close();
      const insecure = new LokiSink(lokiConfig(url, { tls: { ...tls, insecure_skip_verify: true } }));
      assert.deepEqual(await insecure.write([makeRecord(3)]), { status: 'delivered' });
      await insecure.close();
      assert.equal(clientCerts, 0);
      const mtls = new LokiSink(lokiConfig(url, { tls: { ca_file: caFile, cert_file: certFile, key_file: keyFile, insecure_skip_verify: false } }));
      assert.deepEqual(await mtls.write([makeRecord(4)]), { status: 'delivered' });
      await mtls.close();
      assert.equal(clientCerts, 1, 'the client certificate was presented and verified');
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('sinks.loki configuration (the real loader)', () => {
  test('every key loads from the environment; bad values are named, secrets never shown', () => {
    const { config } = loadConfig({
      etcDir: tmp,
      env: {
        OOMTRAIL_SINKS_LOKI_ENABLED: 'true',
        OOMTRAIL_SINKS_LOKI_URL: 'https://loki.example:3100/gw',
        OOMTRAIL_SINKS_LOKI_TENANT_ID: 'team-a',
        OOMTRAIL_SINKS_LOKI_LABELS: 'cluster=prod,env=staging',
        OOMTRAIL_SINKS_LOKI_ENCODING: 'json',
        OOMTRAIL_SINKS_LOKI_BATCH_MAX_BYTES: '524288',
        OOMTRAIL_SINKS_LOKI_LIMITS_MAX_LABEL_NAMES_PER_SERIES: '6',
        OOMTRAIL_SINKS_LOKI_TLS_INSECURE_SKIP_VERIFY: 'yes',
      },
    });
    const l = config.sinks.loki;
    assert.equal(l.enabled, true);
    assert.equal(l.url, 'https://loki.example:3100/gw');
    assert.equal(l.encoding, 'json');
    assert.equal(l.batch_max_bytes, 524288);
    assert.equal(l.limits.max_label_names_per_series, 6);
    assert.equal(l.tls.insecure_skip_verify, true);
    const bad = (env: Record<string, string>): ConfigError => {
      try {
        loadConfig({ etcDir: tmp, env });
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err;
      }
      throw new Error('expected a ConfigError');
    };
    assert.match(bad({ OOMTRAIL_SINKS_LOKI_URL: 'ftp://x' }).message, /sinks\.loki\.url/);
    assert.match(bad({ OOMTRAIL_SINKS_LOKI_URL: 'http://user:pw@x' }).message, /must not carry credentials/);
    assert.match(bad({ OOMTRAIL_SINKS_LOKI_LABELS: 'job=x' }).message, /sinks\.loki\.labels/);
    assert.match(bad({ OOMTRAIL_SINKS_LOKI_ENCODING: 'avro' }).message, /sinks\.loki\.encoding/);
    const secret = bad({ OOMTRAIL_SINKS_LOKI_BEARER_TOKEN_FILE: '/run/secret\u0001TOPSECRET' });
    assert.match(secret.message, /sinks\.loki\.bearer_token_file/);
    assert.ok(!secret.message.includes('TOPSECRET'), secret.message);
  });
});
