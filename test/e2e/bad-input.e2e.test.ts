/*
 * The bad-input battery (issue 26): settings an operator gets wrong, set through the environment or the config file,
 * each run as the CLI is run. A refused setting must:
 *   - exit 78 (EX_CONFIG) within 15 s, before any BPF program is attached (the refusals run in parallel: none loads
 *     anything into the kernel, and one that did would show in its time and its log);
 *   - print exactly one error line, which names the key and where its value came from (`env OOMTRAIL_…`,
 *     `file <path>` or `default`);
 *   - print no stack trace and no secret (a secret is planted in each case that has one, and grepped for).
 * Then `check` against the same refusals (same exit code, nothing created), and the agents that must start anyway
 * (sinks unreachable at start and at stop, a full spool file system): they start, stop within 15 s and exit 0.
 * Real parts throughout: tmpfs mounts (read-only, out of inodes, full), FIFOs, PEM made by openssl. Needs root.
 * Runtime: ~25 s (the refusals ~8 s, 8 at a time; the agents that start ~15 s one after another).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { MAIN } from '../helpers/agent';
import { DirLock } from '../../src/pipeline/lock';

const SECRET = 'Pl4nted-s3cret-91827';
const EXIT_BUDGET_MS = 15_000;
const PARALLEL = 8;

let root = '';
const mounts: string[] = [];

/** A tmpfs at `dir` with the given options; unmounted after the suite. */
function tmpfs(dir: string, options: string): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
  mounts.push(dir);
}

interface Files {
  dir: string;
  fifo: string;
  missing: string;
  aFile: string;
  aDir: string;
  secretFile: string;
  bigSecret: string;
  garbagePem: string;
  keyAsCa: string;
  ca: string;
  caWithBadBlock: string;
  cert: string;
  key: string;
  otherKey: string;
  roMount: string;
  noInodes: string;
  fullDisk: string;
}
let F: Files;

function makeFiles(): Files {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-bad-'));
  const p = (n: string) => path.join(root, n);
  const f: Files = {
    dir: root,
    fifo: p('secret.fifo'),
    missing: p('no-such-file'),
    aFile: p('a-file'),
    aDir: p('a-dir'),
    secretFile: p('secret.txt'),
    bigSecret: p('big-secret.txt'),
    garbagePem: p('garbage.pem'),
    keyAsCa: p('key-as-ca.pem'),
    ca: p('ca.pem'),
    caWithBadBlock: p('ca-bad-block.pem'),
    cert: p('cert.pem'),
    key: p('key.pem'),
    otherKey: p('other-key.pem'),
    roMount: p('ro'),
    noInodes: p('noinodes'),
    fullDisk: p('full'),
  };
  execFileSync('mkfifo', [f.fifo]);
  fs.writeFileSync(f.aFile, 'not a directory\n');
  fs.mkdirSync(f.aDir);
  fs.writeFileSync(f.secretFile, `${SECRET}\n`);
  fs.writeFileSync(f.bigSecret, `${SECRET}\n`.repeat(8000));
  // garbage between PEM armour lines: the secret is in it, and must not be quoted
  fs.writeFileSync(f.garbagePem, `-----BEGIN CERTIFICATE-----\n${SECRET}\n-----END CERTIFICATE-----\n`);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f.key, '-out', f.cert, '-days', '2', '-subj', '/CN=oomtrail-bad-input');
  ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', f.otherKey);
  fs.copyFileSync(f.cert, f.ca);
  fs.writeFileSync(f.caWithBadBlock, fs.readFileSync(f.cert, 'utf8') + `-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n`);
  fs.copyFileSync(f.key, f.keyAsCa);
  // a read-only file system with an existing spool dir and events file in it
  tmpfs(f.roMount, 'size=1m');
  fs.mkdirSync(path.join(f.roMount, 'spool'));
  fs.writeFileSync(path.join(f.roMount, 'events.jsonl'), '');
  execFileSync('mount', ['-o', 'remount,ro', f.roMount]);
  // no inode left: nothing can be created there (the root directory is the only one)
  tmpfs(f.noInodes, 'size=1m,nr_inodes=1');
  // every block used: the spool dir exists, but nothing can be written
  tmpfs(f.fullDisk, 'size=1m');
  fs.mkdirSync(path.join(f.fullDisk, 'spool'));
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${path.join(f.fullDisk, 'fill')}`, 'bs=64k'], { stdio: 'ignore' });
  } catch {
    /* dd ends with ENOSPC, as meant */
  }
  return f;
}

/** A fresh case dir with the base config: console off, file sink and spool inside it, backfill and metrics off. */
function baseConfig(caseDir: string): Record<string, unknown> {
  return {
    collectors: { oomkill: { backfill: false }, reclaim: { enabled: false } },
    trail: { enabled: false },
    sinks: { console: { enabled: false }, file: { path: path.join(caseDir, 'events.jsonl') } },
    pipeline: { spool: { dir: path.join(caseDir, 'spool') } },
    shutdown: { deadline_ms: 2000 },
  };
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' ? merge(cur as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

interface Case {
  name: string;
  /** the command line after `oomtrail` (default `run`); `--config <file>` is appended */
  args?: string[];
  env?: (f: Files) => Record<string, string>;
  /** merged into the base config file */
  file?: (f: Files) => Record<string, unknown>;
  /** raw text of the config file instead of the base config (parse errors) */
  rawFile?: (f: Files) => string;
  /** the config file path instead of a written one (`--config` a FIFO, a directory…) */
  configPath?: (f: Files) => string;
  /** the key the one error line must name */
  key: string;
  /** where the value came from: `env NAME`, `file` (this case's config file) or `default` */
  source: string;
  /** more text the line must hold */
  mentions?: string[];
}

const env = (name: string, value: string) => ({ [`OOMTRAIL_${name}`]: value });
const ck = (more: Record<string, unknown> = {}) => ({ sinks: { clickhouse: { enabled: true, ...more } } });
const kafka = (more: Record<string, unknown> = {}) => ({ sinks: { kafka: { enabled: true, brokers: '127.0.0.1:1', ...more } } });
const loki = (more: Record<string, unknown> = {}) => ({ sinks: { loki: { enabled: true, ...more } } });
const hook = (more: Record<string, unknown> = {}) => ({ sinks: { webhook: { enabled: true, url: 'http://127.0.0.1:1/hook', ...more } } });
const E = (n: string) => `env OOMTRAIL_${n}`;

const CASES: Case[] = [
  // ---- collectors.oomkill ----
  { name: 'hook not a hook (env)', env: () => env('COLLECTORS_OOMKILL_HOOK', 'uprobe'), key: 'collectors.oomkill.hook', source: E('COLLECTORS_OOMKILL_HOOK') },
  { name: 'candidates negative (file)', file: () => ({ collectors: { oomkill: { candidates: -1 } } }), key: 'collectors.oomkill.candidates', source: 'file' },
  { name: 'audit_grace_ms 0 (env)', env: () => env('COLLECTORS_OOMKILL_AUDIT_GRACE_MS', '0'), key: 'collectors.oomkill.audit_grace_ms', source: E('COLLECTORS_OOMKILL_AUDIT_GRACE_MS') },
  { name: 'backfill_previous_boots not a number (env)', env: () => env('COLLECTORS_OOMKILL_BACKFILL_PREVIOUS_BOOTS', 'two'), key: 'collectors.oomkill.backfill_previous_boots', source: E('COLLECTORS_OOMKILL_BACKFILL_PREVIOUS_BOOTS') },
  { name: 'backfill_journald_dir relative (file)', file: () => ({ collectors: { oomkill: { backfill_journald_dir: 'var/log/journal' } } }), key: 'collectors.oomkill.backfill_journald_dir', source: 'file' },
  { name: 'oomkill collector off (env)', env: () => env('COLLECTORS_OOMKILL_ENABLED', 'false'), key: 'collectors.oomkill.enabled', source: E('COLLECTORS_OOMKILL_ENABLED') },
  { name: 'backfill not a boolean (env)', env: () => env('COLLECTORS_OOMKILL_BACKFILL', 'maybe'), key: 'collectors.oomkill.backfill', source: E('COLLECTORS_OOMKILL_BACKFILL') },
  // ---- collectors.reclaim / psi / alloc, trail, pressure ----
  { name: 'reclaim death_wait_ms text (env)', env: () => env('COLLECTORS_RECLAIM_DEATH_WAIT_MS', '1s'), key: 'collectors.reclaim.death_wait_ms', source: E('COLLECTORS_RECLAIM_DEATH_WAIT_MS') },
  { name: 'psi trigger window too short (file)', file: () => ({ collectors: { psi: { trigger_window_us: 100 } } }), key: 'collectors.psi.trigger_window_us', source: 'file' },
  { name: 'psi trigger_stall_us 0 (env)', env: () => env('COLLECTORS_PSI_TRIGGER_STALL_US', '0'), key: 'collectors.psi.trigger_stall_us', source: E('COLLECTORS_PSI_TRIGGER_STALL_US') },
  { name: 'alloc without trail (env)', env: () => env('COLLECTORS_ALLOC_ENABLED', 'true'), key: 'collectors.alloc.enabled', source: E('COLLECTORS_ALLOC_ENABLED'), mentions: ['trail.enabled from file'] },
  { name: 'alloc without trail (file)', file: () => ({ collectors: { alloc: { enabled: true } } }), key: 'collectors.alloc.enabled', source: 'file' },
  { name: 'pressure without trail (env)', env: () => env('PRESSURE_ENABLED', 'yes'), key: 'pressure.enabled', source: E('PRESSURE_ENABLED') },
  { name: 'pressure without trail (file)', file: () => ({ pressure: { enabled: true } }), key: 'pressure.enabled', source: 'file' },
  { name: 'pressure usage_ratio above 1 (file)', file: () => ({ pressure: { usage_ratio: 1.5 } }), key: 'pressure.usage_ratio', source: 'file' },
  { name: 'trail step_ms 0 (env)', env: () => env('TRAIL_STEP_MS', '0'), key: 'trail.step_ms', source: E('TRAIL_STEP_MS') },
  { name: 'trail samples a string (file)', file: () => ({ trail: { samples: '60' } }), key: 'trail.samples', source: 'file' },
  // ---- enrich.runtime ----
  { name: 'runtime list names an unknown runtime (env)', env: () => env('ENRICH_RUNTIME_RUNTIMES', 'podman'), key: 'enrich.runtime.runtimes', source: E('ENRICH_RUNTIME_RUNTIMES') },
  { name: 'runtime socket relative (file)', file: () => ({ enrich: { runtime: { docker_socket: 'docker.sock' } } }), key: 'enrich.runtime.docker_socket', source: 'file' },
  { name: 'runtime request_timeout_ms 0 (env)', env: () => env('ENRICH_RUNTIME_REQUEST_TIMEOUT_MS', '0'), key: 'enrich.runtime.request_timeout_ms', source: E('ENRICH_RUNTIME_REQUEST_TIMEOUT_MS') },
  // ---- pipeline ----
  { name: 'queue capacity 0 (env)', env: () => env('PIPELINE_QUEUE_CAPACITY', '0'), key: 'pipeline.queue.capacity', source: E('PIPELINE_QUEUE_CAPACITY') },
  { name: 'queue overflow unknown (file)', file: () => ({ pipeline: { queue: { overflow: 'spill' } } }), key: 'pipeline.queue.overflow', source: 'file' },
  { name: 'batch max_events 0 (env)', env: () => env('PIPELINE_BATCH_MAX_EVENTS', '0'), key: 'pipeline.batch.max_events', source: E('PIPELINE_BATCH_MAX_EVENTS') },
  { name: 'retry max below initial: default key, env cause', env: () => env('PIPELINE_RETRY_INITIAL_MS', '50000'), key: 'pipeline.retry.max_ms', source: 'default', mentions: ['pipeline.retry.initial_ms from env OOMTRAIL_PIPELINE_RETRY_INITIAL_MS'] },
  { name: 'spool fsync unknown (env)', env: () => env('PIPELINE_SPOOL_FSYNC', 'sometimes'), key: 'pipeline.spool.fsync', source: E('PIPELINE_SPOOL_FSYNC') },
  { name: 'spool max_bytes negative (file)', file: () => ({ pipeline: { spool: { max_bytes: -5 } } }), key: 'pipeline.spool.max_bytes', source: 'file' },
  { name: 'dead_letter keep negative (env)', env: () => env('PIPELINE_DEAD_LETTER_KEEP', '-1'), key: 'pipeline.dead_letter.keep', source: E('PIPELINE_DEAD_LETTER_KEEP') },
  // ---- unusable paths ----
  { name: 'spool dir is a file (env)', env: (f) => env('PIPELINE_SPOOL_DIR', f.aFile), key: 'pipeline.spool.dir', source: E('PIPELINE_SPOOL_DIR'), mentions: ['not a directory'] },
  { name: 'spool dir is a file (file)', file: (f) => ({ pipeline: { spool: { dir: f.aFile } } }), key: 'pipeline.spool.dir', source: 'file', mentions: ['not a directory'] },
  { name: 'spool dir under a file (env)', env: (f) => env('PIPELINE_SPOOL_DIR', path.join(f.aFile, 'spool')), key: 'pipeline.spool.dir', source: E('PIPELINE_SPOOL_DIR'), mentions: ['not a directory'] },
  { name: 'spool dir on a read-only mount (file)', file: (f) => ({ pipeline: { spool: { dir: path.join(f.roMount, 'spool') } } }), key: 'pipeline.spool.dir', source: 'file', mentions: ['EROFS'] },
  { name: 'spool dir not creatable on a read-only mount (env)', env: (f) => env('PIPELINE_SPOOL_DIR', path.join(f.roMount, 'new', 'spool')), key: 'pipeline.spool.dir', source: E('PIPELINE_SPOOL_DIR'), mentions: ['EROFS'] },
  { name: 'spool dir not creatable: no free inode (env)', env: (f) => env('PIPELINE_SPOOL_DIR', path.join(f.noInodes, 'spool')), key: 'pipeline.spool.dir', source: E('PIPELINE_SPOOL_DIR'), mentions: ['ENOSPC'] },
  { name: 'spool dir with a control character (env)', env: () => env('PIPELINE_SPOOL_DIR', '/var/lib/oom\ttrail'), key: 'pipeline.spool.dir', source: E('PIPELINE_SPOOL_DIR') },
  { name: 'file sink path is a directory (env)', env: (f) => env('SINKS_FILE_PATH', f.aDir), key: 'sinks.file.path', source: E('SINKS_FILE_PATH'), mentions: ['is a directory'] },
  { name: 'file sink path is a directory (file)', file: (f) => ({ sinks: { file: { path: f.aDir } } }), key: 'sinks.file.path', source: 'file', mentions: ['is a directory'] },
  { name: 'file sink path under a file (file)', file: (f) => ({ sinks: { file: { path: path.join(f.aFile, 'events.jsonl') } } }), key: 'sinks.file.path', source: 'file' },
  { name: 'file sink path on a read-only mount (env)', env: (f) => env('SINKS_FILE_PATH', path.join(f.roMount, 'events.jsonl')), key: 'sinks.file.path', source: E('SINKS_FILE_PATH'), mentions: ['EROFS'] },
  { name: 'file sink path empty (env)', env: () => env('SINKS_FILE_PATH', ''), key: 'sinks.file.path', source: E('SINKS_FILE_PATH') },
  // ---- sinks on/off, console, log, host, shutdown, metrics ----
  { name: 'every sink off (env)', env: () => env('SINKS_FILE_ENABLED', 'false'), key: 'sinks.file.enabled', source: E('SINKS_FILE_ENABLED'), mentions: ['every sink is disabled'] },
  { name: 'every sink off (file)', file: () => ({ sinks: { file: { enabled: false } } }), key: 'sinks.console.enabled', source: 'file', mentions: ['every sink is disabled'] },
  { name: 'console format unknown (env)', env: () => env('SINKS_CONSOLE_FORMAT', 'xml'), key: 'sinks.console.format', source: E('SINKS_CONSOLE_FORMAT') },
  { name: 'log level unknown (env)', env: () => env('LOG_LEVEL', 'verbose'), key: 'log.level', source: E('LOG_LEVEL') },
  { name: 'log format unknown (file)', file: () => ({ log: { format: 'xml' } }), key: 'log.format', source: 'file' },
  { name: 'host name with a newline (env)', env: () => env('HOST_NAME', 'web\nforged'), key: 'host.name', source: E('HOST_NAME') },
  { name: 'shutdown deadline negative (env)', env: () => env('SHUTDOWN_DEADLINE_MS', '-1'), key: 'shutdown.deadline_ms', source: E('SHUTDOWN_DEADLINE_MS') },
  { name: 'metrics.listen not host:port (env)', env: () => env('METRICS_LISTEN', 'localhost'), key: 'metrics.listen', source: E('METRICS_LISTEN') },
  { name: 'metrics.listen not an address of this host (file)', file: () => ({ metrics: { listen: '192.0.2.1:9464' } }), key: 'metrics.listen', source: 'file', mentions: ['not an address of this host'] },
  { name: 'metrics.sink_failing_after_ms text (env)', env: () => env('METRICS_SINK_FAILING_AFTER_MS', '5m'), key: 'metrics.sink_failing_after_ms', source: E('METRICS_SINK_FAILING_AFTER_MS') },
  // ---- unknown keys and bad config files (a misspelt password key is still a password) ----
  { name: 'unknown env var holding a secret', env: () => env('SINKS_CLICKHOUSE_PASWORD', SECRET), key: 'OOMTRAIL_SINKS_CLICKHOUSE_PASWORD', source: 'env OOMTRAIL_SINKS_CLICKHOUSE_PASWORD' },
  { name: 'unknown file key holding a secret', file: () => ({ sinks: { clickhouse: { pasword: SECRET } } }), key: 'sinks.clickhouse.pasword', source: 'file' },
  { name: 'YAML that does not parse, with a secret on the bad line', rawFile: () => `sinks:\n  clickhouse:\n    password: "${SECRET}\n  file: [\n`, key: 'not valid YAML', source: 'file' },
  { name: 'JSON that does not parse, with a secret in it', configPath: (f) => { const p = path.join(f.dir, 'broken.json'); fs.writeFileSync(p, `{"sinks": {"clickhouse": {"password": "${SECRET}" "x": 1}}}`); return p; }, key: 'not valid JSON', source: 'file' },
  { name: 'config file is a FIFO (never blocks)', configPath: (f) => f.fifo, key: 'config file', source: 'file', mentions: ['FIFO'] },
  { name: 'config file is a directory', configPath: (f) => f.aDir, key: 'config file', source: 'file', mentions: ['is a directory'] },
  { name: 'config file missing', configPath: (f) => f.missing, key: 'config file', source: 'file', mentions: ['does not exist'] },
  // ---- clickhouse: secrets in the URL, in the file, in files ----
  { name: 'clickhouse url with a password (env)', env: () => ({ ...env('SINKS_CLICKHOUSE_ENABLED', 'true'), ...env('SINKS_CLICKHOUSE_URL', `http://default:${SECRET}@127.0.0.1:8123`) }), key: 'sinks.clickhouse.url', source: E('SINKS_CLICKHOUSE_URL') },
  { name: 'clickhouse url with a password (file)', file: () => ck({ url: `https://default:${SECRET}@127.0.0.1:8443/` }), key: 'sinks.clickhouse.url', source: 'file' },
  { name: 'clickhouse password of the wrong type (file)', file: () => ck({ password: 918273645 }), key: 'sinks.clickhouse.password', source: 'file' },
  { name: 'clickhouse password and password_file both', file: (f) => ck({ password_file: f.secretFile }), env: () => env('SINKS_CLICKHOUSE_PASSWORD', SECRET), key: 'sinks.clickhouse.password_file', source: 'file', mentions: ['sinks.clickhouse.password from env OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD'] },
  { name: 'clickhouse password_file is a FIFO (env)', env: (f) => ({ ...env('SINKS_CLICKHOUSE_ENABLED', 'true'), ...env('SINKS_CLICKHOUSE_PASSWORD_FILE', f.fifo) }), key: 'sinks.clickhouse.password_file', source: E('SINKS_CLICKHOUSE_PASSWORD_FILE'), mentions: ['FIFO'] },
  { name: 'clickhouse password_file is a directory (file)', file: (f) => ck({ password_file: f.aDir }), key: 'sinks.clickhouse.password_file', source: 'file', mentions: ['EISDIR'] },
  { name: 'clickhouse password_file is a device that never ends (file)', file: () => ck({ password_file: '/dev/zero' }), key: 'sinks.clickhouse.password_file', source: 'file', mentions: ['character device'] },
  { name: 'clickhouse password_file too big (env)', env: (f) => ({ ...env('SINKS_CLICKHOUSE_ENABLED', 'true'), ...env('SINKS_CLICKHOUSE_PASSWORD_FILE', f.bigSecret) }), key: 'sinks.clickhouse.password_file', source: E('SINKS_CLICKHOUSE_PASSWORD_FILE'), mentions: ['larger than'] },
  { name: 'clickhouse CA garbage PEM (file)', file: (f) => ck({ url: 'https://127.0.0.1:8443', tls: { ca_file: f.garbagePem } }), key: 'sinks.clickhouse.tls.ca_file', source: 'file', mentions: ['does not parse'] },
  { name: 'clickhouse client key not the certificate\'s (env)', file: (f) => ck({ url: 'https://127.0.0.1:8443', tls: { ca_file: f.ca, cert_file: f.cert } }), env: (f) => env('SINKS_CLICKHOUSE_TLS_KEY_FILE', f.otherKey), key: 'sinks.clickhouse.tls.key_file', source: E('SINKS_CLICKHOUSE_TLS_KEY_FILE'), mentions: ['not the private key'] },
  { name: 'clickhouse tls files with an http url: default key, env cause', env: (f) => ({ ...env('SINKS_CLICKHOUSE_ENABLED', 'true'), ...env('SINKS_CLICKHOUSE_TLS_CA_FILE', f.ca) }), key: 'sinks.clickhouse.tls.ca_file', source: E('SINKS_CLICKHOUSE_TLS_CA_FILE'), mentions: ['https://'] },
  { name: 'clickhouse database not an identifier (file)', file: () => ck({ database: 'oom;drop' }), key: 'sinks.clickhouse.database', source: 'file' },
  // ---- kafka ----
  { name: 'kafka brokers with credentials (env)', env: () => ({ ...env('SINKS_KAFKA_ENABLED', 'true'), ...env('SINKS_KAFKA_BROKERS', `user:${SECRET}@127.0.0.1:9092`) }), key: 'sinks.kafka.brokers', source: E('SINKS_KAFKA_BROKERS') },
  { name: 'kafka sasl without password_file (file)', file: () => kafka({ sasl: { mechanism: 'plain', username: 'u' } }), key: 'sinks.kafka.sasl.password_file', source: 'default', mentions: ['sinks.kafka.sasl.mechanism from file'] },
  { name: 'kafka sasl password_file is a FIFO (file)', file: (f) => kafka({ sasl: { mechanism: 'plain', username: 'u', password_file: f.fifo } }), key: 'sinks.kafka.sasl.password_file', source: 'file', mentions: ['FIFO'] },
  { name: 'kafka sasl password_file missing (env)', file: () => kafka({ sasl: { mechanism: 'scram-sha-256', username: 'u' } }), env: (f) => env('SINKS_KAFKA_SASL_PASSWORD_FILE', f.missing), key: 'sinks.kafka.sasl.password_file', source: E('SINKS_KAFKA_SASL_PASSWORD_FILE'), mentions: ['ENOENT'] },
  { name: 'kafka CA garbage PEM (env)', file: () => kafka({ tls: { enabled: true } }), env: (f) => env('SINKS_KAFKA_TLS_CA_FILE', f.garbagePem), key: 'sinks.kafka.tls.ca_file', source: E('SINKS_KAFKA_TLS_CA_FILE'), mentions: ['does not parse'] },
  { name: 'kafka CA bundle with one bad certificate (file)', file: (f) => kafka({ tls: { enabled: true, ca_file: f.caWithBadBlock } }), key: 'sinks.kafka.tls.ca_file', source: 'file', mentions: ['certificate 2 of 2'] },
  { name: 'kafka CA file holds a key, not a certificate (file)', file: (f) => kafka({ tls: { enabled: true, ca_file: f.keyAsCa } }), key: 'sinks.kafka.tls.ca_file', source: 'file', mentions: ['no PEM certificate'] },
  { name: 'kafka client key garbage (file)', file: (f) => kafka({ tls: { enabled: true, cert_file: f.cert, key_file: f.garbagePem } }), key: 'sinks.kafka.tls.key_file', source: 'file', mentions: ['no PEM private key'] },
  { name: 'kafka tls files with tls off: default key, file cause', file: (f) => kafka({ tls: { ca_file: f.ca } }), key: 'sinks.kafka.tls.enabled', source: 'default', mentions: ['sinks.kafka.tls.ca_file from file'] },
  { name: 'kafka acks unknown (env)', env: () => ({ ...env('SINKS_KAFKA_ENABLED', 'true'), ...env('SINKS_KAFKA_ACKS', 'most') }), key: 'sinks.kafka.acks', source: E('SINKS_KAFKA_ACKS') },
  // ---- loki ----
  { name: 'loki url with a password (env)', env: () => ({ ...env('SINKS_LOKI_ENABLED', 'true'), ...env('SINKS_LOKI_URL', `http://admin:${SECRET}@127.0.0.1:3100`) }), key: 'sinks.loki.url', source: E('SINKS_LOKI_URL') },
  { name: 'loki basic auth password file is a FIFO (file)', file: (f) => loki({ basic_auth_user: 'u', basic_auth_password_file: f.fifo }), key: 'sinks.loki.basic_auth_password_file', source: 'file', mentions: ['FIFO'] },
  { name: 'loki bearer token file is a FIFO (env)', file: () => loki(), env: (f) => env('SINKS_LOKI_BEARER_TOKEN_FILE', f.fifo), key: 'sinks.loki.bearer_token_file', source: E('SINKS_LOKI_BEARER_TOKEN_FILE'), mentions: ['FIFO'] },
  { name: 'loki basic auth user without password file (env)', file: () => loki(), env: () => env('SINKS_LOKI_BASIC_AUTH_USER', 'u'), key: 'sinks.loki.basic_auth_user', source: E('SINKS_LOKI_BASIC_AUTH_USER') },
  { name: 'loki CA garbage PEM (file)', file: (f) => loki({ url: 'https://127.0.0.1:3100', tls: { ca_file: f.garbagePem } }), key: 'sinks.loki.tls.ca_file', source: 'file', mentions: ['does not parse'] },
  { name: 'loki client cert garbage (env)', file: (f) => loki({ url: 'https://127.0.0.1:3100', tls: { key_file: f.key } }), env: (f) => env('SINKS_LOKI_TLS_CERT_FILE', f.garbagePem), key: 'sinks.loki.tls.cert_file', source: E('SINKS_LOKI_TLS_CERT_FILE'), mentions: ['does not parse'] },
  { name: 'loki labels malformed (env)', env: () => ({ ...env('SINKS_LOKI_ENABLED', 'true'), ...env('SINKS_LOKI_LABELS', 'a=b,=c') }), key: 'sinks.loki.labels', source: E('SINKS_LOKI_LABELS') },
  // ---- webhook ----
  { name: 'webhook url with a token in userinfo and path (env)', env: () => ({ ...env('SINKS_WEBHOOK_ENABLED', 'true'), ...env('SINKS_WEBHOOK_URL', `https://u:${SECRET}@hooks.example/services/${SECRET}`) }), key: 'sinks.webhook.url', source: E('SINKS_WEBHOOK_URL') },
  { name: 'webhook on without a url (file)', file: () => ({ sinks: { webhook: { enabled: true } } }), key: 'sinks.webhook.url', source: 'default' },
  { name: 'webhook bearer token file is a FIFO (file)', file: (f) => hook({ bearer_token_file: f.fifo }), key: 'sinks.webhook.bearer_token_file', source: 'file', mentions: ['FIFO'] },
  { name: 'webhook bearer token file is a directory (env)', file: () => hook(), env: (f) => env('SINKS_WEBHOOK_BEARER_TOKEN_FILE', f.aDir), key: 'sinks.webhook.bearer_token_file', source: E('SINKS_WEBHOOK_BEARER_TOKEN_FILE'), mentions: ['EISDIR'] },
  { name: 'webhook format unknown (env)', file: () => hook(), env: () => env('SINKS_WEBHOOK_FORMAT', 'slack'), key: 'sinks.webhook.format', source: E('SINKS_WEBHOOK_FORMAT') },
  // ---- check: the same refusals, the same exit code ----
  { name: 'check: every sink off', args: ['check'], env: () => env('SINKS_FILE_ENABLED', 'false'), key: 'sinks.file.enabled', source: E('SINKS_FILE_ENABLED') },
  { name: 'check: spool dir is a file', args: ['check'], file: (f) => ({ pipeline: { spool: { dir: f.aFile } } }), key: 'pipeline.spool.dir', source: 'file' },
  { name: 'check: token file is a FIFO', args: ['check'], file: (f) => hook({ bearer_token_file: f.fifo }), key: 'sinks.webhook.bearer_token_file', source: 'file' },
  { name: 'check: kafka CA garbage PEM', args: ['check', '--json'], file: (f) => kafka({ tls: { enabled: true, ca_file: f.garbagePem } }), key: 'sinks.kafka.tls.ca_file', source: 'file' },
  { name: 'check --sinks: file sink path is a directory', args: ['check', '--sinks'], env: (f) => env('SINKS_FILE_PATH', f.aDir), key: 'sinks.file.path', source: E('SINKS_FILE_PATH') },
  { name: 'check: pressure without trail', args: ['check'], env: () => env('PRESSURE_ENABLED', 'true'), key: 'pressure.enabled', source: E('PRESSURE_ENABLED') },
];

interface Outcome {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the CLI; killed (and reported so) past the exit budget. */
function oomtrail(args: string[], extraEnv: Record<string, string>, budgetMs = EXIT_BUDGET_MS): Promise<Outcome> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), budgetMs);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

/** Lines at error level: the CLI's own `oomtrail: …` lines and the logger's error lines (text or JSON). */
function errorLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /^oomtrail: /.test(l) || /^\S+ error /.test(l) || /"level":"error"/.test(l));
}

function prepare(c: Case, i: number): { args: string[]; env: Record<string, string>; configFile: string; caseDir: string } {
  const caseDir = path.join(root, `case-${i}`);
  fs.mkdirSync(caseDir);
  let configFile: string;
  if (c.configPath) configFile = c.configPath(F);
  else {
    configFile = path.join(caseDir, 'config.yaml');
    fs.writeFileSync(configFile, c.rawFile ? c.rawFile(F) : yaml.dump(merge(baseConfig(caseDir), c.file?.(F) ?? {})));
  }
  return { args: [...(c.args ?? ['run']), '--config', configFile], env: c.env?.(F) ?? {}, configFile, caseDir };
}

function assertRefusal(c: Case, r: Outcome, configFile: string): void {
  const ctx = `${c.name}: exit ${r.status ?? r.signal} after ${r.ms} ms\n--- stderr\n${r.stderr}`;
  assert.equal(r.status, 78, ctx);
  assert.ok(r.ms <= EXIT_BUDGET_MS, ctx);
  const errors = errorLines(r.stderr);
  assert.equal(errors.length, 1, `one error line\n${ctx}`);
  const line = errors[0]!;
  assert.match(line, /^oomtrail: configuration error: /, ctx);
  assert.ok(line.includes(c.key), `names ${c.key}\n${ctx}`);
  const source = c.source === 'file' ? `file ${configFile}` : c.source;
  assert.ok(line.includes(source), `names the source ${source}\n${ctx}`);
  for (const m of c.mentions ?? []) assert.ok(line.includes(m.replace(/ from file$/, ` from file ${configFile}`)), `mentions ${m}\n${ctx}`);
  assert.doesNotMatch(r.stderr + r.stdout, /^\s+at /m, `no stack trace\n${ctx}`);
  assert.ok(!(r.stderr + r.stdout).includes(SECRET), `no secret\n${ctx}`);
  // refused before anything was loaded into the kernel or written
  assert.doesNotMatch(r.stderr, /attached hook|started:/, `refused before the attach\n${ctx}`);
}

describe('bad-input battery', () => {
  before(() => {
    F = makeFiles();
  });
  after(() => {
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', [m]);
      } catch {
        /* already gone */
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
  });

  test(`${CASES.length} refusals: exit 78 within 15 s, one line naming the key and its source, no stack trace, no secret`, async () => {
    assert.ok(CASES.length >= 60, `${CASES.length} cases`);
    const prepared = CASES.map((c, i) => ({ c, ...prepare(c, i) }));
    const results: Array<{ c: Case; r: Outcome; configFile: string; caseDir: string }> = [];
    // `check` probes the kernel's hooks (loads and attaches each briefly) before it prints its report: one at a time
    const parallel = prepared.filter((p) => p.args[0] !== 'check');
    for (let i = 0; i < parallel.length; i += PARALLEL) {
      const slice = parallel.slice(i, i + PARALLEL);
      const rs = await Promise.all(slice.map((p) => oomtrail(p.args, p.env)));
      slice.forEach((p, j) => results.push({ c: p.c, r: rs[j]!, configFile: p.configFile, caseDir: p.caseDir }));
    }
    for (const p of prepared.filter((x) => x.args[0] === 'check')) results.push({ c: p.c, r: await oomtrail(p.args, p.env), configFile: p.configFile, caseDir: p.caseDir });
    const failures: string[] = [];
    for (const { c, r, configFile, caseDir } of results) {
      try {
        assertRefusal(c, r, configFile);
        // nothing created: no spool dir, no events file (check --sinks included)
        assert.deepEqual(fs.existsSync(caseDir) ? fs.readdirSync(caseDir).filter((n) => n !== 'config.yaml') : [], [], `${c.name}: created nothing`);
      } catch (err) {
        failures.push((err as Error).message.split('\n').slice(0, 12).join('\n'));
      }
    }
    const bySpeed = [...results].sort((a, b) => b.r.ms - a.r.ms);
    console.log(`# ${results.length} cases, ${results.length - failures.length} pass; slowest exits: ${bySpeed.slice(0, 4).map((x) => `${x.r.ms} ms (${x.c.name})`).join(', ')}`);
    assert.deepEqual(failures, [], `${failures.length} of ${results.length} cases failed:\n\n${failures.join('\n\n')}`);
  });

  test('a spool dir held by another agent: exit 78 before the attach, naming the key, its source and the holder', async () => {
    const caseDir = path.join(root, 'held');
    fs.mkdirSync(caseDir);
    const configFile = path.join(caseDir, 'config.yaml');
    fs.writeFileSync(configFile, yaml.dump(baseConfig(caseDir)));
    const lock = DirLock.acquire(path.join(caseDir, 'spool'));
    try {
      for (const cmd of [['run'], ['check']]) {
        const r = await oomtrail([...cmd, '--config', configFile], {});
        assertRefusal({ name: `${cmd[0]} on a held spool`, key: 'pipeline.spool.dir', source: 'file', mentions: [`pid ${process.pid}`] }, r, configFile);
      }
    } finally {
      lock.release();
    }
  });

  test('check and check --sinks on a good config: exit 0, print sources, sinks, spool and state paths, programs in use; create nothing', async () => {
    const caseDir = path.join(root, 'good');
    fs.mkdirSync(caseDir);
    const configFile = path.join(caseDir, 'config.yaml');
    fs.writeFileSync(configFile, yaml.dump(merge(baseConfig(caseDir), { sinks: { file: { path: path.join(caseDir, 'deep', 'events.jsonl') } } })));
    const r = await oomtrail(['check', '--config', configFile], env('SINKS_CONSOLE_FORMAT', 'json'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^config\\s+defaults <- ${configFile.replace(/[.]/g, '\\.')} <- env OOMTRAIL_SINKS_CONSOLE_FORMAT$`, 'm'));
    assert.match(r.stdout, /^sinks enabled\s+file$/m);
    assert.ok(r.stdout.includes(`spool dir       ${path.join(caseDir, 'spool')}`), r.stdout);
    assert.match(r.stdout, /^state\s+\S+\/\.journal, \S+\/kills\.state\.json$/m);
    // the base config turns reclaim and trail off: only the OOM hook's program is in use
    const after = r.stdout.split('programs in use by run (this configuration):\n')[1]?.split('\n') ?? [];
    const inUse = after.slice(0, after.findIndex((l) => !l.startsWith('  ')));
    assert.ok(inUse.length >= 1 && inUse.every((l) => l.startsWith('  oomkill: ')), r.stdout);
    assert.deepEqual(fs.readdirSync(caseDir), ['config.yaml'], 'check created nothing');
  });

  // check --sinks creates nothing either: check's own code, and the file sink's healthcheck, which only looks
  test('check --sinks on a good config: exit 0 and nothing created', async () => {
    const caseDir = path.join(root, 'good-sinks');
    fs.mkdirSync(caseDir);
    const configFile = path.join(caseDir, 'config.yaml');
    fs.writeFileSync(configFile, yaml.dump(merge(baseConfig(caseDir), { sinks: { file: { path: path.join(caseDir, 'deep', 'events.jsonl') } } })));
    const sinks = await oomtrail(['check', '--sinks', '--config', configFile], {});
    assert.equal(sinks.status, 0, sinks.stderr);
    assert.deepEqual(fs.readdirSync(caseDir), ['config.yaml'], 'check --sinks created nothing');
  });

  // Agents that must start: a sink that does not answer is not a configuration error (the spool covers it)
  const STARTS: Array<{ name: string; file: (caseDir: string) => Record<string, unknown>; env?: Record<string, string>; warns?: RegExp }> = [
    { name: 'clickhouse unreachable at start and at stop (password in a file)', file: () => ck({ url: 'http://127.0.0.1:1', password_file: F.secretFile, request_timeout_ms: 1000 }) },
    { name: 'kafka unreachable at start and at stop (SASL password in a file)', file: () => kafka({ sasl: { mechanism: 'plain', username: 'u', password_file: F.secretFile }, request_timeout_ms: 1000, retries: 0 }) },
    { name: 'loki unreachable at start and at stop (bearer token in a file)', file: () => loki({ url: 'http://127.0.0.1:1', bearer_token_file: F.secretFile, request_timeout_ms: 1000 }) },
    { name: 'webhook unreachable at start and at stop (bearer token in a file)', file: () => hook({ bearer_token_file: F.secretFile, request_timeout_ms: 1000 }) },
    // how the records fare on a full disk is issue 26 part 1 (another branch): here, that it starts, says so, and stops
    { name: 'spool on a full file system (the directory exists)', file: () => ({ pipeline: { spool: { dir: path.join(F.fullDisk, 'spool') } } }), warns: /^\S+ warn .*ENOSPC/m },
  ];
  for (const s of STARTS) {
    test(`starts anyway, stops within 15 s with exit 0: ${s.name}`, async () => {
      const caseDir = fs.mkdtempSync(path.join(root, 'start-'));
      const configFile = path.join(caseDir, 'config.yaml');
      // the kmsg backfill (of a fresh state dir) hands every sink the kills the kernel log holds: records are
      // pending in the unreachable sink's lane when the stop comes
      const backfill = { collectors: { oomkill: { backfill: true, backfill_journald: false } } };
      fs.writeFileSync(configFile, yaml.dump(merge(merge(baseConfig(caseDir), backfill), s.file(caseDir))));
      const child = spawn(process.execPath, [MAIN, 'run', '--config', configFile], { env: { ...process.env, ...s.env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
      const t0 = Date.now();
      try {
        while (!/oomtrail \S+ started:/.test(out)) {
          if (child.exitCode !== null || Date.now() - t0 > EXIT_BUDGET_MS) assert.fail(`did not start (exit ${child.exitCode}):\n${out}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        // let the healthchecks and first connection attempts fail
        await new Promise((r) => setTimeout(r, 1500));
        const t1 = Date.now();
        child.kill('SIGTERM');
        const kill = setTimeout(() => child.kill('SIGKILL'), EXIT_BUDGET_MS + 1000);
        const { code, signal } = await exited;
        clearTimeout(kill);
        const ms = Date.now() - t1;
        console.log(`# ${s.name}: stopped in ${ms} ms; ${(/stopped;.*$/m.exec(out) ?? ['no stop line'])[0]}`);
        assert.equal(code, 0, `exit ${code ?? signal} after ${ms} ms:\n${out}`);
        assert.ok(ms <= EXIT_BUDGET_MS, `stop took ${ms} ms:\n${out}`);
        if (process.env.OOMTRAIL_TEST_VERBOSE) console.log(out);
        assert.doesNotMatch(out, /configuration error/, out);
        if (s.warns) assert.match(out, s.warns, `warns:\n${out}`);
        assert.doesNotMatch(out, /^\s+at /m, `no stack trace:\n${out}`);
        assert.ok(!out.includes(SECRET), `no secret:\n${out}`);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    });
  }
});
