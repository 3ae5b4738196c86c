/* The CLI as an operator runs it: check, demo, and configuration errors. Needs root. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAIN } from '../helpers/agent';
import { HOOK_ORDER } from '../../src/record/record';

function oomtrail(args: string[], env: NodeJS.ProcessEnv = {}) {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { ...r, ms: Date.now() - t0 };
}

function hasKprobes(): boolean {
  return ['/sys/kernel/tracing/kprobe_events', '/sys/kernel/debug/tracing/kprobe_events'].some((f) => fs.existsSync(f));
}

test('check: names the first hook that works and why the earlier ones do not', () => {
  const r = oomtrail(['check', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  const firstOk = report.hooks.find((h: { ok: boolean }) => h.ok);
  assert.ok(firstOk, 'some hook works on this kernel');
  assert.deepEqual(report.hooks.map((h: { hook: string }) => h.hook), HOOK_ORDER);
  assert.equal(report.selected, firstOk.hook);
  for (const h of report.hooks.slice(0, report.hooks.indexOf(firstOk))) assert.ok(h.reason && h.reason.length > 10, `${h.hook} has a reason`);
  if (!hasKprobes()) {
    // this machine kind: no kprobes, fentry refused -> tp_btf, with the reasons spelled out
    const byHook = Object.fromEntries(report.hooks.map((h: { hook: string }) => [h.hook, h]));
    assert.match(byHook.kprobe.reason, /CONFIG_KPROBES/);
    if (!byHook.fentry.ok) assert.match(byHook.fentry.reason, /fentry/);
    if (!byHook.fentry.ok) assert.equal(report.selected, 'tp_btf');
  }
  const text = oomtrail(['check']);
  assert.equal(text.status, 0);
  assert.match(text.stdout, new RegExp(`selected hook\\s+${report.selected}`));
});

test("check: a refused hook's reason quotes libbpf's warning; libbpf's debug lines only at log.level debug", (t) => {
  const info = oomtrail(['check', '--json']);
  assert.equal(info.status, 0, info.stderr);
  // thousands of CO-RE relocation steps per load: neither formatted nor logged unless asked for
  assert.doesNotMatch(info.stderr, /CO-RE relocating/);
  const debug = oomtrail(['check', '--json'], { OOMTRAIL_LOG_LEVEL: 'debug' });
  assert.equal(debug.status, 0, debug.stderr);
  assert.match(debug.stderr, /CO-RE relocating/);
  const refused = JSON.parse(info.stdout).hooks.find((h: { hook: string; ok: boolean }) => h.hook === 'fentry' && !h.ok);
  if (!refused) return t.skip('fentry loads on this kernel: no load failure to explain');
  // libbpf logs why a load failed as a warning, which the reason keeps with the debug lines dropped
  assert.match(refused.reason, /libbpf: prog 'fentry_oom_kill_process': /);
});

test('check: a forced hook the kernel lacks exits 69 naming it', (t) => {
  const r0 = JSON.parse(oomtrail(['check', '--json']).stdout);
  const missing = r0.hooks.find((h: { ok: boolean }) => !h.ok);
  if (!missing) return t.skip('every hook works on this kernel');
  const r = oomtrail(['check'], { OOMTRAIL_COLLECTORS_OOMKILL_HOOK: missing.hook });
  assert.equal(r.status, 69);
  assert.match(r.stdout, /selected hook\s+NONE/);
  const run = oomtrail(['run'], { OOMTRAIL_COLLECTORS_OOMKILL_HOOK: missing.hook });
  assert.equal(run.status, 69);
  assert.match(run.stderr, new RegExp(`forced ${missing.hook}`));
});

test('demo --json: one JSON record line within 10 s, no cgroup left behind', () => {
  const roots = ['/sys/fs/cgroup/memory', '/sys/fs/cgroup'].filter((d) => fs.existsSync(d));
  const before = roots.flatMap((d) => fs.readdirSync(d).filter((n) => n.startsWith('oomtrail-demo-')));
  const r = oomtrail(['demo', '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.ms < 10_000, `took ${r.ms} ms`);
  const lines = r.stdout.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, 'exactly one line on stdout');
  const rec = JSON.parse(lines[0]);
  assert.equal(rec.victim_comm, 'oomtrail-hog');
  assert.equal(rec.constraint, 'memcg');
  assert.match(rec.victim_cgroup, /^\/oomtrail-demo-\d+$/);
  const after = roots.flatMap((d) => fs.readdirSync(d).filter((n) => n.startsWith('oomtrail-demo-')));
  assert.deepEqual(after, before, 'no demo cgroup left behind');
});

test('config errors exit 78 naming the key and the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-cli-'));
  const file = path.join(dir, 'bad.yaml');
  fs.writeFileSync(file, 'sinks:\n  file:\n    paht: /tmp/x\n');
  const r = oomtrail(['run', '--config', file]);
  assert.equal(r.status, 78);
  assert.match(r.stderr, /sinks\.file\.paht/);
  assert.ok(r.stderr.includes(file), r.stderr);
  const env = oomtrail(['check'], { OOMTRAIL_COLLECTORS_OOMKILL_HOOK: 'uprobe' });
  assert.equal(env.status, 78);
  assert.match(env.stderr, /OOMTRAIL_COLLECTORS_OOMKILL_HOOK/);
  const missing = oomtrail(['run', '--config', path.join(dir, 'nope.yaml')]);
  assert.equal(missing.status, 78);
  assert.match(missing.stderr, /nope\.yaml/);
});

test('usage errors exit 2', () => {
  assert.equal(oomtrail(['frobnicate']).status, 2);
  assert.equal(oomtrail(['run', '--json']).status, 2);
  assert.equal(oomtrail(['--help']).status, 0);
});

test('a sink URL with a password or a token: exit 78 naming the variable, the secret nowhere on stderr', () => {
  for (const [name, value] of [
    ['OOMTRAIL_SINKS_CLICKHOUSE_URL', 'http://default:hunter2pw@127.0.0.1:8123'],
    ['OOMTRAIL_SINKS_LOKI_URL', 'http://admin:hunter2pw@127.0.0.1:3100'],
    ['OOMTRAIL_SINKS_WEBHOOK_URL', 'https://u:hunter2pw@hooks.example/services/T0/B0/xoxbhunter2pw'],
  ]) {
    const r = oomtrail(['run'], { [name]: value });
    assert.equal(r.status, 78, r.stderr);
    assert.ok(r.stderr.includes(name), r.stderr);
    assert.ok(!r.stderr.includes('hunter2pw') && !r.stdout.includes('hunter2pw'), r.stderr);
  }
});

/** A config writing only under a fresh temp dir, plus `extra` YAML. */
function tmpConfig(extra = ''): { dir: string; file: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-cli-'));
  const file = path.join(dir, 'config.yaml');
  fs.writeFileSync(
    file,
    [
      'sinks:',
      '  console:',
      '    enabled: false',
      '  file:',
      `    path: ${JSON.stringify(path.join(dir, 'events.jsonl'))}`,
      'pipeline:',
      '  spool:',
      `    dir: ${JSON.stringify(path.join(dir, 'spool'))}`,
      extra,
    ].join('\n'),
  );
  return { dir, file };
}

/** Exit 78, stderr names every one of `mentions`, and no stack trace (systemd shows the one line). */
function assertConfigExit(r: ReturnType<typeof oomtrail>, ...mentions: string[]): void {
  assert.equal(r.status, 78, `exit ${r.status}; stderr:\n${r.stderr}`);
  assert.match(r.stderr, /^oomtrail: configuration error: /m);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  for (const m of mentions) assert.ok(r.stderr.includes(m), `stderr names ${m}:\n${r.stderr}`);
}

test('unreadable Loki TLS, password or token files exit 78 naming the key, not 1 with a stack trace', () => {
  const { dir, file } = tmpConfig();
  const missing = path.join(dir, 'missing');
  const loki = { OOMTRAIL_SINKS_LOKI_ENABLED: 'true' };
  assertConfigExit(oomtrail(['run', '--config', file], { ...loki, OOMTRAIL_SINKS_LOKI_URL: 'https://127.0.0.1:3100', OOMTRAIL_SINKS_LOKI_TLS_CA_FILE: missing }), 'sinks.loki.tls.ca_file', 'ENOENT');
  assertConfigExit(oomtrail(['run', '--config', file], { ...loki, OOMTRAIL_SINKS_LOKI_URL: 'https://127.0.0.1:3100', OOMTRAIL_SINKS_LOKI_TLS_CA_FILE: dir }), 'sinks.loki.tls.ca_file', 'EISDIR');
  assertConfigExit(
    oomtrail(['run', '--config', file], { ...loki, OOMTRAIL_SINKS_LOKI_BASIC_AUTH_USER: 'u', OOMTRAIL_SINKS_LOKI_BASIC_AUTH_PASSWORD_FILE: missing }),
    'sinks.loki.basic_auth_password_file',
  );
  assertConfigExit(oomtrail(['run', '--config', file], { ...loki, OOMTRAIL_SINKS_LOKI_BEARER_TOKEN_FILE: missing }), 'sinks.loki.bearer_token_file');
});

test('a missing webhook bearer_token_file is found at start: exit 78 naming the key', () => {
  const { dir, file } = tmpConfig();
  const r = oomtrail(['run', '--config', file], {
    OOMTRAIL_SINKS_WEBHOOK_ENABLED: 'true',
    OOMTRAIL_SINKS_WEBHOOK_URL: 'http://127.0.0.1:9/hook',
    OOMTRAIL_SINKS_WEBHOOK_BEARER_TOKEN_FILE: path.join(dir, 'no-token'),
  });
  assertConfigExit(r, 'sinks.webhook.bearer_token_file', 'ENOENT');
});

test('every sink disabled: exit 78 naming sinks instead of capturing into nothing', () => {
  const { file } = tmpConfig();
  const r = oomtrail(['run', '--config', file], { OOMTRAIL_SINKS_FILE_ENABLED: 'false' });
  assertConfigExit(r, 'sinks', 'every sink is disabled');
});

test('an unknown OOMTRAIL_ variable exits 78 naming it; the project\'s test variables do not', () => {
  const { file } = tmpConfig();
  assertConfigExit(oomtrail(['run', '--config', file], { OOMTRAIL_SINKS_FILE_PAHT: '/tmp/x' }), 'OOMTRAIL_SINKS_FILE_PAHT', 'OOMTRAIL_SINKS_FILE_PATH');
  const r = oomtrail(['check', '--json', '--config', file], { OOMTRAIL_E2E_BURST: '5', OOMTRAIL_VM_KERNEL_DIR: '/x', OOMTRAIL_CACHE: '/c', OOMTRAIL_SKIP_VM: '1' });
  assert.notEqual(r.status, 78, r.stderr);
  assert.ok(JSON.parse(r.stdout).hooks, r.stdout);
});

test('metrics.listen on an address in use: exit 78 naming the address and why, no stack trace', async () => {
  const net = await import('node:net');
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', () => resolve()));
  const address = `127.0.0.1:${(holder.address() as { port: number }).port}`;
  try {
    const { file } = tmpConfig();
    const { spawn } = await import('node:child_process');
    // async: the holder must keep accepting while the agent tries to bind
    const child = spawn(process.execPath, [MAIN, 'run', '--config', file], { env: { ...process.env, OOMTRAIL_METRICS_LISTEN: address } });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // bounded: an agent that hangs on its way out (a reader still blocked in epoll_wait) fails the test
    const hung = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const status = await new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    clearTimeout(hung);
    assert.notEqual(status, null, `the agent did not exit within 20 s after the bind failure:\n${stderr}`);
    assertConfigExit({ status, stderr, stdout: '' } as ReturnType<typeof oomtrail>, 'metrics.listen', address, 'EADDRINUSE');
  } finally {
    holder.close();
  }
});
