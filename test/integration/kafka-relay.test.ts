/*
 * The fleet path end to end: 100,000 records published by the agent's Kafka sink → a real Kafka 4.1.1 broker
 * (3 partitions) → `oomtrail relay` (the real CLI, a child process) → ClickHouse (chdb, the ClickHouse 26.9 engine,
 * production schema created by the ClickHouse sink). The relay is SIGKILLed in the middle and started again: it
 * re-reads what it had not committed, and the re-inserted rows collapse by event_id, so
 * count() FINAL = uniqExact(event_id) = 100,000, and the group's committed offsets reach the end of every partition.
 * Never skipped. Runtime ~2 min.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAIN } from '../helpers/agent';
import { loadConfig } from '../../src/config/load';
import { createKafkaSink } from '../../src/sinks/kafka';
import { sql, startChdb, type ServerHandle } from '../servers/clickhouse/servers';
import { syntheticRecords } from '../servers/clickhouse/records';
import { client, createTopic, sleep, startKafka, type KafkaHandle } from '../servers/kafka/server';

const N = 100_000;
const TOPIC = 'fleet';

describe('relay: Kafka → oomtrail relay → ClickHouse', () => {
  let kafka: KafkaHandle;
  let ch: ServerHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-kafka-relay-'));
  const relays: ChildProcess[] = [];

  before(async () => {
    [kafka, ch] = await Promise.all([startKafka({ dir: path.join(base, 'broker') }), startChdb({ dir: path.join(base, 'chdb') })]);
  });

  after(async () => {
    for (const r of relays) if (r.exitCode === null && r.signalCode === null) r.kill('SIGKILL');
    await kafka?.stop();
    await ch?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  function startRelay(configFile: string): { child: ChildProcess; log: () => string; exited: Promise<number | null> } {
    const child = spawn(process.execPath, [MAIN, 'relay', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    relays.push(child);
    let log = '';
    child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    return { child, log: () => log, exited };
  }

  const count = async (final: string): Promise<number> => Number((await sql(ch, `SELECT count() FROM oomtrail.oom_kills ${final}`).catch(() => '0')).trim());

  test(`${N} records with a relay restart in the middle: count() FINAL = distinct event_ids = ${N}`, async () => {
    await createTopic(kafka.broker, TOPIC, 3);
    const { config } = loadConfig({ etcDir: path.join(base, 'no-etc'), env: {} });
    const sink = createKafkaSink({ ...config.sinks.kafka, enabled: true, brokers: kafka.broker, topic: TOPIC, key: 'event_id' });
    const records = syntheticRecords(N, 9);
    let t0 = Date.now();
    for (let i = 0; i < N; i += 1000) {
      const r = await sink.write(records.slice(i, i + 1000));
      assert.deepEqual(r, { status: 'delivered' });
    }
    await sink.close();
    const produceMs = Date.now() - t0;

    const pw = path.join(base, 'ch-password');
    fs.writeFileSync(pw, ch.password + '\n', { mode: 0o600 });
    const cfg = path.join(base, 'relay.yaml');
    fs.writeFileSync(cfg, [
      'sinks:', '  console:', '    enabled: false', '  file:', '    enabled: false',
      '  kafka:', `    brokers: ${kafka.broker}`, `    topic: ${TOPIC}`, '    client_id: relaytest',
      '  clickhouse:', `    url: ${ch.url}`, `    password_file: ${pw}`,
      'pipeline:', '  retry:', '    initial_ms: 200', '    max_ms: 2000',
    ].join('\n') + '\n');

    t0 = Date.now();
    const first = startRelay(cfg);
    // kill it in the middle: after some inserts landed, well before the end
    const until = Date.now() + 120_000;
    let mid = 0;
    while ((mid = await count('')) < N / 4) {
      if (Date.now() > until || first.child.exitCode !== null) throw new Error(`relay made no progress (${mid} rows):\n${first.log().slice(-3000)}`);
      await sleep(100);
    }
    first.child.kill('SIGKILL');
    await first.exited;
    const atKill = await count('');
    const second = startRelay(cfg);
    const end = Date.now() + 240_000;
    while ((await count('FINAL')) < N) {
      if (Date.now() > end || second.child.exitCode !== null) throw new Error(`relay did not finish (${await count('FINAL')} rows FINAL):\n${second.log().slice(-3000)}`);
      await sleep(500);
    }
    const relayMs = Date.now() - t0;
    const raw = await count('');
    const final = await count('FINAL');
    const distinct = Number((await sql(ch, 'SELECT uniqExact(event_id) FROM oomtrail.oom_kills')).trim());
    // the committed offsets reach the end of every partition (ClickHouse acknowledged everything)
    const admin = client(kafka.broker).admin();
    await admin.connect();
    let committed = 0n;
    const cend = Date.now() + 30_000;
    for (;;) {
      const offs = await admin.fetchOffsets({ groupId: 'relaytest-relay', topics: [TOPIC] });
      committed = offs[0]!.partitions.reduce((a, p) => a + (BigInt(p.offset) > 0n ? BigInt(p.offset) : 0n), 0n);
      if (committed >= BigInt(N) || Date.now() > cend) break;
      await sleep(500);
    }
    await admin.disconnect();
    second.child.kill('SIGTERM');
    const code = await second.exited;
    console.log(`# relay: produced ${N} in ${produceMs} ms; relay ${relayMs} ms incl. restart; killed at >= ${mid} rows (${atKill} after the kill); rows ${raw} raw, ${final} FINAL, ${distinct} distinct event_ids; committed ${committed}`);
    assert.equal(final, N);
    assert.equal(distinct, N);
    assert.equal(committed, BigInt(N));
    assert.equal(code, 0, `relay exit on SIGTERM:\n${second.log().slice(-2000)}`);
  });
});
