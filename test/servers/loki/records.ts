/* Synthetic records for the Loki tests (real OOM kills are in the oomkill tests). */
import { deriveEventId, SCHEMA_VERSION, type OomRecord } from '../../../src/record/record';
import type { LokiSinkConfig } from '../../../src/sinks/loki/config';

/** RFC 3339 with nanoseconds for `ns` since the epoch. */
export function nsToRfc3339(ns: bigint): string {
  const ms = Number(ns / 1_000_000n);
  const iso = new Date(ms).toISOString(); // …T12:00:00.123Z
  return iso.slice(0, 19) + '.' + (ns % 1_000_000_000n).toString().padStart(9, '0') + 'Z';
}

export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

let seq = 0;

/** A plausible memcg kill; `i` makes the event_id, pid and time unique. */
export function makeRecord(i: number, over: Partial<OomRecord> = {}, tsNs?: bigint): OomRecord {
  const n = seq++;
  const t = tsNs ?? nowNs() - 60_000_000_000n + BigInt(i) * 1000n + BigInt(n);
  return {
    schema_version: SCHEMA_VERSION,
    event_id: deriveEventId(`boot-${process.pid}`, t, 10_000 + i),
    time: nsToRfc3339(t),
    host: 'node-a',
    boot_id: `boot-${process.pid}`,
    kernel_release: '6.18.0',
    hook: 'tp_btf',
    victim_pid: 10_000 + i,
    victim_tid: 10_000 + i,
    victim_comm: 'dd',
    victim_uid: 0,
    victim_total_vm_kb: 136_000,
    victim_anon_rss_kb: 65_000,
    victim_file_rss_kb: 1_200,
    victim_shmem_rss_kb: 0,
    victim_pgtables_kb: 180,
    victim_oom_score_adj: 0,
    trigger_pid: 10_000 + i,
    trigger_comm: 'dd',
    constraint: 'memcg',
    constraint_inferred: true,
    oom_cgroup: '/oomtrail-test',
    victim_cgroup: '/oomtrail-test',
    cgroup_version: 1,
    memcg_limit_bytes: 67_108_864,
    memcg_usage_bytes: 67_100_000,
    domain_pages: null,
    gfp_mask: null,
    order: null,
    container_id: '',
    container_runtime: '',
    pod_uid: '',
    k8s_qos: '',
    agent_version: '0.1.0',
    ...over,
  };
}

/** The sink's config with the schema's defaults, pointed at `url`. */
export function lokiConfig(url: string, over: Partial<LokiSinkConfig> = {}): LokiSinkConfig {
  return {
    enabled: true,
    url,
    tenant_id: '',
    basic_auth_user: '',
    basic_auth_password_file: '',
    bearer_token_file: '',
    tls: { ca_file: '', cert_file: '', key_file: '', insecure_skip_verify: false },
    labels: '',
    encoding: 'protobuf',
    batch_max_bytes: 1_048_576,
    request_timeout_ms: 10_000,
    limits: {
      max_label_names_per_series: 15,
      max_label_value_length: 2048,
      max_line_size: 262_144,
      max_structured_metadata_size: 65_536,
      max_structured_metadata_entries: 128,
    },
    ...over,
  };
}

/** Strings that break naive encoders: quotes, backslashes, newlines, control characters, U+FFFD (invalid UTF-8 after the collector's decoding), emoji, RTL. */
export const HOSTILE = [
  'say "hi"\\n\'quoted\'',
  'line1\nline2\r\n\ttabbed',
  'ctl\u0000\u0001\u001b[31mred\u007f',
  'bad\uFFFD\uFFFDutf8',
  '{"json":"inside"} | json',
  '😀 ünï ☃ \u202eRTL',
  '} , host="evil"',
];
