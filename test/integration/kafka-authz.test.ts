/*
 * Kafka authorization against a real Apache Kafka 4.1.1 broker with ACLs (KRaft StandardAuthorizer; everything is
 * allowed where no ACL exists, and one DENY ACL forbids the test's principal, User:ANONYMOUS on the PLAINTEXT
 * listener, to write the topic). TOPIC_AUTHORIZATION_FAILED is the operator's to fix: the records stay spooled and
 * are retried every config_error_retry_ms with one error line, never dead-lettered (issue #15 item 10: they used
 * to be dead-lettered, every one of them); once the ACL is removed they are delivered.
 * Never skipped. Runtime ~30 s.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { AclOperationTypes, AclPermissionTypes, AclResourceTypes, ResourcePatternTypes } from 'kafkajs';
import winston from 'winston';
import { loadConfig } from '../../src/config/load';
import { Lane } from '../../src/pipeline/lane';
import { createKafkaSink } from '../../src/sinks/kafka';
import { syntheticRecords } from '../servers/clickhouse/records';
import { client, createTopic, readTopic, sleep, startKafka, type KafkaHandle } from '../servers/kafka/server';

const TOPIC = 'denied';
const DENY = {
  resourceType: AclResourceTypes.TOPIC,
  resourceName: TOPIC,
  resourcePatternType: ResourcePatternTypes.LITERAL,
  principal: 'User:ANONYMOUS',
  host: '*',
  operation: AclOperationTypes.WRITE,
  permissionType: AclPermissionTypes.DENY,
};

describe('kafka sink → real Kafka 4.1.1 with ACLs', () => {
  let kafka: KafkaHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-kafka-authz-'));

  before(async () => {
    kafka = await startKafka({
      dir: path.join(base, 'broker'),
      extra: { 'authorizer.class.name': 'org.apache.kafka.metadata.authorizer.StandardAuthorizer', 'allow.everyone.if.no.acl.found': 'true' },
    });
  });

  after(async () => {
    await kafka?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  test('TOPIC_AUTHORIZATION_FAILED: retried slowly with one error line, records stay spooled; delivered once the ACL is gone', async () => {
    await createTopic(kafka.broker, TOPIC, 1);
    const admin = client(kafka.broker).admin();
    await admin.connect();
    await admin.createAcls({ acl: [DENY] });
    // the ACL is in effect once the broker has it: a direct send is refused
    const probe = client(kafka.broker).producer();
    await probe.connect();
    const until = Date.now() + 30_000;
    for (;;) {
      const err = await probe.send({ topic: TOPIC, messages: [{ value: 'probe' }] }).then(() => null, (e: Error) => e);
      if (err && /not authorized|AUTHORIZATION/i.test(`${err.message} ${String((err as { type?: string }).type)}`)) break;
      if (!err) throw new Error('the probe was written: the DENY ACL did not apply');
      if (Date.now() > until) throw err;
      await sleep(300);
    }
    await probe.disconnect();

    const lines: string[] = [];
    const logger = winston.createLogger({
      level: 'debug',
      format: winston.format.simple(),
      transports: [new winston.transports.Stream({ stream: new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }) })],
    });
    const { config } = loadConfig({ etcDir: path.join(base, 'no-etc'), env: {} });
    const sink = createKafkaSink({ ...config.sinks.kafka, enabled: true, brokers: kafka.broker, topic: TOPIC, retries: 1, config_error_retry_ms: 1500 }, { logger });
    const direct = await sink.write(syntheticRecords(1, 61));
    assert.equal(direct.status, 'retryable', JSON.stringify(direct));
    assert.ok(direct.status === 'retryable' && direct.afterMs === 1500, JSON.stringify(direct));
    assert.match(direct.status === 'retryable' ? direct.reason : '', /TOPIC_AUTHORIZATION_FAILED/);

    const lane = new Lane({
      sink, // closed by lane.close()
      spoolDir: path.join(base, 'spool'),
      fsync: 'never',
      maxSpoolBytes: 0,
      batch: { maxEvents: 100, maxBytes: 1 << 20, maxAgeMs: 50 },
      retry: { initialMs: 100, maxMs: 1000 },
      logger,
    });
    await lane.open();
    const records = syntheticRecords(10, 62);
    for (const r of records) await lane.accept(r);
    await sleep(5000);
    const errors = lines.filter((l) => /^error:/.test(l) && /TOPIC_AUTHORIZATION_FAILED/.test(l));
    console.log(`# authz: after 5 s denied: retried ${lane.retried}, rejected ${lane.rejected}, spooled ${lane.spoolRecords}, ${errors.length} error line(s)`);
    assert.equal(lane.rejected, 0, 'nothing dead-lettered');
    assert.equal(fs.existsSync(lane.deadLetterPath), false);
    assert.equal(lane.spoolRecords, 10, 'every record still spooled');
    assert.ok(lane.retried >= 2, `retried (${lane.retried})`);
    assert.ok(lane.retried <= 6, `slowly: every config_error_retry_ms, not in a loop (${lane.retried})`);
    assert.equal(errors.length, 1, `one error line:\n${errors.join('')}`);
    assert.match(errors[0]!, /records stay spooled/);
    assert.match(errors[0]!, /ACL/);

    await admin.deleteAcls({ filters: [DENY] });
    await admin.disconnect();
    const end = Date.now() + 60_000;
    while (lane.delivered < 10) {
      if (Date.now() > end) throw new Error(`not delivered after the ACL was removed: ${lane.delivered}, last failure ${lane.lastFailureReason}`);
      await sleep(200);
    }
    await lane.close();
    const got = await readTopic(kafka.broker, TOPIC);
    assert.deepEqual(got.map((m) => JSON.parse(m.value.toString('utf8')).event_id).sort(), records.map((r) => r.event_id).sort());
  });
});
