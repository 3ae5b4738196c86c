import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import convict from 'convict';
import yaml from 'js-yaml';
import {
  ConfigError,
  effectiveHostName,
  loadConfig,
  loadConfigWithSchema,
  NON_CONFIG_ENV_PREFIXES,
  type ConfigErrorCode,
} from '../../src/config/load';
import { parseHostPort, positive, schema, type AppConfig } from '../../src/config/schema';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const DEFAULT_YAML = path.join(ROOT, 'config', 'default.yaml');

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-config-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;
/** A fresh directory, optionally holding files. */
function dir(files: Record<string, string> = {}): string {
  const d = path.join(tmpRoot, String(n++));
  fs.mkdirSync(d);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(d, name), text);
  return d;
}
function file(name: string, text: string): string {
  return path.join(dir({ [name]: text }), name);
}
const EMPTY = dir();

/** Assert a ConfigError and hand it back for more checks. */
function rejects(fn: () => unknown, code: ConfigErrorCode, ...mentions: string[]): ConfigError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.retriable, false);
  assert.equal(caught.exitCode, 78);
  for (const m of mentions) assert.ok(caught.message.includes(m), `message ${JSON.stringify(caught.message)} names ${m}`);
  return caught;
}

function flatKeys(node: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(node).flatMap(([k, v]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    return v && typeof v === 'object' && !('default' in v) && !Array.isArray(v) ? flatKeys(v as Record<string, unknown>, p) : [p];
  });
}
function flatValues(node: Record<string, unknown>, prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(node)) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [a, b] of flatValues(v as Record<string, unknown>, p)) out.set(a, b);
    else out.set(p, v);
  }
  return out;
}

const schemaDefaults = (): AppConfig => convict(schema, { env: {}, args: [] }).getProperties();

describe('defaults', () => {
  test('load with no file and no env', () => {
    const { config, sources, warnings } = loadConfig({ etcDir: EMPTY, env: {} });
    assert.deepEqual(sources, ['defaults']);
    assert.deepEqual(warnings, []);
    assert.deepEqual(config, schemaDefaults());
    assert.equal(config.collectors.oomkill.enabled, true);
    assert.equal(config.collectors.oomkill.hook, 'auto');
    assert.equal(config.sinks.console.format, 'text');
    assert.equal(config.sinks.file.path, '/var/lib/oomtrail/events.jsonl');
    assert.equal(config.pipeline.queue.capacity, 10000);
    assert.equal(config.pipeline.queue.overflow, 'block');
    assert.equal(config.pipeline.batch.max_bytes, 1048576);
    assert.equal(config.pipeline.spool.fsync, 'always');
    assert.equal(config.pipeline.spool.max_bytes, 268435456);
    assert.equal(config.metrics.listen, '');
    assert.equal(config.log.level, 'info');
    assert.equal(config.host.name, '');
  });

  test('the result is frozen', () => {
    const { config } = loadConfig({ etcDir: EMPTY, env: {} });
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.pipeline.queue));
    assert.throws(() => {
      (config.pipeline.queue as { capacity: number }).capacity = 1;
    }, TypeError);
  });

  test('every key has an env var OOMTRAIL_ + path upper-cased', () => {
    const walk = (node: Record<string, unknown>, prefix: string): void => {
      for (const [k, v] of Object.entries(node)) {
        const p = prefix ? `${prefix}.${k}` : k;
        const prop = v as Record<string, unknown>;
        if ('default' in prop) {
          assert.equal(prop.env, `OOMTRAIL_${p.toUpperCase().replace(/\./g, '_')}`, p);
          assert.equal(typeof prop.doc, 'string', `${p} has a doc`);
        } else walk(prop, p);
      }
    };
    walk(schema as Record<string, unknown>, '');
  });

  test('effectiveHostName falls back to os.hostname()', () => {
    const { config } = loadConfig({ etcDir: EMPTY, env: {} });
    assert.equal(effectiveHostName(config), os.hostname());
    const named = loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_HOST_NAME: 'node-7' } }).config;
    assert.equal(effectiveHostName(named), 'node-7');
  });
});

describe('config/default.yaml', () => {
  const text = fs.readFileSync(DEFAULT_YAML, 'utf8');

  test('loads and equals the schema defaults', () => {
    const { config, sources } = loadConfig({ file: DEFAULT_YAML, env: {} });
    assert.deepEqual(sources, ['defaults', DEFAULT_YAML]);
    assert.deepEqual(config, schemaDefaults());
  });

  test('sets every schema key, with the default value', () => {
    const parsed = flatValues(yaml.load(text) as Record<string, unknown>);
    const defaults = flatValues(schemaDefaults() as unknown as Record<string, unknown>);
    assert.deepEqual([...parsed.keys()].sort(), flatKeys(schema as Record<string, unknown>).sort());
    for (const [k, v] of defaults) assert.deepEqual(parsed.get(k), v, k);
  });

  test('every key has a comment above it', () => {
    const lines = text.split('\n');
    lines.forEach((line, i) => {
      if (!/^\s*[a-z_]+:\s*\S/.test(line)) return; // a key with a value (sections have none)
      let j = i - 1;
      while (j >= 0 && lines[j]!.trim() === '') j--;
      assert.ok(j >= 0 && lines[j]!.trim().startsWith('#'), `line ${i + 1} (${line.trim()}) has a comment above it`);
    });
  });
});

describe('files', () => {
  test('/etc config.yaml overrides defaults', () => {
    const etc = dir({
      'config.yaml': 'sinks:\n  file:\n    path: /tmp/x.jsonl\npipeline:\n  queue:\n    overflow: drop_oldest\n',
    });
    const { config, sources } = loadConfig({ etcDir: etc, env: {} });
    assert.equal(config.sinks.file.path, '/tmp/x.jsonl');
    assert.equal(config.pipeline.queue.overflow, 'drop_oldest');
    assert.equal(config.pipeline.queue.capacity, 10000, 'untouched keys keep their default');
    assert.deepEqual(sources, ['defaults', path.join(etc, 'config.yaml')]);
  });

  test('/etc config.yml and config.json are found too', () => {
    assert.equal(loadConfig({ etcDir: dir({ 'config.yml': 'log: {level: debug}' }), env: {} }).config.log.level, 'debug');
    const json = dir({ 'config.json': JSON.stringify({ log: { format: 'json' }, pipeline: { batch: { max_events: 5 } } }) });
    const { config } = loadConfig({ etcDir: json, env: {} });
    assert.equal(config.log.format, 'json');
    assert.equal(config.pipeline.batch.max_events, 5);
  });

  test('two default files at once are refused', () => {
    const etc = dir({ 'config.yaml': '', 'config.json': '{}' });
    rejects(() => loadConfig({ etcDir: etc, env: {} }), 'CONFIG_AMBIGUOUS', 'config.yaml', 'config.json');
  });

  test('an explicit file replaces the /etc lookup', () => {
    const etc = dir({ 'config.yaml': 'log:\n  level: debug\n' });
    const f = file('mine.yaml', 'log:\n  level: warn\n');
    const { config, sources } = loadConfig({ file: f, etcDir: etc, env: {} });
    assert.equal(config.log.level, 'warn');
    assert.deepEqual(sources, ['defaults', f]);
  });

  test('empty files and empty sections set nothing', () => {
    assert.deepEqual(loadConfig({ file: file('e.yaml', '# nothing\n'), env: {} }).config, schemaDefaults());
    assert.deepEqual(loadConfig({ file: file('e.json', '  \n'), env: {} }).config, schemaDefaults());
    assert.deepEqual(loadConfig({ file: file('s.yaml', 'sinks:\n  # file: {}\n'), env: {} }).config, schemaDefaults());
  });

  test('YAML values keep their YAML types (quoted numbers are strings, dates are not parsed)', () => {
    const f = file('t.yaml', 'host:\n  name: 2024-01-01\n');
    assert.equal(loadConfig({ file: f, env: {} }).config.host.name, '2024-01-01');
  });
});

describe('environment', () => {
  test('env overrides the file', () => {
    const f = file('c.yaml', 'sinks:\n  file:\n    path: /from/file\n    enabled: true\npipeline:\n  queue:\n    capacity: 7\n');
    const { config, sources } = loadConfig({
      file: f,
      env: {
        OOMTRAIL_SINKS_FILE_PATH: '/from/env',
        OOMTRAIL_SINKS_FILE_ENABLED: 'false',
        OOMTRAIL_PIPELINE_QUEUE_CAPACITY: '42',
        OOMTRAIL_COLLECTORS_OOMKILL_HOOK: 'kprobe',
        OOMTRAIL_METRICS_LISTEN: '127.0.0.1:9464',
        PATH: '/usr/bin',
      },
    });
    assert.equal(config.sinks.file.path, '/from/env');
    assert.equal(config.sinks.file.enabled, false);
    assert.equal(config.pipeline.queue.capacity, 42);
    assert.equal(config.collectors.oomkill.hook, 'kprobe');
    assert.equal(config.metrics.listen, '127.0.0.1:9464');
    assert.equal(sources[0], 'defaults');
    assert.equal(sources[1], f);
    assert.ok(sources.includes('env OOMTRAIL_PIPELINE_QUEUE_CAPACITY'));
  });

  test('boolean spellings', () => {
    for (const [raw, want] of [['0', false], ['no', false], ['OFF', false], ['1', true], ['Yes', true], ['true', true]] as const) {
      const { config } = loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_SINKS_CONSOLE_ENABLED: raw } });
      assert.equal(config.sinks.console.enabled, want, raw);
    }
  });

  test('a non-number is rejected naming the env var', () => {
    const err = rejects(
      () => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_PIPELINE_QUEUE_CAPACITY: 'abc' } }),
      'CONFIG_INVALID',
      'OOMTRAIL_PIPELINE_QUEUE_CAPACITY',
      'pipeline.queue.capacity',
    );
    assert.equal(err.env, 'OOMTRAIL_PIPELINE_QUEUE_CAPACITY');
    assert.equal(err.key, 'pipeline.queue.capacity');
    assert.equal(err.file, undefined);
  });

  test('values convict would silently coerce are rejected', () => {
    rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_PIPELINE_QUEUE_CAPACITY: '12abc' } }), 'CONFIG_INVALID', 'OOMTRAIL_PIPELINE_QUEUE_CAPACITY');
    rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_PIPELINE_QUEUE_CAPACITY: '1.5' } }), 'CONFIG_INVALID', 'OOMTRAIL_PIPELINE_QUEUE_CAPACITY');
    rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_PIPELINE_QUEUE_CAPACITY: '' } }), 'CONFIG_INVALID', 'OOMTRAIL_PIPELINE_QUEUE_CAPACITY');
    rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_SINKS_FILE_ENABLED: 'maybe' } }), 'CONFIG_INVALID', 'OOMTRAIL_SINKS_FILE_ENABLED');
  });

  test('an out-of-range number or bad enum from env names the env var', () => {
    rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_PIPELINE_QUEUE_CAPACITY: '0' } }), 'CONFIG_INVALID', 'env OOMTRAIL_PIPELINE_QUEUE_CAPACITY', 'pipeline.queue.capacity');
    const err = rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_LOG_LEVEL: 'verbose' } }), 'CONFIG_INVALID', 'env OOMTRAIL_LOG_LEVEL', 'log.level', 'verbose');
    assert.equal(err.env, 'OOMTRAIL_LOG_LEVEL');
  });

  test('an OOMTRAIL_ variable that configures nothing is an error naming it, with a suggestion, never its value', () => {
    const err = rejects(
      () => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_SINKS_FILE_PAHT: '/x', OOMTRAIL_WHATEVER: 'secret-ish' } }),
      'CONFIG_UNKNOWN_KEY',
      'OOMTRAIL_SINKS_FILE_PAHT',
      'OOMTRAIL_WHATEVER',
    );
    assert.equal(err.problems.length, 2);
    assert.match(err.problems.find((p) => p.env === 'OOMTRAIL_SINKS_FILE_PAHT')!.message, /did you mean OOMTRAIL_SINKS_FILE_PATH\?/);
    assert.ok(!err.message.includes('secret-ish'), 'errors never print values');
  });

  test('the project\'s own non-config OOMTRAIL_ variables (tests, VM, cache, Grafana) are left alone', () => {
    const env = {
      OOMTRAIL_E2E_BURST: '50',
      OOMTRAIL_TEST_VERBOSE: '1',
      OOMTRAIL_LOKI_BURST: '30',
      OOMTRAIL_VM_KERNEL_DIR: '/k',
      OOMTRAIL_VM_ARM64: 'all',
      OOMTRAIL_VM_EXTRA_INITRD: '/x.cpio',
      OOMTRAIL_E2E_AGENT: '/usr/bin/oomtrail',
      OOMTRAIL_E2E_AGENT_ROOT: '/usr/lib/oomtrail',
      OOMTRAIL_SKIP_VM: '1',
      OOMTRAIL_CACHE: '/c',
      OOMTRAIL_GRAFANA_CLICKHOUSE_PASSWORD: 'x',
      OOMTRAIL_K8S: '1',
      OOMTRAIL_K8S_OUTAGE_MS: '5000',
    };
    for (const name of Object.keys(env)) assert.ok(NON_CONFIG_ENV_PREFIXES.some((p) => name.startsWith(p)), name);
    assert.deepEqual(loadConfig({ etcDir: EMPTY, env }).warnings, []);
    // and no configuration variable could ever be mistaken for one of them
    const envNames: string[] = [];
    const walk = (node: Record<string, unknown>): void => {
      for (const v of Object.values(node)) {
        if (v && typeof v === 'object' && 'env' in v) envNames.push((v as { env: string }).env);
        else if (v && typeof v === 'object') walk(v as Record<string, unknown>);
      }
    };
    walk(schema as unknown as Record<string, unknown>);
    assert.ok(envNames.length > 100);
    for (const name of envNames) assert.ok(!NON_CONFIG_ENV_PREFIXES.some((p) => name.startsWith(p)), name);
  });
});

describe('rejections from files', () => {
  test('unknown key names the key and the file, with a suggestion', () => {
    const f = file('c.yaml', 'sinks:\n  fiel:\n    path: /x\n');
    const err = rejects(() => loadConfig({ file: f, env: {} }), 'CONFIG_UNKNOWN_KEY', 'sinks.fiel', f, 'sinks.file');
    assert.equal(err.key, 'sinks.fiel');
    assert.equal(err.file, f);
  });

  test('unknown top-level key, and a known leaf name in the wrong place', () => {
    rejects(() => loadConfig({ file: file('a.yaml', 'sink:\n  console: {}\n'), env: {} }), 'CONFIG_UNKNOWN_KEY', 'sink', 'sinks');
    rejects(() => loadConfig({ file: file('b.yaml', 'pipeline:\n  capacity: 5\n'), env: {} }), 'CONFIG_UNKNOWN_KEY', 'pipeline.capacity', 'pipeline.queue.capacity');
  });

  test('unknown key in /etc config names that file', () => {
    const etc = dir({ 'config.yaml': 'log:\n  colour: true\n' });
    rejects(() => loadConfig({ etcDir: etc, env: {} }), 'CONFIG_UNKNOWN_KEY', 'log.colour', path.join(etc, 'config.yaml'));
  });

  test('unknown key in JSON', () => {
    const f = file('c.json', '{"metrics": {"port": 9100}}');
    rejects(() => loadConfig({ file: f, env: {} }), 'CONFIG_UNKNOWN_KEY', 'metrics.port', f);
  });

  test('wrong types are not coerced', () => {
    const f1 = file('a.yaml', 'pipeline:\n  queue:\n    capacity: "10000"\n');
    const e1 = rejects(() => loadConfig({ file: f1, env: {} }), 'CONFIG_INVALID', 'pipeline.queue.capacity', f1, 'string');
    assert.equal(e1.key, 'pipeline.queue.capacity');
    assert.equal(e1.file, f1);
    // convict alone would turn the string "no" into true.
    rejects(() => loadConfig({ file: file('b.yaml', 'sinks:\n  file:\n    enabled: "no"\n'), env: {} }), 'CONFIG_INVALID', 'sinks.file.enabled');
    rejects(() => loadConfig({ file: file('c.yaml', 'sinks:\n  file:\n    path: 42\n'), env: {} }), 'CONFIG_INVALID', 'sinks.file.path');
    rejects(() => loadConfig({ file: file('d.yaml', 'pipeline:\n  batch:\n    max_age_ms: 1.5\n'), env: {} }), 'CONFIG_INVALID', 'pipeline.batch.max_age_ms');
    rejects(() => loadConfig({ file: file('e.yaml', 'pipeline:\n  batch:\n    max_bytes: -1\n'), env: {} }), 'CONFIG_INVALID', 'pipeline.batch.max_bytes');
    rejects(() => loadConfig({ file: file('f.yaml', 'sinks:\n  file:\n    path:\n'), env: {} }), 'CONFIG_INVALID', 'sinks.file.path', 'null');
  });

  test('a mapping where a value belongs, and a value where a mapping belongs', () => {
    rejects(() => loadConfig({ file: file('a.yaml', 'log:\n  level:\n    name: info\n'), env: {} }), 'CONFIG_INVALID', 'log.level', 'mapping');
    rejects(() => loadConfig({ file: file('b.yaml', 'pipeline: 5\n'), env: {} }), 'CONFIG_INVALID', 'pipeline', 'must be a mapping');
    rejects(() => loadConfig({ file: file('c.yaml', '- a\n- b\n'), env: {} }), 'CONFIG_INVALID', 'top level');
  });

  test('bad enum values', () => {
    const f = file('c.yaml', 'pipeline:\n  queue:\n    overflow: sometimes\n');
    const err = rejects(() => loadConfig({ file: f, env: {} }), 'CONFIG_INVALID', 'pipeline.queue.overflow', f, 'drop_oldest');
    assert.equal(err.file, f);
    rejects(() => loadConfig({ file: file('h.yaml', 'collectors:\n  oomkill:\n    hook: uprobe\n'), env: {} }), 'CONFIG_INVALID', 'collectors.oomkill.hook');
    rejects(() => loadConfig({ file: file('s.yaml', 'pipeline:\n  spool:\n    fsync: sometimes\n'), env: {} }), 'CONFIG_INVALID', 'pipeline.spool.fsync');
  });

  test('capacity must be > 0', () => {
    rejects(() => loadConfig({ file: file('c.yaml', 'pipeline:\n  queue:\n    capacity: 0\n'), env: {} }), 'CONFIG_INVALID', 'pipeline.queue.capacity');
  });

  test('metrics.listen must be host:port', () => {
    for (const ok of ['127.0.0.1:9464', ':9100', '[::1]:9464', 'localhost:0', 'node-1.example.com:65535']) {
      assert.equal(loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_METRICS_LISTEN: ok } }).config.metrics.listen, ok);
    }
    for (const bad of ['9464', 'localhost', 'localhost:', 'localhost:65536', 'http://localhost:9464', '[localhost]:1', 'a b:1']) {
      rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_METRICS_LISTEN: bad } }), 'CONFIG_INVALID', 'OOMTRAIL_METRICS_LISTEN', 'metrics.listen');
    }
    assert.deepEqual(parseHostPort('[::1]:9464'), { host: '::1', port: 9464 });
    assert.deepEqual(parseHostPort(':9100'), { host: '', port: 9100 });
  });

  test('retry.max_ms below initial_ms is refused against its source', () => {
    const f = file('c.yaml', 'pipeline:\n  retry:\n    max_ms: 100\n');
    const err = rejects(() => loadConfig({ file: f, env: {} }), 'CONFIG_INVALID', 'pipeline.retry.max_ms', f, 'initial_ms');
    assert.equal(err.file, f);
  });

  test('retry.initial_ms 0 (a busy retry loop) is refused naming the key', () => {
    const f = file('c.yaml', 'pipeline:\n  retry:\n    initial_ms: 0\n');
    rejects(() => loadConfig({ file: f, env: {} }), 'CONFIG_INVALID', 'pipeline.retry.initial_ms', f);
    rejects(() => loadConfig({ etcDir: EMPTY, env: { OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '0' } }), 'CONFIG_INVALID', 'OOMTRAIL_PIPELINE_RETRY_INITIAL_MS', 'pipeline.retry.initial_ms');
  });

  test('all problems are reported at once, the first one in the fields', () => {
    const f = file('c.yaml', 'sinks:\n  fiel: {}\nlog:\n  level: loud\n');
    const err = rejects(
      () => loadConfig({ file: f, env: { OOMTRAIL_PIPELINE_QUEUE_CAPACITY: 'abc' } }),
      'CONFIG_UNKNOWN_KEY',
      'sinks.fiel',
      'log.level',
      'OOMTRAIL_PIPELINE_QUEUE_CAPACITY',
    );
    assert.equal(err.problems.length, 3);
    assert.equal(err.key, 'sinks.fiel');
  });

  test('a missing explicit file', () => {
    const missing = path.join(EMPTY, 'nope.yaml');
    const err = rejects(() => loadConfig({ file: missing, env: {} }), 'CONFIG_UNREADABLE', missing, 'does not exist');
    assert.equal(err.file, missing);
  });

  test('an unreadable file (a directory)', () => {
    const d = dir();
    rejects(() => loadConfig({ file: d, env: {} }), 'CONFIG_UNREADABLE', d, 'directory');
    // A directory where the /etc file should be is present-but-unreadable, not absent.
    const etc = dir();
    fs.mkdirSync(path.join(etc, 'config.yaml'));
    rejects(() => loadConfig({ etcDir: etc, env: {} }), 'CONFIG_UNREADABLE', path.join(etc, 'config.yaml'));
  });

  test('invalid YAML gives the position and never quotes the text', () => {
    const f = file('c.yaml', 'sinks:\n  file:\n    path: "hunter2\n');
    const err = rejects(() => loadConfig({ file: f, env: {} }), 'CONFIG_PARSE', f, 'line');
    assert.ok(!err.message.includes('hunter2'), err.message);
    rejects(() => loadConfig({ file: file('d.yaml', 'log:\n  level: info\n  level: debug\n'), env: {} }), 'CONFIG_PARSE', 'duplicated');
  });

  test('invalid JSON gives the position and never quotes the text', () => {
    const f = file('c.json', '{"sinks": {"file": {"path": hunter2}}}');
    const err = rejects(() => loadConfig({ file: f, env: {} }), 'CONFIG_PARSE', f, 'JSON');
    assert.ok(!err.message.includes('hunter2'), err.message);
    rejects(() => loadConfig({ file: file('d.json', '{"log": {"level": "info",}}'), env: {} }), 'CONFIG_PARSE', 'line 1');
  });
});

describe('sensitive keys', () => {
  // No sensitive key exists yet; a sink's schema part will add some. This stands in for it.
  const secretSchema: convict.Schema<{ sink: { password: string; pin: number; user: string } }> = {
    sink: {
      password: { doc: 'secret', format: (x: unknown) => { if (typeof x !== 'string' || x.length < 8) throw new Error('must be at least 8 characters'); }, default: 'changeme!', sensitive: true, env: 'OOMTRAIL_SINK_PASSWORD' },
      pin: { doc: 'secret number', format: positive, default: 1234, sensitive: true, env: 'OOMTRAIL_SINK_PIN' },
      user: { doc: 'not secret', format: String, default: 'agent', env: 'OOMTRAIL_SINK_USER' },
    },
  };

  test('values never appear in messages', () => {
    const cases: Array<[string | undefined, NodeJS.ProcessEnv, string]> = [
      [file('a.yaml', 'sink:\n  password: 314159265\n'), {}, '314159265'], // wrong type
      [file('b.yaml', 'sink:\n  password: short\n'), {}, 'short'], // format failure reported by convict
      [undefined, { OOMTRAIL_SINK_PASSWORD: 'tiny' }, 'tiny'],
      [undefined, { OOMTRAIL_SINK_PIN: 'x9y8z7' }, 'x9y8z7'], // env coercion failure
      [undefined, { OOMTRAIL_SINK_PIN: '-271828' }, '271828'],
      [file('c.yaml', 'sink:\n  pin: "8675309"\n'), {}, '8675309'],
    ];
    for (const [f, env, secret] of cases) {
      const opts = f ? { file: f, env } : { etcDir: EMPTY, env };
      const err = rejects(() => loadConfigWithSchema(secretSchema, opts), 'CONFIG_INVALID', 'sink.');
      assert.ok(!err.message.includes(secret), `${err.message} leaks ${secret}`);
    }
  });

  test('non-sensitive values are shown to help', () => {
    const f = file('d.yaml', 'sink:\n  user: 1234567\n');
    rejects(() => loadConfigWithSchema(secretSchema, { file: f, env: {} }), 'CONFIG_INVALID', 'sink.user', '1234567');
  });
});
