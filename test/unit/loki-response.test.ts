import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamBuilder, type LokiEntry } from '../../src/sinks/loki/encode';
import { classifyPush, goTimeToNs, parseLokiTime, parseRetryAfter } from '../../src/sinks/loki/response';

const rfcNs = (t: string): bigint => BigInt(Date.parse(t)) * 1_000_000n;
import { makeRecord } from '../servers/loki/records';

const LIMITS = {
  max_label_names_per_series: 15,
  max_label_value_length: 2048,
  max_line_size: 262_144,
  max_structured_metadata_size: 65_536,
  max_structured_metadata_entries: 128,
};

/** Go's time.Time.String() for ns since the epoch, in UTC. */
function goTime(ns: bigint): string {
  const d = new Date(Number(ns / 1_000_000n)).toISOString(); // 2024-05-01T12:00:00.000Z
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return `${d.slice(0, 10)} ${d.slice(11, 19)}${frac ? '.' + frac : ''} +0000 UTC`;
}

function entries(tsList: bigint[]): LokiEntry[] {
  return new StreamBuilder(LIMITS, []).build(tsList.map((t, i) => makeRecord(i, {}, t))).streams[0]!.entries;
}

/** Go's time.RFC3339 in UTC: whole seconds (how the distributor prints too-old / too-new times). */
function rfc3339(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString().slice(0, 19) + 'Z';
}

const T0 = 1_800_000_000_000_000_000n;
const H = 3600n * 1_000_000_000n;
const STREAM = '{constraint="memcg", host="node-a", job="oomtrail", kind="oom_kill"}';

describe('loki answers', () => {
  test("Go time strings (Loki's %v of time.Time) → ns, zones and monotonic suffix handled", () => {
    assert.equal(goTimeToNs('2024-05-01 12:00:00.000000001 +0000 UTC'), 1714564800000000001n);
    assert.equal(goTimeToNs('2024-05-01 14:00:00 +0200 CEST'), 1714564800000000000n);
    assert.equal(goTimeToNs('2024-05-01 12:00:00.5 +0000 UTC m=-604799.99'), 1714564800500000000n);
    assert.equal(goTimeToNs(goTime(T0 + 123n)), T0 + 123n);
    assert.deepEqual(parseLokiTime("2027-01-15T08:00:00Z"), { ns: rfcNs("2027-01-15T08:00:00Z"), unit: 1_000_000_000n });
    assert.deepEqual(parseLokiTime('2027-01-15T10:00:00.25+02:00'), { ns: rfcNs('2027-01-15T08:00:00Z') + 250_000_000n, unit: 1n });
  });

  test('Retry-After: seconds or an HTTP date', () => {
    assert.equal(parseRetryAfter('3'), 3000);
    assert.equal(parseRetryAfter('0.5'), 500);
    assert.equal(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString(), Date.now()) ! > 8000, true);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.equal(parseRetryAfter(null), undefined);
  });

  test('2xx: all delivered', () => {
    const es = entries([T0, T0 + 1n]);
    assert.deepEqual(classifyPush(204, '', es), { delivered: es, rejected: [], retry: [] });
  });

  test('400 too old (distributor, RFC 3339, grouped "; "): exactly the old entries rejected with the reason, the rest delivered', () => {
    const cutoffNs = T0 - H + 123_456_789n; // printed cut to the second
    const es = entries([T0 - 10n * H, T0, T0 + 1n, T0 - 9n * H, cutoffNs - 1n, cutoffNs + 2_000_000_000n]);
    const msg = [es[0]!, es[1]!, es[2]!]
      .map((e) => `entry for stream '${STREAM}' has timestamp too old: ${rfc3339(e.tsNs)}, oldest acceptable timestamp is: ${rfc3339(cutoffNs)}`)
      .join('; ');
    const out = classifyPush(400, msg + '\n', es);
    assert.deepEqual(
      out.rejected.map((r) => r.entry.tsNs),
      [T0 - 10n * H, T0 - 9n * H, cutoffNs - 1n],
    );
    assert.match(out.rejected[0]!.reason, /^Loki HTTP 400: entry for stream .* has timestamp too old: /);
    assert.deepEqual(out.delivered.map((e) => e.tsNs), [cutoffNs + 2_000_000_000n, T0, T0 + 1n]);
    assert.deepEqual(out.retry, []);
  });

  test('400 too old, ambiguous second: an entry in the same printed second as a refused one is dead-lettered, never assumed written', () => {
    const cutoffNs = T0 - H + 500_000_000n;
    const es = entries([cutoffNs - 1n, cutoffNs + 1n]);
    const msg = `entry for stream '${STREAM}' has timestamp too old: ${rfc3339(es[0]!.tsNs)}, oldest acceptable timestamp is: ${rfc3339(cutoffNs)}`;
    const out = classifyPush(400, msg, es);
    assert.equal(out.rejected.length, 2);
  });

  test('400 too old grouped as "N errors like": the cutoff names them all', () => {
    const old = T0 - 10n * H;
    const es = entries([old, old + 1n, T0]);
    const msg = `2 errors like: entry for stream '${STREAM}' has timestamp too old: ${rfc3339(old)}, oldest acceptable timestamp is: ${rfc3339(T0 - H)}`;
    const out = classifyPush(400, msg, es);
    assert.deepEqual(out.rejected.map((r) => r.entry), [es[0], es[1]]);
    assert.deepEqual(out.delivered, [es[2]]);
  });

  test('400 too new: the named second only', () => {
    const es = entries([T0, T0 + 5n * H]);
    const out = classifyPush(400, `entry for stream '${STREAM}' has timestamp too new: ${rfc3339(T0 + 5n * H)}`, es);
    assert.deepEqual(out.rejected.map((r) => r.entry), [es[1]]);
    assert.deepEqual(out.delivered, [es[0]]);
  });

  test('400 from the ingester (too far behind, "total ignored"): named entries rejected, the rest delivered', () => {
    const es = entries([T0 - 2n * H, T0, T0 + 5n]);
    const msg =
      `entry with timestamp ${goTime(T0 - 2n * H)} ignored, reason: 'entry too far behind, entry timestamp is: ${rfc3339(T0 - 2n * H)}, oldest acceptable timestamp is: ${rfc3339(T0 - H)}',\n` +
      `user 'fake', total ignored: 1 out of 3 for stream: ${STREAM}`;
    const out = classifyPush(400, msg, es);
    assert.deepEqual(out.rejected.map((r) => r.entry), [es[0]]);
    assert.match(out.rejected[0]!.reason, /^Loki HTTP 400: entry with timestamp .* ignored, reason: 'entry too far behind/);
    assert.deepEqual(out.delivered, [es[1], es[2]]);
  });

  test('400 "total ignored: N" with more ignored than named (Loki names at most 10): the unnamed are unsure, never delivered', () => {
    // the cutoff's second: 25 entries before the exact cutoff (refused), 5 after it (written), 20 well after (written)
    const cutoff = T0 - H + 950_000_000n;
    const secondStart = T0 - H;
    const bad = Array.from({ length: 25 }, (_, i) => secondStart + BigInt(i) * 30_000_000n);
    const okSame = [1n, 2n, 3n, 4n, 5n].map((i) => cutoff + i * 1_000_000n);
    const okLater = Array.from({ length: 20 }, (_, i) => T0 - 1800n * 1_000_000_000n + BigInt(i) * 1_000_000_000n);
    const es = entries([...bad, ...okSame, ...okLater]);
    const named = bad.slice(0, 10).map((t) => `entry with timestamp ${goTime(t)} ignored, reason: 'entry too far behind, entry timestamp is: ${rfc3339(t)}, oldest acceptable timestamp is: ${rfc3339(cutoff)}',\n`);
    const msg = named.join('') + `user 'fake', total ignored: 25 out of 50 for stream: ${STREAM}`;
    const out = classifyPush(400, msg, es);
    assert.deepEqual(out.rejected.map((r) => r.entry), es.slice(0, 10));
    assert.deepEqual(out.delivered, [], 'none acked: Loki wrote 25 of the 40 unnamed, which ones it did not say');
    assert.deepEqual(out.unsure, es.slice(10));
    assert.deepEqual(out.retry, []);
    // a request of the unsure ones small enough for Loki to name each failure: exact again
    const small = es.slice(10, 20);
    const msg2 = small.map((e) => `entry with timestamp ${goTime(e.tsNs)} ignored, reason: 'entry too far behind, entry timestamp is: ${rfc3339(e.tsNs)}, oldest acceptable timestamp is: ${rfc3339(cutoff)}',\n`).join('') + `user 'fake', total ignored: 10 out of 10 for stream: ${STREAM}`;
    const out2 = classifyPush(400, msg2, small);
    assert.equal(out2.rejected.length, 10);
    assert.equal(out2.unsure, undefined);
    // every entry of the request ignored, fewer named: the unnamed are refused without another request
    const three = es.slice(0, 3);
    const out3 = classifyPush(400, named[0]! + `user 'fake', total ignored: 3 out of 3 for stream: ${STREAM}`, three);
    assert.equal(out3.rejected.length, 3);
    assert.deepEqual(out3.delivered, []);
    assert.equal(out3.unsure, undefined);
  });

  test('400 line too long: matched by the length Loki names', () => {
    const es = new StreamBuilder(LIMITS, []).build([makeRecord(0, {}, T0), makeRecord(1, { victim_comm: 'longer-comm' }, T0 + 1n)]).streams[0]!.entries;
    const msg = `max entry size '100' bytes exceeded for stream '${STREAM}' while adding an entry with length '${es[1]!.lineBytes}' bytes`;
    const out = classifyPush(400, msg, es);
    assert.deepEqual(out.rejected.map((r) => r.entry), [es[1]]);
    assert.deepEqual(out.delivered, [es[0]]);
  });

  test('400 that names no entry (e.g. invalid labels): all refused, never retried', () => {
    const es = entries([T0, T0 + 1n]);
    const out = classifyPush(400, `error parsing labels '{bad}': parse error`, es);
    assert.equal(out.rejected.length, 2);
    assert.deepEqual(out.retry, []);
    assert.match(out.rejected[0]!.reason, /^Loki HTTP 400: error parsing labels/);
  });

  test('429 tenant rate limit: whole request retried, smaller, honouring Retry-After', () => {
    const es = entries([T0, T0 + 1n]);
    const msg = "ingestion rate limit exceeded for user fake (limit: 1024 bytes/sec) while attempting to ingest '2' lines totaling '3000' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased";
    const out = classifyPush(429, msg, es, '2');
    assert.deepEqual(out.retry, es);
    assert.equal(out.afterMs, 2000);
    assert.equal(out.shrink, true);
    assert.deepEqual(out.delivered, []);
  });

  test('429 per-stream rate limit listing every refused entry: only those are sent again', () => {
    const es = entries([T0, T0 + 1n, T0 + 2n]);
    const reason = `Per stream rate limit exceeded (limit: 1KB/sec) while attempting to ingest for stream '${STREAM}' totaling 2KB, consider splitting a stream via additional labels or contact your Loki administrator to see if the limit can be increased`;
    const msg = `entry with timestamp ${goTime(T0 + 2n)} ignored, reason: '${reason}',\nuser 'fake', total ignored: 1 out of 3 for stream: ${STREAM}`;
    const out = classifyPush(429, msg, es);
    assert.deepEqual(out.retry, [es[2]]);
    assert.deepEqual(out.delivered, [es[0], es[1]]);
  });

  test('5xx and 408 retried whole; 401/403/404 retried (configuration), other 4xx refused', () => {
    const es = entries([T0]);
    for (const s of [500, 502, 503, 504, 408, 401, 403, 404]) assert.deepEqual(classifyPush(s, 'x', es).retry, es, String(s));
    assert.equal(classifyPush(503, 'x', es, '7').afterMs, 7000);
    for (const s of [415, 422]) assert.equal(classifyPush(s, 'x', es).rejected.length, 1, String(s));
  });

  test('413: split when several entries, refuse a single one', () => {
    const two = entries([T0, T0 + 1n]);
    assert.equal(classifyPush(413, 'too large', two).shrink, true);
    const one = entries([T0]);
    assert.equal(classifyPush(413, 'too large', one).rejected.length, 1);
  });
});
