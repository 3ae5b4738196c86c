import snappy from 'snappy';
import type { OomRecord } from '../../record/record';
import { encodeRecordJson } from '../../record/json';
import type { LokiEncoding, LokiSinkConfig } from './config';
import { encodePushRequest, type PbStream } from './proto';

/** Stream label values the sink sets itself. */
export const JOB = 'oomtrail';
export const KIND = 'oom_kill';

/**
 * Per-event fields sent as structured metadata, most important first: when an entry would exceed the server's
 * metadata limits the sink drops from the end of this list (the line still carries every field).
 */
export const METADATA_FIELDS = [
  'event_id',
  'container_id',
  'pod_uid',
  // runtime names: pod names are high-cardinality, so metadata, never stream labels
  'pod_namespace',
  'pod_name',
  'k8s_container',
  // which limit was hit, and the pod's workload (and where that came from): few values, but per event (metadata)
  'oom_scope',
  'workload_kind',
  'workload_name',
  'workload_source',
  'container_name',
  'container_image',
  'victim_is_container_init',
  'oom_group_kill',
  'oom_group_kill_size',
  'victim_pid',
  'victim_comm',
  'trigger_pid',
  'trigger_comm',
  'oom_cgroup',
  'victim_cgroup',
  // "why this kill" (LogQL: `| cause="shmem"`); null/absent on records without a breakdown
  'cause',
] as const satisfies readonly (keyof OomRecord)[];

export type LokiLimits = LokiSinkConfig['limits'];

/** One record, ready to push. */
export interface LokiEntry {
  record: OomRecord;
  /** Position in the lane batch. */
  index: number;
  /** Nanoseconds since the epoch, from `record.time`. */
  tsNs: bigint;
  seconds: number;
  nanos: number;
  /** `encodeRecordJson(record)`: the JSONL sink's bytes, so `| json` works in LogQL. */
  line: string;
  lineBytes: number;
  metadata: Array<[string, string]>;
  /** Loki's accounting: Σ len(name) + len(value). */
  metadataBytes: number;
  /** Loki's EntryTotalSize: line + metadata bytes. */
  size: number;
}

export interface LokiStream {
  /** The label set in Loki's text form, `{constraint="memcg", host="h", job="oomtrail", kind="oom_kill"}`. */
  key: string;
  labels: Array<[string, string]>;
  /** Sorted by timestamp (then by batch position). */
  entries: LokiEntry[];
}

/** Pieces dropped or shortened to stay within the server's limits; the record itself is always sent. */
export interface Degradations {
  static_labels_dropped: number;
  label_values_truncated: number;
  /** U+FFFD (what invalid UTF-8 decodes to) replaced by '?' in a label value: Loki refuses it ("invalid UTF-8 rune"). */
  label_values_sanitized: number;
  metadata_dropped: number;
}

export interface InvalidRecord {
  record: OomRecord;
  index: number;
  reason: string;
}

const TIME_RE = /^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$/;

/** RFC 3339 with up to nanosecond precision → ns since the epoch; null when not of that shape. */
export function rfc3339ToNs(text: string): bigint | null {
  const m = TIME_RE.exec(text);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac = '', zone] = m;
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  if (Number.isNaN(ms)) return null;
  let offsetMin = 0;
  if (zone !== 'Z' && zone !== 'z') {
    const sign = zone![0] === '-' ? -1 : 1;
    offsetMin = sign * (Number(zone!.slice(1, 3)) * 60 + Number(zone!.slice(4, 6)));
  }
  const seconds = BigInt(ms / 1000 - offsetMin * 60);
  return seconds * 1_000_000_000n + BigInt(frac.padEnd(9, '0') || '0');
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Replaces lone UTF-16 surrogates (which have no UTF-8 form) with U+FFFD. */
export function wellFormed(value: string): string {
  return ANY_SURROGATE.test(value) ? value.replace(LONE_SURROGATE, '\uFFFD') : value;
}
const ANY_SURROGATE = /[\uD800-\uDFFF]/;

/** A label value in the quoted form Loki's label parser accepts (Go string literal escapes). */
export function quoteLabelValue(value: string): string {
  return JSON.stringify(wellFormed(value));
}

/** Cuts a string to at most `maxBytes` UTF-8 bytes without splitting a character. */
export function truncateUtf8(value: string, maxBytes: number): string {
  if (Buffer.byteLength(value) <= maxBytes) return value;
  const buf = Buffer.from(value);
  let end = maxBytes;
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--; // never cut inside a multi-byte sequence
  return buf.subarray(0, end).toString('utf8');
}

export function labelString(labels: Array<[string, string]>): string {
  const sorted = [...labels].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return '{' + sorted.map(([k, v]) => `${k}=${quoteLabelValue(v)}`).join(', ') + '}';
}

/**
 * Turns a lane batch into Loki streams. Labels: job, host, constraint, kind (+ static labels), all low-cardinality
 * and long-lived; every per-event field goes into structured metadata and, whole, into the line.
 */
export class StreamBuilder {
  readonly degradations: Degradations = { static_labels_dropped: 0, label_values_truncated: 0, label_values_sanitized: 0, metadata_dropped: 0 };
  private readonly staticKept: Array<[string, string]>;
  private readonly staticDropped: string[];
  private readonly requiredKept: number;
  private readonly streamCache = new Map<string, { key: string; labels: Array<[string, string]>; degraded: Partial<Degradations> }>();

  constructor(
    private readonly limits: LokiLimits,
    staticLabels: Array<[string, string]>,
  ) {
    const budget = Math.max(1, limits.max_label_names_per_series);
    this.requiredKept = Math.min(4, budget);
    const room = Math.max(0, budget - 4);
    this.staticKept = staticLabels.slice(0, room);
    this.staticDropped = staticLabels.slice(room).map(([k]) => k);
  }

  /** Static label names that do not fit under max_label_names_per_series (logged once by the sink). */
  get droppedStaticLabels(): readonly string[] {
    return this.staticDropped;
  }

  build(batch: readonly OomRecord[]): { streams: LokiStream[]; invalid: InvalidRecord[] } {
    const byKey = new Map<string, LokiStream>();
    const invalid: InvalidRecord[] = [];
    batch.forEach((record, index) => {
      const entry = this.entry(record, index);
      if ('reason' in entry) {
        invalid.push(entry);
        return;
      }
      const { key, labels } = this.streamOf(record);
      let stream = byKey.get(key);
      if (!stream) byKey.set(key, (stream = { key, labels, entries: [] }));
      stream.entries.push(entry);
    });
    const streams = [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const s of streams) s.entries.sort((a, b) => (a.tsNs < b.tsNs ? -1 : a.tsNs > b.tsNs ? 1 : a.index - b.index));
    return { streams, invalid };
  }

  /** The stream of a record; label sets are cached per (host, constraint), the only per-record inputs. */
  private streamOf(record: OomRecord): { key: string; labels: Array<[string, string]>; degraded: Partial<Degradations> } {
    const cacheKey = `${record.host}\u0000${record.constraint}`;
    let hit = this.streamCache.get(cacheKey);
    if (!hit) {
      const before = { ...this.degradations };
      const labels = this.labels(record);
      const degraded: Partial<Degradations> = {};
      for (const k of Object.keys(before) as (keyof Degradations)[]) {
        if (this.degradations[k] !== before[k]) degraded[k] = this.degradations[k] - before[k];
      }
      if (this.streamCache.size >= 1024) this.streamCache.clear();
      this.streamCache.set(cacheKey, (hit = { key: labelString(labels), labels, degraded }));
      return hit;
    }
    // a cached label set degrades the same way each time: count it again
    for (const [k, n] of Object.entries(hit.degraded) as [keyof Degradations, number][]) this.degradations[k] += n;
    return hit;
  }

  private labels(record: OomRecord): Array<[string, string]> {
    const max = this.limits.max_label_value_length;
    const all: Array<[string, string]> = [
      ['job', JOB],
      ['host', record.host],
      ['constraint', record.constraint],
      ['kind', record.kind ?? KIND],
    ];
    const out: Array<[string, string]> = [];
    for (const [k, v] of [...all.slice(0, this.requiredKept), ...this.staticKept]) {
      if (v === '') continue; // Loki drops empty labels anyway
      // Loki's label parser refuses U+FFFD even when validly encoded; the line keeps the original value
      const clean = wellFormed(v).replace(/\uFFFD/g, '?');
      if (clean !== v) this.degradations.label_values_sanitized++;
      const cut = truncateUtf8(clean, max);
      if (cut !== clean) this.degradations.label_values_truncated++;
      out.push([k, cut]);
    }
    this.degradations.static_labels_dropped += this.staticDropped.length;
    return out;
  }

  private entry(record: OomRecord, index: number): LokiEntry | InvalidRecord {
    const tsNs = rfc3339ToNs(record.time);
    if (tsNs === null) return { record, index, reason: `loki: record time ${JSON.stringify(String(record.time).slice(0, 64))} is not RFC 3339` };
    const line = encodeRecordJson(record);
    const lineBytes = Buffer.byteLength(line);
    if (lineBytes > this.limits.max_line_size) {
      return { record, index, reason: `loki: line of ${lineBytes} bytes exceeds sinks.loki.limits.max_line_size (${this.limits.max_line_size})` };
    }
    const metadata: Array<[string, string]> = [];
    for (const field of METADATA_FIELDS) {
      const v = record[field];
      if (v === null || v === undefined || v === '') continue;
      metadata.push([field, wellFormed(String(v))]);
    }
    let metadataBytes = 0;
    for (const [k, v] of metadata) metadataBytes += k.length + Buffer.byteLength(v);
    while (
      metadata.length > 0 &&
      (metadata.length > this.limits.max_structured_metadata_entries || metadataBytes > this.limits.max_structured_metadata_size)
    ) {
      const [k, v] = metadata.pop()!;
      metadataBytes -= k.length + Buffer.byteLength(v);
      this.degradations.metadata_dropped++;
    }
    const seconds = Number(tsNs / 1_000_000_000n);
    const nanos = Number(tsNs % 1_000_000_000n);
    return { record, index, tsNs, seconds, nanos, line, lineBytes, metadata, metadataBytes, size: lineBytes + metadataBytes };
  }
}

export interface EncodedBody {
  body: Buffer;
  contentType: string;
  /** Uncompressed size of the serialized request. */
  rawBytes: number;
}

/** One push request body for the given streams (the sink sends one stream per request). */
export function encodeBody(streams: Array<{ key: string; labels: Array<[string, string]>; entries: LokiEntry[] }>, encoding: LokiEncoding): EncodedBody {
  if (encoding === 'json') {
    const body = Buffer.from(
      JSON.stringify({
        streams: streams.map((s) => ({
          stream: Object.fromEntries(s.labels),
          values: s.entries.map((e) =>
            e.metadata.length > 0 ? [e.tsNs.toString(), e.line, Object.fromEntries(e.metadata)] : [e.tsNs.toString(), e.line],
          ),
        })),
      }),
    );
    return { body, contentType: 'application/json', rawBytes: body.length };
  }
  const pb: PbStream[] = streams.map((s) => ({
    labels: s.key,
    entries: s.entries.map((e) => ({
      timestamp: { seconds: e.seconds, nanos: e.nanos },
      line: e.line,
      structuredMetadata: e.metadata.map(([name, value]) => ({ name, value })),
    })),
  }));
  const raw = encodePushRequest(pb);
  return { body: snappy.compressSync(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)), contentType: 'application/x-protobuf', rawBytes: raw.length };
}
