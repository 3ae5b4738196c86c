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

test('relay dead letters: 0600 whatever the umask, rotated by size like the lanes\' (pipeline.dead_letter.*)', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-relay-unit-'));
  const umask = process.umask(0o022);
  try {
    const { config } = loadConfig({ etcDir: path.join(tmp, 'no-etc'), env: {} });
    const spool = path.join(tmp, 'spool');
    const relay = createRelay(
      { ...config, pipeline: { ...config.pipeline, spool: { ...config.pipeline.spool, dir: spool }, dead_letter: { max_bytes: 400, keep: 2 } } },
      silentLogger(),
    );
    // the write path of a refused batch, without Kafka (no broker here): private, called directly
    const write = (relay as unknown as { deadLetter(d: object[], hb: () => Promise<void>): Promise<boolean> }).deadLetter.bind(relay);
    for (let i = 0; i < 8; i++) {
      assert.equal(await write([{ reason: 'not a record', topic: 't', partition: 0, offset: String(i), value: 'x'.repeat(100) }], async () => undefined), true);
    }
    const names = fs.readdirSync(spool).sort();
    assert.deepEqual(names, ['relay.dead-letter.jsonl', 'relay.dead-letter.jsonl.1', 'relay.dead-letter.jsonl.2']);
    for (const n of names) {
      assert.ok(fs.statSync(path.join(spool, n)).size <= 400, `${n} within max_bytes`);
      assert.equal(fs.statSync(path.join(spool, n)).mode & 0o777, 0o600, `${n} 0600`);
    }
    assert.equal(fs.statSync(spool).mode & 0o777, 0o700, 'its directory 0700');
    const newest = fs.readFileSync(path.join(spool, 'relay.dead-letter.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).offset);
    assert.equal(newest[newest.length - 1], '7', 'the newest letters in the live file');
  } finally {
    process.umask(umask);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
