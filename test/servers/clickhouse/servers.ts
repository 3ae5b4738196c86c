/*
 * Start/stop helpers for the two real ClickHouse servers the ClickHouse sink is tested against, both installed by
 * test/servers/clickhouse/setup.sh (run by `scripts/setup-host.sh test`):
 *   - chdb: the current ClickHouse engine (chdb-core, PyPI) behind chdb_http.py, a small HTTP front;
 *   - Debian's clickhouse-server 18.16: a real, old server over HTTP.
 * Each listens on 127.0.0.1 on a free port, in its own data directory, with a password user; `start` waits until
 * `/ping` answers; `stop`/`kill` signal the PID and wait for the exit. Neither is ever skipped: a missing install
 * is an error that names the setup script.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CACHE_ROOT, freePort, killProcess, sleep, stopProcess, track } from '../common';

export { freePort, sleep };
import { createTableSql } from '../../../src/sinks/clickhouse/schema';

export const REPO = path.resolve(__dirname, '../../../..');
export const SETUP = 'test/servers/clickhouse/setup.sh';
export const CHDB_VERSION = process.env.CHDB_CORE_VERSION ?? '26.9.0';
export const CACHE = path.join(CACHE_ROOT, 'clickhouse');
export const CHDB_PYTHON = path.join(CACHE, `chdb-core-${CHDB_VERSION}`, 'venv', 'bin', 'python');
export const CHDB_FRONT = path.join(REPO, 'test', 'servers', 'clickhouse', 'chdb_http.py');
export const CLICKHOUSE_SERVER = '/usr/sbin/clickhouse-server';

export interface ServerHandle {
  kind: 'chdb' | 'clickhouse-18.16';
  url: string;
  port: number;
  user: string;
  password: string;
  dir: string;
  /** PID of the running server, or null when stopped. */
  pid: () => number | null;
  running: () => boolean;
  /** (Re)starts on the same port and data directory, waits for /ping. */
  start: () => Promise<void>;
  /** SIGTERM, wait for the exit (SIGKILL after `graceMs`). */
  stop: (graceMs?: number) => Promise<void>;
  /** SIGKILL, wait for the exit. */
  kill: () => Promise<void>;
  log: () => string;
}

export interface ServerOptions {
  /** Data directory; default a fresh temp dir. */
  dir?: string;
  password?: string;
  /** Seconds the server keeps an idle keep-alive connection. */
  keepAliveTimeout?: number;
}

async function waitPing(url: string, child: ChildProcess, logFile: string, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${tail(logFile)}`);
    }
    try {
      const res = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(1000) });
      if (res.ok && (await res.text()).startsWith('Ok.')) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`${what} not ready after ${timeoutMs} ms:\n${tail(logFile)}`);
    await sleep(50);
  }
}

function tail(file: string, n = 4000): string {
  try {
    const s = fs.readFileSync(file, 'utf8');
    return s.slice(-n);
  } catch {
    return '(no log)';
  }
}

function handle(
  kind: ServerHandle['kind'],
  port: number,
  user: string,
  password: string,
  dir: string,
  logFile: string,
  spawnIt: () => ChildProcess,
): ServerHandle {
  let child: ChildProcess | null = null;
  const url = `http://127.0.0.1:${port}`;
  const h: ServerHandle = {
    kind,
    url,
    port,
    user,
    password,
    dir,
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid ?? null : null),
    running: () => h.pid() !== null,
    async start() {
      if (h.running()) return;
      const c = spawnIt();
      child = c;
      track(c);
      await waitPing(url, c, logFile, `${kind} on ${url}`);
    },
    stop: (graceMs = 15_000) => stopProcess(child, graceMs),
    kill: () => killProcess(child),
    log: () => tail(logFile, 20_000),
  };
  return h;
}

/** chdb (ClickHouse 26.9 engine) behind chdb_http.py, with `/__fault` and `/__stats` for tests. */
export async function startChdb(opts: ServerOptions = {}): Promise<ServerHandle> {
  if (!fs.existsSync(CHDB_PYTHON)) {
    throw new Error(`chdb venv missing (${CHDB_PYTHON}): run bash ${SETUP} (or scripts/setup-host.sh test)`);
  }
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-chdb-'));
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const password = opts.password ?? 'chdb-test-pw';
  const logFile = path.join(dir, 'front.log');
  const h = handle('chdb', port, 'default', password, dir, logFile, () => {
    const out = fs.openSync(logFile, 'a');
    const args = [CHDB_FRONT, '--path', path.join(dir, 'session'), '--port', String(port), '--password', password, '--faults'];
    args.push('--keep-alive-timeout', String(opts.keepAliveTimeout ?? 10));
    const c = spawn(CHDB_PYTHON, args, { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    return c;
  });
  await h.start();
  return h;
}

/** Debian's clickhouse-server 18.16 with its own config, data directory and a password for `default`. */
export async function startClickHouse18(opts: ServerOptions = {}): Promise<ServerHandle> {
  if (!fs.existsSync(CLICKHOUSE_SERVER)) {
    throw new Error(`${CLICKHOUSE_SERVER} missing: run bash ${SETUP} (or scripts/setup-host.sh test)`);
  }
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-ch18-'));
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const password = opts.password ?? 'ch18-test-pw';
  for (const d of ['data', 'tmp', 'user_files', 'log']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  const xml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  fs.writeFileSync(
    path.join(dir, 'config.xml'),
    `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>${xml(dir)}/log/server.log</log><errorlog>${xml(dir)}/log/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>${port}</http_port>
  <keep_alive_timeout>${opts.keepAliveTimeout ?? 3}</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mark_cache_size>67108864</mark_cache_size>
  <path>${xml(dir)}/data/</path>
  <tmp_path>${xml(dir)}/tmp/</tmp_path>
  <user_files_path>${xml(dir)}/user_files/</user_files_path>
  <users_config>${xml(dir)}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
`,
  );
  fs.writeFileSync(
    path.join(dir, 'users.xml'),
    `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default><password>${xml(password)}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`,
  );
  const logFile = path.join(dir, 'log', 'stdout.log');
  const h = handle('clickhouse-18.16', port, 'default', password, dir, logFile, () => {
    const out = fs.openSync(logFile, 'a');
    const c = spawn(CLICKHOUSE_SERVER, [`--config-file=${path.join(dir, 'config.xml')}`], { stdio: ['ignore', out, out], cwd: dir });
    fs.closeSync(out);
    return c;
  });
  await h.start();
  return h;
}

/**
 * One statement over HTTP with the server's credentials (the query in the body, or in the URL when `data` is
 * given); resolves with the response body, rejects with the server's error text.
 */
export async function sql(server: ServerHandle, query: string, opts: { data?: string | Buffer; settings?: Record<string, string | number> } = {}): Promise<string> {
  const params = new URLSearchParams(Object.entries(opts.settings ?? {}).map(([k, v]): [string, string] => [k, String(v)]));
  if (opts.data !== undefined) params.set('query', query);
  const res = await fetch(`${server.url}/?${params}`, {
    method: 'POST',
    headers: { Authorization: `Basic ${Buffer.from(`${server.user}:${server.password}`).toString('base64')}` },
    body: opts.data ?? query,
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${server.kind}: HTTP ${res.status}: ${text.trim()}\nquery: ${query.slice(0, 500)}`);
  return text;
}

/** Rows of a SELECT as objects (JSONEachRow, 64-bit integers as numbers). */
export async function rows<T = Record<string, unknown>>(server: ServerHandle, query: string): Promise<T[]> {
  const text = await sql(server, `${query}\nFORMAT JSONEachRow`, { settings: { output_format_json_quote_64bit_integers: 0 } });
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as T);
}

/** chdb front: request counters. */
export async function frontStats(server: ServerHandle): Promise<Record<string, number>> {
  const res = await fetch(`${server.url}/__stats`);
  return (await res.json()) as Record<string, number>;
}

/** chdb front: arm faults for the next inserts (drop_reply, fail + fail_status/fail_code/retry_after, delay_ms). */
export async function frontFault(server: ServerHandle, params: Record<string, string | number>): Promise<void> {
  const qs = new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]));
  const res = await fetch(`${server.url}/__fault?${qs}`, { method: 'POST' });
  if (!res.ok) throw new Error(`fault: HTTP ${res.status}`);
}

/** The production DDL with the types 18.16 knows: time as String, no LowCardinality/CODEC/INDEX/PARTITION/TTL. */
export function oldServerTableSql(database: string, table: string): string {
  return createTableSql({ database, table, ttlDays: 0 })
    .replace(/DateTime64\(9, 'UTC'\) CODEC\(Delta\(8\), ZSTD\(1\)\)/, 'String')
    .replace(/LowCardinality\(Nullable\(String\)\)/g, 'Nullable(String)')
    .replace(/LowCardinality\(String\)/g, 'String')
    .replace(/\bBool\b/g, 'UInt8')
    .replace(/ CODEC\(\w+\(\d+\)\)/g, '')
    .replace(/,?\n\s+INDEX [^\n]+/g, '')
    .replace(/\nPARTITION BY [^\n]+/, '')
    .replace(/\nSETTINGS [^\n]+/, '');
}

