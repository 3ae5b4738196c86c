/*
 * Kafka sink throughput, in one run, against a real Kafka 4.1.1 broker started here (test/servers/kafka):
 *   - sink:  records/s through KafkaSink.write (encode value/key/headers, size split, idempotent producer,
 *            acks=all, maxInFlightRequests 1, explicit retry, one awaited send per lane batch)
 *   - plain: records/s of a plain kafkajs producer sending the same messages (same value bytes, key, headers,
 *            serialized in the timed section as a producer user must), with the same producer settings (idempotent, acks=-1, maxInFlightRequests 1), one awaited send per batch
 * Both with gzip (the sink's default) and without. Modes alternate batch by batch (order rotated), each into its own topic, so a
 * noisy neighbour slows them alike; only the write/send calls are timed. The topics are counted after.
 *
 *   npx tsc -p . && node dist/bench/kafka.js [records=200000] [batch=1000] [partitions=3]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CompressionTypes, Kafka, logLevel, type Producer } from 'kafkajs';
import { silentLogger } from '../src/observe/logger';
import { loadConfig } from '../src/config/load';
import { createKafkaSink, encodeMessage } from '../src/sinks/kafka';
import type { OomRecord } from '../src/record/record';
import { createTopic, startKafka } from '../test/servers/kafka/server';
import { syntheticRecords } from '../test/servers/clickhouse/records';

const N = Number(process.argv[2] ?? 200_000);
const BATCH = Number(process.argv[3] ?? 1000);
const PARTITIONS = Number(process.argv[4] ?? 3);

type Mode = 'sink-gzip' | 'plain-gzip' | 'sink-none' | 'plain-none';
const MODES: Mode[] = ['sink-gzip', 'plain-gzip', 'sink-none', 'plain-none'];

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-bench-kafka-'));
  const kafka = await startKafka({ dir });
  try {
    for (const m of MODES) await createTopic(kafka.broker, m, PARTITIONS);
    const { config } = loadConfig({ etcDir: path.join(dir, 'no-etc'), env: {} });
    const base = { ...config.sinks.kafka, enabled: true, brokers: kafka.broker };
    const sinks = {
      'sink-gzip': createKafkaSink({ ...base, topic: 'sink-gzip', compression: 'gzip' }, { logger: silentLogger() }),
      'sink-none': createKafkaSink({ ...base, topic: 'sink-none', compression: 'none' }, { logger: silentLogger() }),
    };
    const client = new Kafka({ clientId: 'bench-plain', brokers: [kafka.broker], logLevel: logLevel.NOTHING, retry: { retries: 8 } });
    // one producer per plain mode, as each sink has its own
    const plain: Record<'plain-gzip' | 'plain-none', Producer> = {
      'plain-gzip': client.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false }),
      'plain-none': client.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false }),
    };
    for (const p of Object.values(plain)) await p.connect();
    const ms: Record<Mode, number> = { 'sink-gzip': 0, 'plain-gzip': 0, 'sink-none': 0, 'plain-none': 0 };
    let seed = 1;
    for (let i = 0; i < N; i += BATCH) {
      const batch: OomRecord[] = syntheticRecords(Math.min(BATCH, N - i), seed++);
      // rotate the order each batch: whoever runs first after the batch's generation pays for its GC
      const k = (i / BATCH) % MODES.length;
      for (const m of [...MODES.slice(k), ...MODES.slice(0, k)]) {
        const t = process.hrtime.bigint();
        if (m === 'sink-gzip' || m === 'sink-none') {
          const r = await sinks[m].write(batch);
          if (r.status !== 'delivered' || r.rejectedRecords) throw new Error(`${m}: ${JSON.stringify(r)}`);
        } else {
          // a plain producer serializes the records too: the same value, key and header bytes as the sink's
          const messages = batch.map((r) => encodeMessage(r, 'host'));
          await plain[m].send({ topic: m, acks: -1, compression: m === 'plain-gzip' ? CompressionTypes.GZIP : CompressionTypes.None, messages });
        }
        ms[m] += Number(process.hrtime.bigint() - t) / 1e6;
      }
    }
    for (const s of Object.values(sinks)) await s.close();
    for (const p of Object.values(plain)) await p.disconnect();
    const admin = client.admin();
    await admin.connect();
    const out: Record<string, unknown> = { records: N, batch: BATCH, partitions: PARTITIONS, kafka: '4.1.1', kafkajs: '2.2.4' };
    for (const m of MODES) {
      const offs = await admin.fetchTopicOffsets(m);
      const n = offs.reduce((a, o) => a + Number(o.high), 0);
      if (n !== N) throw new Error(`${m}: ${n} messages in the topic, expected ${N}`);
      out[`${m}_records_per_s`] = Math.round((N / ms[m]) * 1000);
    }
    await admin.disconnect();
    out.ratio_gzip = Number((ms['plain-gzip'] / ms['sink-gzip']).toFixed(3));
    out.ratio_none = Number((ms['plain-none'] / ms['sink-none']).toFixed(3));
    console.log(JSON.stringify(out, null, 2));
  } finally {
    await kafka.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
