/*
 * The sink contract: every sink folder exports one shape (definition.ts: name, schema, check, create), the
 * configuration schema's `sinks` block is assembled from the registry, a bad setting is the one ConfigError
 * naming the key (never a secret), and no sink imports the loader, convict or yaml.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import convict from 'convict';
import { ConfigError } from '../../src/config/errors';
import { ConfigError as LoadConfigError, loadConfig } from '../../src/config/load';
import { schema } from '../../src/config/schema';
import { silentLogger } from '../../src/observe/logger';
import { createSinks, SINKS, type SinksConfig } from '../../src/sinks/registry';
import type { SinkDefinition } from '../../src/sinks/sink';
import { checkSinks } from '../../src/sinks/health';

const SRC = path.resolve(__dirname, '../../../src');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-sink-registry-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const defaults = (): SinksConfig => loadConfig({ etcDir: tmp, env: {} }).config.sinks;
const defs = Object.entries(SINKS) as Array<[keyof SinksConfig, SinkDefinition]>;

/** The ConfigError `create` throws for `over` on the sink's defaults (enabled). */
function createError<N extends keyof SinksConfig>(name: N, over: Partial<SinksConfig[N]>): ConfigError {
  const config = { ...defaults()[name], enabled: true, ...over };
  try {
    (SINKS[name] as unknown as SinkDefinition).create(config, { logger: silentLogger() });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `${name}: ${String(err)}`);
    return err;
  }
  throw new Error(`${name}: expected a ConfigError`);
}

describe('sink registry: one shape', () => {
  test('every sink folder has a definition.ts, and each is registered under its own name', () => {
    const folders = fs.readdirSync(path.join(SRC, 'sinks'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    assert.deepEqual([...folders].sort(), Object.keys(SINKS).sort(), 'one registry line per sink folder');
    for (const name of folders) assert.ok(fs.existsSync(path.join(SRC, 'sinks', name, 'definition.ts')), name);
    for (const [name, d] of defs) {
      assert.equal(d.name, name);
      assert.deepEqual(Object.keys(d).sort(), ['check', 'create', 'name', 'preflight', 'schema'], name);
      assert.equal(typeof d.check, 'function');
      assert.equal(typeof d.create, 'function');
      const enabled = (d.schema as unknown as Record<string, { format: unknown; env: string }>).enabled!;
      assert.equal(enabled.format, Boolean, `${name}.enabled`);
      assert.equal(enabled.env, `OOMTRAIL_SINKS_${name.toUpperCase()}_ENABLED`);
    }
  });

  test('the schema\'s sinks block is the registry\'s schema parts, and nothing else', () => {
    const sinks = (schema as unknown as { sinks: Record<string, unknown> }).sinks;
    assert.deepEqual(Object.keys(sinks), Object.keys(SINKS));
    for (const [name, d] of defs) assert.equal(sinks[name], d.schema, name);
    // each part is a convict schema on its own
    for (const [name, d] of defs) assert.equal((convict(d.schema as never).getProperties() as { enabled: boolean }).enabled, name === 'console' || name === 'file', name);
  });

  test('the defaults pass every sink\'s check; each enabled sink is built with its name', async () => {
    const config = defaults();
    for (const [name, d] of defs) assert.deepEqual(d.check(config[name] as never), [], name);
    const sinks = createSinks({ sinks: { ...config, file: { ...config.file, path: path.join(tmp, 'e.jsonl') } } }, silentLogger());
    assert.deepEqual(sinks.map((s) => s.name), ['console', 'file']);
    const health = await checkSinks(sinks);
    assert.deepEqual(health.map((h) => [h.sink, h.healthy]), [['console', true], ['file', true]]);
  });

  test('a healthcheck that never answers is cut at the bound; one that throws is unhealthy', async () => {
    const hang = { name: 'hang', healthcheck: () => new Promise<never>(() => undefined) };
    const boom = { name: 'boom', healthcheck: () => Promise.reject(new Error('boom')) };
    const t0 = Date.now();
    const r = await checkSinks([hang, boom] as never, 200);
    assert.ok(Date.now() - t0 < 2000);
    assert.deepEqual(r.map((h) => [h.sink, h.healthy, h.detail]), [['hang', false, 'no answer within 200 ms'], ['boom', false, 'boom']]);
  });
});

describe('sink registry: one ConfigError, naming the key, never a secret', () => {
  test('the loader\'s ConfigError is the same class (exit 78)', () => {
    assert.equal(LoadConfigError, ConfigError);
    const e = ConfigError.of([{ key: 'sinks.x.y', message: 'bad' }])!;
    assert.equal(e.exitCode, 78);
    assert.equal(e.key, 'sinks.x.y');
    assert.equal(e.message, 'sinks.x.y: bad');
    assert.equal(ConfigError.of([]), undefined);
  });

  test('check names the key (cross-key problems, no I/O)', () => {
    const c = defaults();
    const keys = (name: keyof SinksConfig, over: object): string[] =>
      (SINKS[name] as unknown as SinkDefinition).check({ ...c[name], enabled: true, ...over } as never).map((p) => p.key);
    assert.deepEqual(keys('clickhouse', { password: 'hunter2pw', password_file: '/run/pw' }), ['sinks.clickhouse.password_file']);
    assert.deepEqual(keys('kafka', { brokers: 'nope' }), ['sinks.kafka.brokers']);
    assert.deepEqual(keys('kafka', { sasl: { ...c.kafka.sasl, mechanism: 'plain' } }), ['sinks.kafka.sasl.username', 'sinks.kafka.sasl.password_file']);
    assert.deepEqual(keys('loki', { basic_auth_user: 'u' }), ['sinks.loki.basic_auth_user']);
    assert.deepEqual(keys('webhook', { url: '' }), ['sinks.webhook.url']);
  });

  test('create throws the ConfigError for each sink: key named, secret values and secret paths never printed', () => {
    const secretDir = path.join(tmp, 'TOPSECRET-token');
    fs.writeFileSync(path.join(tmp, 'pw'), 'hunter2pw\n');
    const cases: Array<[ConfigError, string]> = [
      [createError('clickhouse', { password: 'hunter2pw', password_file: path.join(tmp, 'pw') }), 'sinks.clickhouse.password_file'],
      [createError('clickhouse', { url: 'https://h:8443', tls: { ca_file: path.join(tmp, 'no-ca.pem'), cert_file: '', key_file: '' } }), 'sinks.clickhouse.tls.ca_file'],
      [createError('kafka', { sasl: { mechanism: 'plain', username: 'u', password_file: path.join(tmp, 'missing') } }), 'sinks.kafka.sasl.password_file'],
      [createError('loki', { bearer_token_file: path.join(secretDir, 'x') }), 'sinks.loki.bearer_token_file'],
      [createError('loki', { basic_auth_user: 'u', basic_auth_password_file: path.join(secretDir, 'x') }), 'sinks.loki.basic_auth_password_file'],
      [createError('webhook', { url: 'http://127.0.0.1:9/x', bearer_token_file: path.join(secretDir, 'x') }), 'sinks.webhook.bearer_token_file'],
      [createError('webhook', { url: '' }), 'sinks.webhook.url'],
    ];
    for (const [err, key] of cases) {
      assert.equal(err.key, key, err.message);
      assert.equal(err.exitCode, 78);
      assert.ok(err.message.startsWith(`${key}: `), err.message);
      assert.ok(!err.message.includes('hunter2pw') && !err.message.includes('TOPSECRET'), err.message);
    }
  });

  test('a sink problem found at load names where it was set', () => {
    assert.throws(
      () => loadConfig({ etcDir: tmp, env: { OOMTRAIL_SINKS_LOKI_ENABLED: 'true', OOMTRAIL_SINKS_LOKI_BASIC_AUTH_USER: 'u' } }),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.key === 'sinks.loki.basic_auth_user' &&
        e.env === 'OOMTRAIL_SINKS_LOKI_BASIC_AUTH_USER' &&
        /env OOMTRAIL_SINKS_LOKI_BASIC_AUTH_USER: sinks\.loki\.basic_auth_user: needs sinks\.loki\.basic_auth_password_file/.test(e.message),
    );
  });
});

describe('sink registry: import rules', () => {
  test('config/errors.ts imports nothing; nothing under src/sinks imports the loader, convict or yaml', () => {
    const errors = fs.readFileSync(path.join(SRC, 'config/errors.ts'), 'utf8');
    assert.doesNotMatch(errors, /^\s*import\b|\brequire\(/m);
    const formats = fs.readFileSync(path.join(SRC, 'config/formats.ts'), 'utf8');
    assert.doesNotMatch(formats, /^\s*import\b|\brequire\(/m);
    const files = (dir: string): string[] =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(path.join(dir, d.name)) : d.name.endsWith('.ts') ? [path.join(dir, d.name)] : []));
    for (const f of files(path.join(SRC, 'sinks'))) {
      const text = fs.readFileSync(f, 'utf8');
      assert.doesNotMatch(text, /from '[./]*config\/load'|from 'convict'|from 'js-yaml'|require\('(convict|js-yaml)'\)/, path.relative(SRC, f));
    }
  });

  test('loading the registry and every definition loads no network client library', () => {
    const out = execFileSync(
      process.execPath,
      [
        '-e',
        `require(${JSON.stringify(path.resolve(__dirname, '../../src/sinks/registry.js'))});
         const libs = Object.keys(require.cache).filter((f) => /node_modules\\/(kafkajs|@clickhouse|protobufjs|snappy|convict|js-yaml)\\//.test(f));
         console.log(JSON.stringify(libs));`,
      ],
      { encoding: 'utf8' },
    );
    assert.deepEqual(JSON.parse(out), []);
  });
});
