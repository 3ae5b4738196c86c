/*
 * Each enabled sink's healthcheck against real servers: `oomtrail check --sinks` and the agent's start.
 * Servers: Debian's clickhouse-server 18.16 (with a password user) and Loki 3.7.8, both started here on free ports.
 * A hanging server is the real ClickHouse stopped with SIGSTOP: the kernel still accepts connections on its
 * socket, nothing answers. A closed port stands for a sink whose server is down.
 * `run` needs root, BTF and a memory cgroup controller (the agent loads its BPF programs), like the other
 * agent tests.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAIN, sleep, startAgent, type RunningAgent } from '../helpers/agent';
import { freePort, startClickHouse18, type ServerHandle } from '../servers/clickhouse/servers';
import { startLoki, type LokiServer } from '../servers/loki/server';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** `oomtrail check --sinks --json --config FILE` with `yaml` as the config; never hangs the test (60 s cap). */
function checkSinks(dir: string, yaml: string, extra: string[] = ['--json']): Promise<Run> {
  const file = path.join(dir, `config-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(
    file,
    `${yaml}\npipeline:\n  spool:\n    dir: ${JSON.stringify(path.join(dir, 'spool'))}\n`,
  );
  const t0 = Date.now();
  const child = spawn(process.execPath, [MAIN, 'check', '--sinks', '--config', file, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const cap = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(cap);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    }),
  );
}

interface Health {
  sink: string;
  healthy: boolean;
  detail?: string;
}

const parse = (r: Run): { sinks: Health[]; ok: boolean } => {
  try {
    return JSON.parse(r.stdout) as { sinks: Health[]; ok: boolean };
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
};
const byName = (r: Run): Record<string, Health> => Object.fromEntries(parse(r).sinks.map((h) => [h.sink, h]));

describe('sink healthchecks against real servers', () => {
  let ch: ServerHandle;
  let loki: LokiServer;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-check-sinks-'));
  let pwFile: string;
  let wrongPwFile: string;
  let closedPort: number;
  const agents: RunningAgent[] = [];

  before(async () => {
    [ch, loki] = await Promise.all([startClickHouse18({ dir: path.join(base, 'ch') }), startLoki()]);
    pwFile = path.join(base, 'password');
    fs.writeFileSync(pwFile, `${ch.password}\n`, { mode: 0o600 });
    wrongPwFile = path.join(base, 'wrong-password');
    fs.writeFileSync(wrongPwFile, 'not-the-pw-hunter2\n', { mode: 0o600 });
    closedPort = await freePort();
  });

  after(async () => {
    for (const a of agents) await a.stop('SIGKILL').catch(() => undefined);
    const pid = ch?.pid();
    if (pid) process.kill(pid, 'SIGCONT');
    await ch?.stop();
    await loki?.destroy();
    fs.rmSync(base, { recursive: true, force: true });
  });

  const sinksYaml = (chUrl: string, password: string, lokiUrl: string): string =>
    [
      'sinks:',
      '  console:',
      '    enabled: false',
      '  file:',
      `    path: ${JSON.stringify(path.join(base, 'events.jsonl'))}`,
      '  clickhouse:',
      '    enabled: true',
      `    url: ${chUrl}`,
      `    username: ${ch.user}`,
      `    password_file: ${JSON.stringify(password)}`,
      '    create_schema: false',
      '  loki:',
      '    enabled: true',
      `    url: ${lokiUrl}`,
    ].join('\n');

  test('every enabled sink answers: each printed ok, exit 0', async () => {
    const r = await checkSinks(base, sinksYaml(ch.url, pwFile, loki.url));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const h = byName(r);
    assert.deepEqual(Object.keys(h), ['file', 'clickhouse', 'loki'], 'the enabled sinks, in registry order');
    for (const s of Object.values(h)) assert.equal(s.healthy, true, JSON.stringify(s));
    assert.equal(parse(r).ok, true);
    const text = await checkSinks(base, sinksYaml(ch.url, pwFile, loki.url), []);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /^clickhouse\s+ok\b/m);
    assert.match(text.stdout, /^loki\s+ok\b/m);
  });

  test('a wrong password: clickhouse unreachable with the server\'s auth error, never the password; exit 69', async () => {
    const r = await checkSinks(base, sinksYaml(ch.url, wrongPwFile, loki.url));
    assert.equal(r.code, 69, r.stdout + r.stderr);
    const h = byName(r);
    assert.equal(h.clickhouse!.healthy, false);
    assert.match(h.clickhouse!.detail ?? '', /code (192|193|194|516)\b/);
    assert.equal(h.loki!.healthy, true);
    assert.ok(!(r.stdout + r.stderr).includes('hunter2'), r.stdout + r.stderr);
    assert.ok(!(r.stdout + r.stderr).includes(ch.password), 'the real password is not printed either');
  });

  test('a server that is down and one that accepts but never answers: bounded, each named, exit 69', async () => {
    const pid = ch.pid()!;
    process.kill(pid, 'SIGSTOP');
    try {
      const r = await checkSinks(base, sinksYaml(ch.url, pwFile, `http://127.0.0.1:${closedPort}`));
      assert.equal(r.code, 69, r.stdout + r.stderr);
      const h = byName(r);
      assert.equal(h.clickhouse!.healthy, false);
      assert.match(h.clickhouse!.detail ?? '', /no answer within 5000 ms/);
      assert.equal(h.loki!.healthy, false);
      assert.match(h.loki!.detail ?? '', /ECONNREFUSED/);
      assert.equal(h.file!.healthy, true);
      // 5 s healthcheck bound + at most 2 s closing + the process's own start
      assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  test('a bad sink setting is a configuration error naming the key (exit 78), not a health verdict', async () => {
    const missing = await checkSinks(base, sinksYaml(ch.url, path.join(base, 'nope'), loki.url));
    assert.equal(missing.code, 78, missing.stdout + missing.stderr);
    assert.match(missing.stderr, /sinks\.clickhouse\.password_file: cannot read .*nope: ENOENT/);
    const lokiTls = await checkSinks(
      base,
      `${sinksYaml(ch.url, pwFile, 'https://127.0.0.1:1')}\n    tls:\n      ca_file: ${JSON.stringify(path.join(base, 'no-ca.pem'))}`,
    );
    assert.equal(lokiTls.code, 78, lokiTls.stdout + lokiTls.stderr);
    assert.match(lokiTls.stderr, /sinks\.loki\.tls\.ca_file: cannot read the file \(ENOENT\)/);
  });

  test('run: each sink\'s healthcheck is logged at start; a hanging server neither delays nor stops the start', async () => {
    const pid = ch.pid()!;
    process.kill(pid, 'SIGSTOP');
    try {
      const t0 = Date.now();
      const agent = await startAgent('', {
        OOMTRAIL_SINKS_CLICKHOUSE_ENABLED: 'true',
        OOMTRAIL_SINKS_CLICKHOUSE_URL: ch.url,
        OOMTRAIL_SINKS_CLICKHOUSE_USERNAME: ch.user,
        OOMTRAIL_SINKS_CLICKHOUSE_PASSWORD_FILE: pwFile,
        OOMTRAIL_SINKS_CLICKHOUSE_CREATE_SCHEMA: 'false',
        OOMTRAIL_SINKS_LOKI_ENABLED: 'true',
        OOMTRAIL_SINKS_LOKI_URL: loki.url,
      });
      agents.push(agent);
      const startedMs = Date.now() - t0;
      const deadline = Date.now() + 15_000;
      while (!/sink clickhouse: unreachable at start/.test(agent.stderr()) && Date.now() < deadline) await sleep(100);
      const log = agent.stderr();
      assert.match(log, /sink clickhouse: unreachable at start: no answer within 5000 ms; its records are spooled until it answers/, log);
      assert.match(log, /sink loki: reachable/, log);
      assert.match(log, /sink file: reachable/, log);
      assert.equal(agent.child.exitCode, null, 'the agent keeps running');
      assert.ok(log.indexOf('started:') < log.indexOf('sink clickhouse: unreachable'), 'the start did not wait for the healthchecks');
      console.log(`# agent started in ${startedMs} ms with clickhouse hanging`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });
});
