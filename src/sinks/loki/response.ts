/**
 * Reading Loki's push answers, from Loki's own semantics (pkg/distributor, pkg/ingester/stream.go, v3.x):
 *
 * - 2xx: every entry was written.
 * - 400: validation. The distributor drops the invalid entries, WRITES THE VALID ONES, then answers 400 with one
 *   message per invalid entry joined by "; " (too old / too new name the entry's timestamp; too long names its
 *   length). The ingester answers "entry with timestamp T ignored, reason: '…'" per failed entry (at most 10 listed)
 *   and "total ignored: N out of M" for out-of-order / too-far-behind entries. A 400 is never retried whole.
 * - 429: the tenant's ingestion rate limit rejects the whole request before anything is written (retry it whole);
 *   a per-stream rate limit in the ingester rejects some entries of the stream (listed like the ingester's 400).
 * - 5xx: not written (single ingester) or unknown: retried. Retry-After is honoured on 429 and 5xx.
 */
import type { LokiEntry } from './encode';

/** What happened to each entry of one push request (one stream). */
export interface PushOutcome {
  /** Entries written by Loki. */
  delivered: LokiEntry[];
  /** Entries Loki refused for good, each with Loki's reason. */
  rejected: Array<{ entry: LokiEntry; reason: string }>;
  /** Entries to send again (all of them on a whole-request retry). */
  retry: LokiEntry[];
  /**
   * Entries Loki may or may not have written: it ignored more entries ("total ignored: N out of M") than its
   * answer names (it lists at most 10). They are sent again in requests small enough for Loki to name every
   * failure; the ones it had written are exact duplicates (same stream, time, line, metadata), which Loki drops.
   */
  unsure?: LokiEntry[];
  /** Set when `retry` is non-empty. */
  retryReason?: string;
  afterMs?: number;
  /** 413 / 429 on a multi-entry request: send smaller requests next time. */
  shrink?: boolean;
}

/**
 * Loki prints entry times two ways: Go's `time.Time.String()` ("2006-01-02 15:04:05.999999999 -0700 MST", exact,
 * the ingester) and `time.RFC3339` ("2006-01-02T15:04:05Z07:00", cut to whole seconds, the distributor's too-old /
 * too-new messages). Both are read; a time without a fraction names "some instant within that second".
 */
const TIME_SRC = String.raw`\d{4}-\d\d-\d\d(?: \d\d:\d\d:\d\d(?:\.\d{1,9})? [+-]\d{4} [^\s,;']+(?: m=[+-][\d.]+)?|T\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d))`;
const GO_TIME_RE = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? ([+-])(\d\d)(\d\d) [^\s,;']+(?: m=[+-][\d.]+)?$/;
const RFC3339_RE = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:Z|([+-])(\d\d):(\d\d))$/;

export interface LokiTime {
  ns: bigint;
  /** The printed time stands for [ns, ns + unit): 1 when exact, 1e9 when cut to whole seconds. */
  unit: bigint;
}

/** Reads a time as Loki prints it in error messages (see above); null when it is neither form. */
export function parseLokiTime(text: string): LokiTime | null {
  const t = text.trim();
  const m = GO_TIME_RE.exec(t) ?? RFC3339_RE.exec(t);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac, sign, oh, om] = m;
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  if (Number.isNaN(ms)) return null;
  const offset = sign ? (sign === '-' ? -1 : 1) * (Number(oh) * 3600 + Number(om) * 60) : 0;
  const ns = BigInt(ms / 1000 - offset) * 1_000_000_000n + BigInt((frac ?? '').padEnd(9, '0'));
  // Go's String() trims trailing zeros but is exact; RFC3339 (not RFC3339Nano) drops the fraction altogether
  const exact = frac !== undefined || GO_TIME_RE.test(t);
  return { ns, unit: exact ? 1n : 1_000_000_000n };
}

/** Go's `time.Time.String()` → ns since the epoch. */
export function goTimeToNs(text: string): bigint | null {
  return GO_TIME_RE.test(text.trim()) ? parseLokiTime(text)!.ns : null;
}

const within = (e: LokiEntry, t: LokiTime): boolean => e.tsNs >= t.ns && e.tsNs < t.ns + t.unit;

/** Seconds or an HTTP date → milliseconds from now; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** One fact Loki stated about entries of the request. */
interface Mention {
  /** Entries it names: by exact timestamp, by "older than", by line length, by metadata size / count. */
  match: (e: LokiEntry) => boolean;
  reason: string;
  /** Per-stream rate limit: the entry was not written but may be sent again. */
  retry: boolean;
}

const TS = (name: string): string => `(?<${name}>${TIME_SRC})`;

const PATTERNS: Array<{ re: RegExp; mention: (g: Record<string, string>, text: string) => Mention[] }> = [
  {
    // distributor: GreaterThanMaxSampleAgeErrorMsg (RFC 3339, whole seconds)
    re: new RegExp(`(?:entry for stream '(?:(?!' has timestamp)[\\s\\S])*' )?has timestamp too old: ${TS('ts')}, oldest acceptable timestamp is: ${TS('cutoff')}`, 'g'),
    mention: (g, text) => {
      const ts = parseLokiTime(g.ts!);
      const cutoff = parseLokiTime(g.cutoff!);
      const out: Mention[] = [];
      // every entry older than the printed cutoff was refused (the check is deterministic; the true cutoff is at
      // or after the printed one), and so was the named one: within its second, but before the cutoff's second ends
      if (cutoff) out.push({ match: (e) => e.tsNs < cutoff.ns, reason: text, retry: false });
      if (ts) out.push({ match: (e) => within(e, ts) && (!cutoff || e.tsNs < cutoff.ns + cutoff.unit), reason: text, retry: false });
      return out;
    },
  },
  {
    // distributor: TooFarInFutureErrorMsg
    re: new RegExp(`(?:entry for stream '(?:(?!' has timestamp)[\\s\\S])*' )?has timestamp too new: ${TS('ts')}`, 'g'),
    mention: (g, text) => {
      const ts = parseLokiTime(g.ts!);
      return ts ? [{ match: (e) => within(e, ts), reason: text, retry: false }] : [];
    },
  },
  {
    // ingester: errorForFailedEntries, one line per failed entry (out of order, too far behind, per-stream rate)
    re: new RegExp(`entry with timestamp ${TS('ts')} ignored, reason: '(?<why>[\\s\\S]*?)',\\n`, 'g'),
    mention: (g, text) => {
      const ts = parseLokiTime(g.ts!);
      const why = g.why ?? '';
      const retry = /^Per stream rate limit exceeded/.test(why);
      const reason = text.replace(/,\n$/, '');
      const out: Mention[] = [];
      if (ts) out.push({ match: (e) => within(e, ts), reason, retry });
      const cut = new RegExp(`oldest acceptable timestamp is: ${TS('cutoff')}`).exec(why);
      const cutoff = cut?.groups?.cutoff ? parseLokiTime(cut.groups.cutoff) : null;
      if (cutoff && !retry) out.push({ match: (e) => e.tsNs < cutoff.ns, reason, retry: false });
      return out;
    },
  },
  {
    // distributor: LineTooLongErrorMsg names the line's length
    re: /max entry size '\d+' bytes exceeded for stream '[\s\S]*?' while adding an entry with length '(?<len>\d+)' bytes/g,
    mention: (g, text) => [{ match: (e) => e.lineBytes === Number(g.len), reason: text, retry: false }],
  },
  {
    re: /has structured metadata too large: '(?<size>\d+)' bytes/g,
    mention: (g, text) => [{ match: (e) => e.metadataBytes === Number(g.size), reason: text, retry: false }],
  },
  {
    re: /has too many structured metadata labels: '(?<n>\d+)'/g,
    mention: (g, text) => [{ match: (e) => e.metadata.length === Number(g.n), reason: text, retry: false }],
  },
];

function mentions(body: string): Mention[] {
  const out: Mention[] = [];
  for (const { re, mention } of PATTERNS) {
    re.lastIndex = 0;
    for (let m = re.exec(body); m; m = re.exec(body)) out.push(...mention((m.groups ?? {}) as Record<string, string>, m[0]));
  }
  return out;
}

/** "total ignored: N out of M" (ingester), when present. */
function totalIgnored(body: string): { n: number; of: number } | null {
  const m = /total ignored: (\d+) out of (\d+)/.exec(body);
  return m ? { n: Number(m[1]), of: Number(m[2]) } : null;
}

const clip = (s: string, n = 1000): string => (s.length > n ? s.slice(0, n) + `… (${s.length} chars)` : s);

/** Classifies one push answer for the entries of that request (one stream). */
export function classifyPush(status: number, body: string, entries: LokiEntry[], retryAfter?: string | null): PushOutcome {
  const text = body.trim();
  if (status >= 200 && status < 300) return { delivered: entries, rejected: [], retry: [] };
  const afterMs = parseRetryAfter(retryAfter);
  const whole = (reason: string, extra: Partial<PushOutcome> = {}): PushOutcome => ({
    delivered: [],
    rejected: [],
    retry: entries,
    retryReason: reason,
    ...(afterMs !== undefined ? { afterMs } : {}),
    ...extra,
  });
  const label = `Loki HTTP ${status}`;

  if (status === 413) {
    if (entries.length > 1) return whole(`${label}: request too large, splitting it: ${clip(text, 300)}`, { shrink: true });
    return { delivered: [], rejected: [{ entry: entries[0]!, reason: `${label}: entry too large for the server: ${clip(text)}` }], retry: [] };
  }
  if (status === 408 || status >= 500) return whole(`${label}: ${clip(text)}`);
  if (status === 401 || status === 403 || status === 404 || status === 405) {
    // configuration (credentials, tenant, URL), not the data: keep the records spooled until it is fixed
    return whole(`${label} (check sinks.loki url/tenant_id/credentials): ${clip(text, 300)}`);
  }
  if (status === 429) {
    const ms = mentions(text);
    const total = totalIgnored(text);
    // per-entry answer (per-stream rate limit in the ingester) that lists every refused entry: resend only those
    if (ms.length > 0 && total && total.of === entries.length) {
      const split = partition(entries, ms, label);
      const named = split.rejected.length + split.retry.length;
      if (named === total.n) return { ...split, retryReason: `${label}: ${clip(text)}`, ...(afterMs !== undefined ? { afterMs } : {}) };
    }
    // the tenant's ingestion rate limit: nothing was written; resend it whole, in smaller requests if it is big
    return whole(`${label}: ${clip(text)}`, { shrink: entries.length > 1 });
  }
  if (status === 400) {
    const ms = mentions(text);
    const total = totalIgnored(text);
    if (ms.length === 0 && !total) {
      // the message does not say which entries (labels invalid, a format we do not know): the whole request is
      // refused as far as we can tell; Loki may have written part of it, so it is never resent
      return { delivered: [], rejected: entries.map((entry) => ({ entry, reason: `${label}: ${clip(text)}` })), retry: [] };
    }
    const split = partition(entries, ms, label);
    const out: PushOutcome = { ...split, ...(split.retry.length > 0 ? { retryReason: `${label}: ${clip(text)}` } : {}) };
    // Loki wrote exactly M − N entries of this request (the distributor's refusals are not even in M): if more are
    // left unnamed, some of them were ignored too, and which ones only a smaller request can tell
    const written = total ? Math.max(0, total.of - total.n) : Infinity;
    if (split.delivered.length > written) {
      if (written === 0) {
        out.rejected.push(...split.delivered.map((entry) => ({ entry, reason: `${label}: ${clip(text)}` })));
      } else {
        out.unsure = split.delivered;
      }
      out.delivered = [];
    }
    return out;
  }
  // other 4xx (415, 422 …): the request is malformed for this server; resending it cannot help
  return { delivered: [], rejected: entries.map((entry) => ({ entry, reason: `${label}: ${clip(text)}` })), retry: [] };
}

function partition(entries: LokiEntry[], ms: Mention[], label: string): Pick<PushOutcome, 'delivered' | 'rejected' | 'retry'> {
  const delivered: LokiEntry[] = [];
  const rejected: PushOutcome['rejected'] = [];
  const retry: LokiEntry[] = [];
  for (const entry of entries) {
    const hit = ms.find((m) => !m.retry && m.match(entry)) ?? ms.find((m) => m.match(entry));
    if (!hit) delivered.push(entry);
    else if (hit.retry) retry.push(entry);
    else rejected.push({ entry, reason: `${label}: ${clip(hit.reason)}` });
  }
  return { delivered, rejected, retry };
}
