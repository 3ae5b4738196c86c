/* Synthetic records for the Loki tests (real OOM kills are in the oomkill tests). */
import { deriveEventId, type OomRecord } from '../../../src/record/record';
import type { LokiSinkConfig } from '../../../src/sinks/loki/config';
import { formatRfc3339Nanos as nsToRfc3339 } from '../../../src/host/clock';
import { baseRecord } from '../../helpers/records';

/** RFC 3339 with nanoseconds for `ns` since the epoch: the agent's own formatter. */
export { nsToRfc3339 };

export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

let seq = 0;

/** A plausible memcg kill; `i` makes the event_id, pid and time unique. */
export function makeRecord(i: number, over: Partial<OomRecord> = {}, tsNs?: bigint): OomRecord {
  const n = seq++;
  const t = tsNs ?? nowNs() - 60_000_000_000n + BigInt(i) * 1000n + BigInt(n);
  return baseRecord({
    event_id: deriveEventId(`boot-${process.pid}`, t, 10_000 + i),
    time: nsToRfc3339(t),
    host: 'node-a',
    boot_id: `boot-${process.pid}`,
    victim_pid: 10_000 + i,
    victim_tid: 10_000 + i,
    victim_total_vm_kb: 136_000,
    victim_anon_rss_kb: 65_000,
    victim_file_rss_kb: 1_200,
    victim_pgtables_kb: 180,
    trigger_pid: 10_000 + i,
    memcg_limit_bytes: 67_108_864,
    memcg_usage_bytes: 67_100_000,
    ...over,
  });
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
