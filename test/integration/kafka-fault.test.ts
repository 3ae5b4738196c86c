/*
 * Kafka sink faults with the real agent, real OOM kills and a real Kafka 4.1.1 broker (test/servers/kafka):
 *   - broker SIGTERM'd during a burst and restarted after 30 s: every event_id arrives EXACTLY ONCE in the topic
 *     (the idempotent producer's resends carry the same producer id + sequence, which the broker deduplicates;
 *     kafkajs's explicit retries, then the lane's retry and spool, cover the outage);
 *   - agent SIGKILL'd during a burst and restarted: every event_id arrives AT LEAST ONCE; a duplicate is possible
 *     only for records the broker acknowledged before the spool was trimmed (a new process = a new producer id),
 *     and it is detectable: same event_id (header and value), same bytes. The relay's ClickHouse dedup removes it.
 * Never skipped. Runtime ~90 s (30 s of it the outage).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgent, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, type TestCgroup } from '../helpers/cgroup';
import { causeKills } from '../helpers/kills';
import { createTopic, readTopic, sleep, startKafka, type KafkaHandle, type ReadMessage } from '../servers/kafka/server';

describe('kafka sink faults (real broker, real agent, real OOM kills)', () => {
  let kafka: KafkaHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-kafka-fault-'));
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

  const agentEnv = (topic: string): NodeJS.ProcessEnv => ({
    OOMTRAIL_SINKS_KAFKA_ENABLED: 'true',
    OOMTRAIL_SINKS_KAFKA_BROKERS: kafka.broker,
    OOMTRAIL_SINKS_KAFKA_TOPIC: topic,
    OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '200',
    OOMTRAIL_PIPELINE_RETRY_MAX_MS: '2000',
  });

  const eventIds = (file: string, cg: TestCgroup): Set<string> =>
    new Set(
      fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as { event_id: string; victim_cgroup: string })
        .filter((r) => r.victim_cgroup === cg.kernelPath).map((r) => r.event_id),
    );

  /** Messages of `cg`, once every id in `want` is there (or the timeout passed). */
  async function waitTopic(topic: string, cg: TestCgroup, want: Set<string>, timeoutMs: number, log: () => string): Promise<ReadMessage[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const msgs = (await readTopic(kafka.broker, topic)).filter((m) => (JSON.parse(m.value.toString('utf8')) as { victim_cgroup: string }).victim_cgroup === cg.kernelPath);
      const have = new Set(msgs.map((m) => m.headers.event_id));
      if ([...want].every((id) => have.has(id))) return msgs;
      if (Date.now() > until) throw new Error(`${[...want].filter((id) => !have.has(id)).length} of ${want.size} event_ids missing after ${timeoutMs} ms; agent log:\n${log().slice(-4000)}`);
      await sleep(1000);
    }
  }

  test('broker SIGTERM during a burst, restarted after 30 s: every event_id exactly once in the topic', async () => {
    const topic = 'outage';
    await createTopic(kafka.broker, topic);
    const agent = await startAgent('', agentEnv(topic));
    agents.push(agent);
    const cg = makeTestCgroup(`oomtrail-kafka-outage-${process.pid}`);
    cgroups.push(cg);
    let kills = (await causeKills(cg, 5, 5)).length;
    await agent.waitFor((rs) => rs.filter((r) => r.victim_cgroup === cg.kernelPath).length >= 5, 20_000, '5 JSONL records');
    await waitTopic(topic, cg, eventIds(agent.eventsPath, cg), 20_000, agent.stderr);

    const burst = (async () => {
      for (let i = 0; i < 8; i++) {
        kills += (await causeKills(cg, 4, 4)).length;
        await sleep(400);
      }
    })();
    await sleep(300);
    await kafka.stop(); // SIGTERM mid-burst: controlled shutdown
    const down = Date.now();
    await burst;
    const during = kills;
    await sleep(Math.max(0, down + 30_000 - Date.now()));
    await kafka.start();
    kills += (await causeKills(cg, 5, 5)).length;

    await agent.waitFor((rs) => rs.filter((r) => r.victim_cgroup === cg.kernelPath).length >= kills, 20_000, `${kills} JSONL records`);
    const want = eventIds(agent.eventsPath, cg);
    assert.equal(want.size, kills);
    const msgs = await waitTopic(topic, cg, want, 120_000, agent.stderr);
    const counts = new Map<string, number>();
    for (const m of msgs) counts.set(m.headers.event_id!, (counts.get(m.headers.event_id!) ?? 0) + 1);
    const dups = [...counts.values()].filter((n) => n > 1).length;
    console.log(`# outage: ${kills} kills (${during - 5} during the burst/outage), ${msgs.length} messages, ${counts.size} distinct, ${dups} duplicated`);
    assert.equal(counts.size, want.size, 'every event_id arrived');
    assert.equal(dups, 0, 'no event_id twice: the broker deduplicated the idempotent resends');
    assert.equal(msgs.length, want.size);
    await agent.stop();
  });

  test('agent SIGKILL during a burst, restarted: every event_id arrives; any duplicate is the same bytes under the same event_id', async () => {
    const topic = 'agentkill';
    await createTopic(kafka.broker, topic);
    const agent = await startAgent('', agentEnv(topic));
    agents.push(agent);
    const cg = makeTestCgroup(`oomtrail-kafka-agentkill-${process.pid}`);
    cgroups.push(cg);
    await causeKills(cg, 10, 5);
    await agent.waitFor((rs) => rs.filter((r) => r.victim_cgroup === cg.kernelPath).length >= 10, 20_000, '10 JSONL records');
    await agent.stop('SIGKILL');
    const again = await startAgent('', agentEnv(topic), { dir: agent.dir });
    agents.push(again);
    await causeKills(cg, 10, 5);
    await again.waitFor((rs) => new Set(rs.filter((r) => r.victim_cgroup === cg.kernelPath).map((r) => r.event_id)).size >= 20, 20_000, '20 JSONL records');
    const want = eventIds(again.eventsPath, cg);
    assert.equal(want.size, 20);
    const msgs = await waitTopic(topic, cg, want, 60_000, again.stderr);
    const byId = new Map<string, string[]>();
    for (const m of msgs) byId.set(m.headers.event_id!, [...(byId.get(m.headers.event_id!) ?? []), m.value.toString('utf8')]);
    const dups = [...byId.values()].filter((v) => v.length > 1);
    console.log(`# agent kill: ${want.size} event_ids, ${msgs.length} messages, ${dups.length} duplicated`);
    assert.equal(byId.size, want.size, 'every event_id arrived, no other');
    for (const v of dups) assert.ok(v.every((x) => x === v[0]), 'a duplicate carries the same bytes: detectable by event_id');
    await again.stop();
  });
});
