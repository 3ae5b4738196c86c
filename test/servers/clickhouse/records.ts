/*
 * Records for the ClickHouse sink's tests and benchmark: one plain sample, hostile strings, the cookbook's
 * designed history (known answers for docs/queries.md), and a fast synthetic generator.
 */
import { createHash } from 'node:crypto';
import type { OomRecord } from '../../../src/record/record';
import { baseRecord } from '../../helpers/records';

export function sampleRecord(over: Partial<OomRecord> = {}): OomRecord {
  return baseRecord({
    victim_oom_score_adj: -998,
    ...over,
  });
}

const id = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 32);

/** RFC 3339 with 9 fractional digits for a JS ms time (+ extra nanoseconds). */
export function rfc3339(ms: number, extraNs = 0): string {
  const iso = new Date(ms).toISOString(); // …T06:41:00.123Z
  return `${iso.slice(0, 23)}${String(extraNs).padStart(6, '0').slice(0, 6)}Z`;
}

/** Strings every layer must carry unchanged (lone surrogates: as U+FFFD, see encoder.ts). */
export function hostileRecords(now = Date.now()): OomRecord[] {
  const strings = [
    `it's "quoted" \\ back\\slash`,
    'new\nline\r\ttab',
    Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join('') + '\u007f',
    'lone \ud800 high, lone \udfff low, pair \ud83d\ude00',
    '\\ud800 is literal text here, "time":"2020-01-01T00:00:00Z"',
    'invalid utf-8 became \ufffd\ufffd; é ☃ 😀 \u2028\u2029',
    "'); DROP TABLE oom_kills; --",
  ];
  return strings.map((s, i) =>
    sampleRecord({
      event_id: id(`hostile-${i}-${now}`),
      time: rfc3339(now - 60_000 - i * 1000, 123456),
      host: 'hostile-host',
      victim_pid: 7000 + i,
      victim_tid: 7000 + i,
      victim_comm: s.slice(0, 40),
      trigger_comm: s.slice(0, 15),
      victim_cgroup: `/hostile/${s}`,
      oom_cgroup: `/hostile/${s}`,
      container_runtime: '',
      gfp_mask: i % 2 ? s : null,
    }),
  );
}

/**
 * The cookbook's history: three hosts whose answers are known (see the integration test), all inside the last
 * 14 days and at least an hour away from every query boundary (24 h, 7 d, 14 d).
 */
export function cookbookRecords(now = Date.now()): OomRecord[] {
  const H = 3_600_000;
  const D = 24 * H;
  const out: OomRecord[] = [];
  let n = 0;
  const add = (host: string, agoMs: number, over: Partial<OomRecord>): void => {
    n++;
    out.push(
      sampleRecord({
        event_id: id(`cookbook-${host}-${n}-${now}`),
        time: rfc3339(now - agoMs, n),
        host,
        boot_id: id(`boot-${host}`),
        victim_pid: 10_000 + n,
        victim_tid: 10_000 + n,
        trigger_pid: 10_000 + n,
        ...over,
      }),
    );
  };
  // node-a: a Kubernetes pod whose container is OOM-killed four times in two hours (a new container each time)
  const pod = '11111111-2222-3333-4444-555555555555';
  for (let i = 0; i < 4; i++) {
    const cid = `${i + 1}`.repeat(64);
    const cg = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${pod.replace(/-/g, '_')}.slice/cri-containerd-${cid}.scope`;
    add('node-a', 2 * H - i * 0.5 * H, {
      victim_comm: 'java',
      trigger_comm: 'java',
      victim_cgroup: cg,
      oom_cgroup: cg,
      cgroup_version: 2,
      container_id: cid,
      container_runtime: 'containerd',
      pod_uid: pod,
      k8s_qos: 'burstable',
      // named by the runtime (schema migration 3): three container inits, then one child
      pod_namespace: 'shop',
      pod_name: 'web-7d9f',
      k8s_container: 'app',
      container_image: 'nginx:1.27',
      // which limit was hit, the workload from the pod name (schema migration 6)
      oom_scope: 'container',
      workload_kind: 'Pod',
      workload_name: 'web-7d9f',
      victim_ns_pid: i === 3 ? 57 : 1,
      victim_is_container_init: i !== 3,
      victim_anon_rss_kb: 900_000 + i,
      memcg_limit_bytes: 1 << 30,
      memcg_usage_bytes: 1 << 30,
      constraint_inferred: false,
      domain_pages: 262144,
      gfp_mask: '0xcc0(GFP_KERNEL)',
      order: 0,
    });
  }
  // node-a: one global OOM, the biggest victim of all
  add('node-a', 3 * H, {
    victim_comm: 'chrome',
    trigger_comm: 'kswapd0',
    constraint: 'global',
    oom_cgroup: '/',
    victim_cgroup: '/user.slice/user-1000.slice/session-2.scope',
    oom_scope: 'system',
    cgroup_version: 2,
    victim_anon_rss_kb: 8_388_608,
    memcg_limit_bytes: null,
    memcg_usage_bytes: null,
    victim_uid: 1000,
  });
  // node-b: a systemd service killed three times today (gaps 10 h and 9 h)…
  for (const ago of [20 * H, 10 * H, 1 * H]) {
    add('node-b', ago, {
      victim_comm: 'app',
      trigger_comm: 'app',
      victim_cgroup: '/system.slice/app.service',
      oom_cgroup: '/system.slice/app.service',
      oom_scope: 'other',
      victim_anon_rss_kb: 500_000,
      // its tmpfs filled the cgroup: the victim held a tenth of it
      memory_at_kill: {
        source: 'bpf', scope: 'memcg', usage_bytes: 1 << 30, limit_bytes: 1 << 30, failcnt: 3, anon_bytes: 100 << 20, file_bytes: 900 << 20,
        shmem_bytes: 850 << 20, file_mapped_bytes: 0, file_dirty_bytes: 0, file_writeback_bytes: 0, kernel_bytes: 20 << 20, slab_bytes: null,
        sock_bytes: null, pagetables_bytes: null, swap_bytes: 0,
      },
      cause: 'shmem',
      victim_share: 0.09,
    });
  }
  // …and five times last week: kills on node-b are going down
  for (let d = 8; d <= 12; d++) {
    add('node-b', d * D, { victim_comm: 'batch', trigger_comm: 'batch', victim_cgroup: '/system.slice/batch.service', oom_cgroup: '/system.slice/batch.service', victim_anon_rss_kb: 100_000 });
  }
  // node-c: a docker container, once last week and twice this week: going up
  const cid = 'c'.repeat(64);
  for (const [ago, rss] of [[2 * D, 2_097_152], [3 * D, 1_000_000], [10 * D, 300_000]] as const) {
    add('node-c', ago, {
      victim_comm: 'python3',
      trigger_comm: 'python3',
      victim_cgroup: `/docker/${cid}`,
      oom_cgroup: `/docker/${cid}`,
      container_id: cid,
      container_runtime: 'docker',
      victim_anon_rss_kb: rss,
    });
  }
  return out;
}

/** A fast generator of varied, realistic records (bench): `n` records, deterministic for a seed. */
export function syntheticRecords(n: number, seed = 1, now = Date.now()): OomRecord[] {
  let x = seed >>> 0 || 1;
  const rnd = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
  const hosts = Array.from({ length: 500 }, (_, i) => `node-${String(i).padStart(4, '0')}.prod.example`);
  const comms = ['java', 'python3', 'node', 'postgres', 'chrome', 'dd', 'ruby', 'nginx', 'redis-server', 'envoy'];
  const pods = Array.from({ length: 2000 }, (_, i) => id(`pod-${i}`).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5'));
  const out: OomRecord[] = new Array(n);
  const base = sampleRecord();
  for (let i = 0; i < n; i++) {
    const host = hosts[Math.floor(rnd() * hosts.length)]!;
    const comm = comms[Math.floor(rnd() * comms.length)]!;
    const k8s = rnd() < 0.7;
    const pod = pods[Math.floor(rnd() * pods.length)]!;
    const cid = id(`c-${i}`) + id(`d-${i}`);
    const cg = k8s ? `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${pod.replace(/-/g, '_')}.slice/cri-containerd-${cid}.scope` : `/system.slice/${comm}.service`;
    const pid = 1000 + Math.floor(rnd() * 4_000_000);
    out[i] = {
      ...base,
      event_id: id(`syn-${seed}-${i}`),
      time: rfc3339(now - Math.floor(rnd() * 30 * 86_400_000), i % 1_000_000),
      host,
      boot_id: id(`boot-${host}`),
      victim_pid: pid,
      victim_tid: pid,
      victim_comm: comm,
      trigger_pid: pid,
      trigger_comm: comm,
      victim_total_vm_kb: Math.floor(rnd() * 16_000_000),
      victim_anon_rss_kb: Math.floor(rnd() * 8_000_000),
      victim_file_rss_kb: Math.floor(rnd() * 100_000),
      victim_pgtables_kb: Math.floor(rnd() * 20_000),
      victim_oom_score_adj: k8s ? 999 : 0,
      constraint: rnd() < 0.9 ? 'memcg' : 'global',
      oom_cgroup: cg,
      victim_cgroup: cg,
      cgroup_version: 2,
      memcg_limit_bytes: 1 << 30,
      memcg_usage_bytes: 1 << 30,
      container_id: k8s ? cid : '',
      container_runtime: k8s ? 'containerd' : '',
      pod_uid: k8s ? pod : '',
      k8s_qos: k8s ? 'burstable' : '',
    };
  }
  return out;
}
