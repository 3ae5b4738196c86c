import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatKillBlock } from '../../src/sinks/console/format';
import { baseRecord } from '../helpers/records';

test('a kill is one block naming victim, sizes, cgroups and trail', () => {
  const text = formatKillBlock(
    baseRecord({
      trail: {
        start: '2026-11-23T06:40:50.000000000Z',
        step_ms: 1000,
        usage_bytes: [10 << 20, 40 << 20, 64 << 20],
        limit_bytes: [64 << 20, 64 << 20, 64 << 20],
        reclaim_stall_ms: [0, 0, 1.5],
        reclaimed_pages: [0, 0, 0],
        psi_some_avg10: [0, 0, 0],
        psi_full_avg10: [0, 0, 0],
        psi_scope: 'system',
      },
      victim_exit_latency_ms: 4.25,
    }),
  );
  assert.match(text, /^OOM kill  2026-11-23T06:41:00\.123456789Z  host node-1  \[memcg, inferred, hook tp_btf\]\n/);
  assert.match(text, /victim   pid 4242 \(dd\)/);
  assert.match(text, /cgroup   victim \/oomtrail-test  oom \/oomtrail-test  limit 64\.0 MiB/);
  assert.match(text, /trail    usage 10\.0 MiB -> 64\.0 MiB over 3 s, reclaim stall 1\.5 ms/);
  assert.match(text, /exited   4\.3 ms after the kill/);
  assert.ok(text.endsWith('event_id 0123456789abcdef0123456789abcdef\n'));
});

test('a memory_pressure record is one warning line, not a kill block', () => {
  const text = formatKillBlock(
    baseRecord({
      kind: 'memory_pressure',
      pressure: { reasons: ['usage'], usage_ratio: 0.93, psi_some_avg10: null, psi_full_avg10: null, reclaim_stall_ms: null },
    }),
  );
  assert.equal(text.split('\n').length, 2);
  assert.match(text, /^memory pressure .* cgroup \/oomtrail-test  \[usage\] usage 93% of 64\.0 MiB\n$/);
  assert.doesNotMatch(text, /OOM kill/);
});

// What any process can put in its comm (15 bytes, any byte but NUL) and any tenant in a cgroup name.
const FORGED_COMM = 'x\n  event_id 0\x1b[2J';
const FORGED_CGROUP = '/t\r\nOOM kill  forged\x1b]0;pwned\x07\u009b31m';

test('control bytes in comm and cgroup names are escaped as \\xNN: no forged line, no terminal escape', async () => {
  const rec = baseRecord({ victim_comm: FORGED_COMM, trigger_comm: FORGED_COMM, victim_cgroup: FORGED_CGROUP, oom_cgroup: FORGED_CGROUP });
  const honest = formatKillBlock(baseRecord({}));
  const text = formatKillBlock(rec);
  assert.equal(text.split('\n').length, honest.split('\n').length, 'as many lines as an honest block');
  assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(text), JSON.stringify(text));
  assert.match(text, /victim   pid 4242 \(x\\x0a  event_id 0\\x1b\[2J\)/);
  assert.ok(text.includes('/t\\x0d\\x0aOOM kill  forged\\x1b]0;pwned\\x07\\x9b31m'), text);
  const pressure = formatKillBlock(baseRecord({ kind: 'memory_pressure', oom_cgroup: FORGED_CGROUP, pressure: { reasons: ['usage'], usage_ratio: 0.9, psi_some_avg10: null, psi_full_avg10: null, reclaim_stall_ms: null } }));
  assert.equal(pressure.split('\n').length, 2);
  assert.ok(!/\u001b/.test(pressure));

  // json stays exact: the console sink's json output parses back to the very bytes
  const { ConsoleSink } = await import('../../src/sinks/console/sink');
  const { PassThrough } = await import('node:stream');
  const out = new PassThrough();
  let json = '';
  out.on('data', (d) => (json += d));
  await new ConsoleSink({ format: 'json' }, out).write([rec]);
  assert.equal(JSON.parse(json).victim_comm, FORGED_COMM);
  assert.equal(JSON.parse(json).victim_cgroup, FORGED_CGROUP);
});

test('the text log escapes control bytes in messages; the json log keeps them exact', async () => {
  const { spawnSync } = await import('node:child_process');
  const path = await import('node:path');
  const logger = path.resolve(__dirname, '../../src/observe/logger.js');
  const script = (format: string) =>
    `require(${JSON.stringify(logger)}).createLogger('info', '${format}').info('memory pressure in ' + ${JSON.stringify(FORGED_CGROUP)}, { comm: ${JSON.stringify(FORGED_COMM)} })`;
  const text = spawnSync(process.execPath, ['-e', script('text')], { encoding: 'utf8' }).stderr;
  assert.equal(text.split('\n').length, 2, JSON.stringify(text));
  assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(text), JSON.stringify(text));
  assert.ok(text.includes('memory pressure in /t\\x0d\\x0aOOM kill  forged\\x1b]0;pwned\\x07\\x9b31m'), text);
  const json = spawnSync(process.execPath, ['-e', script('json')], { encoding: 'utf8' }).stderr;
  const line = JSON.parse(json);
  assert.equal(line.message, 'memory pressure in ' + FORGED_CGROUP);
  assert.equal(line.comm, FORGED_COMM);
});

test('the workload line: pod, container, image, and whether the container died or a child was killed', () => {
  const k8s = { container_id: 'c'.repeat(64), container_runtime: 'containerd', pod_namespace: 'default', pod_name: 'web-7d9f', k8s_container: 'app', container_image: 'nginx:1.27' };
  const init = formatKillBlock(baseRecord({ ...k8s, victim_ns_pid: 1, victim_is_container_init: true }));
  assert.match(init, /\n  workload pod default\/web-7d9f container app image nginx:1\.27 — container init \(pid 1 in its namespace\): the container exits and restarts\n/);
  const child = formatKillBlock(baseRecord({ ...k8s, victim_ns_pid: 23, victim_is_container_init: false }));
  assert.match(child, /\n  workload pod default\/web-7d9f container app image nginx:1\.27 — child process \(pid 23 in its namespace\); the container keeps running\n/);
  const docker = formatKillBlock(baseRecord({ container_id: 'd'.repeat(64), container_runtime: 'docker', container_name: 'api', container_image: 'api:3', victim_is_container_init: true }));
  assert.match(docker, /\n  workload container api image api:3 — container init \(pid 1 in its namespace\): the container exits\n/);
  assert.doesNotMatch(formatKillBlock(baseRecord()), /workload/, 'no container, no names: no line');
  const group = formatKillBlock(baseRecord({ ...k8s, victim_ns_pid: 5, victim_is_container_init: false, oom_group_kill: true }));
  assert.match(group, /\n  workload pod default\/web-7d9f container app image nginx:1\.27 — group kill \(memory\.oom\.group\): every process of the group is killed, the container exits\n/);
});

test('the limit line: which limit was hit (oom_scope), its size, and a memory.oom.group kill; the workload guess', () => {
  const k8s = { container_id: 'c'.repeat(64), container_runtime: 'containerd', pod_namespace: 'shop', pod_name: 'web-7d9f5c6b8d-x2k4q', workload_kind: 'Deployment', workload_name: 'web', k8s_container: 'app', memcg_limit_bytes: 512 * 1048576 } as const;
  const pod = formatKillBlock(baseRecord({ ...k8s, oom_scope: 'pod', victim_ns_pid: 7, victim_is_container_init: false }));
  assert.match(pod, /\n  limit    pod "web-7d9f5c6b8d-x2k4q" limit 512Mi hit \(pod-level resources\) \[oom_scope pod\]\n/);
  assert.match(pod, /\n  workload pod shop\/web-7d9f5c6b8d-x2k4q \(Deployment web\) container app — child process/);
  const group = formatKillBlock(baseRecord({ ...k8s, oom_scope: 'container', oom_group_kill: true }));
  assert.match(group, /\n  limit    container "app" limit 512Mi hit; container killed whole \(memory\.oom\.group\) \[oom_scope container\]\n/);
  assert.doesNotMatch(formatKillBlock(baseRecord()), /\n  limit /, 'no oom_scope: no line');
});
