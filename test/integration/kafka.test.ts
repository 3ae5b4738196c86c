/*
 * Kafka sink against a real Apache Kafka 4.1.1 broker (KRaft, test/servers/kafka): real OOM kills on this machine
 * through the real agent arrive as Kafka messages whose value equals the JSON Lines record byte for byte; the
 * healthcheck reports a missing topic; bad config exits 78 naming the key.
 * Never skipped: if the broker cannot be started, before() throws and every test fails. Runtime ~40 s.
 */
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAIN, startAgent, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { loadConfig } from '../../src/config/load';
import { createKafkaSink } from '../../src/sinks/kafka';
import { createTopic, readTopic, sleep, startKafka, type KafkaHandle } from '../servers/kafka/server';

describe('kafka sink → real Kafka 4.1.1', () => {
  let kafka: KafkaHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-kafka-test-'));
  const cgroups: TestCgroup[] = [];
  const agents: RunningAgent[] = [];

  before(async () => {
    kafka = await startKafka({ dir: path.join(base, 'broker') });
  });

  after(async () => {
    for (const a of agents) await a.stop('SIGKILL').catch(() => undefined);
    for (const cg of cgroups) await removeCgroup(cg.dir);
    await kafka?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  const agentEnv = (topic: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    OOMTRAIL_SINKS_KAFKA_ENABLED: 'true',
    OOMTRAIL_SINKS_KAFKA_BROKERS: kafka.broker,
    OOMTRAIL_SINKS_KAFKA_TOPIC: topic,
    OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '200',
    OOMTRAIL_PIPELINE_RETRY_MAX_MS: '2000',
    ...extra,
  });

  test('real OOM kills through the agent: message value = the JSONL line byte for byte; key and headers', async () => {
    const topic = 'kills';
    await createTopic(kafka.broker, topic, 3);
    const agent = await startAgent('', agentEnv(topic));
    agents.push(agent);
    const cg = makeTestCgroup(`oomtrail-kafka-wire-${process.pid}`);
    cgroups.push(cg);
    const pids = await causeKills(cg, 8, 4);
    const mine = (line: string): boolean => (JSON.parse(line) as { victim_cgroup: string }).victim_cgroup === cg.kernelPath;
    await agent.waitFor((rs) => rs.filter((r) => r.victim_cgroup === cg.kernelPath).length >= 8, 20_000, '8 JSONL records');
    const lines = fs.readFileSync(agent.eventsPath, 'utf8').split('\n').filter((l) => l.trim() !== '' && mine(l));
    assert.equal(lines.length, 8);
    let msgs: Awaited<ReturnType<typeof readTopic>> = [];
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      msgs = (await readTopic(kafka.broker, topic)).filter((m) => mine(m.value.toString('utf8')));
      if (msgs.length >= 8) break;
      await sleep(300);
    }
    assert.equal(msgs.length, 8, `8 messages in the topic; agent log:\n${agent.stderr().slice(-3000)}`);
    assert.deepEqual(msgs.map((m) => m.value.toString('utf8')).sort(), [...lines].sort(), 'values equal the JSONL lines byte for byte');
    const records = lines.map((l) => JSON.parse(l) as { event_id: string; host: string; schema_version: number; kind?: string; victim_pid: number });
    assert.deepEqual(new Set(records.map((r) => r.victim_pid)), new Set(pids));
    for (const m of msgs) {
      const r = JSON.parse(m.value.toString('utf8')) as (typeof records)[number];
      assert.equal(m.key, r.host, 'key = host (default)');
      assert.deepEqual(m.headers, { event_id: r.event_id, kind: r.kind ?? 'oom_kill', schema_version: String(r.schema_version) });
    }
    await agent.stop();
  });

  test('healthcheck: metadata request; a missing topic is reported clearly; create_topic creates it', async () => {
    const cfg = loadConfig({ env: { OOMTRAIL_SINKS_KAFKA_BROKERS: kafka.broker, OOMTRAIL_SINKS_KAFKA_TOPIC: 'absent.topic' } }).config.sinks.kafka;
    const sink = createKafkaSink(cfg);
    const h = await sink.healthcheck();
    assert.equal(h.healthy, false);
    assert.match(h.detail ?? '', /topic absent\.topic does not exist .*create_topic: true/);
    await sink.close();
    const creating = createKafkaSink({ ...cfg, topic: 'created.topic', create_topic: true });
    const rec = { schema_version: 1, event_id: 'x1', host: 'h', oom_cgroup: '/' } as never;
    assert.deepEqual(await creating.write([rec]), { status: 'delivered' });
    assert.deepEqual(await creating.healthcheck(), { healthy: true, detail: 'topic created.topic: 1 partitions' });
    await creating.close();
    const down = createKafkaSink({ ...cfg, brokers: '127.0.0.1:1', retries: 0, request_timeout_ms: 2000 });
    const d = await down.healthcheck();
    assert.equal(d.healthy, false);
    assert.match(d.detail ?? '', /network|ECONNREFUSED|Connection/i);
    await down.close();
  });

  test('a record over message_max_bytes is dead-lettered, the rest of the batch delivered', async () => {
    await createTopic(kafka.broker, 'sizes');
    const cfg = loadConfig({ env: { OOMTRAIL_SINKS_KAFKA_BROKERS: kafka.broker, OOMTRAIL_SINKS_KAFKA_TOPIC: 'sizes', OOMTRAIL_SINKS_KAFKA_MESSAGE_MAX_BYTES: '2000' } }).config.sinks.kafka;
    const sink = createKafkaSink(cfg);
    const small = { schema_version: 1, event_id: 's1', host: 'h', oom_cgroup: '/' } as never;
    const big = { schema_version: 1, event_id: 'b1', host: 'h', oom_cgroup: '/', victim_comm: 'x'.repeat(5000) } as never;
    const r = await sink.write([small, big]);
    assert.equal(r.status, 'delivered');
    assert.equal(r.status === 'delivered' ? r.rejectedRecords?.length : -1, 1);
    assert.match(r.status === 'delivered' ? r.rejectedRecords![0]!.reason : '', /MESSAGE_TOO_LARGE/);
    const msgs = await readTopic(kafka.broker, 'sizes');
    assert.deepEqual(msgs.map((m) => m.headers.event_id), ['s1']);
    await sink.close();
  });

  test('bad config exits 78 naming the key', () => {
    const dir = fs.mkdtempSync(path.join(base, 'badcfg-'));
    const cases: Array<[string, string, RegExp]> = [
      ['compression', 'sinks:\n  kafka:\n    enabled: true\n    compression: snappy\n', /sinks\.kafka\.compression/],
      ['brokers', "sinks:\n  kafka:\n    enabled: true\n    brokers: ''\n", /sinks\.kafka\.brokers/],
      ['sasl', `sinks:\n  kafka:\n    enabled: true\n    sasl:\n      mechanism: plain\n      username: u\n      password_file: ${path.join(dir, 'missing')}\n`, /sinks\.kafka\.sasl\.password_file/],
    ];
    for (const [name, yaml, key] of cases) {
      const file = path.join(dir, `${name}.yaml`);
      fs.writeFileSync(file, `${yaml}pipeline:\n  spool:\n    dir: ${JSON.stringify(path.join(dir, 'spool'))}\n`);
      const r = spawnSync(process.execPath, [MAIN, 'run', '--config', file], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 78, `${name}: exit ${r.status}\n${r.stderr}`);
      assert.match(r.stderr, key, `${name}: ${r.stderr}`);
    }
  });
});
