/*
 * `oomtrail relay`: what counts as a record in a Kafka message (the rest is dead-lettered, never inserted as a row of
 * defaults, never a reason to stop the partition), and the start-up check of the dead-letter directory. The relay
 * itself against real Kafka and ClickHouse: test/integration/kafka-relay.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/load';
import { silentLogger } from '../../src/observe/logger';
import { createRelay, decodeMessage } from '../../src/relay/relay';
import { syntheticRecords } from '../servers/clickhouse/records';

test('decodeMessage: a record, or why the message is not one', () => {
  const r = syntheticRecords(1, 71)[0]!;
  assert.deepEqual(decodeMessage(Buffer.from(JSON.stringify(r))), { record: r });
  const why = (v: Buffer | null): string => {
    const d = decodeMessage(v);
    assert.ok('reason' in d, JSON.stringify(d));
    return d.reason;
  };
  assert.match(why(null), /no value/);
  assert.match(why(Buffer.from('null')), /a JSON null/);
  assert.match(why(Buffer.from('[1]')), /a JSON array/);
  assert.match(why(Buffer.from('42')), /a JSON number/);
  assert.match(why(Buffer.from('{"a":1}')), /no event_id/);
  assert.match(why(Buffer.from('{"event_id":"x","host":"h"}')), /no time/);
  assert.match(why(Buffer.from('{"event_id":"","time":"t","host":"h"}')), /no event_id/);
  assert.match(why(Buffer.from('{"event_id": ')), /not JSON/);
  assert.match(why(Buffer.from([0xff, 0xfe])), /not JSON/);
});

test('createRelay: a pipeline.spool.dir it cannot write is a ConfigError naming the key (exit 78)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-relay-unit-'));
  try {
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, '');
    const { config } = loadConfig({ etcDir: path.join(tmp, 'no-etc'), env: {} });
    const bad = { ...config, pipeline: { ...config.pipeline, spool: { ...config.pipeline.spool, dir: path.join(file, 'spool') } } };
    assert.throws(
      () => createRelay(bad, silentLogger()),
      (err: unknown) => err instanceof ConfigError && err.exitCode === 78 && err.key === 'pipeline.spool.dir',
    );
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
