import { createHash } from 'node:crypto';
import type { MemoryAtKill, OomRecord } from '../../record/record';
import { AT_KILL_COLUMNS } from './schema';

/**
 * Record ⇄ ClickHouse row (JSONEachRow).
 *
 * A row is the record's own JSON (the JSONL sink's bytes) with two changes:
 * - `time` goes from RFC 3339 (`2026-11-23T06:41:00.123456789Z`) to ClickHouse's basic DateTime64 text
 *   (`2026-11-23 06:41:00.123456789`, read in the column's UTC time zone), so no `date_time_input_format`
 *   setting is needed and all 9 digits survive;
 * - strings are made well-formed UTF-16 first: `JSON.stringify` writes a lone surrogate as the escape
 *   `\ud800`, which every ClickHouse (18.16 and 26.9 alike) refuses for the whole insert ("Cannot parse
 *   escape sequence: missing second part of surrogate pair", code 25). A lone surrogate becomes U+FFFD, the
 *   same character invalid UTF-8 bytes in a kernel comm already became when the collector decoded them.
 * Quotes, backslashes, newlines and control characters need nothing: JSON escapes them and ClickHouse
 * unescapes them byte for byte. Fields the table does not have are skipped by the server
 * (`input_format_skip_unknown_fields=1`), so a newer record can go into an older table.
 */

const RFC3339_UTC_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z$/;

/** RFC 3339 UTC → ClickHouse DateTime64 text, or null when the value is not a date at all. */
export function toClickHouseTime(time: string): string | null {
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d(?:\.\d{1,9})?)Z$/.exec(time);
  if (m) return `${m[1]} ${m[2]}`;
  // any other offset or precision: normalise through Date (millisecond precision)
  const ms = Date.parse(time);
  if (!Number.isFinite(ms)) return null;
  const iso = new Date(ms).toISOString(); // 2026-11-23T06:41:00.123Z
  return `${iso.slice(0, 10)} ${iso.slice(11, 23)}`;
}

/** ClickHouse DateTime64(9) text (or a JS Date-like) → RFC 3339 with 9 fractional digits, as records carry it. */
export function fromClickHouseTime(text: string): string {
  const m = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z?$/.exec(text);
  if (!m) return text;
  return `${m[1]}T${m[2]}.${(m[3] ?? '').padEnd(9, '0')}Z`;
}

type StringWithWellFormed = string & { isWellFormed?(): boolean; toWellFormed?(): string };

/** Replaces lone surrogates with U+FFFD (String.prototype.toWellFormed on Node ≥ 20, a regex otherwise). */
export function wellFormed(s: string): string {
  const w = s as StringWithWellFormed;
  if (typeof w.toWellFormed === 'function') return w.toWellFormed();
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

function slowRow(record: OomRecord): string {
  const row: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(record)) row[k] = typeof v === 'string' ? wellFormed(v) : v;
  if (typeof record.time === 'string') row.time = toClickHouseTime(record.time) ?? record.time;
  return JSON.stringify(row);
}

/** Nested fields go into String columns as their own JSON text (migration 2), labels as JSON (3), memory_at_kill into typed columns (4), candidates_source '-' for null (5). */
function flattenNested(record: OomRecord): OomRecord {
  const explain = record.memory_at_kill !== undefined || record.candidates !== undefined;
  const source = record.candidates_source !== undefined;
  if (record.trail === undefined && record.pressure === undefined && record.labels === undefined && !explain && !source) return record;
  const flat: Record<string, unknown> = { ...record };
  if (record.trail !== undefined) flat.trail = JSON.stringify(record.trail);
  if (record.pressure !== undefined) flat.pressure = JSON.stringify(record.pressure);
  if (record.labels !== undefined) flat.labels = JSON.stringify(record.labels); // migration 3
  if (explain) {
    // migration 4
    const m = record.memory_at_kill ?? null;
    delete flat.memory_at_kill;
    flat.at_kill_source = m ? m.source : '-';
    flat.at_kill_scope = m ? m.scope : '';
    for (const c of AT_KILL_COLUMNS) flat[`at_kill_${c}`] = m ? m[c] : null;
    flat.candidates = JSON.stringify(record.candidates ?? null);
  }
  if (source) flat.candidates_source = record.candidates_source ?? '-'; // migration 5
  return flat as unknown as OomRecord;
}

/** One JSONEachRow line (without the newline). */
export function encodeRow(input: OomRecord): string {
  const record = flattenNested(input);
  const json = JSON.stringify(record);
  const t = record.time;
  // `\ud8..`-`\udf..` escapes appear only for lone surrogates (or a literal backslash-u text, which the slow path
  // encodes identically); any other time shape is normalised by the slow path too
  if (json.includes('\\ud') || typeof t !== 'string' || !RFC3339_UTC_RE.test(t)) return slowRow(record);
  // the time has no character JSON escapes, so its JSON value is the text itself, right after the key
  const at = json.indexOf('"time":"') + 8;
  return json.slice(0, at) + t.slice(0, 10) + ' ' + t.slice(11, t.length - 1) + json.slice(at + t.length);
}

/** The insert body: one line per record, each ending in `\n`, UTF-8 (written straight into one buffer). */
export function encodeBatch(records: readonly OomRecord[]): Buffer {
  let buf = Buffer.allocUnsafe(Math.max(4096, records.length * 1024));
  let off = 0;
  for (const r of records) {
    const row = encodeRow(r);
    const most = row.length * 3 + 1; // UTF-8 needs at most 3 bytes per UTF-16 unit
    if (off + most > buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(buf.length * 2, off + most));
      buf.copy(bigger, 0, 0, off);
      buf = bigger;
    }
    off += buf.write(row, off, 'utf8');
    buf[off++] = 0x0a;
  }
  return buf.subarray(0, off);
}

/**
 * The batch's `insert_deduplication_token`: a hash of its event ids in order. The lane retries a batch with the
 * identical records array, so a retry carries the identical token and ClickHouse drops the repeated block.
 */
export function dedupToken(records: readonly OomRecord[]): string {
  const h = createHash('sha256');
  // a message that is not a record (the relay reads whatever is in the topic) still gets a token, so that the
  // insert fails as data and is refused, instead of this throwing
  for (const r of records) h.update(String((r as Partial<OomRecord> | null)?.event_id ?? '')).update('\n');
  return `oomtrail-${records.length}-${h.digest('hex').slice(0, 40)}`;
}

const NUMERIC_NULLABLE = [
  'victim_uid',
  'victim_total_vm_kb',
  'victim_anon_rss_kb',
  'victim_file_rss_kb',
  'victim_shmem_rss_kb',
  'victim_pgtables_kb',
  'victim_oom_score_adj',
  'cgroup_version',
  'memcg_limit_bytes',
  'memcg_usage_bytes',
  'domain_pages',
  'order',
] as const;
const NUMERIC = ['schema_version', 'victim_pid', 'victim_tid', 'trigger_pid'] as const;

/**
 * A row read back (`SELECT * … FORMAT JSONEachRow`) → the record it came from: time back to RFC 3339,
 * 64-bit integers (quoted by ClickHouse's JSON output) back to numbers, Bool/UInt8 back to a boolean.
 * For tests and exports: `rowToRecord(row)` deep-equals the JSONL sink's record.
 */
export function rowToRecord(row: Record<string, unknown>): OomRecord {
  const out: Record<string, unknown> = { ...row };
  if (typeof row.time === 'string') out.time = fromClickHouseTime(row.time);
  for (const k of [...NUMERIC, ...NUMERIC_NULLABLE]) {
    const v = row[k];
    if (typeof v === 'string') out[k] = Number(v);
  }
  const ci = row.constraint_inferred;
  if (typeof ci === 'number' || typeof ci === 'string') out.constraint_inferred = Number(ci) !== 0;
  // migration 2's columns: '' and NULL mean the record did not carry the optional field
  for (const k of ['trail', 'pressure'] as const) if (k in row) out[k] = row[k] === '' ? undefined : JSON.parse(String(row[k]));
  for (const k of ['victim_exit_latency_ms', 'victim_reaped_latency_ms'] as const) {
    if (k in row) out[k] = row[k] === null ? undefined : Number(row[k]);
  }
  // migration 3's columns: '' and NULL mean the record did not carry the optional field
  // (and migration 6's, and 7's)
  for (const k of ['container_name', 'container_image', 'pod_name', 'pod_namespace', 'k8s_container', 'oom_scope', 'workload_kind', 'workload_name', 'workload_source'] as const) {
    if (k in row && row[k] === '') delete out[k];
  }
  if ('labels' in row) {
    if (row.labels === '') delete out.labels;
    else out.labels = JSON.parse(String(row.labels));
  }
  for (const k of ['victim_ns_pid', 'oom_group_kill_size'] as const) {
    if (!(k in row)) continue;
    if (row[k] === null) delete out[k];
    else out[k] = Number(row[k]);
  }
  for (const k of ['victim_is_container_init', 'oom_group_kill'] as const) {
    if (!(k in row)) continue;
    const v = row[k];
    if (v === null) delete out[k];
    else out[k] = v === true || Number(v) === 1;
  }
  // migration 4's columns back into the record's nested fields ('' = the record had none)
  if ('at_kill_source' in row) {
    const src = row.at_kill_source;
    const cols = AT_KILL_COLUMNS.map((c) => `at_kill_${c}`);
    if (src === '' || src === undefined) {
      for (const k of ['cause', 'victim_share', 'candidates']) delete out[k];
    } else {
      let m: MemoryAtKill | null = null;
      if (src !== '-') {
        const obj: Record<string, unknown> = { source: src, scope: row.at_kill_scope };
        for (const c of AT_KILL_COLUMNS) obj[c] = row[`at_kill_${c}`] === null ? null : Number(row[`at_kill_${c}`]);
        m = obj as unknown as MemoryAtKill;
      }
      out.memory_at_kill = m;
      out.victim_share = row.victim_share === null || row.victim_share === undefined ? null : Number(row.victim_share);
      out.cause = row.cause ?? null;
      out.candidates = row.candidates === '' || row.candidates === undefined ? null : JSON.parse(String(row.candidates));
    }
    for (const k of ['at_kill_source', 'at_kill_scope', ...cols]) delete out[k];
  }
  // migration 5 ('' = the record had no such field, '-' = null)
  if ('candidates_source' in row) {
    const cs = row.candidates_source;
    if (cs === '' || cs === undefined) delete out.candidates_source;
    else out.candidates_source = cs === '-' ? null : cs;
  }
  return out as unknown as OomRecord;
}
