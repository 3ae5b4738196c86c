import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import snappy from 'snappy';
import { encodeRecordJson } from '../../src/record/json';
import { parseStaticLabels } from '../../src/sinks/loki/config';
import {
  encodeBody,
  labelString,
  METADATA_FIELDS,
  rfc3339ToNs,
  StreamBuilder,
  truncateUtf8,
  wellFormed,
  type LokiLimits,
} from '../../src/sinks/loki/encode';
import { decodePushRequest, PUSH_PROTO } from '../../src/sinks/loki/proto';
import { HOSTILE, makeRecord } from '../servers/loki/records';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const LIMITS: LokiLimits = {
  max_label_names_per_series: 15,
  max_label_value_length: 2048,
  max_line_size: 262_144,
  max_structured_metadata_size: 65_536,
  max_structured_metadata_entries: 128,
};

describe('loki encoding', () => {
  test('push.proto and the embedded PUSH_PROTO are the same text', () => {
    assert.equal(PUSH_PROTO, fs.readFileSync(path.join(ROOT, 'src/sinks/loki/push.proto'), 'utf8'));
  });

  test('RFC 3339 → ns: nanoseconds kept, offsets applied', () => {
    assert.equal(rfc3339ToNs('2024-05-01T12:00:00.000000001Z'), 1714564800000000001n);
    assert.equal(rfc3339ToNs('2024-05-01T12:00:00Z'), 1714564800000000000n);
    assert.equal(rfc3339ToNs('2024-05-01T14:00:00.5+02:00'), 1714564800500000000n);
    assert.equal(rfc3339ToNs('1969-12-31T23:59:59.999999999Z'), -1n);
    assert.equal(rfc3339ToNs('yesterday'), null);
  });

  test('labels: job, host, constraint, kind + static; per-event fields only in metadata and line', () => {
    const b = new StreamBuilder(LIMITS, parseStaticLabels('cluster=prod, env=staging'));
    const r = makeRecord(1, { container_id: 'a'.repeat(64), pod_uid: '', cause: 'shmem' });
    const { streams, invalid } = b.build([r]);
    assert.deepEqual(invalid, []);
    assert.equal(streams.length, 1);
    const s = streams[0]!;
    assert.equal(s.key, '{cluster="prod", constraint="memcg", env="staging", host="node-a", job="oomtrail", kind="oom_kill"}');
    const e = s.entries[0]!;
    assert.equal(e.line, encodeRecordJson(r), 'the line is the JSONL bytes');
    assert.deepEqual(
      e.metadata.map(([k]) => k),
      METADATA_FIELDS.filter((k) => k !== 'pod_uid' && r[k] !== undefined),
      'empty values are not sent',
    );
    assert.deepEqual(
      METADATA_FIELDS.filter((k) => r[k] === undefined),
      ['pod_namespace', 'pod_name', 'k8s_container', 'oom_scope', 'workload_kind', 'workload_name', 'workload_source', 'container_name', 'container_image', 'victim_is_container_init', 'oom_group_kill', 'oom_group_kill_size'],
      'absent (optional) fields are not sent either',
    );
    assert.deepEqual(Object.fromEntries(e.metadata).victim_pid, String(r.victim_pid));
    assert.equal(Object.fromEntries(e.metadata).cause, 'shmem', 'cause is structured metadata, not a label');
    for (const [k] of s.labels) assert.ok(!(METADATA_FIELDS as readonly string[]).includes(k), `${k} is not a label`);
  });

  test('runtime names and init/child go to structured metadata, never to labels', () => {
    const b = new StreamBuilder(LIMITS, parseStaticLabels(''));
    const r = makeRecord(1, {
      container_id: 'a'.repeat(64),
      pod_namespace: 'shop',
      pod_name: 'web-7d9f',
      k8s_container: 'app',
      container_name: 'k8s_app_web',
      container_image: 'nginx:1.27',
      victim_is_container_init: false,
      oom_scope: 'pod',
      workload_kind: 'Deployment',
      workload_name: 'web',
      workload_source: 'api',
    });
    const s = b.build([r]).streams[0]!;
    const md = Object.fromEntries(s.entries[0]!.metadata);
    assert.deepEqual([md.oom_scope, md.workload_kind, md.workload_name, md.workload_source], ['pod', 'Deployment', 'web', 'api'], 'oom_scope and workload: metadata');
    assert.equal(md.pod_namespace, 'shop');
    assert.equal(md.pod_name, 'web-7d9f');
    assert.equal(md.k8s_container, 'app');
    assert.equal(md.container_name, 'k8s_app_web');
    assert.equal(md.container_image, 'nginx:1.27');
    assert.equal(md.victim_is_container_init, 'false');
    for (const [k] of s.labels) assert.ok(!['pod_name', 'pod_namespace', 'container_name', 'oom_scope', 'workload_kind', 'workload_name', 'workload_source'].includes(k), `${k} is not a label`);
  });

  test('streams split by constraint and host; entries sorted by time within each stream', () => {
    const base = 1_800_000_000_000_000_000n;
    const batch = [
      makeRecord(1, { constraint: 'global' }, base + 30n),
      makeRecord(2, {}, base + 20n),
      makeRecord(3, { host: 'node-b' }, base + 5n),
      makeRecord(4, {}, base + 10n),
      makeRecord(5, {}, base + 10n),
    ];
    const { streams } = new StreamBuilder(LIMITS, []).build(batch);
    assert.deepEqual(
      streams.map((s) => [s.key, s.entries.map((e) => e.index)]),
      [
        ['{constraint="global", host="node-a", job="oomtrail", kind="oom_kill"}', [0]],
        ['{constraint="memcg", host="node-a", job="oomtrail", kind="oom_kill"}', [3, 4, 1]],
        ['{constraint="memcg", host="node-b", job="oomtrail", kind="oom_kill"}', [2]],
      ],
    );
  });

  test('limits: static labels beyond max_label_names_per_series dropped, long values cut, metadata trimmed — never the record', () => {
    const b = new StreamBuilder(
      { ...LIMITS, max_label_names_per_series: 5, max_label_value_length: 8, max_structured_metadata_entries: 3, max_structured_metadata_size: 60 },
      parseStaticLabels('cluster=prod,env=staging'),
    );
    assert.deepEqual(b.droppedStaticLabels, ['env']);
    const r = makeRecord(1, { host: 'a-very-long-host-name', container_id: 'c'.repeat(64) });
    const { streams, invalid } = b.build([r]);
    assert.equal(invalid.length, 0);
    assert.equal(streams[0]!.key, '{cluster="prod", constraint="memcg", host="a-very-l", job="oomtrail", kind="oom_kill"}');
    const e = streams[0]!.entries[0]!;
    assert.deepEqual(e.metadata.map(([k]) => k), ['event_id'], 'trimmed from the least important end to fit 60 bytes');
    assert.ok(e.metadataBytes <= 60);
    assert.equal(e.line, encodeRecordJson(r), 'the line still carries every field');
    assert.deepEqual(b.degradations, { static_labels_dropped: 1, label_values_truncated: 1, label_values_sanitized: 0, metadata_dropped: 7 });
  });

  test('a line over max_line_size and an unreadable time are reported invalid, the others go', () => {
    const b = new StreamBuilder({ ...LIMITS, max_line_size: 2000 }, []);
    const big = makeRecord(1, { victim_cgroup: '/x'.repeat(1500) });
    const badTime = makeRecord(2, { time: 'not a time' });
    const ok = makeRecord(3);
    const { streams, invalid } = b.build([big, badTime, ok]);
    assert.deepEqual(invalid.map((i) => i.index), [0, 1]);
    assert.match(invalid[0]!.reason, /exceeds sinks\.loki\.limits\.max_line_size \(2000\)/);
    assert.match(invalid[1]!.reason, /not RFC 3339/);
    assert.equal(streams[0]!.entries.length, 1);
  });

  test('hostile strings: label values quoted for Loki, protobuf and JSON bodies carry them exactly', () => {
    const hostile = HOSTILE.map((s, i) => makeRecord(i, { host: s, victim_comm: s, victim_cgroup: '/' + s, container_id: '' }));
    const { streams } = new StreamBuilder(LIMITS, []).build(hostile);
    const pb = decodePushRequest(snappy.uncompressSync(encodeBody(streams, 'protobuf').body) as Buffer);
    const json = JSON.parse(encodeBody(streams, 'json').body.toString('utf8'));
    for (const [si, s] of streams.entries()) {
      const host = s.labels.find(([k]) => k === 'host')![1];
      assert.equal(host, s.entries[0]!.record.host.replace(/\uFFFD/g, '?'), 'U+FFFD is refused by Loki in labels: replaced');
      assert.equal(pb[si]!.labels, s.key);
      assert.ok(s.key.includes(`host=${JSON.stringify(host)}`));
      assert.equal(json.streams[si].stream.host, host);
      for (const [ei, e] of s.entries.entries()) {
        assert.equal(pb[si]!.entries[ei]!.line, e.line);
        assert.deepEqual(JSON.parse(pb[si]!.entries[ei]!.line), e.record);
        assert.equal(json.streams[si].values[ei][1], e.line);
        assert.equal(json.streams[si].values[ei][0], e.tsNs.toString());
        const md = Object.fromEntries(pb[si]!.entries[ei]!.structuredMetadata.map((p) => [p.name, p.value]));
        assert.equal(md.victim_comm, e.record.victim_comm);
        assert.deepEqual(json.streams[si].values[ei][2], md);
        const ts = pb[si]!.entries[ei]!.timestamp;
        assert.equal(BigInt(ts.seconds) * 1_000_000_000n + BigInt(ts.nanos), e.tsNs);
      }
    }
  });

  test('label helpers', () => {
    assert.equal(labelString([['b', '1'], ['a', 'x"y\\z\n']]), '{a="x\\"y\\\\z\\n", b="1"}');
    assert.equal(truncateUtf8('aé☃', 4), 'aé', 'never splits a character');
    assert.equal(truncateUtf8('abc', 10), 'abc');
    assert.equal(wellFormed('a\uD800b\uDC00c\uD83D\uDE00'), 'a\uFFFDb\uFFFDc\uD83D\uDE00');
  });

  test('static labels: parsed and validated without echoing values', () => {
    assert.deepEqual(parseStaticLabels(''), []);
    assert.deepEqual(parseStaticLabels(' cluster = prod ,env=dev,'), [
      ['cluster', 'prod'],
      ['env', 'dev'],
    ]);
    for (const bad of ['x', '=v', '1a=v', 'host=h', '__name__=v', 'a=1,a=2', 'a=']) {
      assert.throws(() => parseStaticLabels(bad), Error, bad);
    }
  });

  test('protobuf+snappy is several times smaller than JSON for a batch of 1000', () => {
    const batch = Array.from({ length: 1000 }, (_, i) => makeRecord(i));
    const { streams } = new StreamBuilder(LIMITS, []).build(batch);
    const pb = encodeBody(streams, 'protobuf');
    const js = encodeBody(streams, 'json');
    assert.ok(pb.body.length * 3 < js.body.length, `protobuf+snappy ${pb.body.length} B vs JSON ${js.body.length} B`);
  });
});
