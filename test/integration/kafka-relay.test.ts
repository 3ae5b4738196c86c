/*
 * The fleet path end to end: 100,000 records published by the agent's Kafka sink → a real Kafka 4.1.1 broker
 * (3 partitions) → `oomtrail relay` (the real CLI, a child process) → ClickHouse (chdb, the ClickHouse 26.9 engine,
 * production schema created by the ClickHouse sink). The relay is SIGKILLed in the middle and started again: it
 * re-reads what it had not committed, and the re-inserted rows collapse by event_id, so
 * count() FINAL = uniqExact(event_id) = 100,000, and the group's committed offsets reach the end of every partition.
 * Poison: messages that are not records (bad JSON, null, no event_id, binary, no value) and records ClickHouse
 * refuses go to the relay's dead-letter file (0600, with topic/partition/offset and the reason) and the partition
 * moves on (issue #15 items 3 and 4: the relay used to stop for ever on the first, and to drop the second silently).
 * Never skipped. Runtime ~2.5 min.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MAIN } from '../helpers/agent';
import { loadConfig } from '../../src/config/load';
import { createKafkaSink } from '../../src/sinks/kafka';
import type { OomRecord } from '../../src/record/record';
import type { RelayDeadLetter } from '../../src/relay/relay';
import { sql, startChdb, type ServerHandle } from '../servers/clickhouse/servers';
import { syntheticRecords } from '../servers/clickhouse/records';
import { client, createTopic, sleep, startKafka, type KafkaHandle } from '../servers/kafka/server';

const N = 100_000;
const TOPIC = 'fleet';

describe('relay: Kafka → oomtrail relay → ClickHouse', () => {
  let kafka: KafkaHandle;
  let ch: ServerHandle;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-kafka-relay-'));

  /** A relay config (Kafka topic → the ClickHouse server) with its password file; returns its path. */
  function relayConfig(name: string, topic: string, clientId: string, spoolDir: string, table?: string, url = ch.url): string {
    const pw = path.join(base, `${name}.password`);
    fs.writeFileSync(pw, ch.password + '\n', { mode: 0o600 });
    const cfg = path.join(base, `${name}.yaml`);
    fs.writeFileSync(cfg, [
      'sinks:', '  console:', '    enabled: false', '  file:', '    enabled: false',
      '  kafka:', `    brokers: ${kafka.broker}`, `    topic: ${topic}`, `    client_id: ${clientId}`,
      '  clickhouse:', `    url: ${url}`, `    password_file: ${pw}`, ...(table ? [`    table: ${table}`] : []),
      'pipeline:', '  retry:', '    initial_ms: 200', '    max_ms: 2000', '  spool:', `    dir: ${spoolDir}`,
    ].join('\n') + '\n');
    return cfg;
  }
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

    const cfg = relayConfig('relay', TOPIC, 'relaytest', path.join(base, 'relay-spool'));

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
    assert.match(first.log(), /sink clickhouse: reachable/);
  });

  test('ClickHouse unreachable at start: the relay says so at once, keeps running, exits 0 on SIGTERM', async () => {
    const topic = 'fleet-noch';
    await createTopic(kafka.broker, topic, 1);
    // a port nobody listens on: taken, then freed
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const cfg = relayConfig('relay-noch', topic, 'relaynoch', path.join(base, 'relay-noch-spool'), undefined, `http://127.0.0.1:${port}`);
    const relay = startRelay(cfg);
    const until = Date.now() + 30_000;
    while (!/sink clickhouse: unreachable at start: .+; batches wait, offsets uncommitted/.test(relay.log())) {
      if (Date.now() > until || relay.child.exitCode !== null) throw new Error(`no unreachable warning within 30 s (exit ${relay.child.exitCode}):\n${relay.log().slice(-3000)}`);
      await sleep(100);
    }
    assert.ok(!relay.log().includes(ch.password), 'no password in the log');
    await sleep(500);
    assert.equal(relay.child.exitCode, null, `the relay keeps running:\n${relay.log().slice(-2000)}`);
    relay.child.kill('SIGTERM');
    assert.equal(await relay.exited, 0, `relay exit on SIGTERM:\n${relay.log().slice(-2000)}`);
  });

  test('poison messages and records ClickHouse refuses go to the relay dead-letter file; the partition moves on', async () => {
    const topic = 'poison';
    await createTopic(kafka.broker, topic, 1);
    const good = syntheticRecords(20, 51);
    const refusedByCh = syntheticRecords(3, 52).map((r) => ({ ...r, victim_pid: 'not a pid' }) as unknown as OomRecord);
    const poison: Array<{ value: Buffer | null; why: RegExp }> = [
      { value: Buffer.from('{"a":1}'), why: /not a record: no event_id/ },
      { value: Buffer.from('null'), why: /not a record: a JSON null/ },
      { value: Buffer.from('{"event_id": "x", "time": '), why: /not a record: not JSON/ },
      { value: Buffer.from('[1,2,3]'), why: /not a record: a JSON array/ },
      { value: Buffer.from([0xff, 0xfe, 0x00, 0x81]), why: /not a record: not JSON/ },
      { value: null, why: /not a record: the message has no value/ },
    ];
    // interleaved: poison first (the old relay never got past offset 0), refused records in the middle
    const msgs: Array<{ value: Buffer | null; kind: 'good' | 'poison' | 'refused'; i: number }> = [];
    poison.forEach((p, i) => msgs.push({ value: p.value, kind: 'poison', i }));
    good.forEach((r, i) => {
      msgs.push({ value: Buffer.from(JSON.stringify(r)), kind: 'good', i });
      if (i % 7 === 3) msgs.push({ value: Buffer.from(JSON.stringify(refusedByCh[(i - 3) / 7]!)), kind: 'refused', i: (i - 3) / 7 });
    });
    const producer = client(kafka.broker).producer();
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: msgs.map((m) => ({ value: m.value })) });
    await producer.disconnect();

    const spool = path.join(base, 'poison-spool');
    const cfg = relayConfig('relay-poison', topic, 'poisontest', spool, 'poison_kills');
    const relay = startRelay(cfg);
    const admin = client(kafka.broker).admin();
    await admin.connect();
    let committed = -1n;
    const end = Date.now() + 90_000;
    try {
      for (;;) {
        // NOT_COORDINATOR until the group's coordinator is up: not committed yet
        const offs = await admin.fetchOffsets({ groupId: 'poisontest-relay', topics: [topic] }).catch(() => null);
        if (offs) committed = BigInt(offs[0]!.partitions[0]!.offset);
        if (committed >= BigInt(msgs.length)) break;
        if (Date.now() > end || relay.child.exitCode !== null) {
          throw new Error(`the relay did not get through the partition: committed ${committed} of ${msgs.length}:\n${relay.log().slice(-3000)}`);
        }
        await sleep(500);
      }
    } finally {
      await admin.disconnect();
    }
    relay.child.kill('SIGTERM');
    assert.equal(await relay.exited, 0, relay.log().slice(-2000));
    assert.equal(committed, BigInt(msgs.length));
    const inTable = (await sql(ch, 'SELECT event_id FROM oomtrail.poison_kills FINAL ORDER BY event_id FORMAT TabSeparated')).trim().split('\n');
    assert.deepEqual(inTable, good.map((r) => r.event_id).sort(), 'every good record once, nothing else');

    const file = path.join(spool, 'relay.dead-letter.jsonl');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const dead = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as RelayDeadLetter);
    console.log(`# relay poison: ${msgs.length} messages, committed ${committed}, ${inTable.length} rows, ${dead.length} dead letters`);
    assert.equal(dead.length, poison.length + refusedByCh.length);
    for (const d of dead) {
      assert.equal(d.topic, topic);
      assert.equal(d.partition, 0);
      assert.ok(!Number.isNaN(Date.parse(d.time)));
    }
    msgs.forEach((m, offset) => {
      const d = dead.find((x) => x.offset === String(offset));
      if (m.kind === 'good') return assert.equal(d, undefined);
      assert.ok(d, `offset ${offset} (${m.kind}) is dead-lettered`);
      if (m.kind === 'poison') {
        assert.match(d.reason, poison[m.i]!.why);
        if (m.value === null) assert.equal(d.value, null);
        else if (m.i === 4) assert.equal(d.value_base64, m.value.toString('base64'));
        else assert.equal(d.value, m.value.toString('utf8'));
      } else {
        assert.equal(d.record?.event_id, refusedByCh[m.i]!.event_id);
        assert.deepEqual(d.record, refusedByCh[m.i]);
        assert.match(d.reason, /^clickhouse: .*HTTP \d+, code \d+ \(CANNOT_PARSE/);
      }
    });
  });
});
